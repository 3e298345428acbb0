"""Reductions: sum, mean (dim an int or a tuple, keepdim), with float16 accumulated in float32."""

from __future__ import annotations

import math

import numpy as np

from .. import _device, _trace
from .._lazy import Pending
from ..autograd import _mode
from . import _kernels, _rows
from . import shape as _shape
from ..autograd._forward import deflinear
from . import _registry
from ._registry import FLOAT, KEEP, defop, defvjp, fused, shift_dims_rule
from ._util import norm_dim, norm_dims
from .binary import eq, logical_and, logical_or, maximum, minimum, ne, where
from .unary import abs_, sign, zeros_like_


def _acc_dtype(a):
    """float16 sums accumulate in float32 (PyTorch); integers and bool sum to int64."""
    dt = a.dtype                 # compared by kind and char: `dt == np.float16` converts
    if dt.kind in "bi":
        return np.int64
    return np.float32 if dt.char == "e" else None


def _sum_impl(xp, x, dim, keepdim):
    if xp is np:
        return _sum_np(x, dim, keepdim)
    acc = _acc_dtype(x)
    out = x.sum(axis=dim, keepdims=keepdim, dtype=acc)      # the method: no dispatch layer
    if acc is np.float32:                                    # float16, accumulated in float32
        out = out.astype(np.float16)
    return out


def _sum_np(x, dim, keepdim):
    """_sum_impl on NumPy: the ufunc's reduce, which ndarray.sum calls from Python."""
    acc = _acc_dtype(x)
    out = np.add.reduce(x, dim, acc, None, keepdim)
    return out.astype(np.float16) if acc is np.float32 else out   # float16, summed in float32


def _sum_exact(xp, x, dim, keepdim):
    """The NumPy call `_sum_impl` makes on arrays like `x`, as (function, trailing positional
    arguments), for gv.compile's replay; None where it makes more than one (float16)."""
    acc = _acc_dtype(x)
    if xp is not np or acc is np.float32:
        return None
    return np.add.reduce, (dim, acc, None, keepdim)


_sum_impl.exact = _sum_exact


def _sum_gpu(xp, x, dim, keepdim):
    out = _rows.reduce("sum", xp, x, dim, keepdim)          # GPUVJP_ROW_KERNELS=1
    return _sum_impl(xp, x, dim, keepdim) if out is None else out


def keep(g, dims, keepdim, shape):
    """Re-insert the reduced dims of `g` (size 1), so the graph can expand it to `shape`."""
    if keepdim or not dims:
        return g
    kshape = tuple([1 if i in dims else s for i, s in enumerate(shape)])
    return _shape.view_op(_shape.reshape_, g, kshape)


def _spread(g, dims, keepdim, shape):
    """g broadcast back over the reduced `dims` to `shape` as ONE read-only view of g's memory
    (keep's reshape and the graph's expand in one step), for a g that records nothing."""
    a = g._data
    if type(a) is Pending:                          # g._array(), in line
        a = g._array()
    out = _spread_array(a, dims, keepdim, shape)
    if _trace.ON:                                   # gv.compile replays the same view
        _trace.call(_spread_array, (a, dims, keepdim, shape), {}, out)
    return type(g)._make(out, g._dev, g._dtype, None)


def _spread_array(a, dims, keepdim, shape):
    """The view _spread takes, on arrays; `dims` sorted ascending (norm_dims' form)."""
    if type(a) is np.ndarray and a.size and a.flags.c_contiguous:
        strides = list(a.strides)
        if keepdim:
            for d in dims:
                strides[d] = 0
        else:
            for d in dims:                          # ascending: each lands at its place
                strides.insert(d, 0)
        out = np.ndarray(shape, a.dtype, a, 0, tuple(strides))
        out.flags.writeable = False
        return out
    kshape = tuple([1 if i in dims else s for i, s in enumerate(shape)])
    xp = np if type(a) is np.ndarray else _device.cupy_module()
    return _shape._broadcast(xp, a.reshape(kshape), shape)


# ----- sum -------------------------------------------------------------------------------------
# y = sum(x, dims); the gradient is g broadcast back over the reduced dims (a view, no copy)
def sum_vjp(g, ans, x, dim, keepdim):
    # a first-order sweep records nothing (_shape._records, in line): one view, no op
    if dim and not (g._nb or g._tangent is not None or _mode._state.enabled):
        return _spread(g, dim, keepdim, x.shape)
    return keep(g, dim, keepdim, x.shape)


sum_op = defop("sum", _sum_impl, promote=KEEP, saves_ans=False,
               saves_inputs=False)
sum_op.takes_pending = True          # a pending DAG is its map expression (_lazy.reduce)
sum_op.np_fn, sum_op.np_params = _sum_np, True
defvjp(sum_op, sum_vjp)
sum_op.gpu = _sum_gpu
deflinear(sum_op)


def sum_(input, dim=None, keepdim=False, *, dtype=None):
    """Same as `torch.sum`."""
    if dtype is not None:
        from .shape import to_dtype
        input = to_dtype(input, dtype)
    n = input.ndim
    if type(dim) is int and -n <= dim < n:          # the common case: norm_dims' answer
        dims = (dim % n,)
    else:
        dims = norm_dims(dim, n)
        if dim is not None and isinstance(dim, (list, tuple)) and len(dim) == 0:
            dims = tuple(range(n))      # PyTorch: an empty dim list reduces everything
    return _registry.apply(sum_op, (input,), {"dim": dims, "keepdim": bool(keepdim)})


# ----- mean ------------------------------------------------------------------------------------
def mean(input, dim=None, keepdim=False, *, dtype=None):
    """Same as `torch.mean` (floating-point inputs only, as PyTorch)."""
    if dtype is not None:
        from .shape import to_dtype
        input = to_dtype(input, dtype)
    if not input._dtype.is_floating_point:
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {input._dtype.scalar_name}")
    dims = norm_dims(dim, input.ndim)
    if dim is not None and isinstance(dim, (list, tuple)) and len(dim) == 0:
        dims = tuple(range(input.ndim))
    out = _rows.mean(input, dims, bool(keepdim))             # GPUVJP_ROW_KERNELS=1
    if out is not None:
        return out
    n = math.prod(input.shape[d] for d in dims)
    s = sum_op(input, dim=dims, keepdim=bool(keepdim))
    return s / n if n else s * float("nan")


# ----- shared by the reductions below ----------------------------------------------------------
def _reduce_dims(dim, ndim):
    """norm_dims, except that an empty dim list reduces every dim (PyTorch)."""
    if isinstance(dim, (list, tuple)) and len(dim) == 0:
        return tuple(range(ndim))
    return norm_dims(dim, ndim)


def _check_nonempty(name, x, dims, dim_given):
    """PyTorch's errors for a max-like reduction over an empty slice (no identity)."""
    if x.numel() != 0:
        return
    if not dim_given:
        if name.startswith("arg"):
            raise IndexError(
                f"{name}(): Expected reduction dim to be specified for input.numel() == 0.")
        raise RuntimeError(
            f"{name}(): Expected reduction dim to be specified for input.numel() == 0. "
            "Specify the reduction dim with the 'dim' argument.")
    for d in dims:
        if x.shape[d] == 0:
            raise IndexError(f"{name}(): Expected reduction dim {d} to have non-zero size.")


def _acc_float(a):
    """float16 data computes in float32 (rounded once at the end, as PyTorch)."""
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _cast_back(out, a):
    return out.astype(a.dtype) if out.dtype != a.dtype else out


def _numel(shape, dims):
    return math.prod(shape[d] for d in dims)


def _any_zero(x):
    """True when some element of x is 0 (one host sync, as PyTorch's prod backward)."""
    if _trace.ON:
        _trace.read(x._array(), "prod's backward testing for zeros")
    with _device.use(x._dev):
        return bool((x._array() == 0).any())


# ----- prod ------------------------------------------------------------------------------------
# y = prod(x), dy/dx_i = prod_{j != i} x_j. Without zeros that is y / x_i. With zeros the rule
# splits x into its zeros Z and the rest N: for i in N it is prod(N) / x_i * prod(Z), for i in Z
# it is prod(N) * prod(Z \ {i}), written so that the result is also right at second order.
def _prod_impl(xp, x, dim, keepdim):
    out = xp.prod(x, axis=dim, keepdims=keepdim, dtype=_acc_dtype(x))
    return out.astype(np.float16) if x.dtype == np.float16 else out


prod_op = defop("prod", _prod_impl, promote=KEEP)


def prod_vjp(g, ans, x, dim, keepdim):
    g, ans = keep(g, dim, keepdim, x.shape), keep(ans, dim, keepdim, x.shape)
    if not _any_zero(x):
        return g * (ans / x)
    zero = eq(x, 0)
    if len(dim) == x.ndim and int(sum_op(zero, dim=dim, keepdim=False).item()) > 1:
        return zeros_like_(x)          # PyTorch: two zeros in a full product, no gradient
    xn, xz = where(zero, 1.0, x), where(zero, x, 1.0)       # the non-zeros, the zeros
    pn = prod_op(xn, dim=dim, keepdim=True)
    pz = prod_op(xz, dim=dim, keepdim=True)
    nz = sum_op(zero, dim=dim, keepdim=True)
    # prod(Z \ {i}) for i in Z: 1 for one zero, the other zero for two, 0 beyond (exact
    # derivatives for first and second order)
    other = sum_op(where(zero, x, 0.0), dim=dim, keepdim=True) - x
    rest = where(eq(nz, 1), 1.0, where(eq(nz, 2), other, 0.0))
    return g * where(zero, pn * rest, pn / xn * pz)


defvjp(prod_op, prod_vjp)


def prod(input, dim=None, keepdim=False, *, dtype=None):
    """Same as `torch.prod` (integers and bool multiply in int64)."""
    if dtype is not None:
        input = _shape.to_dtype(input, dtype)
    if dim is None:
        dims = tuple(range(input.ndim))
    else:
        dims = norm_dims(_norm_int_dim(dim, "prod"), input.ndim)
    return prod_op(input, dim=dims, keepdim=bool(keepdim))


def _norm_int_dim(dim, name):
    if isinstance(dim, (list, tuple)):
        raise TypeError(f"{name}() received an invalid combination of arguments - got "
                        f"(dim={type(dim).__name__}): dim must be an int")
    return dim


# ----- amax, amin ------------------------------------------------------------------------------
# y = max(x, dims); the gradient is split evenly among the elements equal to the max (ties).
def _amax_impl(xp, x, dim, keepdim):
    out = _rows.reduce("amax", xp, x, dim, keepdim)         # GPUVJP_ROW_KERNELS=1
    return xp.amax(x, axis=dim, keepdims=keepdim) if out is None else out


def _amin_impl(xp, x, dim, keepdim):
    out = _rows.reduce("amin", xp, x, dim, keepdim)
    return xp.amin(x, axis=dim, keepdims=keepdim) if out is None else out


def extremum_vjp(g, ans, x, dim, keepdim):
    g, ans = keep(g, dim, keepdim, x.shape), keep(ans, dim, keepdim, x.shape)
    mask = eq(x, ans)
    return (g / sum_op(mask, dim=dim, keepdim=True)) * mask


amax_op = defop("amax", _amax_impl, promote=KEEP)
defvjp(amax_op, extremum_vjp)
amin_op = defop("amin", _amin_impl, promote=KEEP)
defvjp(amin_op, extremum_vjp)


def amax(input, dim=(), keepdim=False):
    """Same as `torch.amax`."""
    dims = _reduce_dims(dim, input.ndim)
    _check_nonempty("amax", input, dims, dim is not None and dim != () and dim != [])
    return amax_op(input, dim=dims, keepdim=bool(keepdim))


def amin(input, dim=(), keepdim=False):
    """Same as `torch.amin`."""
    dims = _reduce_dims(dim, input.ndim)
    _check_nonempty("amin", input, dims, dim is not None and dim != () and dim != [])
    return amin_op(input, dim=dims, keepdim=bool(keepdim))


# ----- max, min --------------------------------------------------------------------------------
# Without dim: the value, its gradient split evenly among the maxima (NaN counts as the max when
# the result is NaN), as PyTorch. With dim: (values, indices); indices pick the first maximum
# and the gradient flows to that element only.
def _max_all_impl(xp, x):
    return xp.max(x)


def _min_all_impl(xp, x):
    return xp.min(x)


def max_all_vjp(g, ans, x):
    mask = logical_or(eq(x, ans), logical_and(ne(x, x), ne(ans, ans)))
    return mask * (g / sum_op(mask, dim=tuple(range(x.ndim)), keepdim=False))


max_all = defop("max", _max_all_impl, promote=KEEP)
defvjp(max_all, max_all_vjp)
min_all = defop("min", _min_all_impl, promote=KEEP)
defvjp(min_all, max_all_vjp)


def _arg_impl(xp, x, dim, keepdim, largest):
    if dim is None:
        out = (xp.argmax if largest else xp.argmin)(x.reshape(-1))
        out = xp.asarray(out, dtype=np.int64)
        return out.reshape((1,) * x.ndim) if keepdim else out
    if x.ndim == 0:
        return xp.zeros((), dtype=np.int64)
    out = (xp.argmax if largest else xp.argmin)(x, axis=dim).astype(np.int64, copy=False)
    return xp.expand_dims(out, dim) if keepdim else out


_arg_op = defop("argextremum", _arg_impl, promote=KEEP, differentiable=False)


def argmax(input, dim=None, keepdim=False):
    """Same as `torch.argmax` (the first maximum; NaN counts as the maximum)."""
    return _arg(input, dim, keepdim, True, "argmax")


def argmin(input, dim=None, keepdim=False):
    """Same as `torch.argmin`."""
    return _arg(input, dim, keepdim, False, "argmin")


def _arg(input, dim, keepdim, largest, name):
    if input._dtype.name == "bool":
        raise RuntimeError(f"{name}(): does not support bool input")
    if dim is not None:
        dims = norm_dims(_norm_int_dim(dim, name), input.ndim)
        _check_nonempty(name, input, dims, True)
        dim = dims[0] if dims else 0
    else:
        _check_nonempty(name, input, (), False)
    return _arg_op(input, dim=dim, keepdim=bool(keepdim), largest=largest)


# values = x at the chosen index along dim; the gradient lands on that element (a one-hot
# mask built from the index, so the rule is itself differentiable in g).
def _select_impl(xp, x, index, dim, keepdim, largest=True):
    out = xp.take_along_axis(x, xp.expand_dims(index, dim), axis=dim)
    return out if keepdim else xp.squeeze(out, axis=dim)


def select_vjp(g, ans, x, index, dim, keepdim, largest=True):
    from .._creation import arange
    n = x.shape[dim]
    iota = _shape.reshape_(arange(n, device=x.device),
                           shape=tuple(n if d == dim else 1 for d in range(x.ndim)))
    if not keepdim:
        g = _shape.unsqueeze(g, dim)
    return where(eq(iota, _shape.unsqueeze(index, dim)), g, 0.0)


select_op = defop("select_along", _select_impl, promote=KEEP, saves_ans=False)
defvjp(select_op, select_vjp, None)


class _ReturnType(tuple):
    """(values, indices), also readable as .values and .indices (torch.return_types)."""

    __slots__ = ()
    _name = "max"

    def __new__(cls, values, indices):
        return tuple.__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]

    def __repr__(self):
        return f"gpuvjp.return_types.{self._name}(\nvalues={self[0]!r},\nindices={self[1]!r})"


class max_return(_ReturnType):
    _name = "max"


class min_return(_ReturnType):
    _name = "min"


def _max_min(input, dim, keepdim, largest):
    name = "max" if largest else "min"
    if hasattr(dim, "_dev"):                      # torch.max(input, other)
        if keepdim:
            raise TypeError(f"{name}() received an invalid combination of arguments")
        return (maximum if largest else minimum)(input, dim)
    if dim is None:
        if keepdim:
            raise TypeError(f"{name}() received an invalid combination of arguments - got "
                            "(keepdim=bool), but expected (int dim, bool keepdim)")
        _check_nonempty(name, input, (), False)
        return (max_all if largest else min_all)(input)
    dims = norm_dims(_norm_int_dim(dim, name), input.ndim)
    _check_nonempty(name, input, dims, True)
    x = input if input.ndim else _shape.reshape_(input, shape=(1,))
    d = dims[0] if dims else 0
    index = _arg_op(x, dim=d, keepdim=False, largest=largest)
    values = select_op(x, index, dim=d, keepdim=bool(keepdim) and input.ndim > 0,
                       largest=largest)         # largest: the grad_fn's name
    cls = max_return if largest else min_return
    return cls(values, index if not (keepdim and input.ndim) else _shape.unsqueeze(index, d))


def max_(input, dim=None, keepdim=False):
    """Same as `torch.max`: the maximum; with `dim`, (values, indices); with a tensor, maximum."""
    return _max_min(input, dim, keepdim, True)


def min_(input, dim=None, keepdim=False):
    """Same as `torch.min`."""
    return _max_min(input, dim, keepdim, False)


# ----- logsumexp -------------------------------------------------------------------------------
# y = m + log(sum(exp(x - m))) with m the max (0 where it is infinite), dy/dx = exp(x - y). On the
# GPU one pass over x (gv_logsumexp: running max and rescaled sum, merged in any order); the twin
# takes the max first.
def _lse_twin(a, axis, keepdims):
    a = _acc_float(a)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if a.size == 0:
            return np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))
        m = np.amax(a, axis=axis, keepdims=True)
        m = np.where(np.isinf(m), np.zeros_like(m), m)
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=keepdims))
        return out + (m if keepdims else np.squeeze(m, axis=axis))


lse_rows = _kernels.defreduction("logsumexp", "reduce", state="MaxSum", one="lse_one",
                                 merge="lse_merge", values=["lse_value"], empty="lse_empty",
                                 twin=_lse_twin)
lse_rows = _rows.switched(lse_rows, "logsumexp")            # GPUVJP_ROW_KERNELS=1


def _stats_twin(a, axis, keepdims):
    a = _acc_float(a)
    with np.errstate(invalid="ignore"):
        if a.size == 0:
            shape = np.sum(a, axis=axis, keepdims=True).shape
            m, s = np.full(shape, -np.inf, a.dtype), np.zeros(shape, a.dtype)
        else:
            m = np.amax(a, axis=axis, keepdims=True)
            s = np.sum(np.exp(a - m), axis=axis, keepdims=True)
    return (m, s) if keepdims else (np.squeeze(m, axis=axis), np.squeeze(s, axis=axis))


# softmax's (max, sum(exp(x - max))) per row, from the same one-pass state
softmax_stats = _kernels.defreduction("softmax_stats", "reduce", state="MaxSum", one="lse_one",
                                      merge="lse_merge", values=["lse_max", "lse_sum"],
                                      empty="lse_empty", twin=_stats_twin)
softmax_stats = _rows.switched(softmax_stats, "softmax_stats")


def _logsumexp_impl(xp, x, dim, keepdim):
    if not dim:                               # a 0-d input: no dim to reduce, y = x
        return x.copy()
    return lse_rows(xp, x, dim, keepdim)


def logsumexp_vjp(g, ans, x, dim, keepdim):
    return logsumexp_bwd(keep(g, dim, keepdim, x.shape), x, keep(ans, dim, keepdim, x.shape))


logsumexp_op = defop("logsumexp", _logsumexp_impl, promote=FLOAT)
defvjp(logsumexp_op, logsumexp_vjp)
logsumexp_op.batch_rule = shift_dims_rule
# z = g exp(x - y): one launch instead of three; dz/dx = z, dz/dy = -z
logsumexp_bwd = fused("logsumexp_bwd", "reduce", "T g, T x, T ans", "T gx",
                      twin=lambda g, x, ans: g * np.exp(x - ans))
defvjp(logsumexp_bwd, lambda gg, _, g, x, ans: logsumexp_bwd(gg, x, ans),
                      lambda gg, z, g, x, ans: gg * z,
                      lambda gg, z, g, x, ans: -(gg * z))


def logsumexp(input, dim, keepdim=False):
    """Same as `torch.logsumexp` (an empty dim list reduces every dim)."""
    return logsumexp_op(input, dim=_reduce_dims(dim, input.ndim), keepdim=bool(keepdim))


# ----- norm ------------------------------------------------------------------------------------
# The vector p-norm over dims; the rules are PyTorch's, with a zero gradient where the norm is 0.
def _norm_impl(xp, x, p, dim, keepdim):
    a = _acc_float(x)
    if p == 2:
        return _cast_back(xp.sqrt(xp.sum(a * a, axis=dim, keepdims=keepdim)), x)
    a = xp.abs(a)
    if p == 1:
        out = xp.sum(a, axis=dim, keepdims=keepdim)
    elif p == math.inf:
        out = xp.amax(a, axis=dim, keepdims=keepdim)
    elif p == -math.inf:
        out = xp.amin(a, axis=dim, keepdims=keepdim)
    elif p == 0:
        out = xp.sum(a != 0, axis=dim, keepdims=keepdim).astype(a.dtype)
    else:
        with np.errstate(divide="ignore"):
            out = xp.sum(a ** p, axis=dim, keepdims=keepdim) ** (1.0 / p)
    return _cast_back(out, x)


def norm_vjp(g, ans, x, p, dim, keepdim):
    g, ans = keep(g, dim, keepdim, x.shape), keep(ans, dim, keepdim, x.shape)
    if p == 0:
        return g * 0
    if p == 1:
        return sign(x) * g
    if p == 2:
        return g * where(eq(ans, 0), 0.0, x / ans)
    if math.isinf(p):
        ax = abs_(x)
        mask = logical_or(eq(ax, ans), ne(ax, ax))
        return sign(x) * ((g / sum_op(mask, dim=dim, keepdim=True)) * mask)
    if p < 1:
        scaled = sign(x) * where(eq(x, 0), 0.0, abs_(x) ** (p - 1))
        return scaled * g * ans ** (1 - p)
    scaled = sign(x) * abs_(x) ** (p - 1) if p < 2 else x * abs_(x) ** (p - 2)
    return scaled * where(eq(ans, 0), 0.0, g / ans ** (p - 1))


norm_op = defop("norm", _norm_impl, promote=KEEP)
defvjp(norm_op, norm_vjp)


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """Same as `torch.norm`: vector norms (p a number, or "fro" over at most two dims) and the
    nuclear norm (p="nuc", over two dims)."""
    if p == "nuc":
        return _nuclear_norm(input, dim, keepdim, dtype)
    if dtype is not None:
        _check_norm_dtype(input, dtype, "linalg.vector_norm")
        input = _shape.to_dtype(input, dtype)
    if isinstance(p, str):
        if p != "fro" or (isinstance(dim, (list, tuple)) and len(dim) > 2):
            if p == "fro":
                raise RuntimeError("linalg.matrix_norm: dim must be a 2-tuple. Got "
                                   + " ".join(str(d) for d in dim))
            raise RuntimeError(f"linalg.matrix_norm: Order {p} not supported.")
        p = 2
    p = float(p)
    if not input._dtype.is_floating_point:
        raise RuntimeError("linalg.vector_norm: Expected a floating point or complex tensor as "
                           f"input. Got {input._dtype.scalar_name}")
    dims = _reduce_dims(dim, input.ndim)
    if (p < 0 or math.isinf(p)) and input.numel() == 0:
        shown = ("inf" if p > 0 else "-inf") if math.isinf(p) else f"{p:g}"
        for d in dims if dim is not None else ():
            if input.shape[d] == 0:
                raise RuntimeError(
                    f"linalg.vector_norm cannot compute the {shown} norm on the dimension {d}"
                    "because this dimension is empty and the operation does not have an "
                    "identity")
        if dim is None:
            raise RuntimeError(f"linalg.vector_norm cannot compute the {shown} norm on an empty "
                               "tensor because the operation does not have an identity")
    return norm_op(input, p=p, dim=dims, keepdim=bool(keepdim))


def _check_norm_dtype(input, dtype, fn):
    """PyTorch's checks of norm's `dtype`: floating point, and no narrower than the input."""
    if not input._dtype.is_floating_point:
        raise RuntimeError(f"{fn}: Expected a floating point or complex tensor as input. Got "
                           f"{input._dtype.scalar_name}")
    if not dtype.is_floating_point:
        raise RuntimeError(f"{fn}: dtype should be floating point or complex, but got "
                           f"{dtype.scalar_name}")
    if dtype.itemsize < input._dtype.itemsize:
        raise RuntimeError(f"{fn}: the dtype of the input ({input._dtype.scalar_name}) should be "
                           f"convertible without narrowing to the specified dtype "
                           f"({dtype.scalar_name})")


# ----- the nuclear norm: norm(p="nuc") ------------------------------------------------------------
# y = sum of the singular values of the matrices over dims (d0, d1), dy/dA = U V^T (reduced SVD,
# A = U S V^T): the polar factor. Its own vjp (for hessians) is an op; a third derivative raises.
def _matrices(xp, x, dim):
    return xp.moveaxis(x, dim, (-2, -1))


def _nuc_impl(xp, x, dim, keepdim):
    a = _matrices(xp, x, dim)
    if min(a.shape[-2:]) == 0:
        out = xp.zeros(a.shape[:-2], x.dtype)
    else:
        out = xp.linalg.svd(a, compute_uv=False).sum(-1)
    return xp.expand_dims(out, tuple(sorted(dim))) if keepdim else out


def _polar_impl(xp, x, dim):
    a = _matrices(xp, x, dim)
    if min(a.shape[-2:]) == 0:
        return xp.zeros_like(x)
    u, _, vh = xp.linalg.svd(a, full_matrices=False)
    return xp.moveaxis(u @ vh, (-2, -1), dim)


def _polar_bwd_impl(xp, g, x, dim):
    """The vjp of Q = U V^T: for m >= n, with M = U^T G V and K_ij = 1 / (s_i + s_j),
    gA = U ((M - M^T) * K) V^T + (I - U U^T) G V S^-1 V^T; m < n is the transposed case."""
    a, gq = _matrices(xp, x, dim), _matrices(xp, g, dim)
    if min(a.shape[-2:]) == 0:
        return xp.zeros_like(x)
    wide = a.shape[-2] < a.shape[-1]
    if wide:
        a, gq = xp.swapaxes(a, -1, -2), xp.swapaxes(gq, -1, -2)
    u, s, vh = xp.linalg.svd(a, full_matrices=False)
    v = xp.swapaxes(vh, -1, -2)
    m = xp.swapaxes(u, -1, -2) @ gq @ v
    k = 1 / (s[..., :, None] + s[..., None, :])
    ga = u @ ((m - xp.swapaxes(m, -1, -2)) * k) @ vh
    rest = gq - u @ (xp.swapaxes(u, -1, -2) @ gq)
    ga = ga + (rest @ v / s[..., None, :]) @ vh
    if wide:
        ga = xp.swapaxes(ga, -1, -2)
    return xp.moveaxis(ga, (-2, -1), dim)


def _no_third_derivative(*_, **__):
    raise NotImplementedError("gpuvjp: the third derivative of norm(p='nuc') is not "
                              "implemented")


nuc_op = defop("nuclear_norm", _nuc_impl, promote=KEEP)
polar_op = defop("nuclear_norm_grad", _polar_impl, promote=KEEP, saves_ans=False)
polar_bwd_op = defop("nuclear_norm_grad_vjp", _polar_bwd_impl, promote=KEEP, saves_ans=False)
defvjp(nuc_op, lambda g, ans, x, dim, keepdim: keep(g, dim, keepdim, x.shape) * polar_op(
    x, dim=dim))
defvjp(polar_op, lambda g, ans, x, dim: polar_bwd_op(g, x, dim=dim))
# polar_bwd is linear in g with a symmetric matrix (a Hessian), so its vjp in g is itself (hvp
# and forward mode need no more); its derivative in x would be a third derivative
defvjp(polar_bwd_op, lambda gg, _, g, x, dim: polar_bwd_op(gg, x, dim=dim), _no_third_derivative)


def _nuclear_norm(input, dim, keepdim, dtype):
    """PyTorch's checks of linalg.matrix_norm(ord="nuc"), in its order, then the op."""
    fn = "linalg.matrix_norm"
    if input.ndim < 2:
        raise RuntimeError(f"{fn}: The input tensor A must have at least 2 dimensions.")
    if not input._dtype.is_floating_point:
        raise RuntimeError(f"{fn}: Expected a floating point or complex tensor as input. Got "
                           f"{input._dtype.scalar_name}")
    if input._dtype.itemsize < 4:
        raise RuntimeError(f"{fn}: Low precision dtypes not supported. Got "
                           f"{input._dtype.scalar_name}")
    if dim is None:
        dim = tuple(range(input.ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if len(dims) != 2:
        raise RuntimeError(f"{fn}: dim must be a 2-tuple. Got " + " ".join(str(d) for d in dims))
    d = tuple(norm_dim(k, input.ndim) for k in dims)
    if d[0] == d[1]:
        raise RuntimeError(f"{fn}: dims must be different. Got ({d[0]}, {d[1]})")
    if dtype is not None:
        _check_norm_dtype(input, dtype, fn)
        input = _shape.to_dtype(input, dtype)
    return nuc_op(input, dim=d, keepdim=bool(keepdim))


# ----- var, std --------------------------------------------------------------------------------
# var = sum((x - mean)^2) / max(0, N - correction); dvar/dx = 2 (x - mean) / (N - correction).
# std = sqrt(var), its gradient 0 where std is 0 (PyTorch).
def _var_impl(xp, x, dim, correction, keepdim, full):
    a = _acc_float(x)
    n = _numel(x.shape, dim)
    if n - correction > 0:
        out = xp.var(a, axis=dim, ddof=correction, keepdims=keepdim)
    else:          # PyTorch divides by max(0, dof): inf, or NaN for an empty or constant slice
        with np.errstate(divide="ignore", invalid="ignore"):
            c = a - xp.sum(a, axis=dim, keepdims=True) / max(n, 1)
            out = xp.sum(c * c, axis=dim, keepdims=keepdim) / a.dtype.type(0)
    return _cast_back(xp.asarray(out), x)


def _std_impl(xp, x, dim, correction, keepdim, full):
    return xp.sqrt(_var_impl(xp, x, dim, correction, keepdim, full))


def var_vjp(g, ans, x, dim, correction, keepdim, full):
    g = keep(g, dim, keepdim, x.shape)
    dof = _numel(x.shape, dim) - correction
    if full and dof <= 0:
        centered = x - mean(x, dim=dim, keepdim=True)
        return g * where(eq(centered, 0), math.nan, math.inf)
    scale = 2.0 / dof if dof != 0 else math.inf
    return var_bwd(g, x, mean(x, dim=dim, keepdim=True), scale)


def std_vjp(g, ans, x, dim, correction, keepdim, full):
    return var_vjp(where(eq(ans, 0), 0.0, g / (ans * 2)), None, x, dim, correction, keepdim,
                   full)


var_op = defop("var", _var_impl, promote=KEEP, saves_ans=False)
defvjp(var_op, var_vjp)
# z = g scale (x - mu): one launch instead of three
var_bwd = fused("var_bwd", "reduce", "T g, T x, T mu, T scale", "T gx",
                twin=lambda g, x, mu, scale: g * scale * (x - mu))
defvjp(var_bwd, lambda gg, _, g, x, mu, scale: var_bwd(gg, x, mu, scale),
                lambda gg, _, g, x, mu, scale: gg * g * scale,
                lambda gg, _, g, x, mu, scale: -(gg * g * scale),
                None)
std_op = defop("std", _std_impl, promote=KEEP)
defvjp(std_op, std_vjp)


def _var_args(name, input, dim, unbiased, correction):
    if isinstance(dim, bool):                       # var(input, unbiased)
        if unbiased is not None:
            raise TypeError(f"{name}() received an invalid combination of arguments")
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise TypeError(f"{name}() received an invalid combination of arguments - got "
                        "(correction=..., unbiased=...): pass one of them")
    if correction is None:
        correction = 0 if unbiased is False else 1
    if not input._dtype.is_floating_point:
        raise RuntimeError("std and var only support floating point and complex dtypes")
    full = dim is None or input.ndim == 0
    return _reduce_dims(dim, input.ndim), correction, full


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Same as `torch.var` (`correction`, or the older `unbiased`)."""
    dims, c, full = _var_args("var", input, dim, unbiased, correction)
    return var_op(input, dim=dims, correction=c, keepdim=bool(keepdim), full=full)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Same as `torch.std` (`correction`, or the older `unbiased`)."""
    dims, c, full = _var_args("std", input, dim, unbiased, correction)
    return std_op(input, dim=dims, correction=c, keepdim=bool(keepdim), full=full)


# ----- cumsum ----------------------------------------------------------------------------------
# y_i = sum_{j <= i} x_j; the gradient is the reversed cumulative sum of g, and back again.
def _cumsum_impl(xp, x, dim, reverse):
    acc = _acc_dtype(x)
    if x.ndim == 0:
        return x.astype(np.int64 if x.dtype.kind in "bi" else x.dtype, copy=True)
    if reverse:
        x = xp.flip(x, axis=dim)
    out = xp.cumsum(x, axis=dim, dtype=acc)
    if reverse:
        out = xp.ascontiguousarray(xp.flip(out, axis=dim))
    return out.astype(np.float16) if x.dtype == np.float16 else out


cumsum_op = defop("cumsum", _cumsum_impl, promote=KEEP, saves_ans=False)
defvjp(cumsum_op, lambda g, ans, x, dim, reverse: cumsum_op(g, dim=dim, reverse=not reverse))


def cumsum(input, dim, *, dtype=None):
    """Same as `torch.cumsum` (integers and bool sum in int64)."""
    if dtype is not None:
        input = _shape.to_dtype(input, dtype)
    d = norm_dims(_norm_int_dim(dim, "cumsum"), input.ndim)
    return cumsum_op(input, dim=d[0] if d else 0, reverse=False)


# ----- cumprod ---------------------------------------------------------------------------------
# y_i = prod_{j <= i} x_j, dy_j/dx_i = prod_{k <= j, k != i} x_k for j >= i. Without zeros the
# gradient is revcumsum(g y) / x. With a zero (one host read, as PyTorch's cumprod backward) the
# products leaving out each x_i are formed explicitly: n x n per slice, exact to every order.
def _cumprod_impl(xp, x, dim):
    if x.ndim == 0:
        return x.astype(np.int64 if x.dtype.kind in "bi" else x.dtype, copy=True)
    out = xp.cumprod(x, axis=dim, dtype=_acc_dtype(x))
    return out.astype(np.float16) if x.dtype == np.float16 else out


cumprod_op = defop("cumprod", _cumprod_impl, promote=KEEP)


def cumprod_vjp(g, ans, x, dim):
    if x.ndim == 0 or x.shape[dim] <= 1:
        return g
    if not _any_zero(x):
        return cumsum_op(g * ans, dim=dim, reverse=True) / x
    from .._creation import tensor
    n = x.shape[dim]
    xm, gm = _shape.movedim(x, dim, -1), _shape.movedim(g, dim, -1)
    rows = _shape.expand(_shape.unsqueeze(xm, -2), *(xm.shape[:-1] + (n, n)))
    eye = tensor(np.eye(n, dtype=bool), device=x.device)
    upper = tensor(np.triu(np.ones((n, n), dtype=bool)), device=x.device)
    p = cumprod_op(where(eye, 1.0, rows), dim=xm.ndim)      # p[i, j] = prod_{k<=j, k!=i} x_k
    gx = sum_op(where(upper, p * _shape.unsqueeze(gm, -2), 0.0), dim=(xm.ndim,), keepdim=False)
    return _shape.movedim(gx, -1, dim)


defvjp(cumprod_op, cumprod_vjp)


def cumprod(input, dim, *, dtype=None):
    """Same as `torch.cumprod`: y_i = x_0 x_1 ... x_i along `dim` (integers and bool multiply in
    int64). Its gradient is exact where x has zeros too."""
    if dtype is not None:
        input = _shape.to_dtype(input, dtype)
    d = norm_dims(_norm_int_dim(dim, "cumprod"), input.ndim)
    return cumprod_op(input, dim=d[0] if d else 0)


# ----- trace -----------------------------------------------------------------------------------
def trace(input):
    """Same as `torch.trace`: the sum of the main diagonal of a matrix (int64 for integers)."""
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input.ndim}")
    return sum_(_shape.diagonal(input))


# ----- any, all, allclose, equal (no gradient) ------------------------------------------------
def any_(input, dim=None, keepdim=False):
    """Same as `torch.any`: whether some entry (along `dim`, an int or a tuple) is nonzero, as
    a bool tensor; False for no entries."""
    nz = input if input._dtype.name == "bool" else ne(input.detach(), 0)
    return sum_(nz, dim, keepdim) > 0


def all_(input, dim=None, keepdim=False):
    """Same as `torch.all`: whether every entry (along `dim`, an int or a tuple) is nonzero,
    as a bool tensor; True for no entries."""
    return sum_(eq(input.detach(), 0), dim, keepdim) == 0


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Same as `torch.allclose`: `isclose(input, other, ...)` holds everywhere, as a Python
    bool (one host read)."""
    from .binary import isclose
    return bool(all_(isclose(input, other, rtol, atol, equal_nan)).item())


def equal(input, other):
    """Same as `torch.equal`: the same shape and the same values (after promotion; a NaN is
    never equal), as a Python bool (one host read)."""
    if input.shape != other.shape:
        return False
    return bool(all_(eq(input.detach(), other.detach())).item())
