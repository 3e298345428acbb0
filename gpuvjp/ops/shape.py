"""Shape ops and casts: views, reshapes, broadcasting, device and dtype moves, basic indexing."""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import _device, _dtype
from . import reduce as _reduce
from ._registry import KEEP, defop, defvjp
from ._util import broadcast_shapes, norm_dim, norm_dims, norm_shape

# ----- casts ----------------------------------------------------------------------------
# A cast is recorded like any op, so the gradient of a promoted input is cast back.
to_dtype_ = defop("to_dtype", lambda xp, x, dtype: x.astype(dtype.np, copy=False),
                  promote=KEEP, saves_ans=False)
defvjp(to_dtype_, lambda g, ans, x, dtype: to_dtype(g, x.dtype))


def to_dtype(x, dtype):
    dtype = _dtype.to_dtype(dtype)
    if x._dtype is dtype:
        return x
    if x.requires_grad and not dtype.is_floating_point:
        return to_dtype_(x.detach(), dtype=dtype)     # integers carry no gradient
    return to_dtype_(x, dtype=dtype)


def _move(xp, x, device):
    if device.type == "cpu":
        return x.get() if not isinstance(x, np.ndarray) else x
    cp = _device.cupy_module()
    with cp.cuda.Device(device.index):
        return cp.asarray(x)


to_device_ = defop("to_device", _move, promote=KEEP, saves_ans=False)
to_device_.moves_device = True
defvjp(to_device_, lambda g, ans, x, device: to_device(g, x.device))


def to_device(x, device):
    device = _device.check_device(_device.parse_device(device))
    if x._dev == device:
        return x
    return to_device_(x, device=device)


# ----- sum_to: where broadcasting is undone, once for every rule -----------------------
def sum_to(g, shape, dtype):
    """Sum `g` over the dims that broadcasting added to reach `shape`, expand it where a rule
    returned something smaller, and cast it to `dtype`."""
    if not hasattr(g, "_dev"):                 # a python scalar from a rule
        raise TypeError(f"a backward rule returned {type(g).__name__}, expected a Tensor")
    gs = g.shape
    if gs != shape:
        lead = len(gs) - len(shape)
        if lead >= 0 and all(n == 1 or gs[lead + i] == n for i, n in enumerate(shape)):
            dims = tuple(range(lead)) + tuple(
                lead + i for i, n in enumerate(shape) if n == 1 and gs[lead + i] != 1)
            if dims:
                g = _reduce.sum_op(g, dim=dims, keepdim=True)
            if g.shape != shape:
                g = reshape_(g, shape=shape)
        else:
            g = expand(g, *shape)
    if g._dtype is not dtype:
        g = to_dtype(g, dtype)
    return g


# ----- reshape / view / flatten -----------------------------------------------------------
def _infer(shape, numel):
    shape = list(shape)
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1:
        raise RuntimeError("only one dimension can be inferred")
    if any(s < -1 for s in shape):
        raise RuntimeError(f"invalid shape dimension {min(shape)}")
    known = math.prod(s for s in shape if s != -1)
    if neg:
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
        shape[neg[0]] = numel // known
    elif known != numel:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
    return tuple(shape)


reshape_ = defop("reshape", lambda xp, x, shape: x.reshape(shape), promote=KEEP,
                 saves_ans=False)
defvjp(reshape_, lambda g, ans, x, shape: reshape(g, x.shape))


def reshape(input, *shape):
    """Same as `torch.reshape`."""
    shape = _infer(norm_shape(shape, "shape"), input.numel())
    if shape == input.shape:
        return input if not input.requires_grad else reshape_(input, shape=shape)
    return reshape_(input, shape=shape)


view = reshape


def flatten(input, start_dim=0, end_dim=-1):
    """Same as `torch.flatten`."""
    nd = input.ndim
    if nd == 0:
        return reshape(input, 1)
    s, e = norm_dim(start_dim, nd), norm_dim(end_dim, nd)
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shp = input.shape
    return reshape(input, shp[:s] + (math.prod(shp[s:e + 1]),) + shp[e + 1:])


# ----- transpose / permute ------------------------------------------------------------------
permute_ = defop("permute", lambda xp, x, dims: xp.transpose(x, dims), promote=KEEP,
                 saves_ans=False)
defvjp(permute_, lambda g, ans, x, dims: permute(g, tuple(np.argsort(dims).tolist())))


def permute(input, *dims):
    """Same as `torch.permute`."""
    dims = norm_shape(dims, "dims")
    nd = input.ndim
    if len(dims) != nd:
        raise RuntimeError(
            f"permute(sparse_coo): number of dimensions in the tensor input does not match the "
            f"length of the desired ordering of dimensions i.e. input.dim() = {nd} is not equal "
            f"to len(dims) = {len(dims)}".replace("(sparse_coo)", ""))
    dims = tuple(norm_dim(d, nd) for d in dims)
    if len(set(dims)) != nd:
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    return permute_(input, dims=dims)


def transpose(input, dim0, dim1):
    """Same as `torch.transpose`."""
    nd = input.ndim
    if nd == 0:
        norm_dim(dim0, 0), norm_dim(dim1, 0)
        return input
    d0, d1 = norm_dim(dim0, nd), norm_dim(dim1, nd)
    perm = list(range(nd))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return permute_(input, dims=tuple(perm))


def t(input):
    """Same as `torch.t`: transposes a tensor of at most 2 dims."""
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return input if input.ndim < 2 else transpose(input, 0, 1)


# ----- unsqueeze / squeeze ---------------------------------------------------------------------
def unsqueeze(input, dim):
    """Same as `torch.unsqueeze`."""
    nd = input.ndim
    try:
        d = operator.index(dim)
    except TypeError:
        raise TypeError(f"unsqueeze(): dim must be an int, got {type(dim).__name__}") from None
    if not -nd - 1 <= d <= nd:
        raise IndexError(f"Dimension out of range (expected to be in range of "
                         f"[{-nd - 1}, {nd}], but got {d})")
    d %= nd + 1
    shp = input.shape
    return reshape_(input, shape=shp[:d] + (1,) + shp[d:])


def squeeze(input, dim=None):
    """Same as `torch.squeeze` (dim an int, a tuple, or None for every size-1 dim)."""
    dims = norm_dims(dim, input.ndim)
    shp = input.shape
    new = tuple(s for i, s in enumerate(shp) if not (i in dims and s == 1))
    if new == shp:
        return input
    return reshape_(input, shape=new)


# ----- expand / broadcast_to ---------------------------------------------------------------
expand_ = defop("expand", lambda xp, x, shape: xp.broadcast_to(x, shape), promote=KEEP,
                saves_ans=False)
defvjp(expand_, lambda g, ans, x, shape: g)           # sum_to undoes the broadcast


def expand(input, *sizes):
    """Same as `torch.Tensor.expand` (-1 keeps a dim)."""
    sizes = norm_shape(sizes, "size")
    shp = input.shape
    if len(sizes) < len(shp):
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
            f"the number of dimensions in the tensor ({len(shp)})")
    lead = len(sizes) - len(shp)
    out = []
    for i, s in enumerate(sizes):
        cur = shp[i - lead] if i >= lead else None
        if s == -1:
            if cur is None:
                raise RuntimeError(
                    f"expand: -1 is not allowed in a leading, non-existing dimension {i}")
            s = cur
        elif cur is not None and cur != s and cur != 1:
            raise RuntimeError(
                f"The expanded size of the tensor ({s}) must match the existing size ({cur}) "
                f"at non-singleton dimension {i}.  Target sizes: {list(sizes)}.  "
                f"Tensor sizes: {list(shp)}")
        out.append(s)
    out = tuple(out)
    if out == shp:
        return input
    return expand_(input, shape=out)


def broadcast_to(input, size):
    """Same as `torch.broadcast_to`."""
    return expand(input, *norm_shape((size,), "size"))


def broadcast_tensors(*tensors):
    """Same as `torch.broadcast_tensors`."""
    shape = ()
    for t_ in tensors:
        shape = broadcast_shapes(shape, t_.shape)
    return tuple(expand(t_, *shape) for t_ in tensors)


def contiguous(input):
    """Same as `torch.Tensor.contiguous`: gpuvjp tensors are values, so this returns `input`."""
    return input


# ----- basic and advanced indexing -------------------------------------------------------------
def _scatter_back(xp, g, index, shape):
    out = xp.zeros(shape, dtype=g.dtype)
    if _has_array(index):
        if xp is np:
            np.add.at(out, index, g)
        else:
            import cupyx
            cupyx.scatter_add(out, index, g)
    else:
        out[index] = g
    return out


def _has_array(index):
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index)


getitem_ = defop("getitem", lambda xp, x, index: x[index], promote=KEEP, saves_ans=False)
index_backward_ = defop("index_backward",
                        lambda xp, g, index, shape: _scatter_back(xp, g, index, shape),
                        promote=KEEP, saves_ans=False)
defvjp(getitem_, lambda g, ans, x, index: index_backward_(g, index=index, shape=x.shape))
defvjp(index_backward_, lambda gg, ans, g, index, shape: getitem_(gg, index=index))


def getitem(input, key):
    """`input[key]`: ints, slices, None, Ellipsis, integer and boolean index tensors."""
    index = _norm_index(input, key)
    return getitem_(input, index=index)


def _norm_index(x, key):
    if not isinstance(key, tuple):
        key = (key,)
    xp = _device.array_module(x._dev)
    out = []
    for k in key:
        if isinstance(k, (bool, np.bool_)):
            k = xp.asarray(k)
        elif isinstance(k, (int, np.integer)):
            k = int(k)
        elif isinstance(k, slice):
            k = slice(*(None if v is None else _int_index(v) for v in (k.start, k.stop, k.step)))
            if k.step is not None and k.step <= 0:
                raise ValueError("step must be greater than zero")
        elif k is None or k is Ellipsis:
            pass
        elif hasattr(k, "_dev"):
            if k._dtype.is_floating_point:
                raise IndexError("tensors used as indices must be long, int, byte or bool "
                                 "tensors")
            k = k._array() if k._dev == x._dev else xp.asarray(to_device(k, x._dev)._array())
        elif isinstance(k, (list, np.ndarray)) or _device.is_cupy_array(k):
            k = xp.asarray(k)
            if k.dtype.kind == "f":
                raise IndexError("tensors used as indices must be long, int, byte or bool "
                                 "tensors")
        else:
            raise TypeError(f"index must be an int, slice, None, Ellipsis or an index tensor, "
                            f"got {type(k).__name__}")
        out.append(k)
    _check_bounds(x, out, xp)
    return tuple(out)


def _int_index(v):
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"slice indices must be integers or None, got {type(v).__name__}") \
            from None


def _check_bounds(x, index, xp):
    """PyTorch's IndexError for an integer out of range (NumPy would also raise, less clearly)."""
    dim = 0
    n_ell = sum(1 for k in index if k is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(1 if not hasattr(k, "ndim") or k.dtype.kind != "b" else k.ndim
               for k in index if k is not None and k is not Ellipsis)
    if used > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    for k in index:
        if k is Ellipsis:
            dim += x.ndim - used
            continue
        if k is None:
            continue
        if isinstance(k, int):
            size = x.shape[dim]
            if not -size <= k < size:
                raise IndexError(
                    f"index {k} is out of bounds for dimension {dim} with size {size}")
        elif hasattr(k, "dtype") and k.dtype.kind == "b":
            if k.shape != x.shape[dim:dim + k.ndim]:
                raise IndexError(
                    f"The shape of the mask {list(k.shape)} at index {dim} does not match the "
                    f"shape of the indexed tensor {list(x.shape[dim:dim + k.ndim])}")
            dim += k.ndim
            continue
        elif hasattr(k, "dtype") and k.size:
            size = x.shape[dim]
            lo, hi = int(k.min()), int(k.max())
            if lo < -size or hi >= size:
                bad = hi if hi >= size else lo
                raise IndexError(
                    f"index {bad} is out of bounds for dimension {dim} with size {size}")
        dim += 1
