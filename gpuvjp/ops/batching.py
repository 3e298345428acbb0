"""Batched tensors: one leading batch dim carried under the logical shape (Tensor._nb).

A vectorized jacobian seeds ONE backward sweep with cotangents of shape (B, *out.shape)
marked batched; every rule then runs on batched tensors, and `apply` passes the batch dim
through each op (an op's `batch_rule`, broadcasting for elementwise ops, else a loop).
"""

from __future__ import annotations

from .._tensor import Tensor
from ._registry import KEEP, defop, defvjp


def _identity(xp, x):
    return x


# rebatch: (B, *s) -> a batched tensor of logical shape s; unbatch: the inverse.
rebatch_ = defop("rebatch", _identity, promote=KEEP, saves_ans=False, saves_inputs=False)
unbatch_ = defop("unbatch", _identity, promote=KEEP, saves_ans=False, saves_inputs=False)
unbatch_.batch_rule = lambda xp, impl, args, arrays, flags, params: arrays[0]
defvjp(rebatch_, lambda g, ans, x: unbatch(g))
defvjp(unbatch_, lambda g, ans, x: rebatch(g))


def rebatch(t: Tensor) -> Tensor:
    if t.ndim == 0:
        raise RuntimeError("a batched tensor needs a leading batch dim")
    out = rebatch_(t)
    out._nb = 1
    return out


def unbatch(t: Tensor) -> Tensor:
    out = unbatch_(t)
    out._nb = 0
    return out


# ----- batch rules of the shape ops ---------------------------------------------------------------
# rule(xp, impl, args, arrays, flags, params): `flags[i]` says whether arrays[i] carries the batch
# dim; the result carries it. Ops without a rule run once per batch element (see _batched).
from . import reduce as _reduce  # noqa: E402
from . import shape as _shape  # noqa: E402
from ._registry import shift_dims_rule  # noqa: E402


def _has_array(index):
    return any(hasattr(k, "shape") for k in index)


def _reshape_rule(xp, impl, args, arrays, flags, params):
    a = arrays[0]
    return a.reshape(a.shape[:1] + tuple(params["shape"]))


def _permute_rule(xp, impl, args, arrays, flags, params):
    return xp.transpose(arrays[0], (0,) + tuple(d + 1 for d in params["dims"]))


def _expand_rule(xp, impl, args, arrays, flags, params):
    a, shape = arrays[0], tuple(params["shape"])
    extra = len(shape) - args[0].ndim
    if extra > 0:
        a = a.reshape(a.shape[:1] + (1,) * extra + a.shape[1:])
    return xp.broadcast_to(a, a.shape[:1] + shape)


def _getitem_rule(xp, impl, args, arrays, flags, params):
    index = params["index"]
    a = arrays[0]
    if _has_array(index):
        return xp.stack([a[b][index] for b in range(a.shape[0])])
    return a[(slice(None),) + tuple(index)]


def _index_backward_rule(xp, impl, args, arrays, flags, params):
    g, index, shape = arrays[0], params["index"], tuple(params["shape"])
    if _has_array(index):
        return xp.stack([impl(xp, g[b], index=index, shape=shape) for b in range(g.shape[0])])
    out = xp.zeros(g.shape[:1] + shape, dtype=g.dtype)
    out[(slice(None),) + tuple(index)] = g
    return out


_shape.reshape_.batch_rule = _reshape_rule
_shape.permute_.batch_rule = _permute_rule
_shape.expand_.batch_rule = _expand_rule
_shape.getitem_.batch_rule = _getitem_rule
_shape.index_backward_.batch_rule = _index_backward_rule
_reduce.sum_op.batch_rule = shift_dims_rule


def _last_two_rule(xp, impl, args, arrays, flags, params):
    return impl(xp, *arrays, **params)              # tril, triu: the last two dims, any batch


def _cumprod_rule(xp, impl, args, arrays, flags, params):
    if args[0].ndim == 0:
        return impl(xp, arrays[0], **params)         # a copy, whatever the dim
    return shift_dims_rule(xp, impl, args, arrays, flags, params)


def _roll_rule(xp, impl, args, arrays, flags, params):
    a, dims = arrays[0], params["dims"]
    if dims is None:                                 # rolls the flattened elements
        flat = a.reshape(a.shape[0], -1)
        return impl(xp, flat, shifts=params["shifts"], dims=(1,)).reshape(a.shape)
    return impl(xp, a, shifts=params["shifts"], dims=tuple(d + 1 for d in dims))


def _diagonal_rule(xp, impl, args, arrays, flags, params):
    return impl(xp, arrays[0], offset=params["offset"], dim1=params["dim1"] + 1,
                dim2=params["dim2"] + 1)


def _diag_embed_rule(xp, impl, args, arrays, flags, params):
    a = arrays[0]
    return impl(xp, a, shape=a.shape[:1] + tuple(params["shape"]), offset=params["offset"],
                dim1=params["dim1"] + 1, dim2=params["dim2"] + 1)


_shape.tril_.batch_rule = _shape.triu_.batch_rule = _last_two_rule
_reduce.cumprod_op.batch_rule = _cumprod_rule
_shape.roll_.batch_rule = _roll_rule
_shape.diagonal_.batch_rule = _diagonal_rule
_shape.diag_embed_.batch_rule = _diag_embed_rule
for _op in (_shape.to_dtype_, _shape.to_device_):
    _op.elementwise = True


# ----- where a batched cotangent meets an unbatched input, and back -----------------------------
def sum_batch(g: Tensor) -> Tensor:
    """Sum a batched tensor over its batch dim (its input was broadcast over the batch)."""
    return _reduce.sum_op(unbatch(g), dim=(0,), keepdim=False)


def spread(g: Tensor, like) -> Tensor:
    """An unbatched cotangent of a batched input: the same for every batch element."""
    size = like._data.shape[0] if hasattr(like, "_data") else like._batch
    return rebatch(_shape.expand(_shape.unsqueeze(g, 0), size, *g.shape))
