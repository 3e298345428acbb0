"""Shape ops and casts: views, reshapes, broadcasting, device and dtype moves, basic indexing."""

from __future__ import annotations

import functools
import math
import operator

import numpy as np

from .. import _device, _dtype, _trace
from .._lazy import Pending
from .._tensor import Tensor
from ..autograd import _mode
from . import _kernels
from . import reduce as _reduce
from ..autograd._forward import deflinear
from ._registry import KEEP, defop, defvjp
from ._util import broadcast_shapes, norm_dim, norm_dims, norm_shape

# ----- casts ----------------------------------------------------------------------------
# A cast is recorded like any op, so the gradient of a promoted input is cast back.
to_dtype_ = defop("to_dtype", lambda xp, x, dtype: x.astype(dtype.np, copy=False),
                  promote=KEEP, saves_ans=False, saves_inputs=False)
defvjp(to_dtype_, lambda g, ans, x, dtype: to_dtype(g, x.dtype))
deflinear(to_dtype_)


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


to_device_ = defop("to_device", _move, promote=KEEP, saves_ans=False, saves_inputs=False)
to_device_.moves_device = True
defvjp(to_device_, lambda g, ans, x, device: to_device(g, x.device))
deflinear(to_device_)


def to_device(x, device):
    device = _device.check_device(_device.parse_device(device))
    if x._dev == device:
        return x
    return to_device_(x, device=device)


# ----- views that record nothing ----------------------------------------------------------
def _records(x):
    """Whether an op on `x` would record anything: a node (grad mode on), a batch dim or a
    tangent to carry. A first-order sweep runs with grad mode off: its cotangents record
    nothing."""
    return x._nb or x._tangent is not None or _mode._state.enabled    # is_grad_enabled()


def view_op(op, x, shape):
    """`op(x, shape=shape)` for a view op (reshape, expand). Where nothing would be recorded
    the view is taken on the array directly: no op runs and no node is built."""
    if _records(x):
        return op(x, shape=shape)
    return _plain_view(op, x, shape)


def _plain_view(op, x, shape):
    xp = np if x._dev.type == "cpu" else _device.cupy_module()
    a = x._array()
    with _device.use(x._dev):               # a reshape that copies runs on x's device
        out = op.impl(xp, a, shape=shape)
    if _trace.ON:
        _trace.call(op.impl, (xp, a), {"shape": shape}, out)
    return Tensor._make(out, x._dev, x._dtype, None)


# ----- sum_to: where broadcasting is undone, once for every rule -----------------------
def sum_to(g, shape, dtype):
    """Sum `g` over the dims that broadcasting added to reach `shape`, expand it where a rule
    returned something smaller, and cast it to `dtype`."""
    if not hasattr(g, "_dev"):                 # a python scalar from a rule
        raise TypeError(f"a backward rule returned {type(g).__name__}, expected a Tensor")
    gs = g.shape
    if gs != shape:
        lead = len(gs) - len(shape)
        if lead >= 0 and all([n == 1 or gs[lead + i] == n for i, n in enumerate(shape)]):
            dims = tuple(range(lead)) + tuple([
                lead + i for i, n in enumerate(shape) if n == 1 and gs[lead + i] != 1])
            if dims:
                g = _reduce.sum_op(g, dim=dims, keepdim=True)
            if g.shape != shape:
                g = view_op(reshape_, g, shape)
        elif _records(g):
            g = expand(g, *shape)
        else:                                      # a cotangent broadcast back: a view
            g = _plain_view(expand_, g, shape)
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
                 saves_ans=False, saves_inputs=False)
defvjp(reshape_, lambda g, ans, x, shape: reshape(g, x.shape))
deflinear(reshape_)


def reshape(input, *shape):
    """Same as `torch.reshape`."""
    shape = _infer(norm_shape(shape, "shape"), input.numel())
    if shape == input.shape:
        return input if not input.requires_grad else reshape_(input, shape=shape)
    return view_op(reshape_, input, shape)


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
                 saves_ans=False, saves_inputs=False)
defvjp(permute_, lambda g, ans, x, dims: permute(g, tuple(np.argsort(dims).tolist())))
deflinear(permute_)


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
def _broadcast(xp, x, shape):
    """xp.broadcast_to(x, shape). For a contiguous NumPy array the same read-only view is
    made from its strides directly: np.broadcast_to's generic path costs several times the
    whole of a tiny op, and every cotangent broadcast back takes this path."""
    lead = len(shape) - x.ndim
    if xp is not np or lead < 0 or not x.flags.c_contiguous or not x.size:
        return xp.broadcast_to(x, shape)
    strides = [0] * lead
    for n, m, st in zip(x.shape, shape[lead:], x.strides):
        if n == m:
            strides.append(st)
        elif n == 1:
            strides.append(0)
        else:                                          # not broadcastable: NumPy's error
            return xp.broadcast_to(x, shape)
    out = np.ndarray(shape, x.dtype, x, 0, tuple(strides))
    out.flags.writeable = False
    return out


expand_ = defop("expand", _broadcast, promote=KEEP,
                saves_ans=False, saves_inputs=False)
defvjp(expand_, lambda g, ans, x, shape: g)           # sum_to undoes the broadcast
deflinear(expand_)


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
    return view_op(expand_, input, out)


def broadcast_to(input, size):
    """Same as `torch.broadcast_to`."""
    return expand(input, *norm_shape((size,), "size"))


def broadcast_tensors(*tensors):
    """Same as `torch.broadcast_tensors`."""
    shape = ()
    for t_ in tensors:
        shape = broadcast_shapes(shape, t_.shape)
    return tuple(expand(t_, *shape) for t_ in tensors)


def contiguous(input, memory_format=None):
    """Same as `torch.Tensor.contiguous`: `input` itself when its array is in row-major order
    (or not computed yet: a fused result is written in row-major order), else a row-major copy
    (a transposed or expanded view), so that its array can go to a kernel of one's own."""
    from .._memory_format import check
    check(memory_format, "contiguous")
    d = input._data
    if type(d) is Pending or d.flags.c_contiguous:
        return input
    from . import clone_
    return clone_(input)


# ----- basic and advanced indexing -------------------------------------------------------------
def _scatter_back(xp, g, index, shape):
    out = xp.zeros(shape, dtype=g.dtype)
    if _has_array(index):
        xp.add.at(out, index, g)      # repeated indices accumulate (CuPy: atomic adds)
    else:
        out[index] = g
    return out


def _has_array(index):
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index)


def _single_array_axis(index):
    """k where `index` is one integer index array at axis k after full slices (`x[:, idx]`),
    else None."""
    k = None
    for pos, i in enumerate(index):
        if hasattr(i, "dtype"):
            if k is not None or i.dtype.kind not in "iu" or i.ndim == 0:
                return None
            k = pos
        elif i != slice(None):
            return None
    return k


def _index_backward_gpu(xp, g, index, shape):
    """x[:, idx] is index_select along that axis: its backward is the same one-launch scatter
    (kernels/shape.cuh). Other indexes (masks, several arrays) scatter through CuPy's add.at."""
    k = _single_array_axis(index)
    if k is None or not g.size:
        return _scatter_back(xp, g, index, shape)
    idx = index[k].reshape(-1).astype(np.int64)
    idx = xp.where(idx < 0, idx + shape[k], idx)
    return _index_add_gpu(xp, g.reshape(shape[:k] + (idx.size,) + shape[k + 1:]), idx, k, shape)


getitem_ = defop("getitem", lambda xp, x, index: x[index], promote=KEEP, saves_ans=False,
                 saves_inputs=False)
index_backward_ = defop("index_backward",
                        lambda xp, g, index, shape: _scatter_back(xp, g, index, shape),
                        promote=KEEP, saves_ans=False, saves_inputs=False)
index_backward_.gpu = _index_backward_gpu
defvjp(getitem_, lambda g, ans, x, index: index_backward_(g, index=index, shape=x.shape))
defvjp(index_backward_, lambda gg, ans, g, index, shape: getitem_(gg, index=index))
deflinear(getitem_, index_backward_)


def getitem(input, key):
    """`input[key]`: ints, slices, None, Ellipsis, integer and boolean index tensors."""
    index = _norm_index(input, key)
    if _trace.ON and any(getattr(k, "dtype", None) == np.bool_ for k in index):
        _trace.invalidate("boolean-mask indexing (a data-dependent shape)")
    return getitem_(input, index=index)


def _norm_index(x, key):
    with _device.use(x._dev):           # index arrays are made, and bounds checked, on x's device
        return _norm_index_here(x, key)


def _norm_index_here(x, key):
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
            if _trace.ON:                   # a gv.compile trace cannot replay this check
                _trace.read(k, "tensor indexing with an index tensor computed from fn's "
                               "inputs (its bounds are checked on the host)")
            lo, hi = int(k.min()), int(k.max())
            if lo < -size or hi >= size:
                bad = hi if hi >= size else lo
                raise IndexError(
                    f"index {bad} is out of bounds for dimension {dim} with size {size}")
        dim += 1


# ----- ops with any number of tensor inputs ------------------------------------------------------
class _EachInput:
    """`op.vjps` of an op that takes any number of tensors (cat, stack): input i's rule is
    rule(i, g, ans, *inputs, **params)."""

    __slots__ = ("rule",)

    def __init__(self, rule):
        self.rule = rule

    def __getitem__(self, i):
        return functools.partial(self.rule, i)


def _tensor_list(tensors, fn):
    if hasattr(tensors, "_dev") or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{fn}(): argument 'tensors' (position 1) must be tuple of Tensors, "
                        f"not {type(tensors).__name__}")
    for i, t_ in enumerate(tensors):
        if not hasattr(t_, "_dev"):
            raise TypeError(f"expected Tensor as element {i} in argument 0, but got "
                            f"{type(t_).__name__}")
    dev = tensors[0]._dev if tensors else None
    for t_ in tensors:
        if t_._dev != dev:
            raise RuntimeError("Expected all tensors to be on the same device, but found at "
                               f"least two devices, {dev} and {t_._dev}! (in op '{fn}')")
    return tuple(tensors)


def _along(dim, key):
    """An index tuple that applies `key` (a slice or an int) to axis `dim`."""
    return (slice(None),) * dim + (key,)


# ----- cat / stack -------------------------------------------------------------------------------
# z = cat(x_0, x_1, ..., dim); input i's gradient is g's slice of x_i along dim. As in PyTorch,
# 1-d empty tensors are skipped whatever their shape (they still take part in type promotion).
def _skipped(x):
    return x.ndim == 1 and x.shape[0] == 0


def _cat_impl(xp, *xs, dim):
    return xp.concatenate([a for a in xs if not _skipped(a)] or xs[:1], axis=dim)


def cat_vjp(i, g, ans, *xs, dim):
    if _skipped(xs[i]):
        return reshape_(getitem_(g, index=(slice(0, 0),) * g.ndim), shape=(0,))
    start = sum(x.shape[dim] for x in xs[:i] if not _skipped(x))
    return getitem_(g, index=_along(dim, slice(start, start + xs[i].shape[dim])))


cat_ = defop("cat", _cat_impl, saves_ans=False, saves_inputs=False)
cat_.vjps = _EachInput(cat_vjp)


def cat(tensors, dim=0):
    """Same as `torch.cat`."""
    tensors = _tensor_list(tensors, "cat")
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    for i, x in enumerate(tensors):
        if x.ndim == 0:
            raise RuntimeError(f"zero-dimensional tensor (at position {i}) cannot be "
                               "concatenated")
    kept = [(i, x) for i, x in enumerate(tensors) if not _skipped(x)]
    if not kept:
        return cat_(*tensors, dim=0)
    ref = kept[0][1]
    d = norm_dim(dim, ref.ndim)
    for i, x in kept:
        if x.ndim != ref.ndim:
            raise RuntimeError(f"Tensors must have same number of dimensions: got {ref.ndim} "
                               f"and {x.ndim}")
        for k, (a, b) in enumerate(zip(ref.shape, x.shape)):
            if k != d and a != b:
                raise RuntimeError(
                    f"Sizes of tensors must match except in dimension {d}. Expected size {a} "
                    f"but got size {b} for tensor number {i} in the list.")
    return cat_(*tensors, dim=d)


concat = concatenate = cat

# z = stack(x_0, x_1, ..., dim); input i's gradient is g[..., i, ...] at dim
stack_ = defop("stack", lambda xp, *xs, dim: xp.stack(xs, axis=dim), saves_ans=False,
               saves_inputs=False)
stack_.vjps = _EachInput(lambda i, g, ans, *xs, dim: getitem_(g, index=_along(dim, i)))


def stack(tensors, dim=0):
    """Same as `torch.stack`."""
    tensors = _tensor_list(tensors, "stack")
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    d = norm_dim(dim, tensors[0].ndim + 1)
    for i, x in enumerate(tensors):
        if x.shape != tensors[0].shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} "
                f"at entry 0 and {list(x.shape)} at entry {i}")
    return stack_(*tensors, dim=d)


# ----- split / chunk: views along one dim --------------------------------------------------------
def _pieces(input, sizes, dim):
    out, start = [], 0
    for n in sizes:
        out.append(getitem_(input, index=_along(dim, slice(start, start + n))))
        start += n
    return tuple(out)


def split(tensor, split_size_or_sections, dim=0):
    """Same as `torch.split` (an int size, or a list of sizes)."""
    if tensor.ndim == 0:
        raise RuntimeError("split expects at least a 1-dimensional tensor")
    d = norm_dim(dim, tensor.ndim)
    n = tensor.shape[d]
    s = split_size_or_sections
    if isinstance(s, (list, tuple)):
        sizes = []
        for i, v in enumerate(s):
            try:
                sizes.append(operator.index(v))
            except TypeError:
                raise TypeError("split_with_sizes(): argument 'split_sizes' (position 2) must be "
                                f"tuple of ints, but found element of type {type(v).__name__} "
                                f"at pos {i}") from None
        if any(v < 0 for v in sizes):
            raise RuntimeError("split_with_sizes expects split_sizes have only non-negative "
                               f"entries, but got split_sizes={sizes}")
        if sum(sizes) != n:
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's "
                f"size at dimension {d}), but got split_sizes={sizes}")
        return _pieces(tensor, sizes, d)
    try:
        s = operator.index(s)
    except TypeError:
        raise TypeError("split_with_sizes(): argument 'split_sizes' (position 2) must be tuple "
                        f"of ints, not {type(s).__name__}") from None
    if s < 0:
        raise RuntimeError(f"split expects split_size be non-negative, but got split_size={s}")
    if s == 0 and n != 0:
        raise RuntimeError("split_size can only be 0 if dimension size is 0, but got dimension "
                           f"size of {n}")
    if n == 0:
        return _pieces(tensor, [0], d)
    return _pieces(tensor, [min(s, n - k) for k in range(0, n, s)], d)


def chunk(input, chunks, dim=0):
    """Same as `torch.chunk`: ceil(size / chunks) per piece, so maybe fewer than `chunks`."""
    try:
        chunks = operator.index(chunks)
    except TypeError:
        raise TypeError(f"chunk(): argument 'chunks' (position 2) must be int, not "
                        f"{type(chunks).__name__}") from None
    if input.ndim == 0:
        raise RuntimeError("chunk expects at least a 1-dimensional tensor")
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    d = norm_dim(dim, input.ndim)
    n = input.shape[d]
    if n == 0:                                # PyTorch keeps the count of empty pieces
        return _pieces(input, [0] * chunks, d)
    return split(input, -(-n // chunks), d)


# ----- flip ------------------------------------------------------------------------------------
flip_ = defop("flip", lambda xp, x, dims: xp.flip(x, axis=dims) if dims else x[...],
              promote=KEEP, saves_ans=False, saves_inputs=False)
defvjp(flip_, lambda g, ans, x, dims: flip_(g, dims=dims))


def flip(input, dims):
    """Same as `torch.flip` (`Tensor.flip` also takes the dims as separate arguments)."""
    if not isinstance(dims, (list, tuple)):
        raise TypeError("flip(): argument 'dims' (position 2) must be tuple of ints, not "
                        f"{type(dims).__name__}")
    for i, v in enumerate(dims):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError("flip(): argument 'dims' (position 2) must be tuple of ints, but "
                            f"found element of type {type(v).__name__} at pos {i}")
    nd = input.ndim
    out = []
    for v in dims:
        v = norm_dim(v, nd)
        if v in out:
            raise RuntimeError(f"dim {v} appears multiple times in the list of dims")
        out.append(v)
    return flip_(input, dims=tuple(out) if nd else ())


def flip_method(input, *dims, **kwargs):
    """`Tensor.flip(*dims)` or `Tensor.flip(dims)`."""
    if not kwargs and (len(dims) != 1 or not isinstance(dims[0], (list, tuple))):
        dims = (dims,)
    return flip(input, *dims, **kwargs)


# ----- index_select / gather ------------------------------------------------------------------
# Index arrays travel as parameters (as in getitem), so the saved graph keeps no tensors. The
# backward scatter-adds: an index repeated k times receives the sum of its k gradients.
def _index_arg(input, index, fn, what):
    if not hasattr(index, "_dev"):
        raise TypeError(f"{fn}(): argument 'index' (position 3) must be Tensor, not "
                        f"{type(index).__name__}")
    if index._dtype.name not in ("int32", "int64"):
        raise RuntimeError(f"{fn}(): Expected dtype {what} for index")
    if index._dev != input._dev:
        raise RuntimeError("Expected all tensors to be on the same device, but found at least "
                           f"two devices, {input._dev} and {index._dev}! (in op '{fn}')")


def _first_outside(a, lo, hi):
    """The first entry of index array `a` outside [lo, hi), or None (one sync on the GPU)."""
    if not a.size:
        return None
    with _device.use(_device.device_of_array(a)):     # the check runs where `a` lives
        if _trace.ON:
            _trace.read(a, "an index bounds check")
        bad = ((a < lo) | (a >= hi)).reshape(-1)
        if not bool(bad.any()):
            return None
        return int(a.reshape(-1)[int(bad.argmax())])


def _index_add(xp, g, index, dim, shape):
    return _scatter_back(xp, g, _along(dim, index), shape)


# On the GPU each backward is one launch over the gradient: an atomicAdd per element at the slot
# gv::gather_slot computes (kernels/shape.cuh); the CPU's np.add.at is the twin.
# The dim's length is passed as `span`: CuPy reserves the parameter names i, n and _*.
_index_add_kernel = _kernels.defscatter(
    "index_select_bwd", "shape", "T g, raw int64 idx, int64 span, int64 inner, int64 d",
    "atomicAdd(&out[gv::gather_slot(i, idx[gv::select_pos(i, span, inner)], span, inner, d)], g)")


def _gather_slots(size, idx, n, inner, d):
    """gv::gather_slot for every element i < size (kernels/shape.cuh)."""
    i = np.arange(size, dtype=np.int64)
    return ((i // (n * inner)) * d + idx) * inner + i % inner


def _scatter_twin(out, slots, g):
    """atomicAdd of each element of g into the raw (flat-indexed, possibly strided) out."""
    np.add.at(out, np.unravel_index(slots, out.shape), g.reshape(-1))


# the NumPy twins the emulated CuPy runs: (g, idx, n, inner, d, out), out mutated
_kernels.register_twin("gv_index_select_bwd", lambda g, idx, n, inner, d, out: _scatter_twin(
    out, _gather_slots(g.size, idx.reshape(-1)[(np.arange(g.size) // inner) % n], n, inner, d),
    g))


def _index_add_gpu(xp, g, index, dim, shape):
    out = xp.zeros(shape, dtype=g.dtype)
    if g.size:
        _index_add_kernel(g, index.astype(np.int64, copy=False), index.size,
                          math.prod(shape[dim + 1:]), shape[dim], out)
    return out


index_select_ = defop("index_select", lambda xp, x, index, dim: xp.take(x, index, axis=dim),
                      promote=KEEP, saves_ans=False, saves_inputs=False)
index_add_ = defop("index_select_backward", _index_add, promote=KEEP, saves_ans=False,
                   saves_inputs=False)
index_add_.gpu = _index_add_gpu
defvjp(index_select_,
       lambda g, ans, x, index, dim: index_add_(g, index=index, dim=dim, shape=x.shape))
defvjp(index_add_, lambda gg, ans, g, index, dim, shape: index_select_(gg, index=index, dim=dim))


def index_select(input, dim, index):
    """Same as `torch.index_select` (an index out of range is always an IndexError)."""
    _index_arg(input, index, "index_select", "int32 or int64")
    if index.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    d = norm_dim(dim, input.ndim)
    idx = index._array().reshape(-1)
    if input.ndim == 0:
        if idx.size != 1:
            raise RuntimeError("index_select(): Index to scalar can have only 1 value, got "
                               f"{idx.size} value(s)")
        if _first_outside(idx, 0, 1) is not None:
            raise IndexError("index out of range in self")
        return reshape_(index_select_(reshape_(input, shape=(1,)), index=idx, dim=0), shape=())
    if input.shape[d] == 0 and idx.size:
        raise RuntimeError("index_select(): self indexing axis dim should be positive")
    if _first_outside(idx, 0, input.shape[d]) is not None:
        raise IndexError("index out of range in self")
    return index_select_(input, index=idx, dim=d)


def _gather_impl(xp, x, index, dim):
    # PyTorch lets index be smaller than x off `dim`: read only the leading block of x there
    block = tuple(slice(None) if k == dim else slice(0, n) for k, n in enumerate(index.shape))
    return xp.take_along_axis(x[block], index, axis=dim)


def _gather_back(xp, g, index, dim, shape):
    nd = index.ndim
    loc = tuple(index if k == dim else xp.arange(n).reshape((n,) + (1,) * (nd - 1 - k))
                for k, n in enumerate(index.shape))
    return _scatter_back(xp, g, loc, shape)


_gather_back_kernel = _kernels.defscatter(
    "gather_bwd", "shape", "T g, int64 idx, int64 span, int64 inner, int64 d",
    "atomicAdd(&out[gv::gather_slot(i, idx, span, inner, d)], g)")
_kernels.register_twin("gv_gather_bwd", lambda g, idx, n, inner, d, out: _scatter_twin(
    out, _gather_slots(g.size, idx.reshape(-1), n, inner, d), g))


def _gather_back_gpu(xp, g, index, dim, shape):
    if index.ndim == 0:
        return _gather_back(xp, g, index, dim, shape)
    out = xp.zeros(shape, dtype=g.dtype)
    if g.size:
        # the index may be smaller than the input off `dim`: add into that leading block
        block = tuple(slice(None) if k == dim else slice(0, n) for k, n in enumerate(index.shape))
        _gather_back_kernel(g, index.astype(np.int64, copy=False), index.shape[dim],
                            math.prod(index.shape[dim + 1:]), shape[dim], out[block])
    return out


gather_ = defop("gather", _gather_impl, promote=KEEP, saves_ans=False, saves_inputs=False)
gather_backward_ = defop("gather_backward", _gather_back, promote=KEEP, saves_ans=False,
                         saves_inputs=False)
gather_backward_.gpu = _gather_back_gpu
defvjp(gather_,
       lambda g, ans, x, index, dim: gather_backward_(g, index=index, dim=dim, shape=x.shape))
defvjp(gather_backward_, lambda gg, ans, g, index, dim, shape: gather_(gg, index=index, dim=dim))


def gather(input, dim, index, *, sparse_grad=False):
    """Same as `torch.gather` (`sparse_grad` is accepted; gradients are always dense)."""
    _index_arg(input, index, "gather", "int32/int64")
    d = norm_dim(dim, input.ndim)
    idx = index._array()
    if idx.size == 0:             # PyTorch checks no shapes then; the gradient is all zeros
        flat = reshape_(input, shape=(input.numel(),))
        return reshape_(index_select_(flat, index=idx.reshape(-1), dim=0), shape=idx.shape)
    x = input if input.ndim else reshape_(input, shape=(1,))
    idx = idx if idx.ndim else idx.reshape(1)
    if idx.ndim != x.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as input tensor")
    for k in range(x.ndim):
        if k != d and idx.shape[k] > x.shape[k]:
            raise RuntimeError(
                f"Size does not match at dimension {k} expected index {list(index.shape)} to be "
                f"no larger than self {list(input.shape)} apart from dimension {d}")
    bad = _first_outside(idx, 0, x.shape[d])
    if bad is not None:
        raise RuntimeError(f"index {bad} is out of bounds for dimension {d} with size "
                           f"{x.shape[d]}")
    out = gather_(x, index=idx, dim=d)
    return out if index.ndim else reshape_(out, shape=())


# ----- narrow, unflatten, movedim: views composed of the ops above ------------------------------
def narrow(input, dim, start, length):
    """Same as `torch.narrow`: the `length` elements of `input` along `dim` from `start` (a
    view; `start` may be negative or a 0-d integer tensor)."""
    if input.ndim == 0:
        raise RuntimeError("narrow() cannot be applied to a 0-dim tensor.")
    d = norm_dim(dim, input.ndim)
    size = input.shape[d]
    start, length = operator.index(start), operator.index(length)
    if not -size <= start <= size:
        raise IndexError(f"start out of range (expected to be in range of [{-size}, {size}], "
                         f"but got {start})")
    if length < 0:
        raise RuntimeError("narrow(): length must be non-negative.")
    if start < 0:
        start += size
    if start + length > size:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size "
                           f"({size}).")
    return getitem_(input, index=(slice(None),) * d + (slice(start, start + length),))


def unflatten(input, dim, sizes):
    """Same as `torch.unflatten`: dim `dim` of `input` split into `sizes` (one may be -1)."""
    d = norm_dim(dim, input.ndim)
    sizes = norm_shape((sizes,), "sizes")
    if not sizes:
        raise RuntimeError("unflatten: sizes must be non-empty")
    n = input.shape[d] if input.ndim else 1
    if -1 in sizes:
        sizes = _infer(sizes, n)
    elif math.prod(sizes) != n:
        raise RuntimeError(f"unflatten: Provided sizes {list(sizes)} don't multiply up to the "
                           f"size of dim {dim} ({n}) in the input tensor")
    shp = input.shape
    return reshape(input, shp[:d] + tuple(sizes) + shp[d + 1:])


def _dim_list(dims, nd, what):
    dims = [dims] if not isinstance(dims, (list, tuple)) else list(dims)
    out = [norm_dim(d, nd) for d in dims]
    if len(set(out)) != len(out):
        raise RuntimeError(f"movedim: repeated dim in `{what}` ({list(dims)})")
    return out


def movedim(input, source, destination):
    """Same as `torch.movedim`: the dims `source` of `input` moved to `destination`, the others
    keeping their order."""
    nd = input.ndim
    src, dst = _dim_list(source, nd, "source"), _dim_list(destination, nd, "destination")
    if len(src) != len(dst):
        raise RuntimeError(
            f"movedim: Invalid source or destination dims: source ({src} dims) should contain "
            f"the same number of dims as destination ({dst} dims)")
    rest = iter(d for d in range(nd) if d not in src)
    where_to = dict(zip(dst, src))
    perm = tuple(where_to[i] if i in where_to else next(rest) for i in range(nd))
    if perm == tuple(range(nd)):
        return input
    return permute_(input, dims=perm)


moveaxis = movedim


# ----- repeat, tile, repeat_interleave: expand or index_select, so no rule of their own --------
def repeat(input, *sizes):
    """Same as `torch.Tensor.repeat`: `input` tiled sizes[i] times along dim i (leading sizes
    add dims). Its gradient sums the copies."""
    if not sizes:
        raise TypeError('repeat() missing 1 required positional arguments: "repeats"')
    sizes = norm_shape(sizes, "repeats")
    shp = input.shape
    if len(sizes) < len(shp):
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                           "of dimensions of tensor")
    target = [s * r for s, r in zip((1,) * (len(sizes) - len(shp)) + shp, sizes)]
    if any(r < 0 for r in sizes):
        raise RuntimeError(f"Trying to create tensor with negative dimension "
                           f"{min(target)}: {target}")
    shp = (1,) * (len(sizes) - len(shp)) + shp
    x = reshape(input, tuple(v for s in shp for v in (1, s)))
    x = expand(x, *[v for s, r in zip(shp, sizes) for v in (r, s)])
    return reshape_(x, shape=tuple(target))


def tile(input, dims):
    """Same as `torch.tile`: `repeat` with `dims` padded with leading 1s to input's rank."""
    dims = norm_shape((dims,), "dims")
    return repeat(input, *((1,) * (input.ndim - len(dims)) + dims))


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Same as `torch.repeat_interleave`: each element (each slice along `dim`; with dim=None,
    of the flattened input) repeated `repeats` times (an int, or a tensor with one count per
    element). `repeat_interleave(counts)` alone gives the indices 0, 1, ... repeated as counted.
    Tensor counts are read on the host."""
    from .._creation import tensor as _tensor
    if repeats is None:
        counts = _counts(input)
        return _tensor(np.repeat(np.arange(counts.size), counts), device=input.device)
    x = input
    if dim is None:
        x, d = reshape(input, -1), 0
    else:
        d = norm_dim(dim, input.ndim)
    n = x.shape[d] if x.ndim else 1
    counts = _counts(repeats) if hasattr(repeats, "_dev") else operator.index(repeats)
    if np.ndim(counts) == 0:
        if counts < 0:
            raise RuntimeError("Repeats must be non-negative")
    elif counts.size != n:
        raise RuntimeError(f"repeats must have the same size as input along dim, but got "
                           f"repeats.size(0) = {counts.size} and input.size({d}) = {n}")
    idx = np.repeat(np.arange(n), counts)
    if output_size is not None and output_size != idx.size:
        raise RuntimeError(f"allocated size does not match required size")
    return index_select(x, d, _tensor(idx, device=input.device))


def _counts(t):
    if t._dtype.name not in ("int32", "int64"):
        raise RuntimeError("repeat_interleave only accept int32 and int64 repeats")
    if t.ndim > 1:
        raise RuntimeError("repeats must be 0-dim or 1-dim tensor")
    c = t._host()
    if (c < 0).any():
        raise RuntimeError("repeats can not be negative")
    return c if c.ndim else int(c)


# ----- roll ------------------------------------------------------------------------------------
roll_ = defop("roll", lambda xp, x, shifts, dims: xp.roll(x, shifts, axis=dims), promote=KEEP,
              saves_ans=False, saves_inputs=False)
defvjp(roll_, lambda g, ans, x, shifts, dims: roll_(g, shifts=tuple(-s for s in shifts),
                                                     dims=dims))
deflinear(roll_)


def roll(input, shifts, dims=None):
    """Same as `torch.roll`: elements shifted along `dims` (of the flattened input when dims is
    None), wrapping around."""
    shifts = norm_shape((shifts,), "shifts")
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                               f"dims:0")
        return roll_(input, shifts=shifts, dims=None)
    dims = tuple(norm_dim(d, input.ndim) for d in
                 (dims if isinstance(dims, (list, tuple)) else (dims,)))
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                           f"dims:{len(dims)}")
    if input.ndim == 0:
        return input
    return roll_(input, shifts=shifts, dims=dims)


# ----- diagonal, diag --------------------------------------------------------------------------
# diagonal takes a diagonal of each matrix over (dim1, dim2) as the last dim; its transpose,
# diag_embed, writes a last dim onto such a diagonal of zeros. Each is the other's vjp.
def _diag_embed(xp, g, shape, offset, dim1, dim2):
    out = xp.zeros(shape, dtype=g.dtype)
    mats = xp.moveaxis(out, (dim1, dim2), (-2, -1))       # a view of out
    n = g.shape[-1]
    rows, cols = np.arange(n) + max(-offset, 0), np.arange(n) + max(offset, 0)
    if xp is not np:
        rows, cols = xp.asarray(rows), xp.asarray(cols)
    mats[..., rows, cols] = g
    return out


diagonal_ = defop("diagonal", lambda xp, x, offset, dim1, dim2: xp.diagonal(
    x, offset, dim1, dim2), promote=KEEP, saves_ans=False, saves_inputs=False)
diag_embed_ = defop("diagonal_backward", _diag_embed, promote=KEEP, saves_ans=False,
                    saves_inputs=False)
defvjp(diagonal_, lambda g, ans, x, offset, dim1, dim2: diag_embed_(
    g, shape=x.shape, offset=offset, dim1=dim1, dim2=dim2))
defvjp(diag_embed_, lambda gg, ans, g, shape, offset, dim1, dim2: diagonal_(
    gg, offset=offset, dim1=dim1, dim2=dim2))
deflinear(diagonal_, diag_embed_)


def diagonal(input, offset=0, dim1=0, dim2=1):
    """Same as `torch.diagonal`: the diagonal `offset` (above the main one if > 0) of the
    matrices over dims (dim1, dim2), as the last dim."""
    d1, d2 = norm_dim(dim1, input.ndim), norm_dim(dim2, input.ndim)
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    return diagonal_(input, offset=operator.index(offset), dim1=d1, dim2=d2)


def diag(input, diagonal=0):
    """Same as `torch.diag`: a 1-D input becomes the `diagonal`-th diagonal of a square matrix
    of zeros; a 2-D input gives its `diagonal`-th diagonal."""
    k = operator.index(diagonal)
    if input.ndim == 1:
        n = input.shape[0] + abs(k)
        return diag_embed_(input, shape=(n, n), offset=k, dim1=0, dim2=1)
    if input.ndim == 2:
        return diagonal_(input, offset=k, dim1=0, dim2=1)
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {input.ndim}D")


# ----- tril, triu ------------------------------------------------------------------------------
# Masks that keep a triangle of the last two dims; each is its own vjp.
tril_ = defop("tril", lambda xp, x, diagonal: xp.tril(x, diagonal), promote=KEEP,
              saves_ans=False, saves_inputs=False)
triu_ = defop("triu", lambda xp, x, diagonal: xp.triu(x, diagonal), promote=KEEP,
              saves_ans=False, saves_inputs=False)
defvjp(tril_, lambda g, ans, x, diagonal: tril_(g, diagonal=diagonal))
defvjp(triu_, lambda g, ans, x, diagonal: triu_(g, diagonal=diagonal))
deflinear(tril_, triu_)


def tril(input, diagonal=0):
    """Same as `torch.tril`: the lower triangle (on and below diagonal `diagonal`) of the
    matrices in the last two dims, zeros elsewhere."""
    if input.ndim < 2:
        raise RuntimeError("tril: input tensor must have at least 2 dimensions")
    return tril_(input, diagonal=operator.index(diagonal))


def triu(input, diagonal=0):
    """Same as `torch.triu`: the upper triangle (on and above diagonal `diagonal`) of the
    matrices in the last two dims, zeros elsewhere."""
    if input.ndim < 2:
        raise RuntimeError("triu: input tensor must have at least 2 dimensions")
    return triu_(input, diagonal=operator.index(diagonal))


# ----- select, unbind --------------------------------------------------------------------------
def select(input, dim, index):
    """Same as `torch.select`: the slice of `input` at `index` along `dim`, which it removes
    (`x.select(0, i)` is `x[i]`)."""
    if input.ndim == 0:
        raise IndexError("select() cannot be applied to a 0-dim tensor.")
    d = norm_dim(dim, input.ndim)
    if isinstance(index, (float, bool)) or not hasattr(index, "__index__"):
        raise TypeError(f"select(): argument 'index' (position 2) must be int, not "
                        f"{type(index).__name__}")
    i, size = operator.index(index), input.shape[d]
    if not -size <= i < size:
        raise IndexError(f"select(): index {i} out of range for tensor of size "
                         f"{list(input.shape)} at dimension {d}")
    return getitem(input, (slice(None),) * d + (i,))


def unbind(input, dim=0):
    """Same as `torch.unbind`: the slices of `input` along `dim`, as a tuple (each one
    `select(input, dim, i)`)."""
    if input.ndim == 0:
        raise IndexError("Dimension specified as 0 but tensor has no dimensions")
    d = norm_dim(dim, input.ndim)
    return tuple(select(input, d, i) for i in range(input.shape[d]))
