"""gv.distributed and its workers: a worker process killed mid-task (its tasks are rescheduled
and the result equals the local one), and CUDA workers (gpu: cuda inputs arrive on each
worker's device, blocks come back as CuPy arrays, results land on the device of the inputs)."""

import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device
from tests.conftest import CUDA
from tests.distributed.conftest import DASK_REASON
from tests.distributed.test_errors import _claim

distributed = pytest.importorskip("distributed", reason=DASK_REASON)

W = gv.tensor(np.random.default_rng(0).uniform(-1, 1, (6, 5)), dtype=gv.float64)
X = gv.tensor(np.random.default_rng(1).uniform(-1, 1, 5), dtype=gv.float64)


def _f(t):
    return (W @ t).tanh()


def test_killed_worker_tasks_are_rescheduled(client, tmp_path):
    """The worker process (not its nanny) running a chunk is killed while that task waits on a
    distributed.Event; the scheduler runs the task again elsewhere."""
    gate, pid_file = f"gpuvjp-test-{uuid.uuid4().hex}", tmp_path / "pid"
    calls = tmp_path / "calls"
    calls.mkdir()

    def func(t):
        if _claim(calls) == 1:                      # the first chunk task (call 0: the probe)
            (tmp_path / "pid.part").write_text(str(os.getpid()))
            os.replace(tmp_path / "pid.part", pid_file)
            distributed.Event(gate).wait(timeout=60)
        return _f(t)

    worker_pids = set(client.run(os.getpid).values())
    result = {}

    def run():
        try:
            result["jac"] = gv.distributed.jacobian(func, X, client=client, chunk_size=2)
        except BaseException as e:                  # noqa: BLE001  (re-raised below)
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    assert pid in worker_pids and pid != os.getpid()        # a worker process, not a nanny
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    distributed.Event(gate, client=client).set()
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    np.testing.assert_allclose(result["jac"].numpy(), gv.jacobian(_f, X).numpy(), rtol=1e-12,
                               atol=1e-14)
    tasks = 3                                       # 6 rows, 2 per task
    assert len(list(calls.iterdir())) >= 1 + tasks + 1      # the killed task ran again


@pytest.mark.gpu
def test_cuda_workers(client):
    """CUDA inputs and a closure over a CUDA tensor: the workers compute on their current
    device, `as_dask` blocks are CuPy arrays, gathered results land on the inputs' device."""
    w, x = W.to(CUDA), X.to(CUDA)

    def f(t):
        return (w @ t).tanh()

    want = gv.jacobian(_f, X).numpy()
    got = gv.distributed.jacobian(f, x, client=client, vectorize=True)
    assert got.device == x.device and _device.is_cupy_array(got._array())
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12, atol=1e-14)
    lazy = gv.distributed.jacobian(f, x, client=client, as_dask=True)
    blocks = client.gather(client.compute(list(lazy.to_delayed().ravel())))
    assert len(blocks) >= 2 and all(_device.is_cupy_array(b) for b in blocks)
    np.testing.assert_allclose(np.concatenate([b.get() for b in blocks]), want, rtol=1e-12,
                               atol=1e-14)
    xs = gv.stack([x, x * 2])
    outs, vjps = gv.distributed.map_vjp(lambda t: f(t).sum(), xs, client=client)
    assert outs.device == vjps.device == x.device
    for b in range(2):
        o, g = gv.vjp(lambda t: _f(t).sum(), xs[b].cpu())
        np.testing.assert_allclose(vjps[b].cpu().numpy(), g.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(outs[b].cpu().numpy(), o.numpy(), rtol=1e-12, atol=1e-14)
