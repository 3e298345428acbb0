"""Memory: after many calls no graph object survives, none is left in a reference cycle that only
the garbage collector could break (the loops run with gc disabled), RSS does not grow, and on the
GPU CuPy's pool returns to its baseline after each call and one exp_reducer vjp peaks under three
NxN buffers above its input.

CI runs 2,000 vjp calls; GPUVJP_LONG=1 runs 10,000 (and five times more of the others)."""

from __future__ import annotations

import contextlib
import gc
import os

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device
from gpuvjp.autograd._graph import Node

from ._common import LONG, functional

CALLS = 10_000 if LONG else 2_000
SCALE = 5 if LONG else 1


def exp_reducer(x):
    return x.exp().sum(dim=1)


def _scalar(x):
    return (x.exp() * x).sum()


class Boom(Exception):
    pass


def _raise_after_ops(x):
    y = x.exp() * 2                       # a graph exists when the error leaves func
    raise Boom(str(y.shape))


# name -> (member, call(fn, x, v), number of calls)
WORKLOADS = {
    "vjp": ("vjp", lambda f, x, v: f(exp_reducer, x, v), CALLS),
    "vjp-create-graph": ("vjp", lambda f, x, v: f(exp_reducer, x, v, create_graph=True), 200),
    "vjp-requires-grad-input": ("vjp", lambda f, x, v: f(exp_reducer, x.detach()
                                                         .requires_grad_(), v), 200),
    "vjp-func-raises": ("vjp", lambda f, x, v: f(_raise_after_ops, x, v), 200),
    "vjp-bad-v": ("vjp", lambda f, x, v: f(exp_reducer, x, gv.ones(7, device=x.device)), 200),
    "vjp-strict-fails": ("vjp", lambda f, x, v: f(lambda a: a.detach().sum(dim=1), x, v,
                                                  strict=True), 200),
    "jvp": ("jvp", lambda f, x, v: f(exp_reducer, x, x), 150),
    "jacobian": ("jacobian", lambda f, x, v: f(exp_reducer, x), 30),
    "jacobian-vectorize": ("jacobian", lambda f, x, v: f(exp_reducer, x, vectorize=True), 30),
    "hessian": ("hessian", lambda f, x, v: f(_scalar, x), 10),
    "vhp": ("vhp", lambda f, x, v: f(_scalar, x, x), 150),
    "hvp": ("hvp", lambda f, x, v: f(_scalar, x, x), 150),
}


def _ours(obj):
    module = type(obj).__dict__.get("__module__", "")      # some metaclasses hold a descriptor
    return isinstance(module, str) and module.startswith("gpuvjp")


def _count():
    """(Node instances, gpuvjp objects of any type) that the collector tracks."""
    objs = gc.get_objects()
    return (sum(1 for o in objs if type(o) is Node), sum(1 for o in objs if _ours(o)))


@contextlib.contextmanager
def gc_off():
    """gc disabled, and afterwards every object a collection would free kept for inspection."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _cyclic_garbage():
    """gpuvjp objects that only the cycle collector could free (collected with SAVEALL)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [o for o in gc.garbage if _ours(o)]
        kinds = sorted({type(o).__qualname__ for o in found})
        return len(found), kinds
    finally:
        gc.garbage.clear()
        gc.set_debug(0)


@pytest.mark.parametrize("workload", WORKLOADS)
def test_no_graph_objects_survive(workload, device):
    member, run, n = WORKLOADS[workload]
    fn = functional(member)
    x = gv.tensor(np.random.default_rng(0).uniform(0, 1, (4, 4)), device=device)
    v = gv.ones(4, dtype=gv.float64, device=device)
    for _ in range(3):                                    # warm caches outside the count
        with contextlib.suppress(Boom, RuntimeError):
            run(fn, x, v)
    with gc_off():
        nodes0, ours0 = _count()
        for _ in range(n * SCALE if workload != "vjp" else n):
            with contextlib.suppress(Boom, RuntimeError):
                run(fn, x, v)
        nodes1, ours1 = _count()
        cyclic, kinds = _cyclic_garbage()
    assert nodes1 == nodes0, f"{nodes1 - nodes0} Nodes survive {n} calls"
    assert ours1 == ours0, f"{ours1 - ours0} gpuvjp objects survive {n} calls"
    assert cyclic == 0, f"{cyclic} gpuvjp objects in reference cycles: {kinds}"


def test_backward_and_grad_leave_no_cycles(device):
    """Tensor.backward (the .grad kept) and autograd.grad with retain_graph, then dropped."""
    a = np.random.default_rng(1).uniform(0, 1, (3, 3))
    with gc_off():
        nodes0, _ = _count()
        for _ in range(150 * SCALE):
            x = gv.tensor(a, device=device, requires_grad=True)
            y = (x.exp() * x).sum()
            (g,) = gv.autograd.grad(y, x, retain_graph=True, create_graph=True)
            g.sum().backward(retain_graph=True)
            y.backward()
            del x, y, g
        nodes1, _ = _count()
        cyclic, kinds = _cyclic_garbage()
    assert nodes1 == nodes0
    assert cyclic == 0, f"{cyclic} gpuvjp objects in reference cycles: {kinds}"


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_rss_does_not_grow():
    """2,000 vjps of a 64x64 exp_reducer (32 KiB per array): a buffer leaked per call would add
    at least 64 MiB; the bound allows allocator noise only."""
    x = gv.tensor(np.random.default_rng(2).uniform(0, 1, (64, 64)))
    v = gv.ones(64, dtype=gv.float64)
    for _ in range(200):
        gv.vjp(exp_reducer, x, v)
    gc.collect()
    before = _rss()
    with gc_off():
        for _ in range(CALLS):
            gv.vjp(exp_reducer, x, v)
    grown = _rss() - before
    assert grown < 8 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over {CALLS} vjp calls"


# ----- GPU: CuPy's memory pool ------------------------------------------------------------------
def _pool():
    return _device.cupy_module().get_default_memory_pool()


def _rounded(nbytes):
    return -(-nbytes // 512) * 512              # CuPy's pool hands out 512-byte units


@pytest.mark.gpu
def test_pool_back_to_baseline_after_each_call():
    cupy = _device.cupy_module()
    n = 256
    x = gv.tensor(np.random.default_rng(3).uniform(0, 1, (n, n)), dtype=gv.float32,
                  device="cuda")
    v = gv.ones(n, device="cuda")
    gv.vjp(exp_reducer, x, v)                   # compile the kernels first
    cupy.cuda.Device().synchronize()
    pool = _pool()
    base = pool.used_bytes()
    for i in range(200 * SCALE):
        out, g = gv.vjp(exp_reducer, x, v)
        held = pool.used_bytes() - base
        assert held <= _rounded(out.numel() * 4) + _rounded(g.numel() * 4), (
            f"call {i}: {held} bytes held beyond the results")
        del out, g
        assert pool.used_bytes() == base, f"call {i}: pool at {pool.used_bytes() - base:+d}"


@pytest.mark.gpu
@pytest.mark.parametrize("workload", ["vjp-create-graph", "jvp", "vhp", "hvp", "jacobian",
                                      "vjp-func-raises", "vjp-bad-v"])
def test_pool_back_to_baseline_family(workload):
    member, run, _ = WORKLOADS[workload]
    fn = functional(member)
    x = gv.tensor(np.random.default_rng(4).uniform(0, 1, (4, 4)), device="cuda")
    v = gv.ones(4, dtype=gv.float64, device="cuda")
    with contextlib.suppress(Boom, RuntimeError):
        run(fn, x, v)
    pool = _pool()
    base = pool.used_bytes()
    for i in range(20):
        with contextlib.suppress(Boom, RuntimeError):
            run(fn, x, v)
        assert pool.used_bytes() == base, f"call {i}: pool at {pool.used_bytes() - base:+d}"


@pytest.mark.gpu
@pytest.mark.parametrize("n", [1024, 4096])
def test_exp_reducer_peak_under_three_buffers(n):
    """The seed exp_reducer: during one vjp at most 3 NxN float32 buffers above the input."""
    cupy = _device.cupy_module()

    class Peak(cupy.cuda.MemoryHook):
        name = "gpuvjp_reliability_peak"

        def __init__(self):
            self.now = self.peak = 0

        def malloc_postprocess(self, **kw):
            self.now += kw["mem_size"]
            self.peak = max(self.peak, self.now)

        def free_postprocess(self, **kw):
            self.now -= kw["mem_size"]

    x = gv.tensor(np.random.default_rng(5).uniform(0, 1, (n, n)), dtype=gv.float32,
                  device="cuda")
    v = gv.ones(n, device="cuda")
    gv.vjp(exp_reducer, x, v)                   # compile first: the measured call allocates only
    cupy.cuda.Device().synchronize()
    hook = Peak()
    with hook:
        out, g = gv.vjp(exp_reducer, x, v)
        cupy.cuda.Device().synchronize()
    buf = n * n * 4
    assert hook.peak < 3 * buf, (
        f"peak {hook.peak / buf:.2f} NxN buffers above the input (N={n})")
    np.testing.assert_allclose(g.numpy(), np.exp(x.numpy()), rtol=1e-5)
