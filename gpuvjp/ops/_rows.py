"""Row reductions and the row-broadcast backward as hand-written RawKernels (kernels/rows.cuh),
behind the off-by-default switch GPUVJP_ROW_KERNELS=1.

What it owns: the choice of kernel variant and launch geometry for a reduction over the last dim
(or contiguous trailing dims, one row): a warp per row for short rows, a block per row, several
blocks per row with a second pass for few very long rows; 16-byte vector loads from each row's
first aligned element with a scalar head and tail; the dtype dispatch (float16 computes in
float). Also the 2-D launch of an elementwise kernel with row operands (the cotangent of a row
reduction, g[:, None] * exp(x)), which reads each row value once into a register instead of
dividing an index per element. Each RawKernel's NumPy twin (registered in `_kernels.TWINS`)
emulates its block and grid decomposition: which elements each thread merges, in which order,
and how the threads' states merge, so the geometry is checked on the CPU.

It also runs the vjp in one pass (gpuvjp/_onepass.py decides when): a fused Plan whose first
output is reduced per row (sum, mean) and whose other outputs are written, as one generated
RawKernel (`onepass`), with its NumPy twin and its geometry taken from `plan`; and any fused
elementwise Plan with row operands (a row reduction's backward) as the row broadcast's 2-D
launch (`run_plan`, called by `_kernels.run_plan`).

What it may import: NumPy, `_kernels` (sources, twins, compile errors), `_registry` (the mean
op), `_lazy` (the Pending type, for the mean of a pending DAG), `_plan` (a Plan's name and NumPy
evaluation, for the one-pass kernel and its twin); CuPy only through the array module it is
handed or `_device`. It never touches the graph or builds Pending DAGs (a plain reduction of a
pending DAG keeps its ReductionKernel path; `_onepass` hands it a built Plan), and its only CPU
path is the mean op of a pending DAG (deferred by `_lazy.reduce`): every entry point returns
None where it does not apply, and the caller runs its usual code.

TODO(#10): the geometry constants below are first guesses, to be set (and the switch turned on
per kernel) from scripts/bench_kernels.py on a GPU. TODO(#10): elementwise plans are lazy now
(_lazy.py), so a row reduction of a pending DAG can take the DAG as its per-element map
(RowOp.one of the map) instead of leaving it to the ReductionKernel path; the one-pass kernel
below does so for sum and mean when a vjp's backward joins it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np

from .. import _device
from .._lazy import Pending
from . import _kernels

__all__ = ["enabled", "reduce", "switched", "mean", "rowcast", "Launch", "plan", "layout",
           "ROW_OPS", "kernel_source", "rowcast_source", "rowcast_geometry"]


def enabled() -> bool:
    """GPUVJP_ROW_KERNELS=1: the row kernels replace CuPy's reductions where they apply."""
    return os.environ.get("GPUVJP_ROW_KERNELS") == "1"


# ----- geometry constants (to be settled by scripts/bench_kernels.py on a GPU) -------------------
WARP_MAX = 1024            # rows up to this length: one warp per row
WARPS_PER_BLOCK = 8        # the warp variant's (32, 8) blocks
UNROLL = 4                 # vector loads in flight per thread
BLOCK_MIN, BLOCK_MAX = 64, 512
SPLIT_MIN = 32768          # rows at least this long may split ...
SPLIT_ROWS_PER_SM = 2      # ... when there are fewer rows than this many per SM
BLOCKS_PER_SM = 4          # the split variant aims at this many blocks per SM
DEFAULT_SMS = 132          # an H100 / H200 where the device cannot be asked (emulation, CPU)

CTYPE = {"float16": "__half", "float32": "float", "float64": "double", "int64": "long long",
         "int32": "int", "bool": "bool"}
FLOATS = ("float16", "float32", "float64")


# ----- the row operations: the NumPy twins of kernels/rows.cuh's Row* structs -------------------
# A state is a tuple of arrays (K of them); `one`, `merge` and `value` mirror the C++ exactly
# (same branches, same operation order) so the emulated kernels round as the GPU does.
def _lse_merge(a, b):
    (am, as_), (bm, bs) = a, b
    with np.errstate(all="ignore"):
        ea = np.exp(np.where(bm > am, am - bm, 0).astype(am.dtype))
        eb = np.exp(np.where(am > bm, bm - am, 0).astype(am.dtype))
        m = np.where(am == bm, am, np.where(am > bm, am, np.where(bm > am, bm, am + bm)))
        s = np.where(am == bm, as_ + bs,
                     np.where(am > bm, as_ + bs * eb,
                              np.where(bm > am, bs + as_ * ea, am + bm)))
    m = np.where(as_ == 0, bm, np.where(bs == 0, am, m))
    s = np.where(as_ == 0, bs, np.where(bs == 0, as_, s))
    return m, s


def _stats_value(st, n, k):
    m, s = st
    with np.errstate(all="ignore"):
        if k == 0:
            return m + (s - s)
        return np.where(s == 0, s, np.where(m - m == 0, s, m - m))


def _nan_wins(better):
    def merge(a, b):
        return (np.where((a[0] != a[0]) | better(a[0], b[0]), a[0], b[0]),)
    return merge


@dataclasses.dataclass(frozen=True)
class RowOp:
    """One of kernels/rows.cuh's row operations and its NumPy twin."""
    kind: str                  # sum, mean, amax, amin, logsumexp, softmax_stats
    struct: str                # gv::<struct><C>
    k: int                     # C numbers per state
    nout: int
    empty: object              # (shape, ctype) -> state
    one: object                # x -> state
    merge: object              # (a, b) -> state
    value: object              # (state, n, k) -> array

    def reference(self, x):
        """The reduction of each row of the 2-d C-typed `x`, in NumPy's own order (the oracle the
        emulated launches are checked against)."""
        n = x.shape[1]
        with np.errstate(all="ignore"):
            if self.kind in ("sum", "mean"):
                s = np.sum(x, axis=1, dtype=np.float64).astype(x.dtype)
                return [s if self.kind == "sum" else (s / x.dtype.type(n)).astype(x.dtype)]
            if self.kind in ("amax", "amin"):
                if n == 0:
                    return [np.full(x.shape[0], -np.inf if self.kind == "amax" else np.inf,
                                    x.dtype)]
                return [(np.amax if self.kind == "amax" else np.amin)(x, axis=1)]
            from .reduce import _lse_twin, _stats_twin
            if self.kind == "logsumexp":
                return [np.asarray(_lse_twin(x, 1, False), x.dtype)]
            return [np.asarray(v, x.dtype) for v in _stats_twin(x, 1, False)]


def _full(v):
    return lambda shape, ct: (np.full(shape, v, ct),)


ROW_OPS = {
    "sum": RowOp("sum", "RowSum", 1, 1, _full(0), lambda x: (x,),
                 lambda a, b: (a[0] + b[0],), lambda st, n, k: st[0]),
    "mean": RowOp("mean", "RowMean", 1, 1, _full(0), lambda x: (x,),
                  lambda a, b: (a[0] + b[0],),
                  lambda st, n, k: _quiet(lambda: st[0] / st[0].dtype.type(n))),
    "amax": RowOp("amax", "RowMax", 1, 1, _full(-np.inf), lambda x: (x,),
                  _nan_wins(np.greater), lambda st, n, k: st[0]),
    "amin": RowOp("amin", "RowMin", 1, 1, _full(np.inf), lambda x: (x,),
                  _nan_wins(np.less), lambda st, n, k: st[0]),
    "logsumexp": RowOp("logsumexp", "RowLse", 2, 1,
                       lambda shape, ct: (np.full(shape, -np.inf, ct), np.zeros(shape, ct)),
                       lambda x: (x, np.ones_like(x)), _lse_merge,
                       lambda st, n, k: _quiet(lambda: st[0] + np.log(st[1]))),
    "softmax_stats": RowOp("softmax_stats", "RowStats", 2, 2,
                           lambda shape, ct: (np.full(shape, -np.inf, ct), np.zeros(shape, ct)),
                           lambda x: (x, np.ones_like(x)), _lse_merge, _stats_value),
}


def _quiet(fn):
    with np.errstate(all="ignore"):
        return fn()


# ----- layout: which arrays are rows ------------------------------------------------------------
def _collapse(shape, strides):
    """The one stride s with strides[d] == s * prod(shape[d+1:]) for every dim of size > 1
    (0 where there is none), or None when the dims do not collapse to one."""
    s, inner = None, 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size == 1:
            continue
        if s is None:
            s = stride
        elif stride != s * inner:
            return None
        inner *= size
    return 0 if s is None else s


def layout(shape, strides, itemsize, k):
    """(rows, n, ld) of an array whose last `k` dims are reduced: n elements a row, contiguous,
    row r starting ld elements after row r - 1; None when the trailing dims are not contiguous or
    the leading ones do not collapse to one stride (negative strides included)."""
    nd = len(shape)
    lead, trail = shape[:nd - k], shape[nd - k:]
    n, rows = math.prod(trail), math.prod(lead)
    if n > 1 and _collapse(trail, strides[nd - k:]) != itemsize:
        return None
    ld = _collapse(lead, strides[:nd - k])
    if ld is None or ld < 0 or ld % itemsize:
        return None
    return rows, n, (ld // itemsize if rows > 1 else n)


# ----- the launch plan --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Launch:
    """One RawKernel launch: the kernel's name, its template arguments, grid, block."""
    name: str
    variant: str               # warp, block, split, finish
    kind: str
    dtype: str                 # the input's dtype
    out_dtype: str
    vec: int                   # elements per vector load (1: scalar loads)
    block_x: int               # the compiled block width (B)
    grid: tuple
    block: tuple


def _pow2_floor(v):
    return 1 << max(0, int(v).bit_length() - 1)


def plan(kind, rows, n, dtype, out_dtype=None, sms=DEFAULT_SMS):
    """The launches (one, or two for split rows) that reduce `rows` rows of `n` elements of
    `dtype`: the geometry logic the CPU tests check through the emulated launches."""
    dtype = np.dtype(dtype).name
    out_dtype = np.dtype(out_dtype or dtype).name
    if dtype not in FLOATS or rows <= 0:
        raise ValueError(f"no row kernel for {rows} rows of {dtype}")
    itemsize = np.dtype(dtype).itemsize
    full = 16 // itemsize
    vec = full if n >= 4 * full else 1
    base = f"gv_rows_{kind}"

    def launch(variant, bx, grid, block, v=vec, name=None):
        name = name or f"{base}_{variant}_v{v}" + (f"_b{bx}" if variant != "warp" else "")
        return Launch(name, variant, kind, dtype, out_dtype, v, bx, grid, block)

    if n <= WARP_MAX:
        w = WARPS_PER_BLOCK
        return [launch("warp", 32, (-(-rows // w), 1, 1), (32, w, 1))]
    per_block = vec * UNROLL
    bx = min(BLOCK_MAX, max(BLOCK_MIN, _pow2_floor(n // per_block)))
    if n >= SPLIT_MIN and rows < SPLIT_ROWS_PER_SM * sms and rows <= 65535:
        bx = BLOCK_MAX
        parts = max(1, min(-(-n // (bx * per_block)), -(-BLOCKS_PER_SM * sms // rows)))
        if parts > 1:
            w = WARPS_PER_BLOCK
            return [launch("split", bx, (parts, rows, 1), (bx, 1, 1)),
                    Launch(f"{base}_finish", "finish", kind, dtype, out_dtype, 1, 32,
                           (-(-rows // w), 1, 1), (32, w, 1))]
    return [launch("block", bx, (rows, 1, 1), (bx, 1, 1))]


def _ctype(dtype):
    return CTYPE[np.dtype(dtype).name]


def _compute(dtype):
    """C: float for float16, the dtype itself otherwise."""
    return "float" if np.dtype(dtype) == np.float16 else _ctype(dtype)


def _compute_np(dtype):
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def kernel_source(launch: Launch) -> tuple[str, str]:
    """(name, source) of the RawKernel `launch` runs: common.cuh, reduce.cuh, rows.cuh and an
    extern "C" wrapper that instantiates the variant's template."""
    op = ROW_OPS[launch.kind]
    t, c, o = _ctype(launch.dtype), _compute(launch.dtype), _ctype(launch.out_dtype)
    st = f"gv::{op.struct}<{c}>"
    if launch.variant == "split":
        sig = f"const {t}* x, {c}* part, long long rows, long long n, long long ld"
        call = f"gv::rows_split<{st}, {t}, {c}, {launch.vec}, {UNROLL}, {launch.block_x}>" \
               "(x, part, rows, n, ld)"
    elif launch.variant == "finish":
        sig = f"const {c}* part, {o}* out0, {o}* out1, long long rows, long long parts, long long n"
        call = f"gv::rows_finish<{st}, {c}, {o}>(part, out0, out1, rows, parts, n)"
    else:
        sig = f"const {t}* x, {o}* out0, {o}* out1, long long rows, long long n, long long ld"
        tmpl = f"{st}, {t}, {o}, {launch.vec}, {UNROLL}"
        call = (f"gv::rows_warp<{tmpl}>" if launch.variant == "warp"
                else f"gv::rows_block<{tmpl}, {launch.block_x}>") + "(x, out0, out1, rows, n, ld)"
    threads = launch.block[0] * launch.block[1] * launch.block[2]
    wrapper = (f'\n#line 1 "{launch.name} (generated wrapper)"\n'
               f'extern "C" __global__ void __launch_bounds__({threads}) {launch.name}({sig}) '
               f"{{\n  {call};\n}}\n")
    return launch.name, _rows_source() + wrapper


@functools.cache
def _rows_source():
    return _kernels.source("reduce") + "\n" + _kernels._read("rows.cuh")


OPTIONS = ("--std=c++17",)


@functools.cache
def _raw_kernel(name, source):
    """The cupy.RawKernel, built on first use (compiled on its first launch)."""
    return _device.cupy_library().RawKernel(source, name, options=OPTIONS)


def _kernel(launch: Launch):
    name, source = kernel_source(launch)
    if name not in _kernels.TWINS:
        _kernels.register_twin(name, _row_twin(launch.kind, launch.variant, launch.vec,
                                               launch.block_x))
    return _raw_kernel(name, source)


def _ptr(a):
    ptr = getattr(a.data, "ptr", None)
    return a.ctypes.data if ptr is None else ptr


@functools.cache
def _sms_of(device_id):
    try:
        cupy = _device.cupy_library()
        return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])
    except Exception:            # no device (emulation): the project's H100 / H200
        return DEFAULT_SMS


def _sms(a):
    dev = getattr(a, "device", None)
    return _sms_of(getattr(dev, "id", 0)) if dev is not None and hasattr(dev, "id") \
        else DEFAULT_SMS


def reduce(kind, xp, a, axis, keepdims, float_out=False):
    """`kind` of plain array `a` over `axis` (an int or a tuple) through the row kernels: one
    array, or a tuple for softmax_stats; None where they do not apply (switch off, NumPy, not a
    float array, not the trailing dims, trailing dims not contiguous, amax/amin of empty rows).
    float16 computes in float and returns float16, or float32 with `float_out`."""
    if xp is np or not enabled() or type(a) is not xp.ndarray or a.ndim == 0:
        return None
    dtype = a.dtype.name
    if dtype not in FLOATS:
        return None
    axes = {int(d) % a.ndim for d in (axis if isinstance(axis, tuple) else (axis,))}
    k = len(axes)
    if not k or axes != set(range(a.ndim - k, a.ndim)):
        return None
    lay = layout(a.shape, a.strides, a.itemsize, k)
    if lay is None or _ptr(a) % a.itemsize:
        return None
    rows, n, ld = lay
    if kind in ("amax", "amin") and n == 0:
        return None                  # no identity: CuPy's (and PyTorch's) error stands
    out_dtype = np.float32 if float_out and dtype == "float16" else a.dtype
    op = ROW_OPS[kind]
    outs = [xp.empty(rows, out_dtype) for _ in range(op.nout)]
    if rows:
        run(xp, plan(kind, rows, n, dtype, out_dtype, _sms(a)), a, outs, rows, n, ld)
    lead = a.shape[:a.ndim - k]
    shape = lead + (1,) * k if keepdims else lead
    outs = [o.reshape(shape) for o in outs]
    return outs[0] if op.nout == 1 else tuple(outs)


def run(xp, launches, a, outs, rows, n, ld):
    """Launch `launches` (plan's) over `a` into the 1-d `outs`."""
    i64 = np.int64
    out1 = outs[1] if len(outs) > 1 else outs[0]
    first = launches[0]
    if first.variant == "split":
        op = ROW_OPS[first.kind]
        parts = first.grid[0]
        part = xp.empty(rows * parts * op.k, _compute_np(first.dtype))
        _go(first, (a, part, i64(rows), i64(n), i64(ld)))
        _go(launches[1], (part, outs[0], out1, i64(rows), i64(parts), i64(n)))
        return
    _go(first, (a, outs[0], out1, i64(rows), i64(n), i64(ld)))


def _go(launch, args):
    kern = _kernel(launch)
    _kernels._launch(kern, "rows", launch.name[3:], launch.grid, launch.block, args)


# ----- the twins: the kernels' decomposition in NumPy -------------------------------------------
def _rows_view(a, rows, n, ld):
    """The (rows, n) matrix a RawKernel reads from `a`'s first element with row stride ld."""
    isz = a.itemsize
    return np.lib.stride_tricks.as_strided(a, shape=(rows, n), strides=(ld * isz, isz),
                                           writeable=False)


def _where(valid, new, old):
    return tuple(np.where(valid, x, y) for x, y in zip(new, old))


def _workers(op, x, row_ptrs, itemsize, vec, workers):
    """row_worker of kernels/rows.cuh for every (row, worker): the state of each worker w of
    `workers` over each row of the C-typed (rows, n) `x`, the rows starting at byte addresses
    `row_ptrs` (the head before the first vector boundary depends on them)."""
    rows, n = x.shape
    ct = x.dtype
    nbytes = vec * itemsize
    head = np.minimum(((nbytes - row_ptrs % nbytes) % nbytes) // itemsize, n)
    nvec = (n - head) // vec
    tail = head + nvec * vec
    w = np.arange(workers)[None, :]
    st = op.empty((rows, workers), ct)

    def take(idx, valid):
        vals = np.take_along_axis(x, np.clip(idx, 0, max(n - 1, 0)), axis=1) if n else \
            np.zeros(idx.shape, ct)
        return valid, vals

    def step(st, idx, valid):
        valid, vals = take(idx, valid)
        with np.errstate(all="ignore"):
            return _where(valid, op.merge(st, op.one(vals)), st)

    st = step(st, np.broadcast_to(w, (rows, workers)), w < head[:, None])
    rounds = int(-(-nvec.max() // workers)) if rows else 0
    for r in range(rounds):
        c = w + r * workers
        valid = c < nvec[:, None]
        start = head[:, None] + c * vec
        if valid.any():      # every vector load the kernel makes is aligned
            addr = row_ptrs[:, None] + start * itemsize
            assert not (addr[valid] % nbytes).any(), "a misaligned vector load"
        for j in range(vec):
            st = step(st, start + j, valid)
    return step(st, tail[:, None] + w, w < (n - tail)[:, None])


def _warp_merge(op, st):
    """warp_merge over the last axis (32 lanes): lane l merges (own, lane l ^ o)."""
    lanes = np.arange(32)
    for o in (16, 8, 4, 2, 1):
        with np.errstate(all="ignore"):
            st = op.merge(st, tuple(s[..., lanes ^ o] for s in st))
    return st


def _block_merge(op, st, b):
    """block_merge over the last axis (b threads): per-warp butterflies, warp 0 merges the warps'
    results (empty states in its other lanes); thread 0's state, without that axis."""
    lead = st[0].shape[:-1]
    st = _warp_merge(op, tuple(s.reshape(lead + (b // 32, 32)) for s in st))
    if b == 32:
        return tuple(s[..., 0, 0] for s in st)
    part = tuple(s[..., :, 0] for s in st)                    # (…, b / 32)
    lanes = op.empty(lead + (32,), st[0].dtype)
    lanes = tuple(np.concatenate([p, e[..., b // 32:]], axis=-1) for p, e in zip(part, lanes))
    return tuple(s[..., 0] for s in _warp_merge(op, lanes))


def _check_launch(grid, block, threads=None):
    assert len(grid) == 3 and len(block) == 3, (grid, block)
    assert all(int(v) >= 1 for v in (*grid, *block)), (grid, block)
    assert block[0] * block[1] * block[2] <= 1024 and grid[1] <= 65535 and grid[2] <= 65535
    if threads is not None:
        assert block[0] * block[1] * block[2] <= threads, "more threads than __launch_bounds__"


def _write(op, st, outs, rows_done, n):
    for k in range(op.nout):
        outs[k][:rows_done] = np.asarray(op.value(st, n, k)).astype(outs[k].dtype)


def _row_twin(kind, variant, vec, bx):
    """The NumPy twin of RawKernel gv_rows_<kind>_<variant>: fn(grid, block, args, shared_mem)
    writes into its output arguments what the kernel's threads would."""
    op = ROW_OPS[kind]

    def twin(grid, block, args, shared_mem=0):
        _check_launch(grid, block)
        if variant == "finish":
            part, out0, out1, rows, parts, n = args
            assert block[0] == 32
            done = min(int(rows), grid[0] * block[1])
            ct = part.dtype
            p = part[:done * parts * op.k].reshape(done, int(parts), op.k)
            st = op.empty((done, 32), ct)
            for k0 in range(0, int(parts), 32):
                ks = np.arange(k0, k0 + 32)
                valid = (ks < parts)[None, :]
                got = tuple(np.take(p[..., c], np.clip(ks, 0, parts - 1), axis=1)
                            for c in range(op.k))
                with np.errstate(all="ignore"):
                    st = _where(valid, op.merge(st, got), st)
            st = tuple(s[..., 0] for s in _warp_merge(op, st))
            _write(op, st, [out0, out1], done, int(n))
            return
        if variant == "split":
            a, part, rows, n, ld = args
        else:
            a, out0, out1, rows, n, ld = args
        rows, n, ld = int(rows), int(n), int(ld)
        ct = _compute_np(a.dtype)
        if variant == "warp":
            assert block[0] == 32, "one warp per row: blockDim.x must be 32"
            done, workers = min(rows, grid[0] * block[1]), 32
        elif variant == "block":
            assert block == (bx, 1, 1), f"compiled for ({bx}, 1, 1) blocks, launched {block}"
            done, workers = min(rows, grid[0]), bx
        else:
            assert block == (bx, 1, 1), f"compiled for ({bx}, 1, 1) blocks, launched {block}"
            done, workers = min(rows, grid[1]), grid[0] * bx
        x = _rows_view(a, done, n, ld).astype(ct)
        ptrs = _ptr(a) + np.arange(done, dtype=np.int64) * ld * a.itemsize
        st = _workers(op, x, ptrs, a.itemsize, vec, workers)
        if variant == "warp":
            st = tuple(s[..., 0] for s in _warp_merge(op, st))
        elif variant == "block":
            st = _block_merge(op, st, bx)
        else:
            parts = grid[0]
            st = _block_merge(op, tuple(s.reshape(done, parts, bx) for s in st), bx)
            view = part[:done * parts * op.k].reshape(done, parts, op.k)
            for c in range(op.k):
                view[..., c] = st[c]
            return
        _write(op, st, [out0, out1], done, n)
    twin.__name__ = f"gv_rows_{kind}_{variant}_twin"
    return twin


# ----- the switch at the reductions' call sites ------------------------------------------------
class switched:
    """A declared Reduction (`_kernels.Reduction`) that runs through the row kernels where they
    apply; its attributes are the Reduction's."""

    __slots__ = ("red", "kind")

    def __init__(self, red, kind):
        self.red, self.kind = red, kind

    def __getattr__(self, name):
        return getattr(self.red, name)

    def __repr__(self):
        return f"<{self.red!r}, rows: {self.kind}>"

    def __call__(self, xp, a, axis, keepdims=False, float_out=False):
        out = reduce(self.kind, xp, a, axis, keepdims, float_out)
        return self.red(xp, a, axis, keepdims, float_out) if out is None else out


@functools.cache
def _mean_op():
    from ..autograd._forward import deflinear
    from ._registry import KEEP, Op, defvjp
    from .reduce import keep

    def impl(xp, x, dim, keepdim):
        out = reduce("mean", xp, x, dim, keepdim)
        if out is None:        # NumPy (a deferred mean on the CPU): sum / n, as without the switch
            from .reduce import _sum_impl
            out = _sum_impl(xp, x, dim, keepdim) / math.prod(x.shape[d] for d in dim)
        return out

    def mean_vjp(g, ans, x, dim, keepdim):
        gx = keep(g, dim, keepdim, x.shape) / math.prod(x.shape[d] for d in dim)
        if type(gx._data) is Pending and not gx._nb and gx.shape != x.shape:
            # the graph's expand of a pending cotangent needs memory (a kernel of its own); a
            # product with a stride-0 view of 1 broadcasts it inside the backward's plan instead
            # (g * 1 is g, -0 and inf included), so the one-pass plan holds it
            gx = gx * _ones(gx, x.shape)
        return gx

    op = Op("mean", impl, promote=KEEP, saves_ans=False, saves_inputs=False)
    op.takes_pending = True          # a pending DAG is deferred as its map (gpuvjp/_onepass.py)
    defvjp(op, mean_vjp)
    deflinear(op)
    return op


def _ones(like, shape):
    """A Tensor of ones of `shape` like `like` (dtype, device) that holds one element: a
    stride-0 view, read once per row by the one-pass kernel."""
    from .._tensor import Tensor
    xp = _device.array_module(like._dev)
    one = xp.broadcast_to(xp.ones((), like._dtype.np), shape)
    return Tensor._make(one, like._dev, like._dtype, None)


def mean(input, dims, keepdim):
    """mean(input, dims) as one row-kernel launch (the sum and the division by n), or None where
    the row kernels do not apply; the backward is g / n broadcast, as for sum(x) / n. A mean of
    a pending float DAG over trailing dims, on either device, is the mean op too: `_lazy.reduce`
    defers it, so a vjp's backward may run in its pass (gpuvjp/_onepass.py)."""
    if not enabled() or input._nb or not dims or not math.prod(input.shape[d] for d in dims):
        return None
    data = input._data
    if type(data) is Pending:
        k = len(dims)
        if data.value is not None or data.dtype.name not in FLOATS or \
                set(dims) != set(range(input.ndim - k, input.ndim)):
            return None
        return _mean_op()(input, dim=tuple(dims), keepdim=keepdim)
    if input._dev.type != "cuda":
        return None
    xp = type(data).__module__.split(".")[0]
    if xp == "numpy" or type(data).__name__ != "ndarray" or data.dtype.name not in FLOATS:
        return None
    k = len(dims)
    if set(dims) != set(range(input.ndim - k, input.ndim)) or \
            layout(data.shape, data.strides, data.itemsize, k) is None:
        return None
    return _mean_op()(input, dim=tuple(dims), keepdim=keepdim)


# ----- the row broadcast: an elementwise kernel with row operands, as a 2-D launch -------------
ROWCAST_BLOCK = 256        # threads a block
ROWCAST_PER_THREAD = 4     # columns a thread, at least


def rowcast_geometry(rows, n):
    """(grid, block) of a (rows, n) row broadcast: blockDim.x covers the row (a power of two up
    to ROWCAST_BLOCK), blockDim.y rows a block for short rows; a grid-stride loop over both."""
    bx = min(ROWCAST_BLOCK, 1 << max(0, (int(n) - 1).bit_length()))
    by = max(1, ROWCAST_BLOCK // bx)
    gx = max(1, -(-n // (bx * ROWCAST_PER_THREAD)))
    gy = max(1, min(-(-rows // by), 65535))
    return (gx, gy, 1), (bx, by, 1)


def _classify(a, out_shape, q):
    """How operand `a` is read in a (rows, n) launch split at dim q of out_shape: ("full", ld),
    ("row", stride) (constant along the row), ("col",) (constant across rows) or None."""
    nd = len(out_shape)
    shape = (1,) * (nd - a.ndim) + tuple(a.shape)
    strides = (0,) * (nd - a.ndim) + tuple(a.strides)
    if any(s not in (1, o) for s, o in zip(shape, out_shape)):
        return None
    # a broadcast dim reads the same element: stride 0
    bstrides = tuple(0 if s != o else st for s, o, st in zip(shape, out_shape, strides))
    lead, isz = out_shape[:q], a.itemsize
    t_str = _collapse(out_shape[q:], bstrides[q:])
    l_str = _collapse(lead, bstrides[:q])
    if t_str is None or l_str is None or l_str < 0 or l_str % isz:
        return None
    if t_str == 0:
        return ("row", l_str // isz)
    if t_str != isz:
        return None
    if l_str == 0 and math.prod(lead) > 1:
        return ("col",)
    return ("full", l_str // isz if math.prod(lead) > 1 else math.prod(out_shape[q:]))


def _is_array(a):
    return isinstance(a, np.ndarray) or type(a).__name__ == "ndarray"


def _rowcast_plan(arrays, out_shape):
    """(q, kinds) for the first split of out_shape (from the right) at which every operand is a
    full, row, column or scalar operand, at least one a row and one not; None if there is none."""
    for q in range(len(out_shape) - 1, 0, -1):
        kinds = [_classify(a, out_shape, q) if _is_array(a) else ("scalar",) for a in arrays]
        if all(k is not None for k in kinds) and any(k[0] == "row" for k in kinds) and \
                any(k[0] in ("full", "col") for k in kinds):
            return q, kinds
    return None


def _leaf_code(i, ty, nm, kind, indent, restrict, sig, per_row, per_col):
    """Operand i of C type `ty` read into `nm` as `kind` says (a scalar argument; a row value
    read once per row; a full operand at _r * stride + _j; a column operand at _j): appends its
    parameters to `sig` and its loads to the per-row and per-element lines."""
    ptr = f"const {ty}*{restrict}"
    if kind[0] == "scalar":
        sig.append(f"const {ty} {nm}")
    elif kind[0] == "row":
        sig.append(f"{ptr} _p{i}, long long _s{i}")
        per_row.append(f"{indent}const {ty} {nm} = _p{i}[_r * _s{i}];")
    elif kind[0] == "full":
        sig.append(f"{ptr} _p{i}, long long _s{i}")
        per_row.append(f"{indent}{ptr} _q{i} = _p{i} + _r * _s{i};")
        per_col.append(f"{indent}  const {ty} {nm} = _q{i}[_j];")
    else:
        sig.append(f"{ptr} _p{i}")
        per_col.append(f"{indent}  const {ty} {nm} = _p{i}[_j];")


def _leaf_args(fplan, kinds):
    """The kernel arguments for the plan's leaves, in _leaf_code's order: a scalar as its
    typed value, an array, and after a row or full operand its length."""
    args = []
    for a, d, kd in zip(fplan.leaves, fplan.leaf_dtypes, kinds):
        if kd[0] == "scalar":
            args.append(np.dtype(d).type(a))
        else:
            args.append(a)
            if kd[0] in ("row", "full"):
                args.append(np.int64(kd[1]))
    return args


def rowcast_source(name, family, fn, in_params, out_params, kinds, dtypes):
    """The RawKernel gv_rowcast_<fn>_<kinds>: out[r, j] = gv::fn(...) with row operands read once
    per row into registers, full operands at r * ld + j, column operands at j."""
    params = [p.split()[-2:] for p in in_params.split(",")]
    out_t = _ctype(_out_dtype(out_params, dtypes))
    half = dtypes["T"] == "float16"
    ctype = "float" if half else _ctype(dtypes["T"])
    sig, per_row, per_col = [], [], []
    for i, ((t, nm), kind) in enumerate(zip(params, kinds)):
        ty = _ctype(dtypes.get(t, t) if len(t) == 1 else t)
        if kind[0] == "scalar" and len(t) == 1:
            ty = ctype                               # a T scalar computes in the kernel's type
        _leaf_code(i, ty, nm, kind, "    ", "", sig, per_row, per_col)
    sig.append(f"{out_t}* _out, long long _rows, long long _n")
    call = _kernels.call_expr(fn, in_params, ctype)
    body = "\n".join([
        f'extern "C" __global__ void __launch_bounds__({ROWCAST_BLOCK}) {name}('
        + ", ".join(sig) + ") {",
        "  for (long long _r = (long long)blockIdx.y * blockDim.y + threadIdx.y; _r < _rows;",
        "       _r += (long long)gridDim.y * blockDim.y) {",
        *per_row,
        f"    {out_t}* _o = _out + _r * _n;",
        f"#pragma unroll {ROWCAST_PER_THREAD}",
        "    for (long long _j = (long long)blockIdx.x * blockDim.x + threadIdx.x; _j < _n;",
        "         _j += (long long)gridDim.x * blockDim.x) {",
        *per_col,
        f"      _o[_j] = ({out_t})({call});",
        "    }", "  }", "}"])
    head = "#include <cuda_fp16.h>\n" if half else ""
    return head + _kernels.source(family) + f'\n#line 1 "{name} (generated wrapper)"\n' + body \
        + "\n"


def _out_dtype(out_params, dtypes):
    t = out_params.split()[0]
    return dtypes[t] if len(t) == 1 else np.dtype(t).name


def _rowcast_twin(fn, kinds):
    """The NumPy twin of RawKernel gv_rowcast_<fn>_<kinds>: the operands read as the kernel
    reads them (row operands at r * stride, full ones at r * ld + j), computed by gv::fn's twin
    (in float32 for float16)."""
    from ._registry import REGISTRY
    op = next(o for o in REGISTRY.values() if o.kernel_fn == fn)

    def twin(grid, block, args, shared_mem=0):
        _check_launch(grid, block, ROWCAST_BLOCK)
        half = args[-3].dtype == np.float16
        it = iter(args)
        vals = []
        ops = [(k, next(it), next(it) if k[0] in ("row", "full") else None) for k in kinds]
        out, rows, n = next(it), int(next(it)), int(next(it))
        assert next(it, None) is None, "more arguments than the kernel takes"
        for kind, a, s in ops:
            if kind[0] == "scalar":
                v = np.asarray(a)
            elif kind[0] == "row":
                v = np.lib.stride_tricks.as_strided(a, (rows, 1), (int(s) * a.itemsize, 0))
            elif kind[0] == "full":
                v = _rows_view(a, rows, n, int(s))
            else:
                v = np.lib.stride_tricks.as_strided(a, (1, n), (0, a.itemsize))
            if half and v.dtype.kind == "f":
                v = v.astype(np.float32)
            vals.append(v)
        with np.errstate(all="ignore"):
            res = np.broadcast_to(np.asarray(op.twin(*vals)), (rows, n))
        out.reshape(rows, n)[...] = res.astype(out.dtype)
    twin.__name__ = f"gv_rowcast_{fn}_twin"
    return twin


def _bound(in_params, arrays):
    """The dtype each type placeholder binds to, or None where the operands disagree with the
    parameter list (CuPy's kernel then raises its own error)."""
    bound = {}
    for p, a in zip(in_params.split(","), arrays):
        t = p.split()[-2]
        dt = np.dtype(a.dtype).name
        if len(t) == 1:
            if bound.setdefault(t, dt) != dt:
                return None
        elif dt != np.dtype(t).name:
            return None
    return bound


def rowcast(xp, family, fn, in_params, out_params, arrays):
    """gv::fn over arrays with row operands (constant over trailing dims: g[:, None] of a row
    reduction's cotangent) as one 2-D launch; None where it does not apply."""
    if xp is np or not enabled() or len(arrays) < 2 or "," in out_params:
        return None
    if not all(hasattr(a, "dtype") for a in arrays):
        return None
    dtypes = _bound(in_params, arrays)
    if dtypes is None or dtypes.get("T") not in FLOATS:
        return None
    shapes = [a.shape for a in arrays if type(a) is xp.ndarray]
    if len(shapes) < 2 or any(type(a) is not xp.ndarray and np.ndim(a) != 0 for a in arrays):
        return None
    out_shape = tuple(np.broadcast_shapes(*shapes))
    if math.prod(out_shape) == 0:
        return None
    found = _rowcast_plan(arrays, out_shape)
    if found is None:
        return None
    q, kinds = found
    if any(k[0] != "scalar" and _ptr(a) % a.itemsize for k, a in zip(kinds, arrays)):
        return None
    rows, n = math.prod(out_shape[:q]), math.prod(out_shape[q:])
    code = "".join(k[0][0] for k in kinds)
    key = "_".join(f"{t}{dtypes[t]}" for t in sorted(dtypes))
    name = f"gv_rowcast_{fn}_{code}"
    kern = _rowcast_kernel(name, family, fn, in_params, out_params, tuple(kinds), key)
    out = xp.empty(out_shape, _out_dtype(out_params, dtypes))
    args = []
    ct = np.dtype(np.float32) if dtypes["T"] == "float16" else np.dtype(dtypes["T"])
    for (t, _), kind, a in zip([p.split()[-2:] for p in in_params.split(",")], kinds, arrays):
        if kind[0] == "scalar":
            args.append(ct.type(a) if len(t) == 1 else np.dtype(t).type(a))
        else:
            args.append(a)
            if kind[0] in ("row", "full"):
                args.append(np.int64(kind[1]))
    args += [out, np.int64(rows), np.int64(n)]
    grid, block = rowcast_geometry(rows, n)
    _kernels._launch(kern, family, name[3:], grid, block, tuple(args))
    return out


@functools.cache
def _rowcast_kernel(name, family, fn, in_params, out_params, kinds, key):
    dtypes = dict((part[0], part[1:]) for part in key.split("_"))
    if name not in _kernels.TWINS:
        _kernels.register_twin(name, _rowcast_twin(fn, kinds))
    return _raw_kernel(name, rowcast_source(name, family, fn, in_params, out_params, kinds,
                                            dtypes))


# ----- the vjp in one pass: a row reduction and an elementwise plan as one RawKernel -----------
# A one-pass plan (gpuvjp/_onepass.py) computes the map of a sum or mean over the trailing dims
# together with elementwise results of the map's shape. Each worker walks its row's elements j =
# w, w + P, ...: the plan's let-bound temporaries once, the elementwise outputs written, the map
# value merged into the worker's state in that order; then warp_merge / block_merge as the row
# reductions. Geometry is `plan`'s: a warp per row (short rows), a block per row, or gridDim.x
# blocks per row whose partial states the last block to finish merges (an atomic count per row,
# reset by that block), so the split variant is one launch too. Row operands (the cotangent
# v[:, None]) are read once per row, full ones at r * ld + j, column ones at j; any other leaf,
# and float16 anywhere in the plan, declines (the two-kernel path runs).
ONEPASS_OPS = {"sum": "RowSum", "mean": "RowMean"}
ONEPASS_UNROLL = 4


def onepass_kinds(fplan, k):
    """How the kernel reads each leaf of `fplan` whose last `k` dims are reduced: ("full", ld),
    ("row", stride), ("col",) or ("scalar",); None when one cannot be read so."""
    q = len(fplan.shape) - k
    kinds = []
    for a, s in zip(fplan.leaves, fplan.leaf_scalar):
        if s:
            kinds.append(("scalar",))
            continue
        kd = _classify_onepass(a, fplan.shape, q)
        if kd is None or _ptr(a) % a.itemsize:
            return None
        kinds.append(kd)
    return kinds


def _classify_onepass(a, shape, q):
    if q == 0:          # one row: the whole array
        kd = _classify(a, (1,) + tuple(shape), 1)
        return None if kd is None else (kd[0], 0) if kd[0] in ("row", "full") else kd
    return _classify(a, tuple(shape), q)


def _onepass_supported(fplan):
    dts = [np.dtype(d) for d in fplan.leaf_dtypes] + [np.dtype(n[2]) for n in fplan.nodes] + \
        [np.dtype(n[3]) for n in fplan.nodes]
    return np.dtype(fplan.nodes[fplan.outputs[0]][2]).name in ("float32", "float64") and \
        all(d.name != "float16" and d.name in _kernels.CTYPE for d in dts)


def onepass_source(kname, fplan, kind, kinds, variant, bx, threads):
    """The RawKernel `kname`: `fplan`'s outputs 1.. written and output 0 reduced by `kind`
    (sum or mean) per row, in `variant` (warp, block, split) with B = bx threads a row."""
    fn_src, families, fz = _kernels.plan_source(fplan, _plan_name(fplan))
    mt = _kernels._ctype(fplan.nodes[fplan.outputs[0]][2])
    sig, per_row, per_col, args, outs = _operands(fplan, kinds, fplan.outputs[1:], "  ")
    sig.append(f"{mt}* _out")
    if variant == "split":
        sig.append(f"{mt}* _part, unsigned int* _count")
    sig.append("long long _rows, long long _n")
    prologue = {
        "warp": ["  const long long _r = (long long)blockIdx.x * blockDim.y + threadIdx.y;",
                 "  const long long _w = threadIdx.x, _P = 32;"],
        "block": ["  const long long _r = blockIdx.x;",
                  f"  const long long _w = threadIdx.x, _P = {bx};"],
        "split": ["  const long long _r = blockIdx.y;",
                  f"  const long long _w = (long long)blockIdx.x * {bx} + threadIdx.x;",
                  f"  const long long _P = (long long)gridDim.x * {bx};"]}[variant]
    epilogue = {
        "warp": ["  _s = gv::warp_merge<Op>(_s);",
                 "  if (threadIdx.x == 0) gv::put(_out + _r, Op::value(_s, _n, 0));"],
        "block": [f"  _s = gv::block_merge<Op, {bx}>(_s);",
                  "  if (threadIdx.x == 0) gv::put(_out + _r, Op::value(_s, _n, 0));"],
        "split": [f"  _s = gv::block_merge<Op, {bx}>(_s);",
                  "  __shared__ unsigned int _last;",
                  "  if (threadIdx.x == 0) {",
                  "    Op::store(_s, _part + (_r * gridDim.x + blockIdx.x) * Op::K);",
                  "    __threadfence();",
                  "    _last = atomicAdd(_count + _r, 1u) == gridDim.x - 1;",
                  "  }",
                  "  __syncthreads();",
                  "  if (_last && threadIdx.x < 32) {       // the row's last block merges it",
                  "    __threadfence();",
                  "    typename Op::St _t = Op::empty();",
                  "    for (long long _k = threadIdx.x; _k < gridDim.x; _k += 32)",
                  "      _t = Op::merge(_t, Op::load(_part + (_r * gridDim.x + _k) * Op::K));",
                  "    _t = gv::warp_merge<Op>(_t);",
                  "    if (threadIdx.x == 0) {",
                  "      gv::put(_out + _r, Op::value(_t, _n, 0));",
                  "      _count[_r] = 0;",
                  "    }",
                  "  }"]}[variant]
    if outs:
        call = f"gv::{fz}({', '.join(args + ['_m'] + [f'_v{k}' for k in range(len(outs))])});"
    else:                      # the reduction alone: the plan's function returns the map value
        call = f"_m = gv::{fz}({', '.join(args)});"
    body = [f'extern "C" __global__ void __launch_bounds__({threads}) {kname}('
            + ", ".join(sig) + ") {",
            f"  typedef gv::{ONEPASS_OPS[kind]}<{mt}> Op;",
            *prologue,
            "  if (_r >= _rows) return;                // the whole warp or block leaves",
            *per_row,
            "  typename Op::St _s = Op::empty();",
            f"#pragma unroll {ONEPASS_UNROLL}",
            "  for (long long _j = _w; _j < _n; _j += _P) {",
            *per_col,
            f"    {mt} _m;",
            *[f"    {t} _v{k};" for k, t in enumerate(outs)],
            f"    {call}",
            *[f"    _w{k}[_j] = _v{k};" for k in range(len(outs))],
            "    _s = Op::merge(_s, Op::one(_m));",
            "  }",
            *epilogue,
            "}"]
    text = _kernels._read("common.cuh") + "\n" + _kernels._read("fuse.cuh")
    for f in sorted(set(families) | {"reduce"}):
        text += "\n" + _kernels._read(f"{f}.cuh")
    text += "\n" + _kernels._read("rows.cuh") + "\n" + fn_src
    return text + f'\n#line 1 "{kname} (generated wrapper)"\n' + "\n".join(body) + "\n"


def _operands(fplan, kinds, written, indent):
    """(signature, per-row lines, per-element lines, the plan function's arguments, C types of
    the outputs written) of a RawKernel over `fplan`'s leaves read as `kinds` say, writing the
    plan outputs `written` (node indices) at _r * _n + _j."""
    sig, per_row, per_col, args = [], [], [], []
    for i, (d, kd) in enumerate(zip(fplan.leaf_dtypes, kinds)):
        _leaf_code(i, _kernels._ctype(d), f"a{i}", kd, indent, " __restrict__", sig, per_row,
                   per_col)
        args.append(f"a{i}")
    outs = [_kernels._ctype(fplan.nodes[o][2]) for o in written]
    for k, t in enumerate(outs):
        sig.append(f"{t}* __restrict__ _o{k}")       # fresh outputs: no operand aliases them
        per_row.append(f"{indent}{t}* __restrict__ _w{k} = _o{k} + _r * _n;")
    return sig, per_row, per_col, args, outs


def _plan_name(fplan):
    from .._plan import kernel_name
    return kernel_name(fplan)


def onepass_launch(fplan, kind, k, name, sms=DEFAULT_SMS):
    """(kernel name, kinds, Launch) of the one-pass kernel of `fplan`, or None where it declines
    (float16, a leaf it cannot index simply, an empty row or no rows)."""
    if kind not in ONEPASS_OPS or not _onepass_supported(fplan):
        return None
    q = len(fplan.shape) - k
    rows, n = math.prod(fplan.shape[:q]), math.prod(fplan.shape[q:])
    if rows <= 0 or n <= 0:
        return None
    kinds = onepass_kinds(fplan, k)
    if kinds is None:
        return None
    mt = np.dtype(fplan.nodes[fplan.outputs[0]][2]).name
    first = plan(kind, rows, n, mt, sms=sms)[0]
    code = "".join(kd[0][0] for kd in kinds)
    kname = f"{name}_{first.variant}" + (f"_b{first.block_x}" if first.variant != "warp" else "") \
        + f"_{code}"
    return kname, kinds, first


_ONEPASS: dict = {}
_COUNTS: dict = {}


def _counts(xp, rows):
    """The per-row arrival counts of split one-pass kernels on the current device and stream
    (launches on one stream never overlap): zeros, kept zero by the kernels (the last block of
    a row resets its count)."""
    key = (xp.cuda.Device().id, xp.cuda.get_current_stream().ptr)
    c = _COUNTS.get(key)
    if c is None or c.size < rows:
        c = _COUNTS[key] = xp.zeros(max(rows, 1024, 0 if c is None else 2 * c.size), np.uint32)
    return c


def onepass(fplan, kind, k, name, dev):
    """(the reduction, a (rows,) array; [the plan's other outputs]) of the one-pass plan `fplan`
    on cuda device `dev`, one launch; None where the kernel declines or the switch is off."""
    if not enabled():
        return None
    cupy = _device.cupy_library()
    if any(not s and type(a) is not cupy.ndarray for a, s in zip(fplan.leaves, fplan.leaf_scalar)):
        return None
    with cupy.cuda.Device(dev.index):
        first_leaf = next((a for a, s in zip(fplan.leaves, fplan.leaf_scalar) if not s), None)
        got = onepass_launch(fplan, kind, k, name,
                             DEFAULT_SMS if first_leaf is None else _sms(first_leaf))
        if got is None:
            return None
        kname, kinds, launch = got
        key = (kname, fplan.key)
        kern = _ONEPASS.get(key)
        if kern is None:
            threads = launch.block[0] * launch.block[1] * launch.block[2]
            source = onepass_source(kname, fplan, kind, kinds, launch.variant, launch.block_x,
                                    threads)
            _kernels.register_twin(kname, onepass_twin(_kernels._skeleton(fplan), kind, kinds,
                                                       launch.variant, launch.block_x, threads))
            kern = _ONEPASS[key] = _raw_kernel(kname, source)
        q = len(fplan.shape) - k
        rows, n = math.prod(fplan.shape[:q]), math.prod(fplan.shape[q:])
        args = _leaf_args(fplan, kinds)
        outs = [cupy.empty(fplan.shape, fplan.nodes[o][2]) for o in fplan.outputs[1:]]
        mt = fplan.nodes[fplan.outputs[0]][2]
        out = cupy.empty(rows, mt)
        args += outs + [out]
        if launch.variant == "split":
            parts = launch.grid[0]
            args += [cupy.empty(rows * parts * ROW_OPS[kind].k, mt),
                     _counts(cupy, rows)]
        args += [np.int64(rows), np.int64(n)]
        _kernels._launch(kern, "rows", kname[3:], launch.grid, launch.block, tuple(args))
    return out, outs


def onepass_twin(skel, kind, kinds, variant, bx, threads):
    """The NumPy twin of a one-pass RawKernel: the plan's values by its NumPy evaluation over the
    leaves read as the kernel reads them, the outputs written, and the map merged per worker and
    per block in the kernel's order (the split variant's last-block merge included)."""
    from .._plan import _evaluate
    op = ROW_OPS[kind]

    def twin(grid, block, args, shared_mem=0):
        _check_launch(grid, block, threads)
        it = iter(args)
        taken = [(kd, next(it), next(it) if kd[0] in ("row", "full") else None) for kd in kinds]
        outs = [next(it) for _ in skel.outputs[1:]]
        out = next(it)
        part, count = (next(it), next(it)) if variant == "split" else (None, None)
        rows, n = int(next(it)), int(next(it))
        assert next(it, None) is None, "more arguments than the kernel takes"
        leaves = []
        for (kd, a, s), d in zip(taken, skel.leaf_dtypes):
            if kd[0] == "scalar":
                leaves.append(np.dtype(d).type(a))
            elif kd[0] == "row":
                leaves.append(np.lib.stride_tricks.as_strided(a, (rows, 1),
                                                              (int(s) * a.itemsize, 0)))
            elif kd[0] == "full":
                leaves.append(_rows_view(a, rows, n, int(s) if rows > 1 else n))
            else:
                leaves.append(np.lib.stride_tricks.as_strided(a, (1, n), (0, a.itemsize)))
        with np.errstate(all="ignore"):
            vals = _evaluate(skel, leaves, (rows, n))
        for o, v in zip(outs, vals[1:]):
            o.reshape(rows, n)[...] = np.broadcast_to(v, (rows, n))
        m = np.broadcast_to(np.asarray(vals[0]), (rows, n))
        if variant == "warp":
            assert block[0] == 32, "one warp per row: blockDim.x must be 32"
            done, workers = min(rows, grid[0] * block[1]), 32
        elif variant == "block":
            assert block == (bx, 1, 1), f"compiled for ({bx}, 1, 1) blocks, launched {block}"
            done, workers = min(rows, grid[0]), bx
        else:
            assert block == (bx, 1, 1), f"compiled for ({bx}, 1, 1) blocks, launched {block}"
            done, workers = min(rows, grid[1]), grid[0] * bx
        m = m[:done]
        st = op.empty((done, workers), m.dtype)
        w = np.arange(workers)
        with np.errstate(all="ignore"):
            for j0 in range(0, n, workers):
                idx = j0 + w
                valid = (idx < n)[None, :]
                got = (np.take(m, np.clip(idx, 0, n - 1), axis=1),)
                st = _where(valid, op.merge(st, got), st)
        if variant == "warp":
            st = tuple(s[..., 0] for s in _warp_merge(op, st))
        elif variant == "block":
            st = _block_merge(op, st, bx)
        else:
            parts = grid[0]
            assert not count[:done].any(), "a row's arrival count was not reset to zero"
            st = _block_merge(op, tuple(s.reshape(done, parts, bx) for s in st), bx)
            view = part[:done * parts * op.k].reshape(done, parts, op.k)
            for c in range(op.k):
                view[..., c] = st[c]
            lanes = op.empty((done, 32), m.dtype)
            with np.errstate(all="ignore"):
                for k0 in range(0, parts, 32):
                    ks = k0 + np.arange(32)
                    valid = (ks < parts)[None, :]
                    got = tuple(np.take(view[..., c], np.clip(ks, 0, parts - 1), axis=1)
                                for c in range(op.k))
                    lanes = _where(valid, op.merge(lanes, got), lanes)
            st = tuple(s[..., 0] for s in _warp_merge(op, lanes))
        _write(op, st, [out, None], done, n)
    twin.__name__ = f"gv_onepass_{variant}_twin"
    return twin


# ----- fused plans with row operands: the row broadcast of a whole plan -------------------------
# An elementwise plan (gpuvjp/_plan.py) whose leaves include row operands (a row reduction's
# cotangent or output, g[:, None] and lse[:, None] of a backward) runs as one RawKernel with the
# row broadcast's 2-D launch (`rowcast_geometry`): each row's operands read once into registers,
# full operands at r * ld + j, no index division per element. The plan's output records and
# values are those of its ElementwiseKernel; float16, and leaves with no such reading, decline.
def plan_rowcast_kinds(fplan):
    """(q, kinds) of `fplan`'s leaves split at dim q (rows = prod(shape[:q])), at least one a
    row operand and one a full or column operand; None where no split reads them so."""
    shape = tuple(fplan.shape)
    if len(shape) < 2 or not math.prod(shape) or not _no_half(fplan):
        return None
    arrays = [None if s else a for a, s in zip(fplan.leaves, fplan.leaf_scalar)]
    for q in range(len(shape) - 1, 0, -1):
        kinds = [("scalar",) if a is None else _classify(a, shape, q) for a in arrays]
        if all(k is not None for k in kinds) and any(k[0] == "row" for k in kinds) and \
                any(k[0] in ("full", "col") for k in kinds):
            if any(a is not None and _ptr(a) % a.itemsize for a in arrays):
                return None
            return q, kinds
    return None


def _no_half(fplan):
    dts = [np.dtype(d) for d in fplan.leaf_dtypes] + \
        [np.dtype(n[c]) for n in fplan.nodes for c in (2, 3)]
    return all(d.name != "float16" and d.name in _kernels.CTYPE for d in dts)


def plan_rowcast_source(kname, fplan, kinds):
    """The RawKernel `kname` writing every output of `fplan` with the row broadcast's launch."""
    fn_src, families, fz = _kernels.plan_source(fplan, _plan_name(fplan))
    sig, per_row, per_col, args, outs = _operands(fplan, kinds, fplan.outputs, "    ")
    sig.append("long long _rows, long long _n")
    vs = [f"_v{k}" for k in range(len(outs))]
    call = f"_v0 = gv::{fz}({', '.join(args)});" if len(outs) == 1 else \
        f"gv::{fz}({', '.join(args + vs)});"
    body = [f'extern "C" __global__ void __launch_bounds__({ROWCAST_BLOCK}) {kname}('
            + ", ".join(sig) + ") {",
            "  for (long long _r = (long long)blockIdx.y * blockDim.y + threadIdx.y; _r < _rows;",
            "       _r += (long long)gridDim.y * blockDim.y) {",
            *per_row,
            f"#pragma unroll {ROWCAST_PER_THREAD}",
            "    for (long long _j = (long long)blockIdx.x * blockDim.x + threadIdx.x; _j < _n;",
            "         _j += (long long)gridDim.x * blockDim.x) {",
            *per_col,
            *[f"      {t} _v{k};" for k, t in enumerate(outs)],
            f"      {call}",
            *[f"      _w{k}[_j] = _v{k};" for k in range(len(outs))],
            "    }", "  }", "}"]
    text = _kernels._read("common.cuh") + "\n" + _kernels._read("fuse.cuh")
    for f in families:
        text += "\n" + _kernels._read(f"{f}.cuh")
    text += "\n" + fn_src
    return text + f'\n#line 1 "{kname} (generated wrapper)"\n' + "\n".join(body) + "\n"


def run_plan(fplan, name, dev):
    """The outputs of the elementwise plan `fplan` on cuda device `dev` (a list of CuPy arrays)
    as one 2-D RawKernel launch, or None where it has no row operands or the switch is off."""
    if not enabled():
        return None
    cupy = _device.cupy_library()
    if any(not s and type(a) is not cupy.ndarray for a, s in zip(fplan.leaves, fplan.leaf_scalar)):
        return None
    found = plan_rowcast_kinds(fplan)
    if found is None:
        return None
    q, kinds = found
    kname = f"{name}_rowcast_" + "".join(k[0][0] for k in kinds)
    key = (kname, fplan.key)
    with cupy.cuda.Device(dev.index):
        kern = _ONEPASS.get(key)
        if kern is None:
            _kernels.register_twin(kname, plan_rowcast_twin(_kernels._skeleton(fplan), kinds))
            kern = _ONEPASS[key] = _raw_kernel(kname, plan_rowcast_source(kname, fplan, kinds))
        rows, n = math.prod(fplan.shape[:q]), math.prod(fplan.shape[q:])
        args = _leaf_args(fplan, kinds)
        outs = [cupy.empty(fplan.shape, fplan.nodes[o][2]) for o in fplan.outputs]
        args += outs + [np.int64(rows), np.int64(n)]
        grid, block = rowcast_geometry(rows, n)
        _kernels._launch(kern, "fuse", kname[3:], grid, block, tuple(args))
    return outs


def _read_leaves(skel, kinds, it, rows, n):
    """The leaves as a RawKernel over (rows, n) reads them from its arguments `it`."""
    leaves = []
    for kd, d in zip(kinds, skel.leaf_dtypes):
        a = next(it)
        if kd[0] == "scalar":
            leaves.append(np.dtype(d).type(a))
            continue
        s = int(next(it)) if kd[0] in ("row", "full") else None
        if kd[0] == "row":
            leaves.append(np.lib.stride_tricks.as_strided(a, (rows, 1), (s * a.itemsize, 0)))
        elif kd[0] == "full":
            leaves.append(_rows_view(a, rows, n, s if rows > 1 else n))
        else:
            leaves.append(np.lib.stride_tricks.as_strided(a, (1, n), (0, a.itemsize)))
    return leaves


def plan_rowcast_twin(skel, kinds):
    """The NumPy twin of a plan's row-broadcast RawKernel: its launch checked, the leaves read
    as the kernel reads them, the plan evaluated by NumPy, every output written."""
    from .._plan import _evaluate

    def twin(grid, block, args, shared_mem=0):
        _check_launch(grid, block, ROWCAST_BLOCK)
        rows, n = int(args[-2]), int(args[-1])
        it = iter(args[:-2])
        leaves = _read_leaves(skel, kinds, it, rows, n)
        outs = list(it)
        assert len(outs) == len(skel.outputs), "the kernel's arguments do not match its plan"
        with np.errstate(all="ignore"):
            vals = _evaluate(skel, leaves, (rows, n))
        for o, v in zip(outs, vals):
            o.reshape(rows, n)[...] = np.broadcast_to(v, (rows, n))
    twin.__name__ = "gv_plan_rowcast_twin"
    return twin
