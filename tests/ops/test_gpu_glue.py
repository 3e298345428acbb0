"""The GPU-only Python around the custom kernels, run without a GPU: the array module is a stand-in
for CuPy (NumPy under another name, so the code takes its GPU branches), and the CuPy kernel
objects are NumPy emulations that enforce CuPy's calling conventions (one dtype per type
placeholder, typed parameters, the output shapes a ReductionKernel accepts) and compute through
the twins. What this checks is the glue: the arguments, shapes, dtypes and slots the GPU
branches pass. The kernels themselves are checked by tests/ops/test_kernels.py."""

from __future__ import annotations

import types

import numpy as np
import pytest

from gpuvjp.nn import functional as F
from gpuvjp.ops import REGISTRY, _kernels
from gpuvjp.ops import reduce as R
from gpuvjp.ops import shape as S

fake_cupy = types.ModuleType("fake_cupy")
fake_cupy.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})


def _bind_placeholders(params, arrays):
    """CuPy's rule: each one-letter type binds one dtype; a named type takes that dtype."""
    bound = {}
    for p, a in zip(params.split(","), arrays):
        t, name = p.split()[-2:]
        dt = np.asarray(a).dtype if hasattr(a, "dtype") else None
        if len(t) == 1:
            if dt is not None and bound.setdefault(t, dt) != dt:
                raise TypeError(f"type placeholder {t} bound to {bound[t]} and {dt} ({name})")
        elif dt is not None and dt != np.dtype(t):
            raise TypeError(f"{name} is {t}, got {dt}")
    return bound


def _elementwise(family, fn, in_params, out_params, half):
    op = next(o for o in REGISTRY.values() if o.kernel_fn == fn)

    def call(*arrays):
        bound = _bind_placeholders(in_params, arrays)
        assert (bound.get("T") == np.float16) == half, "the float16 flag follows T"
        arrays = [np.asarray(a, np.float32) if half and a.dtype.kind == "f" else a
                  for a in arrays]
        out = np.asarray(op.twin(*arrays))
        return out.astype(np.float16) if half else out
    return call


def _reduction(name, half, float_out):
    red = _kernels.REDUCTIONS[name]

    def call(a, *outs, axis, keepdims):
        want = red.twin(a, axis, keepdims)
        want = [want] if len(red.values) == 1 else list(want)
        dtype = np.float32 if float_out else a.dtype
        if outs:                                 # CuPy checks given outputs' shape and dtype
            assert len(outs) == len(want)
            for o, w in zip(outs, want):
                assert o.shape == w.shape, f"out shape {o.shape}, CuPy expects {w.shape}"
                assert o.dtype == dtype
                o[...] = w
            return outs[0]
        return want[0].astype(dtype)
    return call


def _scatter(name):
    _, in_params, _ = _kernels.SCATTERS[name]

    def call(g, idx, n, inner, d, out):
        _bind_placeholders(in_params, [g, idx])
        assert out.dtype == g.dtype
        flat_g = np.broadcast_to(g, g.shape).reshape(-1)
        for i in range(flat_g.size):
            k = idx.reshape(-1)[(i // inner) % n] if name == "index_select_bwd" \
                else idx.reshape(-1)[i]
            slot = ((i // (n * inner)) * d + k) * inner + i % inner
            out[np.unravel_index(slot, out.shape)] += flat_g[i]
    return call


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.delenv("GPUVJP_ROW_KERNELS", raising=False)   # tests/ops/test_rows.py's kernels
    monkeypatch.setattr(_kernels, "elementwise", _elementwise)
    monkeypatch.setattr(_kernels, "reduction_kernel", _reduction)
    monkeypatch.setattr(_kernels, "scatter_kernel", _scatter)


DTYPES = ["float16", "float32", "float64"]


def _close(got, want):
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    tol = 2e-3 if got.dtype == np.float16 else 1e-6
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol,
                               atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((3, 5), 1), ((3, 5), 0), ((2, 3, 4), 1), ((4,), 0),
                                       ((0, 3), 1), ((3, 0), 1)])
def test_softmax_and_stats(shape, dim, dtype, emulated, rng):
    x = rng.uniform(-3, 3, shape).astype(dtype)
    for log in (False, True):
        _close(F._softmax_impl(fake_cupy, x, dim, log), F._softmax_impl(np, x, dim, log))
    got = F.softmax_stats_.impl(fake_cupy, x, dim=dim)
    _close(got, F.softmax_stats_.impl(np, x, dim=dim))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim,keepdim", [((1,), False), ((0, 1), True), ((0, 2), False),
                                         ((), False)])
def test_logsumexp(dim, keepdim, dtype, emulated, rng):
    x = rng.uniform(-3, 3, (3, 4, 2) if dim != () else ()).astype(dtype)
    _close(np.asarray(R._logsumexp_impl(fake_cupy, x, dim, keepdim)),
           np.asarray(R._logsumexp_impl(np, x, dim, keepdim)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((4, 5), 1), ((5,), 0), ((2, 5, 3), 1)])
def test_cross_entropy_nll(shape, dim, dtype, emulated, rng):
    x = rng.uniform(-3, 3, shape).astype(dtype)
    tshape = tuple(1 if k == dim else n for k, n in enumerate(shape))
    t = rng.integers(0, shape[dim], tshape)
    st = F.softmax_stats_.impl(np, x, dim=dim)
    _close(F.softmax_stats_.impl(fake_cupy, x, dim=dim), st)
    _close(F._ce_nll_impl(fake_cupy, x, st, t, dim), F._ce_nll_impl(np, x, st, t, dim))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xshape,ishape,dim", [((5, 6), (4, 6), 0), ((5, 6), (3, 4), 1),
                                               ((2, 3, 4), (2, 3, 7), 2), ((4,), (9,), 0),
                                               ((3, 4), (0, 4), 0)])
def test_gather_backward(xshape, ishape, dim, dtype, emulated, rng):
    index = rng.integers(0, xshape[dim], ishape)
    g = rng.standard_normal(ishape).astype(dtype)
    _close(S._gather_back_gpu(fake_cupy, g, index, dim, xshape),
           S._gather_back(np, g, index, dim, xshape))


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
@pytest.mark.parametrize("xshape,k,dim", [((5, 6), 8, 0), ((5, 6), 3, 1), ((2, 3, 4), 5, 1),
                                          ((4,), 6, 0), ((3, 4), 0, 1)])
def test_index_select_backward(xshape, k, dim, index_dtype, emulated, rng):
    index = rng.integers(0, xshape[dim], k).astype(index_dtype)
    gshape = tuple(k if d == dim else n for d, n in enumerate(xshape))
    g = rng.standard_normal(gshape)
    _close(S._index_add_gpu(fake_cupy, g, index, dim, xshape),
           S._index_add(np, g, index, dim, xshape))


def test_emulation_enforces_cupy_conventions(emulated):
    """The stand-ins fail where CuPy would, so the tests above can fail."""
    with pytest.raises(TypeError, match="placeholder T"):
        _kernels.elementwise("nn", "ce_bwd", *F.ce_bwd.kernel, False)(
            np.ones(2, np.float32), np.ones(2), np.ones(2), np.ones(2), np.zeros(2, np.int64),
            np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="t is int64"):
        _kernels.elementwise("nn", "ce_bwd", *F.ce_bwd.kernel, False)(
            np.ones(2), np.ones(2), np.ones(2), np.ones(2), np.zeros(2, np.int32),
            np.zeros(2, np.int64))
    with pytest.raises(AssertionError, match="out shape"):
        _reduction("softmax_stats", False, False)(np.ones((3, 4)), np.empty((3,)),
                                                  np.empty((3,)), axis=1, keepdims=True)


def _index_cases(rng):
    i1 = rng.integers(-5, 5, 7)                       # repeats and negative indices
    i2 = rng.integers(0, 4, (2, 3))
    return {
        "rows": (i1,), "cols": (slice(None), rng.integers(-4, 4, 6)),
        "middle_2d": (slice(None), i2), "rows_2d": (rng.integers(0, 5, (3, 2)),),
        # the fallback to add.at: masks, several arrays, ints, partial slices
        "mask": (rng.random(5) > 0.5,), "two_arrays": (i1, rng.integers(0, 4, 7)),
        "int_then_array": (1, rng.integers(0, 4, 3)), "partial_slice": (slice(1, 4), i2),
    }


@pytest.mark.parametrize("case", ["rows", "cols", "middle_2d", "rows_2d", "mask", "two_arrays",
                                  "int_then_array", "partial_slice"])
def test_index_backward(case, emulated, rng):
    x = rng.standard_normal((5, 4, 3))
    index = _index_cases(rng)[case]
    g = rng.standard_normal(x[index].shape)
    _close(S._index_backward_gpu(fake_cupy, g, index, x.shape),
           S._scatter_back(np, g, index, x.shape))
    assert (S._single_array_axis(index) is None) == (case in ("mask", "two_arrays",
                                                               "int_then_array", "partial_slice"))
