"""The row-reduction and row-broadcast RawKernels of kernels/rows.cuh (gpuvjp/ops/_rows.py, behind
GPUVJP_ROW_KERNELS=1): every variant's exact source compiles with NVRTC for every dtype; the
kernels' gv:: math, built by the host compiler, matches the NumPy twins in several merge orders;
the launch geometry (variant, grid, block, vector width, head and tail, row stride) runs through
an emulated RawKernel launch whose twin decomposes the work per thread and block as the kernel
does, over tails, odd widths, unaligned views, float16/32/64, rows of length 0 and 1 and NaN/Inf
rows; and (gpu) the kernels against their twins and cuda against cpu.

The emulated launch is a local stand-in (`emulated_rows`): a NumPy module under another name as
the array module, and a RawKernel that checks CuPy's launch limits and argument types and calls
the twin registered in `_kernels.TWINS` under the kernel's name, which is the convention the
emulated CuPy of gpuvjp.testing follows, so switching to it only replaces the fixture."""

from __future__ import annotations

import ctypes
import dataclasses
import types

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp.nn import functional as F
from gpuvjp.ops import REGISTRY, _kernels, _rows
from gpuvjp.ops import reduce as R
from tests.ops.test_gpu_glue import _elementwise
from tests.ops.test_kernels import (TOL, _cupy_options, _has_fp16_header, _host_build,
                                    _nvrtc_compile, _red_rows, nvrtc)  # noqa: F401 (fixture)

KINDS = sorted(_rows.ROW_OPS)
DTYPES = ("float16", "float32", "float64")
SENTINEL = 7.25e3              # what an output element the kernels never wrote holds


def _ct(dtype):
    return np.float32 if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def _out_dtypes(kind, dtype):
    """softmax_stats of float16 returns float32 statistics (float_out), as softmax asks."""
    return ["float32"] if kind == "softmax_stats" and dtype == "float16" else [dtype]


# ----- the launches a plan can make -----------------------------------------------------------
PLAN_SHAPES = [(r, n) for r in (3, 5000) for n in (0, 1, 7, 40, 1024, 1025, 3000, 5000, 9000,
                                                   20000, 40000, 1 << 20)]


def _all_launches():
    """Every distinct (kernel, dtype, out dtype) that plan() can choose, by kind."""
    seen = {}
    for kind in KINDS:
        for dtype in DTYPES:
            for out in _out_dtypes(kind, dtype):
                for rows, n in PLAN_SHAPES:
                    for launch in _rows.plan(kind, rows, n, dtype, out):
                        seen.setdefault((launch.name, dtype, out), launch)
    return list(seen.values())


LAUNCHES = _all_launches()


def test_plans_cover_every_variant():
    """The shapes above reach each variant and vector width, and each block width."""
    got = {(l.variant, l.vec > 1) for l in LAUNCHES}
    assert got == {("warp", False), ("warp", True), ("block", True), ("split", True),
                   ("finish", False)}
    assert {l.block_x for l in LAUNCHES if l.variant == "block"} == {64, 128, 256, 512}


@pytest.mark.parametrize("rows,n,variant,vec,block", [
    (10, 0, "warp", 1, (32, 8, 1)), (10, 1, "warp", 1, (32, 8, 1)),
    (10, 15, "warp", 1, (32, 8, 1)), (10, 16, "warp", 4, (32, 8, 1)),
    (10, 1024, "warp", 4, (32, 8, 1)), (10, 1025, "block", 4, (64, 1, 1)),
    (10, 4096, "block", 4, (256, 1, 1)), (10, 1 << 16, "split", 4, (512, 1, 1)),
    (1000, 1 << 16, "block", 4, (512, 1, 1)), (100000, 1 << 16, "block", 4, (512, 1, 1))])
def test_plan_geometry(rows, n, variant, vec, block):
    launches = _rows.plan("sum", rows, n, "float32")
    first = launches[0]
    assert (first.variant, first.vec, first.block) == (variant, vec, block)
    threads_y = first.block[1]
    if variant == "warp":
        assert first.grid[0] * threads_y >= rows > (first.grid[0] - 1) * threads_y
    elif variant == "block":
        assert first.grid == (rows, 1, 1)
    else:
        assert first.grid[1] == rows and first.grid[0] > 1
        assert launches[1].variant == "finish"
        assert launches[1].grid[0] * launches[1].block[1] >= rows


def test_float16_and_float64_vector_widths():
    """16-byte loads: 8 float16, 4 float32, 2 float64 elements."""
    assert [_rows.plan("sum", 4, 4096, d)[0].vec for d in DTYPES] == [8, 4, 2]


@pytest.mark.parametrize("shape,strides,k,want", [
    ((4, 5), (20, 4), 1, (4, 5, 5)), ((4, 5), (24, 4), 1, (4, 5, 6)),   # a column-sliced view
    ((2, 3, 5), (60, 20, 4), 2, (2, 15, 15)), ((2, 3, 5), (60, 20, 4), 1, (6, 5, 5)),
    ((4, 5), (4, 16), 1, None),                                         # a transposed view
    ((4, 5), (20, -4), 1, None), ((4, 5), (-20, 4), 1, None),           # reversed
    ((4, 5), (20, 0), 1, None),                                         # expanded rows
    ((2, 3, 5), (100, 20, 4), 1, None),                                 # lead dims do not merge
    ((1, 5), (7, 4), 1, (1, 5, 5)), ((4, 1), (4, 4), 1, (4, 1, 1)), ((0, 5), (20, 4), 1,
                                                                     (0, 5, 5))])
def test_layout(shape, strides, k, want):
    assert _rows.layout(shape, strides, 4, k) == want


# ----- 1. NVRTC: the exact source of every variant, for every dtype ------------------------------
def _compile(nvrtc, name, source, dtype):
    options = _cupy_options(_rows.OPTIONS)
    if "float16" in dtype and not _has_fp16_header(options):
        pytest.skip("cuda_fp16.h is on none of CuPy's include paths")
    return _nvrtc_compile(nvrtc, source, f"{name}_{dtype}.cu", options)


@pytest.mark.parametrize("launch", LAUNCHES,
                         ids=[f"{l.name}-{l.dtype}-{l.out_dtype}" for l in LAUNCHES])
def test_row_kernel_compiles_with_nvrtc(launch, nvrtc):
    name, source = _rows.kernel_source(launch)
    ok, log = _compile(nvrtc, name, source, launch.dtype)
    assert ok, f"NVRTC rejects {name} ({launch.dtype}) from kernels/rows.cuh:\n{log}"


def test_row_kernel_nvrtc_check_fails_on_a_broken_merge(nvrtc):
    launch = _rows.plan("logsumexp", 4, 5000, "float32")[0]
    name, source = _rows.kernel_source(launch)
    broken = source.replace("lse_merge<C>(a, b)", "lse_merge_renamed<C>(a, b)")
    assert broken != source
    ok, log = _compile(nvrtc, name, broken, "float32")
    assert not ok and "lse_merge_renamed" in log, log


# ----- 2. host C++: the Row* structs against the NumPy twins -----------------------------------
HOST_TYPES = {"float32": "float", "float64": "double"}


def _host_wrappers(kind, ctype):
    """rrow_<kind>_<ctype>(x, out0, out1, rows, n, split): each row reduced by gv::<Row*> in one
    of several orders (sequential over [0, split) then [split, n) merged in either order, or a
    balanced tree for split < 0); mrow_<kind>_<ctype>(a, b, out, count): merge of K-packed
    states."""
    op = _rows.ROW_OPS[kind]
    st = f"gv::{op.struct}<{ctype}>"
    return f"""
namespace rows_{kind}_{ctype} {{
typedef {st} Op;
static Op::St tree(const {ctype}* x, long lo, long hi) {{
  if (hi - lo == 0) return Op::empty();
  if (hi - lo == 1) return Op::one(x[lo]);
  long mid = lo + (hi - lo) / 2;
  return Op::merge(tree(x, lo, mid), tree(x, mid, hi));
}}
}}
extern "C" void rrow_{kind}_{ctype}(const {ctype}* x, {ctype}* out0, {ctype}* out1, long rows,
                                   long n, long split) {{
  using namespace rows_{kind}_{ctype};
  for (long r = 0; r < rows; ++r) {{
    const {ctype}* row = x + r * n;
    Op::St s;
    if (split < 0) s = tree(row, 0, n);
    else {{
      Op::St a = Op::empty(), b = Op::empty();
      for (long j = 0; j < split && j < n; ++j) a = Op::merge(a, Op::one(row[j]));
      for (long j = split; j < n; ++j) b = Op::merge(Op::one(row[j]), b);
      s = Op::merge(b, a);
    }}
    out0[r] = Op::value(s, n, 0);
    if (Op::NOUT > 1) out1[r] = Op::value(s, n, 1);
  }}
}}
extern "C" void mrow_{kind}_{ctype}(const {ctype}* a, const {ctype}* b, {ctype}* out,
                                   long count) {{
  typedef {st} Op;
  for (long i = 0; i < count; ++i)
    Op::store(Op::merge(Op::load(a + i * Op::K), Op::load(b + i * Op::K)), out + i * Op::K);
}}
"""


@pytest.fixture(scope="module")
def host_rows_lib(tmp_path_factory):
    wrappers = "".join(_host_wrappers(k, c) for k in KINDS for c in HOST_TYPES.values())
    return _host_build(["reduce", "rows"], wrappers, "row check wrappers", tmp_path_factory)


def _fn(lib, name, nptr, nlong):
    fn = getattr(lib, name)
    fn.argtypes = [ctypes.c_void_p] * nptr + [ctypes.c_long] * nlong
    fn.restype = None
    return fn


@pytest.mark.parametrize("order", ["sequential", "split", "reversed-split", "tree"])
@pytest.mark.parametrize("kind,dtype", [(k, d) for k in KINDS for d in HOST_TYPES])
def test_row_math_matches_twin(kind, dtype, order, host_rows_lib, rng):
    op = _rows.ROW_OPS[kind]
    fn = _fn(host_rows_lib, f"rrow_{kind}_{HOST_TYPES[dtype]}", 3, 3)
    for n, x in _red_rows(dtype, rng):
        if kind in ("amax", "amin") and n == 0:
            continue
        split = {"sequential": n, "split": n // 3, "reversed-split": 0, "tree": -1}[order]
        x = np.ascontiguousarray(x)
        outs = [np.empty(x.shape[0], dtype) for _ in range(2)]
        fn(x.ctypes.data, outs[0].ctypes.data, outs[1].ctypes.data, x.shape[0], n, split)
        tol = dict(TOL[dtype])
        if kind in ("sum", "mean") and n:      # cancellation: relative to the sum of |x|
            finite = np.where(np.isfinite(x), np.abs(x), 0)
            tol["atol"] = tol["rtol"] * float(finite.sum(1).max()) / (n if kind == "mean" else 1)
        for k, want in enumerate(op.reference(x)):
            np.testing.assert_allclose(outs[k], want, **tol, err_msg=(
                f"gv::{op.struct}<{HOST_TYPES[dtype]}> value {k} ({order}, n={n}) against the "
                "twin"))


def _edge_states(kind, dtype, rng, count=400):
    """Random states and the edge ones: empty, one element, infinities, NaN."""
    op = _rows.ROW_OPS[kind]
    edges = np.array([0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e30, -1e30], dtype)
    pick = lambda: np.where(rng.random(count) < 0.4, rng.choice(edges, count),   # noqa: E731
                            rng.uniform(-50, 50, count)).astype(dtype)
    if op.k == 1:
        return (pick(),)
    s = np.where(rng.random(count) < 0.3, rng.choice([0.0, 1.0, np.inf, np.nan], count),
                 rng.uniform(0, 100, count)).astype(dtype)
    return pick(), s


@pytest.mark.parametrize("kind,dtype", [(k, d) for k in KINDS for d in HOST_TYPES])
def test_row_merge_matches_twin(kind, dtype, host_rows_lib, rng):
    """merge(a, b) of the C++ against the twin's, state by state, edge states included (the
    emulated launches merge with the twin's)."""
    op = _rows.ROW_OPS[kind]
    a, b = _edge_states(kind, dtype, rng), _edge_states(kind, dtype, rng)
    pack = lambda st: np.ascontiguousarray(np.stack(st, axis=-1))     # noqa: E731
    pa, pb = pack(a), pack(b)
    out = np.empty_like(pa)
    _fn(host_rows_lib, f"mrow_{kind}_{HOST_TYPES[dtype]}", 3, 1)(
        pa.ctypes.data, pb.ctypes.data, out.ctypes.data, pa.shape[0])
    want = pack(op.merge(a, b))
    np.testing.assert_allclose(out, want, **TOL[dtype])


# ----- 3. the launches, emulated ---------------------------------------------------------------
class StandInRawKernel:
    """CuPy's RawKernel as far as the launch goes: grid and block limits, numpy-typed arguments,
    then the twin registered under the kernel's name."""

    def __init__(self, name, source):
        self.name, self.source = name, source
        self.launches = []

    def __call__(self, grid, block, args, shared_mem=0):
        assert isinstance(grid, tuple) and isinstance(block, tuple)
        for a in args:
            assert isinstance(a, (np.ndarray, np.generic)), f"{self.name}: argument {a!r} " \
                "is not an array or a NumPy scalar"
        LAUNCHED.append((self.name, grid, block))
        _kernels.TWINS[self.name](grid, block, args, shared_mem)


LAUNCHED: list = []


def _empty(shape, dtype=float):
    return np.full(shape, SENTINEL, dtype)


fake_cupy = types.ModuleType("fake_cupy")
fake_cupy.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
fake_cupy.empty = _empty


@pytest.fixture
def emulated_rows(monkeypatch):
    monkeypatch.setenv("GPUVJP_ROW_KERNELS", "1")
    monkeypatch.setattr(_rows, "_raw_kernel", StandInRawKernel)
    monkeypatch.setattr(_kernels, "elementwise", _elementwise)
    LAUNCHED.clear()
    yield LAUNCHED


def _data(shape, dtype, rng, edges=True):
    x = rng.uniform(-3, 3, shape)
    if edges and x.ndim >= 2 and x.shape[-1] >= 2 and x.shape[0] >= 6:
        flat = x.reshape(-1, x.shape[-1])
        flat[0, 0], flat[1, -1], flat[2, 1] = np.inf, -np.inf, np.nan
        flat[3, :] = -np.inf
        flat[4, 0], flat[4, -1] = np.inf, -np.inf
        flat[5, 0] = 1000.0
    return x.astype(dtype)


# (name, shape, axis, how the array is cut from a larger one)
CASES = [
    ("empty-rows", (6, 0), 1, "plain"), ("one-element-rows", (9, 1), 1, "plain"),
    ("odd", (7, 33), 1, "plain"), ("warp-vector", (9, 1000), 1, "plain"),
    ("block-odd", (6, 1025), 1, "plain"), ("block", (6, 4096), 1, "plain"),
    ("unaligned", (7, 3001), 1, "offset"), ("column-view", (6, 2000), 1, "columns"),
    ("row-view", (7, 1500), 1, "every-other-row"), ("trailing", (6, 3, 50), (1, 2), "plain"),
    ("trailing-negative", (2, 3, 4, 50), (-1, -2), "plain"), ("one-dim", (3000,), 0, "plain"),
    ("split", (6, 40000), 1, "plain"), ("split-unaligned", (2, 70001), 1, "offset"),
    ("many-short", (3000, 3), 1, "plain"),
]


def _cut(x, how, rng):
    """`x`'s values as an array laid out as `how` says (a view of a larger array)."""
    if how == "plain":
        return x
    if how == "offset":         # contiguous, starting one element past an aligned address
        big = np.empty(x.size + 1, x.dtype)
        view = big[1:].reshape(x.shape)
    elif how == "columns":
        view = np.empty(x.shape[:-1] + (x.shape[-1] + 3,), x.dtype)[..., 1:x.shape[-1] + 1]
    else:
        view = np.empty((2 * x.shape[0],) + x.shape[1:], x.dtype)[::2]
    view[...] = x
    return view


def _reference(kind, x, axis, keepdims):
    """The NumPy path gpuvjp runs on the CPU (float16 computed in float32)."""
    if kind == "sum":
        return R._sum_impl(np, x, axis, keepdims)
    if kind == "mean":
        with np.errstate(all="ignore"):
            s = np.sum(x.astype(_ct(x.dtype)), axis=axis, keepdims=keepdims)
            return (s / np.prod([x.shape[d] for d in np.atleast_1d(axis)])).astype(x.dtype)
    if kind in ("amax", "amin"):
        return getattr(np, kind)(x, axis=axis, keepdims=keepdims)
    red = _kernels.REDUCTIONS[kind]
    return red(np, x, axis, keepdims, float_out=kind == "softmax_stats")


def _close(got, want, dtype, what):
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape), what
    assert not (got == SENTINEL).any(), f"{what}: an output the kernel never wrote"
    tol = TOL["float32" if dtype == "float16" and got.dtype == np.float32 else dtype]
    if dtype == "float16":
        tol = dict(rtol=4e-3, atol=4e-3)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), err_msg=what,
                               **tol)


def _values(out):
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case,shape,axis,how", CASES, ids=[c[0] for c in CASES])
def test_emulated_launch_matches_numpy(case, shape, axis, how, kind, dtype, keepdims,
                                       emulated_rows, rng):
    if kind in ("amax", "amin") and 0 in shape:
        pytest.skip("no identity: the row kernels decline (CuPy raises, as PyTorch)")
    x = _cut(_data(shape, dtype, rng), how, rng)
    got = _rows.reduce(kind, fake_cupy, x, axis, keepdims, float_out=kind == "softmax_stats")
    assert got is not None, "the row kernels declined"
    assert emulated_rows, "nothing was launched"
    want = _reference(kind, x, axis, keepdims)
    for k, (g, w) in enumerate(zip(_values(got), _values(want))):
        _close(g, w, dtype, f"{kind} value {k} of {case} {dtype} through "
                            f"{[n for n, *_ in emulated_rows]}")


def test_emulation_catches_a_wrong_grid(emulated_rows, monkeypatch, rng):
    """A plan one block short leaves a row unwritten, and the comparison sees it."""
    plan = _rows.plan

    def short(*args, **kw):
        first, *rest = plan(*args, **kw)
        return [dataclasses.replace(first, grid=(first.grid[0] - 1,) + first.grid[1:]), *rest]

    monkeypatch.setattr(_rows, "plan", short)
    x = _data((6, 4096), "float32", rng)
    got = _rows.reduce("sum", fake_cupy, x, 1, False)
    assert got[-1] == SENTINEL and not (got[:-1] == SENTINEL).any()


def test_emulation_catches_a_block_of_the_wrong_width(emulated_rows, monkeypatch, rng):
    plan = _rows.plan

    def wide(*args, **kw):
        first, *rest = plan(*args, **kw)
        return [dataclasses.replace(first, block=(first.block[0] * 2, 1, 1)), *rest]

    monkeypatch.setattr(_rows, "plan", wide)
    with pytest.raises(AssertionError, match="compiled for"):
        _rows.reduce("sum", fake_cupy, _data((6, 4096), "float32", rng), 1, False)


@pytest.mark.parametrize("what", ["switch-off", "numpy", "not-trailing", "transposed",
                                  "integers", "amax-empty", "expanded"])
def test_row_kernels_decline(what, emulated_rows, monkeypatch, rng):
    x = _data((6, 40), "float32", rng)
    xp, kind, axis = fake_cupy, "sum", 1
    if what == "switch-off":
        monkeypatch.setenv("GPUVJP_ROW_KERNELS", "0")
    elif what == "numpy":
        xp = np
    elif what == "not-trailing":
        axis = 0
    elif what == "transposed":
        x = x.T
    elif what == "integers":
        x = x.astype(np.int64)
    elif what == "amax-empty":
        kind, x = "amax", x[:, :0]
    else:
        x = np.broadcast_to(x[:, :1], (6, 40))
    assert _rows.reduce(kind, xp, x, axis, False) is None
    assert not emulated_rows


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_dispatch_to_the_row_kernels(dtype, emulated_rows, rng):
    """The sites in reduce.py and softmax: with the switch on, the row kernels run there."""
    x = _data((6, 300), dtype, rng)
    cases = {
        "sum": (R._sum_gpu(fake_cupy, x, (1,), False), R._sum_impl(np, x, (1,), False)),
        "amax": (R._amax_impl(fake_cupy, x, (1,), True), np.amax(x, 1, keepdims=True)),
        "amin": (R._amin_impl(fake_cupy, x, (1,), False), np.amin(x, 1)),
        "logsumexp": (R._logsumexp_impl(fake_cupy, x, (1,), False),
                      R._logsumexp_impl(np, x, (1,), False)),
        "mean": (_rows._mean_op().impl(fake_cupy, x, (1,), False), _reference("mean", x, 1,
                                                                               False)),
    }
    for log in (False, True):
        cases[f"softmax-{log}"] = (F._softmax_impl(fake_cupy, x, 1, log),
                                   F._softmax_impl(np, x, 1, log))
    cases["stats"] = (F.softmax_stats_.impl(fake_cupy, x, dim=1),
                      F.softmax_stats_.impl(np, x, dim=1))
    for name, (got, want) in cases.items():
        _close(got, want, dtype, name)
    launched = {n.split("_")[2] for n, *_ in emulated_rows if n.startswith("gv_rows_")}
    assert launched >= {"sum", "amax", "amin", "logsumexp", "mean", "softmax"}, launched
    # softmax's forward divides by its row statistics: the row broadcast
    assert any(n.startswith("gv_rowcast_softmax_fwd_frr") for n, *_ in emulated_rows)


def test_lse_rows_keeps_the_reduction_interface():
    assert R.lse_rows.values == ("lse_value",) and R.softmax_stats.name == "softmax_stats"
    assert _kernels.REDUCTIONS["logsumexp"] is R.lse_rows.red


# ----- 4. the row broadcast --------------------------------------------------------------------
FUSED = {op.kernel_fn: op for op in REGISTRY.values() if op.kernel is not None}


def _bcast_case(name, dtype, rng):
    """(kernel fn, arguments, expected kind code) of the backward of a row reduction."""
    u = lambda *s: rng.uniform(-2, 2, s).astype(dtype)    # noqa: E731
    f = np.float32 if dtype == "float16" else dtype
    return {
        "exp_bwd": ("exp_bwd", [u(7, 1), u(7, 33)], "rf"),
        # sum's cotangent as the graph hands it on: expanded to x's shape, stride 0 along rows
        "exp_bwd-expanded": ("exp_bwd", [np.broadcast_to(u(7, 1), (7, 33)), u(7, 33)], "rf"),
        "exp_bwd-3d": ("exp_bwd", [u(2, 3, 1), u(2, 3, 50)], "rf"),
        "exp_bwd-trailing": ("exp_bwd", [u(4, 1, 1), u(4, 3, 9)], "rf"),
        "exp_bwd-unaligned": ("exp_bwd", [u(5, 1), _cut(u(5, 301), "offset", rng)], "rf"),
        "exp_bwd-columns": ("exp_bwd", [u(5, 1), _cut(u(5, 64), "columns", rng)], "rf"),
        "exp_bwd-one-column": ("exp_bwd", [u(6, 1), u(6, 2)], "rf"),
        "exp_bwd-scalar-row": ("exp_bwd", [u(1, 1), u(6, 40)], "rf"),
        "logsumexp_bwd": ("logsumexp_bwd", [u(9, 1), u(9, 700), u(9, 1)], "rfr"),
        "softmax_bwd": ("softmax_bwd", [u(5, 257), u(5, 257), u(5, 1)], "ffr"),
        "softmax_fwd": ("softmax_fwd", [u(4, 20), u(4, 1).astype(f),
                                        np.abs(u(4, 1)).astype(f) + 1], "frr"),
        "var_bwd-scalar": ("var_bwd", [u(3, 1), u(3, 30), u(3, 1), np.dtype(dtype).type(0.25)],
                           "rfrs"),
        "ce_bwd": ("ce_bwd", [u(6, 1), u(6, 11), u(6, 1).astype(f), np.abs(u(6, 1)).astype(f)
                              + 1, rng.integers(0, 11, (6, 1)),
                              np.arange(11, dtype=np.int64)], "rfrrrc"),
    }[name]


BCAST = ["exp_bwd", "exp_bwd-expanded", "exp_bwd-3d", "exp_bwd-trailing", "exp_bwd-unaligned",
         "exp_bwd-columns", "exp_bwd-one-column", "exp_bwd-scalar-row", "logsumexp_bwd",
         "softmax_bwd",
         "softmax_fwd", "var_bwd-scalar", "ce_bwd"]


def _twin_of(fn, args, dtype):
    up = [a.astype(np.float32) if getattr(a, "dtype", None) == np.float16 else a for a in args]
    with np.errstate(all="ignore"):
        return np.asarray(FUSED[fn].twin(*up)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BCAST)
def test_emulated_row_broadcast_matches_twin(case, dtype, emulated_rows, rng):
    fn, args, code = _bcast_case(case, dtype, rng)
    got = FUSED[fn].gpu(fake_cupy, *args)
    names = [n for n, *_ in emulated_rows]
    assert names == [f"gv_rowcast_{fn}_{code}"], names
    _close(got, _twin_of(fn, args, dtype), dtype, f"{case} ({dtype})")


def test_row_broadcast_geometry():
    assert _rows.rowcast_geometry(16384, 16384) == ((16, 16384, 1), (256, 1, 1))
    assert _rows.rowcast_geometry(65536, 4) == ((1, 1024, 1), (4, 64, 1))
    assert _rows.rowcast_geometry(10 ** 6, 128) == ((1, 65535, 1), (128, 2, 1))   # loops rows
    assert _rows.rowcast_geometry(3, 1) == ((1, 1, 1), (1, 256, 1))


@pytest.mark.parametrize("what", ["no-row-operand", "transposed-full", "switch-off"])
def test_row_broadcast_declines(what, emulated_rows, monkeypatch, rng):
    g, x = rng.uniform(-1, 1, (5, 1)), rng.uniform(-1, 1, (5, 8))
    if what == "no-row-operand":
        g = rng.uniform(-1, 1, (5, 8))
    elif what == "transposed-full":
        x = np.ascontiguousarray(x.T).T
    else:
        monkeypatch.setenv("GPUVJP_ROW_KERNELS", "0")
    got = FUSED["exp_bwd"].gpu(fake_cupy, g, x)      # CuPy's ElementwiseKernel (emulated)
    np.testing.assert_allclose(got, g * np.exp(x))
    assert not emulated_rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BCAST)
def test_row_broadcast_compiles_with_nvrtc(case, dtype, nvrtc, rng):
    fn, args, code = _bcast_case(case, dtype, rng)
    op = FUSED[fn]
    out_shape = np.broadcast_shapes(*[np.shape(a) for a in args])
    q, kinds = _rows._rowcast_plan(args, out_shape)
    dtypes = _rows._bound(op.kernel[0], args)
    name = f"gv_rowcast_{fn}_{code}"
    source = _rows.rowcast_source(name, op.family, fn, *op.kernel, tuple(kinds), dtypes)
    ok, log = _compile(nvrtc, name, source, dtype)
    assert ok, f"NVRTC rejects {name} ({dtype}):\n{log}"


# ----- 5. on the GPU ----------------------------------------------------------------------------
@pytest.fixture
def row_kernels(monkeypatch):
    monkeypatch.setenv("GPUVJP_ROW_KERNELS", "1")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case,shape,axis,how", CASES, ids=[c[0] for c in CASES])
def test_row_kernel_on_cuda_matches_twin(case, shape, axis, how, kind, dtype, row_kernels, rng):
    """The RawKernel against NumPy, and against its own twin's emulated launch."""
    import cupy

    if kind in ("amax", "amin") and 0 in shape:
        pytest.skip("no identity")
    x = _cut(_data(shape, dtype, rng), how, rng)
    # the same layout on the device: a view of a larger array
    xd = cupy.asarray(x) if how == "plain" else _device_cut(cupy, x, how)
    got = _rows.reduce(kind, cupy, xd, axis, False, float_out=kind == "softmax_stats")
    assert got is not None
    with pytest.MonkeyPatch.context() as mp:          # the same plan through the twins
        mp.setattr(_rows, "_raw_kernel", StandInRawKernel)
        twin = _rows.reduce(kind, fake_cupy, x, axis, False, float_out=kind == "softmax_stats")
    want = _reference(kind, x, axis, False)
    for k, (g, t, w) in enumerate(zip(_values(got), _values(twin), _values(want))):
        _close(g.get(), t, dtype, f"{kind} value {k} of {case} ({dtype}) on cuda, against the "
                                  "twin")
        _close(g.get(), w, dtype, f"{kind} value {k} of {case} ({dtype}) on cuda, against NumPy")


def _device_cut(cupy, x, how):
    if how == "offset":
        big = cupy.empty(x.size + 1, x.dtype)
        view = big[1:].reshape(x.shape)
    elif how == "columns":
        view = cupy.empty(x.shape[:-1] + (x.shape[-1] + 3,), x.dtype)[..., 1:x.shape[-1] + 1]
    else:
        view = cupy.empty((2 * x.shape[0],) + x.shape[1:], x.dtype)[::2]
    view[...] = cupy.asarray(x)
    return view


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BCAST)
def test_row_broadcast_on_cuda_matches_twin(case, dtype, row_kernels, rng):
    import cupy

    fn, args, code = _bcast_case(case, dtype, rng)
    dev = [_to_device(cupy, a) if isinstance(a, np.ndarray) else a for a in args]
    got = _rows.rowcast(cupy, FUSED[fn].family, fn, *FUSED[fn].kernel, dev)
    assert got is not None
    _close(got.get(), _twin_of(fn, args, dtype), dtype, f"{case} ({dtype}) on cuda")


def _to_device(cupy, a):
    """`a` on the device, an expanded (stride-0) view staying one."""
    if a.size and 0 in a.strides:
        base = a[tuple(slice(0, 1) if st == 0 else slice(None) for st in a.strides)]
        return cupy.broadcast_to(cupy.asarray(base), a.shape)
    return cupy.asarray(a)


VJP_CASES = {
    "exp_reducer": lambda m, t: m.exp(t).sum(dim=1),
    "mean": lambda m, t: t.mean(dim=-1),
    "amax": lambda m, t: t.amax(dim=1),
    "logsumexp": lambda m, t: m.logsumexp(t, 1),
    "softmax": lambda m, t: m.nn.functional.softmax(t, dim=-1),
    "log_softmax": lambda m, t: m.nn.functional.log_softmax(t, dim=-1),
    "cross_entropy": lambda m, t: m.nn.functional.cross_entropy(
        t, m.tensor(np.arange(t.shape[0]) % t.shape[1], device=t.device)),
}


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(5, 7), (33, 1500), (3, 70000)])
@pytest.mark.parametrize("case", sorted(VJP_CASES))
def test_vjp_on_cuda_with_row_kernels_matches_cpu(case, shape, row_kernels, rng):
    f = VJP_CASES[case]
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    outs = {}
    for dev in ("cpu", "cuda"):
        xt = gv.tensor(x, device=dev)
        out = f(gv, xt)
        v = gv.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape).astype(np.float32),
                      device=dev)
        outs[dev] = gv.vjp(lambda t: f(gv, t), xt, v)
    for got, want in zip(outs["cuda"], outs["cpu"]):
        _close(got.numpy(), want.numpy(), "float32", f"{case} on cuda against cpu")
