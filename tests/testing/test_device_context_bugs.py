"""GPU-path bugs the emulated CuPy found, pinned: each ran CuPy work outside the device context
of its tensor, so it worked only while cuda:0 was current (index arrays made on cuda:0 for a
cuda:1 tensor, bounds checks and zero tests launched on cuda:0 reading cuda:1 memory). Run in a
fresh interpreter with GPUVJP_EMULATE_CUDA=2, where such a launch raises as CuPy does without
peer access."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROGRAM = r'''
import numpy as np
import gpuvjp as gv
import gpuvjp.nn.functional as F

assert gv.cuda.device_count() == 2
rng = np.random.default_rng(0)
a = rng.uniform(0.5, 2, (3, 4))
a[1, 2] = 0.0                                       # prod's backward takes its zero branch
t = np.array([0, 3, 1])


def both(f):
    outs = {}
    for dev in ("cpu", "cuda:1"):
        x = gv.tensor(a, device=dev, requires_grad=True)
        out = f(x, dev)
        (g,) = gv.autograd.grad(out.sum(), x)
        assert out.device == gv.device(dev) and g.device == gv.device(dev)
        outs[dev] = (out.numpy(), g.numpy())
    for got, want in zip(outs["cuda:1"], outs["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


both(lambda x, dev: F.cross_entropy(x, gv.tensor(t, device=dev)))
both(lambda x, dev: x.prod())
both(lambda x, dev: x.prod(dim=1))
both(lambda x, dev: gv.index_select(x, 1, gv.tensor([3, 0, 3], device=dev)))
both(lambda x, dev: gv.gather(x, 1, gv.tensor([[0], [3], [1]], device=dev)))
both(lambda x, dev: x[[0, 2, 0]])
both(lambda x, dev: x[gv.tensor([1, 1]), 1:3])
both(lambda x, dev: x[np.array([True, False, True])])

x = gv.tensor(a, device="cuda:1")
for bad, error in [(lambda: F.cross_entropy(x, gv.tensor([0, 9, 1], device="cuda:1")),
                    IndexError),
                   (lambda: gv.index_select(x, 1, gv.tensor([7], device="cuda:1")), IndexError),
                   (lambda: gv.gather(x, 1, gv.tensor([[7]], device="cuda:1")), RuntimeError),
                   (lambda: x[[0, 7]], IndexError)]:
    try:
        bad()
    except error:
        pass
    else:
        raise AssertionError(f"no {error.__name__}")
print("ok")
'''


def test_work_on_cuda1_runs_in_cuda1s_context():
    env = dict(os.environ, GPUVJP_EMULATE_CUDA="2")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "No module named 'torch'" in done.stderr:
        pytest.skip("torch is not installed")
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-3000:]
