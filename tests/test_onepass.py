"""The vjp in one pass (gpuvjp/_onepass.py, GPUVJP_ROW_KERNELS=1): a sum or mean over trailing
dims and the backward that does not read it run as ONE kernel. On the CPU: launch counts and
bytes through gv.profiler, values equal bit for bit to the two-kernel path, the fallbacks (a
backward that reads the reduction, a read of the output, the map itself asked for, other dims).
The generated RawKernels of ops/_rows.py (the one pass, a reduction alone with its pending map,
a fused plan with row operands as a 2-D launch): their exact sources compile with NVRTC for
every variant and leaf kind, the plan's math built by the host compiler matches the CPU one pass
in several merge orders; (gpu) the emulated CuPy runs their host side and twins against the
CPU, with the same profiler records, and on a GPU each kernel runs against its twin."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _lazy, _onepass, _plan
from gpuvjp.ops import _kernels, _rows
from tests.ops.test_kernels import _cupy_options, _has_fp16_header, _nvrtc_compile, \
    nvrtc  # noqa: F401  (nvrtc: a fixture)
from tests.test_fusion import _chain

pytestmark = pytest.mark.skipif(not _lazy.ENABLED, reason="GPUVJP_FUSION=0: fusion is off")


@pytest.fixture(autouse=True)
def small_dags(monkeypatch):
    """Small CPU arrays record their DAG here as everywhere else: outside a profile apply runs
    an op on small CPU arrays at once (_lazy.EAGER_SIZE), and these tests build small plans."""
    monkeypatch.setattr(_lazy, "EAGER_SIZE", 0)


@pytest.fixture
def switch(monkeypatch):
    """run(on) sets GPUVJP_ROW_KERNELS for the calls that follow."""
    def run(on):
        monkeypatch.setenv("GPUVJP_ROW_KERNELS", "1" if on else "0")
    return run


def _vjp(f, x, v, device="cpu"):
    t = gv.tensor(x, device=device)
    tv = None if v is None else gv.tensor(v, device=device)
    with gv.profiler.profile() as prof:
        out, gx = gv.vjp(f, t, tv)
    return out.numpy(), gx.numpy(), prof


def _both(f, x, v, switch, device="cpu"):
    switch(False)
    off = _vjp(f, x, v, device)
    switch(True)
    on = _vjp(f, x, v, device)
    return off, on


def _equal(on, off):
    for a, b in zip(on[:2], off[:2]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


# ----- the CPU: one kernel, the same values ---------------------------------------------------
@pytest.mark.parametrize("n", [64, 300])      # 300: the plan runs in blocks of rows
def test_w1_vjp_is_one_kernel(n, switch, rng):
    x = rng.standard_normal((n, n))
    v = rng.standard_normal(n)
    off, on = _both(lambda t: t.exp().sum(dim=1), x, v, switch)
    prof = on[2]
    assert prof.launches == 1, prof.table()
    k = prof.kernels[0]
    assert k.name.startswith("gv_onepass_") and k.ops[-1] == "sum" and k.elements == n * n
    assert k.bytes_read == n * n * 8 + n * 8, prof.table()          # x once, v once
    assert k.bytes_written == n * n * 8 + n * 8, prof.table()       # gx and out
    assert off[2].launches <= 2, off[2].table()
    _equal(on, off)
    np.testing.assert_allclose(on[1], np.exp(x) * v[:, None], rtol=1e-14)


W = 300
PROGRAMS = {
    # name: (f, x shape, kernels with the switch on)
    "w1-keepdim": (lambda t: t.exp().sum(dim=1, keepdim=True), (W, W), 1),
    "trailing-two": (lambda t: (t.sin() * t).sum(dim=(1, 2)), (40, 60, 50), 1),
    "negative-dims": (lambda t: t.tanh().sum(dim=(-1, -2)), (7, 6, 5), 1),
    "one-row": (lambda t: (t.sin() + 1).exp().sum(), (5000,), 1),
    "w2-chain16": (lambda t: _chain(t, 16).sum(), (100000,), 1),
    "bias": (lambda t: (t * gv.tensor(np.linspace(0, 1, W).reshape(1, W))).tanh().sum(1),
             (W, W), 1),
    "mean": (lambda t: t.exp().mean(dim=1), (W, W), 1),
    "mean-trailing": (lambda t: t.sin().mean(dim=(1, 2)), (5, 4, 7), 1),
}


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_one_pass_values_equal_the_two_kernel_path(name, dtype, switch, rng):
    f, shape, kernels = PROGRAMS[name]
    x = rng.uniform(-1, 1, shape).astype(dtype)
    out_shape = f(gv.tensor(x)).shape
    v = None if not out_shape else rng.uniform(-1, 1, out_shape).astype(dtype)
    if name == "bias" and dtype != "float64":
        pytest.skip("the float64 bias promotes the program")
    off, on = _both(f, x, v, switch)
    assert on[2].launches == kernels, on[2].table()
    assert on[2].launches < off[2].launches, (on[2].table(), off[2].table())
    assert any(k.name.startswith("gv_onepass_") for k in on[2].kernels)
    _equal(on, off)


FALLBACKS = {
    # the backward reads the reduction: it is computed alone, where the product needs it
    "reads-the-sum": lambda t: (lambda s: s * s)(t.exp().sum(dim=1)),
    "sum-of-the-sum": lambda t: t.exp().sum(dim=1).sum(),
    "not-trailing": lambda t: t.exp().sum(dim=0),
    "map-returned-too": lambda t: (lambda e: (e, e.sum(dim=1)))(t.exp()),
    "logsumexp": lambda t: gv.logsumexp(t, 1),
    "softmax": lambda t: gv.nn.functional.softmax(t, dim=1),
}


@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_where_one_pass_does_not_apply_nothing_changes(name, switch, rng):
    f = FALLBACKS[name]
    x = rng.uniform(-1, 1, (50, 40))
    outs = f(gv.tensor(x))
    outs = outs if isinstance(outs, tuple) else (outs,)
    v = tuple(rng.uniform(-1, 1, o.shape) for o in outs)
    v = v if len(v) > 1 else v[0]

    def run(on):
        switch(on)
        t = gv.tensor(x)
        tv = tuple(map(gv.tensor, v)) if isinstance(v, tuple) else gv.tensor(v)
        with gv.profiler.profile() as prof:
            out, gx = gv.vjp(f, t, tv)
        out = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in out] + [gx.numpy()], prof

    off, p_off = run(False)
    on, p_on = run(True)
    assert p_on.launches == p_off.launches, (p_on.table(), p_off.table())
    assert not any(k.name.startswith("gv_onepass_") for k in p_on.kernels)
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)


def test_a_deferred_sum_read_or_used_is_computed_alone(switch, rng):
    switch(True)
    x = gv.tensor(rng.uniform(-1, 1, (30, 20)))
    s = x.exp().sum(dim=1)
    assert type(s._data) is _lazy.Pending and s._data.depth == _onepass.DEPTH
    assert s.shape == (30,) and s.dtype == gv.float64 and s.numel() == 30
    with gv.profiler.profile() as prof:
        got = s.numpy()
    assert prof.launches == 1 and prof.kernels[0].name.endswith("_sum"), prof.table()
    np.testing.assert_array_equal(got, np.exp(x.numpy()).sum(1))
    u = x.sin().sum(dim=1)
    w = (u * 2 + x.cos()[:, 0]).numpy()          # an elementwise op computes u first
    np.testing.assert_array_equal(w, np.sin(x.numpy()).sum(1) * 2 + np.cos(x.numpy()[:, 0]))


def test_grad_runs_one_pass_too(switch, rng):
    switch(True)
    x = gv.tensor(rng.uniform(-1, 1, (64, 32)), requires_grad=True)
    v = gv.tensor(rng.uniform(-1, 1, 64))
    with gv.profiler.profile() as prof:
        y = x.exp().sum(dim=1)
        (gx,) = gv.autograd.grad(y, x, v)
    assert prof.launches == 1, prof.table()
    np.testing.assert_allclose(gx.numpy(), np.exp(x.numpy()) * v.numpy()[:, None], rtol=1e-14)
    np.testing.assert_allclose(y.numpy(), np.exp(x.numpy()).sum(1), rtol=1e-14)


def test_switch_off_defers_nothing(switch, rng):
    switch(False)
    x = gv.tensor(rng.uniform(-1, 1, (30, 20)), requires_grad=True)
    s = x.exp().sum(dim=1)
    assert type(s._data) is not _lazy.Pending
    assert x.exp().mean(dim=1)._node.op.name == "div"          # sum(x) / n
    switch(True)
    assert x.exp().mean(dim=1)._node.op.name == "mean"         # deferred as one reduction


# ----- the generated RawKernel ------------------------------------------------------------------
def _one_pass_plan(shape, dtype, leaves, kind="sum"):
    """The one-pass plan of a map over `shape` with leaves of the given kinds, as `_onepass`
    builds it, and its (kernel name, kinds, launch)."""
    rng = np.random.default_rng(3)
    x = gv.tensor(rng.uniform(-1, 1, shape).astype(dtype))
    m = x.exp()
    g = m * 2.5                                            # a scalar leaf
    if "row" in leaves:
        row = rng.uniform(-1, 1, shape[:-1] + (1,)).astype(dtype)
        g = g * gv.tensor(row)
    if "col" in leaves:
        g = g + gv.tensor(rng.uniform(-1, 1, (1,) * (len(shape) - 1) + shape[-1:]).astype(dtype))
    plan = _plan.build([m._data, g._data])
    red = _onepass.RowReduce(gv.ops.REGISTRY["sum"], {"dim": (len(shape) - 1,),
                                                       "keepdim": False}, 1)
    name = _onepass.kernel_name(plan, red).replace("_sum", f"_{kind}")
    return plan, _rows.onepass_launch(plan, kind, 1, name)


VARIANTS = {"warp": (40, 300), "block": (6, 3000), "split": (3, 70000)}


@pytest.mark.parametrize("kind,dtype", [("sum", "float32"), ("mean", "float64")])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_pass_kernel_compiles_with_nvrtc(variant, dtype, kind, nvrtc):
    plan, got = _one_pass_plan(VARIANTS[variant], dtype, ("row", "col"), kind)
    kname, kinds, launch = got
    assert launch.variant == variant and {k[0] for k in kinds} == {"full", "row", "col",
                                                                    "scalar"}
    threads = launch.block[0] * launch.block[1] * launch.block[2]
    source = _rows.onepass_source(kname, plan, kind, kinds, launch.variant, launch.block_x,
                                  threads)
    options = _cupy_options(_rows.OPTIONS)
    if not _has_fp16_header(options):
        pytest.skip("cuda_fp16.h (kernels/rows.cuh) is on none of CuPy's include paths")
    ok, log = _nvrtc_compile(nvrtc, source, f"{kname}.cu", options)
    assert ok, f"NVRTC rejects {kname} ({dtype}):\n{log}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reduction_alone_kernel_compiles_with_nvrtc(variant, nvrtc):
    """A reduction no backward joins: the plan's function returns the map value."""
    x = gv.tensor(np.ones(VARIANTS[variant], np.float32))
    plan = _plan.build([((x * 0.5).exp() + x.sin())._data])
    kname, kinds, launch = _rows.onepass_launch(plan, "mean", 1, "gv_fuse_alone_mean")
    assert launch.variant == variant and len(plan.outputs) == 1
    source = _rows.onepass_source(kname, plan, "mean", kinds, launch.variant, launch.block_x,
                                  launch.block[0] * launch.block[1])
    assert "_m = gv::fz" in source
    options = _cupy_options(_rows.OPTIONS)
    if not _has_fp16_header(options):
        pytest.skip("cuda_fp16.h (kernels/rows.cuh) is on none of CuPy's include paths")
    ok, log = _nvrtc_compile(nvrtc, source, f"{kname}.cu", options)
    assert ok, f"NVRTC rejects {kname}:\n{log}"


def test_one_pass_nvrtc_check_fails_on_a_broken_kernel(nvrtc):
    plan, (kname, kinds, launch) = _one_pass_plan((6, 3000), "float32", ("row",))
    source = _rows.onepass_source(kname, plan, "sum", kinds, launch.variant, launch.block_x,
                                  launch.block[0])
    broken = source.replace("Op::one(_m)", "Op::one_renamed(_m)")
    assert broken != source
    ok, log = _nvrtc_compile(nvrtc, broken, f"{kname}.cu", _cupy_options(_rows.OPTIONS))
    assert not ok and "one_renamed" in log, log


def test_one_pass_declines_float16_and_leaves_it_cannot_index():
    assert _one_pass_plan((6, 3000), "float16", ("row",))[1] is None
    x = gv.tensor(np.ones((30, 20)))
    t = gv.tensor(np.ones((20, 30))).T                       # a transposed view: not rows
    plan = _plan.build([(x.exp() * t)._data, (x * 2)._data])
    assert _rows.onepass_launch(plan, "sum", 1, "gv_onepass_t_sum") is None
    assert _rows.onepass_launch(plan, "amax", 1, "gv_onepass_t_amax") is None


HOST_PLANS = {
    "w1": lambda t, r: (t.exp(), t.exp() * r),
    "w2-chain16": lambda t, r: (_chain(t, 16), (_chain(t, 16) * r).tanh() + t),
    "mean-rule": lambda t, r: (t.sin() * t, (t.cos() * t + t.sin()) * (r / 7.0)),
}


@pytest.mark.parametrize("which,dtype", [("w1", "float32"), ("w2-chain16", "float64"),
                                          ("mean-rule", "float32")])
def test_one_pass_math_matches_the_numpy_plan_in_several_merge_orders(which, dtype,
                                                                       tmp_path_factory):
    """The one-pass plan's device function, built by the host compiler: its map values merged
    per row in several orders (sequential, reversed, pairwise, by 32 strided workers) and its
    written outputs against `_onepass.evaluate`."""
    from tests import _hostcc
    from tests.ops.test_fused_kernels import TOL, _host_wrapper
    cxx = _hostcc.find_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler found ($CXX, g++, c++ or clang++)")
    rng = np.random.default_rng(9)
    shape = (6, 77)
    t = gv.tensor(rng.uniform(-1, 1, shape).astype(dtype))
    r = gv.tensor(rng.uniform(-1, 1, (6, 1)).astype(dtype))
    m, g = HOST_PLANS[which](t, r)
    plan = _plan.build([m._data, g._data])
    red = _onepass.RowReduce(gv.ops.REGISTRY["sum"], {"dim": (1,), "keepdim": False}, 1)
    want_sum, want_outs = _onepass.evaluate(plan, red)
    name = _plan.kernel_name(plan)
    preamble, fz = _kernels.plan_preamble(plan, name)
    lib = _hostcc.load(preamble + _host_wrapper(plan, fz),
                       tmp_path_factory.getbasetemp() / "hostcc", cxx)
    leaves = [np.ascontiguousarray(np.broadcast_to(np.asarray(a, d), shape)) if not s
              else np.asarray([a], d) for a, d, s in
              zip(plan.leaves, plan.leaf_dtypes, plan.leaf_scalar)]
    outs = [np.empty(shape, plan.nodes[o][2]) for o in plan.outputs]
    lib.run.argtypes = [ctypes.c_void_p] * (len(leaves) + len(outs)) + [ctypes.c_long]
    lib.run.restype = None
    lib.run(*[a.ctypes.data for a in leaves + outs], int(np.prod(shape)))
    for got, want in zip(outs[1:], want_outs):
        np.testing.assert_allclose(got, want, **TOL[dtype])
    vals = outs[0]
    strided = np.zeros((shape[0], 32), dtype)
    for j0 in range(0, shape[1], 32):
        part = vals[:, j0:j0 + 32]
        strided[:, :part.shape[1]] += part
    orders = {"sequential": np.add.accumulate(vals, axis=1)[:, -1],
              "reversed": np.add.accumulate(vals[:, ::-1], axis=1)[:, -1],
              "pairwise": vals.sum(axis=1), "32 workers": strided.sum(axis=1)}
    for order, got in orders.items():
        np.testing.assert_allclose(got, want_sum, err_msg=order, **TOL[dtype])


# ----- cuda: the emulated CuPy runs the host side and the twins; a GPU runs the kernels ---------
def _unaligned(t):
    """A constant on t's device, read through a view one element into each wider row."""
    wide = np.linspace(-0.5, 0.5, 6 * 3002).reshape(6, 3002).astype(np.float32)
    return gv.tensor(wide, device=t.device)[:, 1:]


CUDA_CASES = {
    # name: (f, x shape, dtype, launch variant or None: declines, 2 kernels)
    "warp": (lambda t: t.exp().sum(dim=1), (40, 300), "float32", "warp"),
    "odd": (lambda t: t.exp().sum(dim=1), (7, 33), "float64", "warp"),
    "one-element-rows": (lambda t: (t * 3).exp().sum(dim=1), (9, 1), "float32", "warp"),
    "block": (lambda t: (t.sin() * t).sum(dim=1), (6, 3000), "float32", "block"),
    "split": (lambda t: (t.tanh() * 0.5).sum(dim=1), (3, 70000), "float32", "split"),
    "one-row": (lambda t: _chain(t, 16).sum(), (100000,), "float32", "split"),
    "trailing-two": (lambda t: t.cos().sum(dim=(1, 2)), (5, 40, 30), "float64", "block"),
    "mean": (lambda t: t.exp().mean(dim=1), (33, 1500), "float32", "block"),
    "nan-inf": (lambda t: (t * 400).exp().sum(dim=1), (8, 50), "float32", "warp"),
    "unaligned-view": (lambda t: (t * _unaligned(t)).exp().sum(dim=1), (6, 3001), "float32",
                       "block"),
    "float16": (lambda t: t.exp().sum(dim=1), (8, 50), "float16", None),
    "empty-rows": (lambda t: t.exp().sum(dim=1), (6, 0), "float32", None),
    "transposed": (lambda t: t.T.exp().sum(dim=1), (50, 8), "float32", None),
}


@pytest.fixture
def launches(monkeypatch):
    """The variants of the one-pass launches made while it is active."""
    seen = []
    real = _rows.onepass_launch

    def spy(*args, **kwargs):
        got = real(*args, **kwargs)
        if got is not None:
            seen.append(got[2].variant)
        return got
    monkeypatch.setattr(_rows, "onepass_launch", spy)
    return seen


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(CUDA_CASES))
def test_one_pass_on_cuda_matches_cpu(case, switch, launches, rng):
    f, shape, dtype, variant = CUDA_CASES[case]
    switch(True)
    x = rng.uniform(-2, 2, shape).astype(dtype)
    out_shape = f(gv.tensor(x)).shape
    v = None if not out_shape else \
        np.linspace(-1, 1, int(np.prod(out_shape))).reshape(out_shape).astype(dtype)
    cpu = _vjp(f, x, v)
    for _ in range(2):                        # twice: the split rows' counts are reset
        cuda = _vjp(f, x, v, "cuda")
    kernels = [k.name for k in cuda[2].kernels]
    if variant is None:
        assert not launches and not any(k.startswith("gv_onepass") for k in kernels), kernels
    else:
        # one kernel for the reduction and the backward (slicing a constant may record one)
        fused = [k for k in kernels if k.startswith(("gv_onepass", "gv_fuse"))]
        assert len(fused) == 1 and fused[0].startswith("gv_onepass_"), kernels
        assert launches and set(launches) == {variant}
    tol = {"float16": 1e-2, "float32": 1e-4, "float64": 1e-11}[dtype]
    for got, want in zip(cuda[:2], cpu[:2]):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)


def _host(cupy, a):
    """A host copy of device array `a` with its strides (a stride-0 view stays one): the bytes
    the view spans, copied as they are."""
    if a.flags.c_contiguous:
        return a.get()
    lo = sum(min(0, (s - 1) * st) for s, st in zip(a.shape, a.strides))
    hi = sum(max(0, (s - 1) * st) for s, st in zip(a.shape, a.strides)) + a.itemsize
    raw = cupy.ndarray((hi - lo,), np.uint8, memptr=a.data + lo).get()
    base = raw.view(a.dtype)[-lo // a.itemsize:]
    return np.lib.stride_tricks.as_strided(base, a.shape, a.strides)


@pytest.mark.gpu
@pytest.mark.gpu_hardware                  # the kernel against its twin
@pytest.mark.parametrize("case", sorted(c for c in CUDA_CASES if CUDA_CASES[c][3]))
def test_one_pass_kernel_on_cuda_matches_twin(case, switch, monkeypatch, rng):
    f, shape, dtype, _ = CUDA_CASES[case]
    switch(True)
    x = gv.tensor(rng.uniform(-2, 2, shape).astype(dtype), device="cuda")
    out_shape = f(x).shape
    v = None if not out_shape else gv.tensor(rng.uniform(-1, 1, out_shape).astype(dtype),
                                             device="cuda")
    _against_twins(monkeypatch, lambda: gv.vjp(f, x, v))


def _against_twins(monkeypatch, run):
    """Run `run` with every launch of a generated RawKernel of `_rows` (one pass, a reduction
    alone, a plan's row broadcast) captured, then each launch's twin on the host copies of its
    arguments: every device array the kernel wrote equals the twin's."""
    import cupy

    calls = []
    real = _kernels._launch

    def spy(kern, family, fn, *args, **kwargs):
        if f"gv_{fn}" not in {k[0] for k in _rows._ONEPASS}:
            return real(kern, family, fn, *args, **kwargs)
        grid, block, kargs = args
        host = tuple(_host(cupy, a) if isinstance(a, cupy.ndarray) else a for a in kargs)
        out = real(kern, family, fn, *args, **kwargs)
        calls.append((fn, grid, block, kargs, host))
        return out
    monkeypatch.setattr(_kernels, "_launch", spy)
    run()
    assert calls
    for fn, grid, block, dev_args, host in calls:      # host: the arguments before the launch
        _kernels.TWINS[f"gv_{fn}"](grid, block, host)
        for d, h in zip(dev_args, host):
            if isinstance(d, cupy.ndarray) and d.dtype != np.uint32:
                np.testing.assert_allclose(d.get(), h, rtol=1e-5, atol=1e-6, equal_nan=True,
                                           err_msg=f"{fn} against its twin")


@pytest.mark.gpu
@pytest.mark.gpu_hardware                  # the kernels against their twins
@pytest.mark.parametrize("case", ["logsumexp", "softmax"])
def test_plan_rowcast_and_reduction_alone_on_cuda_match_twins(case, switch, monkeypatch, rng):
    f = {"logsumexp": lambda t: gv.logsumexp(t, 1),
         "softmax": lambda t: gv.nn.functional.softmax(t, dim=1)}[case]
    switch(True)
    x = gv.tensor(rng.uniform(-2, 2, (33, 1500)).astype(np.float32), device="cuda")
    v = gv.tensor(rng.uniform(-1, 1, f(x).shape).astype(np.float32), device="cuda")
    _against_twins(monkeypatch, lambda: gv.vjp(f, x, v))


@pytest.mark.parametrize("name", ["sum", "mean"])
def test_higher_order_and_forward_mode_are_unchanged(name, switch, rng):
    """The deferred reduction and the mean op under the switch differentiate as sum(x) / n."""
    x = gv.tensor(rng.uniform(-1, 1, (6, 5)))
    u = gv.tensor(rng.uniform(-1, 1, (6, 5)))
    f = (lambda t: t.exp().sum(dim=1)) if name == "sum" else (lambda t: t.exp().mean(dim=1))
    g = lambda t: (f(t) * f(t)).sum()                           # noqa: E731
    got = {}
    for on in (False, True):
        switch(on)
        hvp = gv.autograd.functional.hvp(g, x, u)[1].numpy()
        jvp = gv.autograd.functional.jvp(f, x, u)[1].numpy()
        hess = gv.autograd.functional.hessian(lambda t: f(t).sum(), x).numpy()
        got[on] = (hvp, jvp, hess)
    for a, b in zip(got[True], got[False]):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


FORWARD = {   # a reduction of a pending DAG that no backward joins: the row kernel of its map
    "sum-warp": (lambda t: (t.sin() * t).sum(dim=1), (40, 300), "warp"),
    "sum-split": (lambda t: t.exp().sum(dim=1), (3, 70000), "split"),
    "mean-block": (lambda t: (t * 0.5).tanh().mean(dim=(1, 2)), (6, 40, 50), "block"),
    "mean-one-row": (lambda t: t.cos().mean(), (5000,), "block"),
}


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(FORWARD))
def test_a_reduction_alone_runs_the_row_kernel_of_its_map(case, switch, launches, rng):
    """Read without a backward, a deferred sum or mean runs as the row kernel with its map on
    cuda; the profiler's records are the CPU's, kernel for kernel."""
    f, shape, variant = FORWARD[case]
    switch(True)
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    got = {}
    for dev in ("cpu", "cuda"):
        with gv.profiler.profile() as prof:
            out = f(gv.tensor(x, device=dev)).numpy()
        got[dev] = out, [(k.name, k.ops, k.elements, k.bytes_read, k.bytes_written)
                         for k in prof.kernels]
    assert set(launches) == {variant}
    assert got["cuda"][1] == got["cpu"][1] and len(got["cpu"][1]) == 1, got
    np.testing.assert_allclose(got["cuda"][0], got["cpu"][0], rtol=1e-5, atol=1e-6)
    switch(False)
    np.testing.assert_array_equal(got["cpu"][0], f(gv.tensor(x)).numpy())


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["warp", "split", "mean"])
def test_the_profiler_reads_the_same_on_cuda_as_on_cpu_in_one_pass(case, switch, rng):
    f, shape, dtype, _ = CUDA_CASES[case]
    switch(True)
    x = rng.uniform(-1, 1, shape).astype(dtype)
    v = np.ones(shape[0], dtype)
    records = {}
    for dev in ("cpu", "cuda"):
        prof = _vjp(f, x, v, dev)[2]
        records[dev] = [(k.name, k.ops, k.elements, k.bytes_read, k.bytes_written)
                        for k in prof.kernels]
    assert len(records["cpu"]) == 1 and records["cuda"] == records["cpu"]


# ----- fused plans with row operands as the row broadcast's 2-D launch --------------------------
def _rowcast_plan(dtype, shape=(40, 300)):
    """A backward-like plan: a row operand (g[:, None]), a row statistic (lse[:, None]), a full
    operand, a column operand, a scalar, a bool, two outputs."""
    rng = np.random.default_rng(4)
    x = gv.tensor(rng.uniform(-1, 1, shape).astype(dtype))
    g = gv.tensor(rng.uniform(-1, 1, shape[:-1] + (1,)).astype(dtype))
    lse = gv.tensor(rng.uniform(-1, 1, shape[:-1] + (1,)).astype(dtype))
    col = gv.tensor(rng.uniform(-1, 1, (1, shape[-1])).astype(dtype))
    a = g * (x - lse).exp() + col * 0.5
    b = gv.where(x > 0, a, x * g)
    return _plan.build([a._data, b._data])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plan_rowcast_kernel_compiles_with_nvrtc(dtype, nvrtc):
    plan = _rowcast_plan(dtype)
    q, kinds = _rows.plan_rowcast_kinds(plan)
    assert q == 1 and {k[0] for k in kinds} == {"full", "row", "col", "scalar"}
    kname = _plan.kernel_name(plan) + "_rowcast_x"
    ok, log = _nvrtc_compile(nvrtc, _rows.plan_rowcast_source(kname, plan, kinds),
                             f"{kname}.cu", _cupy_options(_rows.OPTIONS))
    assert ok, f"NVRTC rejects {kname} ({dtype}):\n{log}"


def test_plan_rowcast_declines_float16_and_plans_without_row_operands():
    assert _rows.plan_rowcast_kinds(_rowcast_plan("float16")) is None
    x = gv.tensor(np.ones((4, 5)))
    assert _rows.plan_rowcast_kinds(_plan.build([(x.exp() * x)._data])) is None
    t = gv.tensor(np.ones((5, 4))).T
    assert _rows.plan_rowcast_kinds(_plan.build([(x * t + x[:, :1])._data])) is None


ROWCAST_VJPS = {
    "logsumexp": (lambda t: gv.logsumexp(t, 1), (40, 300)),
    "softmax": (lambda t: gv.nn.functional.softmax(t, dim=1), (33, 1500)),
    "log_softmax": (lambda t: gv.nn.functional.log_softmax(t, dim=-1), (5, 7)),
    "trailing": (lambda t: gv.logsumexp(t, (1, 2)), (6, 5, 4)),
}


@pytest.fixture
def rowcasts(monkeypatch):
    """The names of the plans' row-broadcast kernels launched while it is active."""
    seen = []
    real = _rows.run_plan

    def spy(fplan, name, dev):
        outs = real(fplan, name, dev)
        if outs is not None:
            seen.append(name)
        return outs
    monkeypatch.setattr(_rows, "run_plan", spy)
    return seen


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(ROWCAST_VJPS))
def test_plans_with_row_operands_on_cuda_match_cpu(case, switch, rowcasts, rng):
    """The backward of a row reduction read through its row operands: the 2-D launch runs, the
    values are the CPU's, and the profiler's records too."""
    f, shape = ROWCAST_VJPS[case]
    switch(True)
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    out_shape = f(gv.tensor(x)).shape
    v = np.linspace(-1, 1, int(np.prod(out_shape))).reshape(out_shape).astype(np.float32)
    cpu, cuda = _vjp(f, x, v), _vjp(f, x, v, "cuda")
    assert rowcasts
    rec = lambda p: [(k.name, k.ops, k.bytes_read, k.bytes_written) for k in p.kernels]  # noqa
    assert rec(cuda[2]) == rec(cpu[2])
    for got, want in zip(cuda[:2], cpu[:2]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
