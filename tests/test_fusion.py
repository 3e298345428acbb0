"""Fused plans on the CPU: launch counts and bytes through gv.profiler (the kernels the GPU will
run), values equal to the unfused path, memory, threads, the size cap, the switch and the logger.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import gpuvjp as gv
import gpuvjp.nn.functional as F
from gpuvjp import _lazy, _plan
from gpuvjp.ops import REGISTRY

pytestmark = pytest.mark.skipif(not _lazy.ENABLED, reason="GPUVJP_FUSION=0: fusion is off")


@pytest.fixture
def unfused(monkeypatch):
    """A context that runs its body with fusion off."""
    class Off:
        def __enter__(self):
            monkeypatch.setattr(_lazy, "ENABLED", False)

        def __exit__(self, *exc):
            monkeypatch.setattr(_lazy, "ENABLED", True)
    return Off()


def _chain(t, length):
    """W2: tanh, sin, mul and add by scalars, exp of a small value, square; `length` ops."""
    steps = (lambda u: u.tanh(), lambda u: u.sin(), lambda u: u * 0.75, lambda u: u + 0.25,
             lambda u: (u * 0.1).exp(), lambda u: u.square())
    n = 0
    while n < length:
        step = steps[n % len(steps)]
        t = step(t)
        n += 2 if n % len(steps) == 4 else 1          # exp(0.1 u) is two ops
    return t


# ----- launch counts and bytes -------------------------------------------------------------
@pytest.mark.parametrize("n", [64, 200])
def test_w1_vjp_is_two_kernels_and_three_passes(n, rng):
    x = gv.tensor(rng.standard_normal((n, n)))
    v = gv.tensor(rng.standard_normal(n))
    with gv.profiler.profile() as prof:
        out, gx = gv.vjp(lambda t: t.exp().sum(dim=1), x, v)
    assert prof.launches == len(prof.kernels) <= 2, prof.table()
    assert prof.bytes <= 3 * n * n * 8 + 8 * 8 * n, prof.table()
    np.testing.assert_allclose(gx.numpy(), np.exp(x.numpy()) * v.numpy()[:, None], rtol=1e-14)
    np.testing.assert_allclose(out.numpy(), np.exp(x.numpy()).sum(1), rtol=1e-14)


@pytest.mark.parametrize("length", [4, 16])
def test_w2_vjp_is_two_kernels_whatever_the_chain_length(length, rng):
    n = 1000
    x = gv.tensor(rng.standard_normal(n).astype(np.float32))
    with gv.profiler.profile() as prof:
        gv.vjp(lambda t: _chain(t, length).sum(), x)
    assert prof.launches == 2, prof.table()
    assert prof.bytes <= 3 * n * 4 + 64, prof.table()
    fwd, bwd = prof.kernels
    assert fwd.ops[-1] == "sum" and len(fwd.ops) >= length
    assert fwd.bytes_read == n * 4 and bwd.bytes_written == n * 4


def test_a_broadcast_input_needing_a_gradient_adds_one_reduction(rng):
    x = gv.tensor(rng.standard_normal((50, 40)))
    b = gv.tensor(rng.standard_normal((1, 40)))
    v = gv.tensor(rng.standard_normal((50, 40)))
    with gv.profiler.profile() as prof:
        out, (gx, gb) = gv.vjp(lambda x, b: (x * b).tanh(), (x, b), v)
    assert prof.launches == 2, prof.table()
    assert prof.kernels[0].ops[-1] == "sum" and prof.kernels[1].bytes_written == 2 * 2000 * 8
    xn, bn, vn = x.numpy(), b.numpy(), v.numpy()
    d = vn * (1 - np.tanh(xn * bn) ** 2)
    np.testing.assert_allclose(gx.numpy(), d * bn, rtol=1e-13)
    np.testing.assert_allclose(gb.numpy(), (d * xn).sum(0, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_vjps_are_at_most_three_kernels(name, rng):
    x = gv.tensor(rng.standard_normal((8, 5)))
    v = gv.tensor(rng.standard_normal((8, 5)))
    fn = getattr(gv, name)
    with gv.profiler.profile() as prof:
        gv.vjp(lambda t: fn(t, dim=1), x, v)
    assert prof.launches <= 3, prof.table()


def test_every_unfused_op_call_is_one_record_and_views_none(rng, unfused):
    x = gv.tensor(rng.standard_normal((4, 3)))
    w = gv.tensor(rng.standard_normal((3, 2)))
    with unfused, gv.profiler.profile() as prof:
        y = (x.exp() * 2 + 1).reshape(3, 4).T       # reshape and .T are views: no kernel
        z = x @ w
    assert [k.ops for k in prof.kernels] == [("exp",), ("mul",), ("add",), ("matmul",)]
    assert prof.kernels[-1].bytes_read == (12 + 6) * 8 and prof.kernels[-1].bytes_written == 64
    assert y.shape == (4, 3) and z.shape == (4, 2)


def test_profiler_records_are_the_same_in_nested_profiles_and_table_prints(rng):
    x = gv.tensor(rng.standard_normal(10))
    with gv.profiler.profile() as outer:
        with gv.profiler.profile() as inner:
            (x.sin() * x).sum().item()
        x.cos().numpy()
    assert inner.launches == 1 and outer.launches == 2
    assert outer.bytes == sum(k.bytes_read + k.bytes_written for k in outer.kernels)
    assert inner.kernels[0].ops == ("sin", "mul", "sum") and inner.kernels[0].elements == 10
    table = outer.table()
    assert "sin,mul,sum" in table and "2 kernels" in table
    assert all(k.time_us is not None and k.time_us >= 0 for k in outer.kernels)


def test_materialising_several_results_of_one_shape_is_one_kernel(rng):
    x = gv.tensor(rng.standard_normal((5, 6)))
    with gv.profiler.profile() as prof:
        out, gx = gv.vjp(lambda t: (t * t).sin(), x, gv.ones(5, 6, dtype=gv.float64))
    assert prof.launches == 1, prof.table()
    k = prof.kernels[0]
    assert k.bytes_read == 2 * 30 * 8 or k.bytes_read == 30 * 8 + 8, prof.table()
    assert k.bytes_written == 2 * 30 * 8
    xn = x.numpy()
    np.testing.assert_allclose(out.numpy(), np.sin(xn * xn), rtol=1e-15)
    np.testing.assert_allclose(gx.numpy(), np.cos(xn * xn) * 2 * xn, rtol=1e-14)


def test_a_shared_subexpression_is_computed_once(rng):
    x = gv.tensor(rng.standard_normal(7))
    with gv.profiler.profile():             # small CPU arrays record their DAG in a profile
        s = x.exp()
        y = s * s + s.sin()
    plan = _plan.build([y._data])
    assert plan.ops() == ["exp", "mul", "sin", "add"]
    assert len(plan.leaves) == 1


def test_small_cpu_ops_run_at_once_outside_a_profile_and_record_their_dag_inside(rng):
    x = gv.tensor(rng.uniform(0.5, 2.0, (3, 4)))
    y = (x * 2.0).exp()
    assert type(y._data) is np.ndarray                 # no DAG: the NumPy calls ran
    with gv.profiler.profile() as prof:
        z = (x * 2.0).exp()
        assert type(z._data) is _lazy.Pending          # the plan the GPU would run
        z.numpy()
    assert prof.launches == 1 and prof.kernels[0].ops == ("mul", "exp")
    np.testing.assert_array_equal(y.numpy(), z.numpy())
    big = gv.tensor(np.ones(_lazy.EAGER_SIZE + 1))
    assert type((big * 2.0)._data) is _lazy.Pending   # large arrays fuse outside a profile


# ----- the plan's cache key -----------------------------------------------------------------
def test_the_kernel_name_depends_on_structure_and_dtypes_not_shapes_or_values(rng):
    def name(shape, dtype, c, fn=lambda t, c: (t * c).tanh() + t):
        x = gv.tensor(rng.standard_normal(shape).astype(dtype))
        with gv.profiler.profile():         # small CPU arrays record their DAG in a profile
            y = fn(x, c)
        return _plan.kernel_name(_plan.build([y._data]))
    a = name((3,), np.float64, 2.0)
    assert name((50, 4), np.float64, -7.5) == a
    assert name((3,), np.float32, 2.0) != a
    assert name((3,), np.float64, 2.0, lambda t, c: (t * c).tanh() * t) != a


# ----- values: fused equals unfused -----------------------------------------------------------
def _fusible_unary():
    return sorted(name for name, op in REGISTRY.items() if op.fuse is not None)


def _inputs_for(op, rng, shape):
    """Arguments of a fusible op: floats in (0.5, 2) (every op's domain), a bool condition for
    where, int64 class indices for the kernels that take them."""
    if op.fuse.in_params is not None:
        kinds = [p.split()[-2] for p in op.fuse.in_params.split(",")]
    else:
        kinds = ["T"] * {"where": 3, "zeros_like": 1}.get(op.name, op.impl.__code__.co_argcount - 1
                                                          if op.fuse.ufunc is None else
                                                          op.fuse.ufunc.nin)
    args = []
    for i, k in enumerate(kinds):
        if op.name == "where" and i == 0:
            args.append(gv.tensor(rng.random(shape) < 0.5))
        elif k == "int64":
            args.append(gv.tensor(rng.integers(0, 3, shape)))
        else:
            args.append(gv.tensor(rng.uniform(0.5, 2.0, shape)))
    return args


@pytest.mark.parametrize("name", _fusible_unary())
def test_each_fusible_op_in_a_dag_equals_unfused(name, rng, unfused):
    op = REGISTRY[name]
    args = _inputs_for(op, rng, (4, 5))

    def program():
        pre = [a if a.dtype is not gv.float64 else (a * 1.5).sin() + 1.25 for a in args]
        y = op(*pre)
        return (y * 0.5 + y).numpy() if y.dtype is gv.float64 else y.numpy()
    with gv.profiler.profile():             # the plan's evaluation (small arrays skip it outside)
        fused = program()
    with unfused:
        plain = program()
    np.testing.assert_array_equal(fused, plain)


def test_create_graph_results_equal_the_unfused_path(rng, unfused):
    x0 = rng.standard_normal(30)

    def run():
        x = gv.tensor(x0)
        return gv.autograd.functional.hessian(lambda t: _chain(t, 16).sum(), x).numpy()
    with gv.profiler.profile():             # the plan's evaluation (small arrays skip it outside)
        fused = run()
    with unfused:
        plain = run()
    np.testing.assert_array_equal(fused, plain)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fused_backward_values_equal_unfused(dtype, rng, unfused):
    x0 = rng.standard_normal((6, 7)).astype(dtype)
    v0 = rng.standard_normal((6, 7)).astype(dtype)

    def run():
        return [a.numpy() for a in gv.vjp(lambda t: _chain(t, 16), gv.tensor(x0),
                                           gv.tensor(v0))]
    with gv.profiler.profile():             # the plan's evaluation (small arrays skip it outside)
        fused = run()
    with unfused:
        plain = run()
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


# ----- memory, threads, the size cap ---------------------------------------------------------
def test_w1_vjp_at_4096_allocates_at_most_two_buffers_beyond_x(rng):
    n = 4096
    x = gv.tensor(rng.standard_normal((n, n), dtype=np.float32))
    v = gv.tensor(rng.standard_normal(n, dtype=np.float32))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        _, gx = gv.vjp(lambda t: t.exp().sum(dim=1), x, v)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak <= 2 * n * n * 4 + (1 << 20), peak / (n * n * 4)
    assert gx.shape == (n, n)


def test_a_pending_tensor_read_from_two_threads_is_computed_once(rng):
    x = gv.tensor(rng.standard_normal(100_000))
    y = (x.sin() * 3).exp()
    barrier = threading.Barrier(4)
    got = []

    def read():
        barrier.wait()
        got.append(y.numpy())
    with gv.profiler.profile() as prof:
        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert prof.launches == 1
    assert all(g is got[0] for g in got)


def test_the_size_cap_splits_a_long_chain(rng):
    x = gv.tensor(rng.standard_normal(10))
    y = x
    with gv.profiler.profile():        # small CPU arrays record their DAG in a profile
        for _ in range(3 * _lazy.MAX_DEPTH):
            y = (y * 0.5).sin()
    with gv.profiler.profile() as prof:
        y.numpy()
        z = y * 1.0
    assert prof.launches == 1          # the earlier segments ran when the cap was hit
    assert y._data is not None and len(_plan.build([z._data]).nodes) == 1
    want = x.numpy()
    for _ in range(3 * _lazy.MAX_DEPTH):
        want = np.sin(want * 0.5)
    np.testing.assert_array_equal(y.numpy(), want)


# ----- the switch and the logger ----------------------------------------------------------
def _run_python(code, **env):
    full = dict(os.environ, PYTHONPATH=os.getcwd(), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=120)


_W2_LAUNCHES = """
import numpy as np, gpuvjp as gv
x = gv.tensor(np.linspace(-1, 1, 100))
with gv.profiler.profile() as prof:
    gv.vjp(lambda t: (t.sin() * 2).tanh().sum(), x)
print(prof.launches)
"""


def test_gpuvjp_fusion_0_runs_one_kernel_per_op():
    on = _run_python(_W2_LAUNCHES)
    off = _run_python(_W2_LAUNCHES, GPUVJP_FUSION="0")
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert int(on.stdout) == 2 and int(off.stdout) >= 6


_FALLBACK = """
import gpuvjp as gv
x = gv.ones(3)
(x.pow(2.5) + 1).numpy()
"""


def test_the_logger_is_silent_by_default_and_logs_fallbacks_at_debug():
    quiet = _run_python(_FALLBACK)
    loud = _run_python(_FALLBACK, GPUVJP_LOG="debug")
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stderr == "" and quiet.stdout == ""
    assert "fallback: pow" in loud.stderr


@pytest.mark.parametrize("shape", [(200_000,), (300, 700)])
def test_blocked_cpu_evaluation_equals_unfused(shape, rng, unfused):
    """Plans over more than 2 * CHUNK elements run in blocks of rows; the values do not move."""
    assert np.prod(shape) > 2 * _plan.CHUNK
    x0 = rng.standard_normal(shape).astype(np.float32)
    b0 = rng.standard_normal(shape[-1:]).astype(np.float32)

    def run():
        x, b = gv.tensor(x0), gv.tensor(b0)
        out, (gx, gb) = gv.vjp(lambda x, b: (_chain(x, 16) * b).sum(dim=-1), (x, b),
                               gv.ones(shape[:-1], dtype=gv.float32))
        rows = ((x * b).sin() + 1).exp().sum(dim=-1)
        return [t.numpy() for t in (out, gx, gb, rows)]
    fused = run()
    with unfused:
        plain = run()
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_small_cpu_dags_run_without_a_plan_and_equal_the_plan(dtype, rng, monkeypatch):
    x = gv.tensor(rng.uniform(-1, 1, (3, 5)).astype(dtype))

    def run():
        t = _chain(x, 16)
        u = (t * x).tanh() + t                   # t is read twice: computed once
        s = (u * 2).sum(dim=1)                   # a DAG as the reduction's map expression
        return [s.numpy(), u.numpy()]

    with gv.profiler.profile() as prof:          # profiled: the plan path, its records
        planned = run()
    assert prof.launches == 2, prof.table()

    def no_plan(roots):
        raise AssertionError("a small unprofiled CPU DAG built a plan")
    monkeypatch.setattr(_plan, "build", no_plan)
    direct = run()
    for a, b in zip(direct, planned):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("workload", ["w1", "w2", "softmax"])
def test_the_profiler_reads_the_same_on_cuda_as_on_cpu(workload, rng):
    """CPU tests assert launch counts and bytes because the plan is the same on both devices:
    the records of one vjp on cuda equal those on the CPU, kernel for kernel."""
    x = rng.uniform(-1, 1, (64, 48)).astype(np.float32)
    funcs = {"w1": lambda t: t.exp().sum(dim=1), "w2": lambda t: _chain(t, 16).sum(),
             "softmax": lambda t: F.softmax(t, dim=1)}
    v = {"w1": np.ones(64, np.float32), "w2": None, "softmax": np.ones_like(x)}[workload]

    def records(device):
        t = gv.tensor(x, device=device)
        tv = None if v is None else gv.tensor(v, device=device)
        with gv.profiler.profile() as prof:
            gv.vjp(funcs[workload], t, tv)
        return [(k.name, k.ops, k.elements, k.bytes_read, k.bytes_written)
                for k in prof.kernels]

    cpu = records("cpu")
    assert cpu and records("cuda") == cpu
