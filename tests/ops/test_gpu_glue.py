"""The GPU-only Python around the custom kernels, run without a GPU on the emulated CuPy
(gpuvjp.testing): its arrays refuse implicit NumPy conversion and NumPy operands, and its kernel
objects enforce CuPy's calling conventions (one dtype per type placeholder, typed parameters,
the output shapes a ReductionKernel accepts) and compute through the twins. What this checks is
the glue: the arguments, shapes, dtypes and slots the GPU branches pass. The kernels themselves
are checked by tests/ops/test_kernels.py."""

from __future__ import annotations

import numpy as np
import pytest

from gpuvjp import _device
from gpuvjp.nn import functional as F
from gpuvjp.ops import _kernels
from gpuvjp.ops import reduce as R
from gpuvjp.ops import shape as S
from gpuvjp.testing import _fake_cupy as fc


def _clear_kernel_caches():
    for fn in (_kernels.elementwise, _kernels.reduction_kernel,
               _kernels.scatter_kernel):
        fn.cache_clear()


@pytest.fixture
def emulated(monkeypatch):
    """The GPU branches' kernels built by the emulated CuPy (whatever `cuda` runs on); the
    float16 flag of an elementwise kernel must follow the dtype bound to T."""
    monkeypatch.delenv("GPUVJP_ROW_KERNELS", raising=False)   # tests/ops/test_rows.py's kernels
    _clear_kernel_caches()
    monkeypatch.setattr(_device, "cupy_library", lambda: fc)
    real = _kernels.elementwise

    def checked(family, fn, in_params, out_params, half):
        kernel = real(family, fn, in_params, out_params, half)

        def call(*args, **kwargs):
            t = next(a.dtype for p, a in zip(kernel.in_params, args)
                     if p.ctype == "T" and isinstance(a, fc.ndarray))
            assert (t == np.float16) == half, "the float16 flag follows T"
            return kernel(*args, **kwargs)
        return call

    monkeypatch.setattr(_kernels, "elementwise", checked)
    yield
    monkeypatch.undo()
    _clear_kernel_caches()


def _dev(a):
    return fc.asarray(a)


def _host(a):
    return a.get() if isinstance(a, fc.ndarray) else np.asarray(a)


DTYPES = ["float16", "float32", "float64"]


def _close(got, want):
    got, want = _host(got), np.asarray(want)
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
        _close(F._softmax_impl(fc, _dev(x), dim, log), F._softmax_impl(np, x, dim, log))
    got = F.softmax_stats_.impl(fc, _dev(x), dim=dim)
    _close(got, F.softmax_stats_.impl(np, x, dim=dim))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim,keepdim", [((1,), False), ((0, 1), True), ((0, 2), False),
                                         ((), False)])
def test_logsumexp(dim, keepdim, dtype, emulated, rng):
    x = rng.uniform(-3, 3, (3, 4, 2) if dim != () else ()).astype(dtype)
    _close(R._logsumexp_impl(fc, _dev(x), dim, keepdim),
           np.asarray(R._logsumexp_impl(np, x, dim, keepdim)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((4, 5), 1), ((5,), 0), ((2, 5, 3), 1)])
def test_cross_entropy_nll(shape, dim, dtype, emulated, rng):
    x = rng.uniform(-3, 3, shape).astype(dtype)
    tshape = tuple(1 if k == dim else n for k, n in enumerate(shape))
    t = rng.integers(0, shape[dim], tshape)
    st = F.softmax_stats_.impl(np, x, dim=dim)
    _close(F.softmax_stats_.impl(fc, _dev(x), dim=dim), st)
    _close(F._ce_nll_impl(fc, _dev(x), _dev(st), _dev(t), dim), F._ce_nll_impl(np, x, st, t, dim))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xshape,ishape,dim", [((5, 6), (4, 6), 0), ((5, 6), (3, 4), 1),
                                               ((2, 3, 4), (2, 3, 7), 2), ((4,), (9,), 0),
                                               ((3, 4), (0, 4), 0)])
def test_gather_backward(xshape, ishape, dim, dtype, emulated, rng):
    index = rng.integers(0, xshape[dim], ishape)
    g = rng.standard_normal(ishape).astype(dtype)
    _close(S._gather_back_gpu(fc, _dev(g), _dev(index), dim, xshape),
           S._gather_back(np, g, index, dim, xshape))


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
@pytest.mark.parametrize("xshape,k,dim", [((5, 6), 8, 0), ((5, 6), 3, 1), ((2, 3, 4), 5, 1),
                                          ((4,), 6, 0), ((3, 4), 0, 1)])
def test_index_select_backward(xshape, k, dim, index_dtype, emulated, rng):
    index = rng.integers(0, xshape[dim], k).astype(index_dtype)
    gshape = tuple(k if d == dim else n for d, n in enumerate(xshape))
    g = rng.standard_normal(gshape)
    _close(S._index_add_gpu(fc, _dev(g), _dev(index), dim, xshape),
           S._index_add(np, g, index, dim, xshape))


def test_emulation_enforces_cupy_conventions(emulated):
    """The emulated kernels fail where CuPy would, so the tests above can fail."""
    ce_bwd = _kernels.elementwise("nn", "ce_bwd", *F.ce_bwd.kernel, False)
    with pytest.raises(TypeError, match="placeholder T"):
        ce_bwd(*map(_dev, (np.ones(2, np.float32), np.ones(2), np.ones(2), np.ones(2),
                           np.zeros(2, np.int64), np.zeros(2, np.int64))))
    with pytest.raises(TypeError, match="t is int64"):
        ce_bwd(*map(_dev, (np.ones(2), np.ones(2), np.ones(2), np.ones(2),
                           np.zeros(2, np.int32), np.zeros(2, np.int64))))
    with pytest.raises(TypeError, match="Unsupported type"):
        ce_bwd(np.ones(2), *map(_dev, (np.ones(2), np.ones(2), np.ones(2),
                                       np.zeros(2, np.int64), np.zeros(2, np.int64))))
    with pytest.raises(ValueError, match="Out shape is mismatched"):
        _kernels.reduction_kernel("softmax_stats", False, False)(
            _dev(np.ones((3, 4))), fc.empty((3,)), fc.empty((3,)), axis=1, keepdims=True)


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
    on_device = tuple(_dev(k) if isinstance(k, np.ndarray) else k for k in index)
    _close(S._index_backward_gpu(fc, _dev(g), on_device, x.shape),
           S._scatter_back(np, g, index, x.shape))
    assert (S._single_array_axis(index) is None) == (case in ("mask", "two_arrays",
                                                               "int_then_array", "partial_slice"))
