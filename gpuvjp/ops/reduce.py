"""Reductions: sum, mean (dim an int or a tuple, keepdim), with float16 accumulated in float32."""

from __future__ import annotations

import math

import numpy as np

from .._lazy import Pending
from . import _kernels
from . import shape as _shape
from ._registry import KEEP, defop, defvjp
from ._util import norm_dims


def _acc_dtype(a):
    """float16 sums accumulate in float32 (PyTorch); integers and bool sum to int64."""
    if a.dtype == np.float16:
        return np.float32
    if a.dtype.kind in "bi":
        return np.int64
    return None


def _sum_impl(xp, x, dim, keepdim):
    acc = _acc_dtype(x)
    out = xp.sum(x, axis=dim, keepdims=keepdim, dtype=acc)
    if x.dtype == np.float16:
        out = out.astype(np.float16)
    return out


def _sum_gpu(xp, x, dim, keepdim):
    """A pending elementwise input (exp) runs inside the reduction's map expression."""
    if type(x) is Pending:
        if x.value is None:
            return _kernels.map_sum(x.op, x.src, dim, keepdim)
        x = x.value
    return _sum_impl(xp, x, dim, keepdim)


def keep(g, dims, keepdim, shape):
    """Re-insert the reduced dims of `g` (size 1), so the graph can expand it to `shape`."""
    if keepdim or not dims:
        return g
    kshape = tuple(1 if i in dims else s for i, s in enumerate(shape))
    return _shape.reshape_(g, shape=kshape)


# ----- sum -------------------------------------------------------------------------------------
# y = sum(x, dims); the gradient is g broadcast back over the reduced dims (a view, no copy)
sum_op = defop("sum", _sum_impl, promote=KEEP, saves_ans=False)
sum_op.gpu = _sum_gpu
sum_op.takes_pending = True
defvjp(sum_op, lambda g, ans, x, dim, keepdim: keep(g, dim, keepdim, x.shape))


def sum_(input, dim=None, keepdim=False, *, dtype=None):
    """Same as `torch.sum`."""
    if dtype is not None:
        from .shape import to_dtype
        input = to_dtype(input, dtype)
    dims = norm_dims(dim, input.ndim)
    if dim is not None and isinstance(dim, (list, tuple)) and len(dim) == 0:
        dims = tuple(range(input.ndim))      # PyTorch: an empty dim list reduces everything
    return sum_op(input, dim=dims, keepdim=bool(keepdim))


# ----- mean ------------------------------------------------------------------------------------
def mean(input, dim=None, keepdim=False, *, dtype=None):
    """Same as `torch.mean` (floating-point inputs only, as PyTorch)."""
    if dtype is not None:
        from .shape import to_dtype
        input = to_dtype(input, dtype)
    if not input._dtype.is_floating_point:
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {input._dtype.name.capitalize()}")
    dims = norm_dims(dim, input.ndim)
    if dim is not None and isinstance(dim, (list, tuple)) and len(dim) == 0:
        dims = tuple(range(input.ndim))
    n = math.prod(input.shape[d] for d in dims)
    s = sum_op(input, dim=dims, keepdim=bool(keepdim))
    return s / n if n else s * float("nan")


