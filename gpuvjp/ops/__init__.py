"""Every op, by public name, and the Tensor methods bound to them."""

from __future__ import annotations

import types

from .._tensor import Tensor
from . import batching, shape  # noqa: F401  (batching registers the batch rules)
from . import _registry
from ._registry import KEEP, REGISTRY, Op, defop, defvjp
from .binary import (add, clamp, clip, div, eq, ge, gt, le, logical_and, logical_not,
                     logical_or, logical_xor, lt, maximum, minimum, mul, ne, pow, sub, where)
from .linalg import bmm, dot, einsum, matmul, mm, mv, outer
from .reduce import mean, sum_
from .shape import (broadcast_tensors, broadcast_to, contiguous, expand, flatten, permute,
                    reshape, squeeze, t, transpose, unsqueeze, view)
from .unary import abs_, cos, exp, log, neg, relu, sigmoid, sign, sin, sqrt, tanh
from .unary import erf, exp2, expm1, log1p, log2, reciprocal, rsqrt, square, tan
from .binary import arctan2, atan2
from .reduce import (amax, amin, argmax, argmin, cumsum, logsumexp, max_, min_, norm, prod,
                     std, var)
from .shape import (cat, chunk, concat, concatenate, flip, gather, index_select, split,
                    stack)
from .shape import (diag, diagonal, moveaxis, movedim, narrow, repeat, repeat_interleave, roll,
                    tile, tril, triu, unflatten)
from .reduce import cumprod, trace
from .linalg import addmm, baddbmm
from .binary import (clamp_max, clamp_min, fmod, hypot, lerp, logaddexp, masked_fill,
                     remainder)
from .binary import bitwise_and, bitwise_not, bitwise_or, bitwise_xor
from .binary import isclose, isfinite, isinf, isnan
from .binary import div_, floor_divide
from .shape import select, unbind
from .reduce import all_, allclose, any_, equal
from .unary import (acos, arccos, arcsin, arcsinh, arctan, arctanh, asin, asinh, atan, atanh,
                    ceil, cosh, fix, floor, frac, sinh, trunc)
from .unary import round as round_

# ----- clone: a differentiable copy ------------------------------------------------------------
clone_ = defop("clone", lambda xp, x: x.copy(), promote=KEEP, saves_ans=False,
               saves_inputs=False)
defvjp(clone_, lambda g, ans, x: g)
clone_.elementwise = True


def clone(input, *, memory_format=None):
    """Same as `torch.clone` (`memory_format`: gpuvjp keeps row-major order)."""
    from .._memory_format import check
    check(memory_format, "clone")
    return clone_(input)


true_divide = divide = div
multiply = mul
subtract = sub
negative = neg
absolute = abs_
sum = sum_       # noqa: A001  (the public name is PyTorch's)
abs = abs_       # noqa: A001
any = any_       # noqa: A001
all = all_       # noqa: A001
max, min = max_, min_      # noqa: A001
round = round_             # noqa: A001
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne

# Public functions that are also Tensor methods, under the same name.
METHODS = dict(
    add=add, sub=sub, mul=mul, div=div, pow=pow, neg=neg, exp=exp, log=log, sqrt=sqrt,
    sin=sin, cos=cos, tanh=tanh, sigmoid=sigmoid, relu=relu, abs=abs_, sign=sign, clamp=clamp,
    clip=clip, maximum=maximum, minimum=minimum, sum=sum_, mean=mean, matmul=matmul, mm=mm,
    bmm=bmm, mv=mv, dot=dot, outer=outer, reshape=reshape, view=view, flatten=flatten,
    permute=permute, transpose=transpose, t=t, unsqueeze=unsqueeze, squeeze=squeeze,
    expand=expand, broadcast_to=broadcast_to, contiguous=contiguous, clone=clone, eq=eq, ne=ne,
    lt=lt, le=le, gt=gt, ge=ge, logical_and=logical_and, logical_or=logical_or,
    logical_xor=logical_xor, logical_not=logical_not, true_divide=div, multiply=mul,
    subtract=sub, negative=neg, absolute=abs_, divide=div,
)
METHODS.update(
    exp2=exp2, log2=log2, log1p=log1p, expm1=expm1, rsqrt=rsqrt, square=square, tan=tan,
    reciprocal=reciprocal, erf=erf, atan2=atan2, arctan2=arctan2, prod=prod, amax=amax,
    amin=amin, max=max_, min=min_, argmax=argmax, argmin=argmin, logsumexp=logsumexp,
    norm=norm, var=var, std=std, cumsum=cumsum,
)
METHODS.update(split=split, chunk=chunk, flip=flip, index_select=index_select, gather=gather)
METHODS.update(
    narrow=narrow, unflatten=unflatten, movedim=movedim, moveaxis=moveaxis, tile=tile,
    repeat_interleave=repeat_interleave, roll=roll, diag=diag, diagonal=diagonal, tril=tril,
    triu=triu, trace=trace, cumprod=cumprod, masked_fill=masked_fill, clamp_min=clamp_min,
    clamp_max=clamp_max, addmm=addmm, baddbmm=baddbmm, lerp=lerp, hypot=hypot,
    logaddexp=logaddexp, fmod=fmod, remainder=remainder, sinh=sinh, cosh=cosh, asinh=asinh,
    atanh=atanh, asin=asin, acos=acos, atan=atan, arcsinh=arcsinh, arctanh=arctanh,
    arcsin=arcsin, arccos=arccos, arctan=arctan, floor=floor, ceil=ceil, trunc=trunc, fix=fix,
    round=round_, frac=frac,
)
METHODS.update(bitwise_and=bitwise_and, bitwise_or=bitwise_or, bitwise_xor=bitwise_xor,
               bitwise_not=bitwise_not, isnan=isnan, isinf=isinf, isfinite=isfinite,
               isclose=isclose, allclose=allclose, equal=equal, any=any_, all=all_,
               floor_divide=floor_divide, select=select, unbind=unbind)
# `t.div(y, rounding_mode=...)`; the `/` operator and gv.div's fast path stay the op itself
METHODS.update(div=div_, divide=div_)


def _creation_method(name):
    def method(self, *args, **kwargs):
        from .. import _creation          # imports gpuvjp.ops: looked up on first use
        return getattr(_creation, name)(self, *args, **kwargs)
    return method


# Tensor methods PyTorch has no function for (repeat, new_*): bound, not public names.
TENSOR_ONLY = dict(repeat=repeat, **{n: _creation_method(n) for n in (
    "new_tensor", "new_zeros", "new_ones", "new_full", "new_empty")})


def _bind(name, fn):
    if isinstance(fn, Op):
        def method(self, *args, **params):     # straight to apply: one call fewer per op
            return _registry.apply(fn, (self, *args), params)
    elif isinstance(fn, types.FunctionType):
        # a function of the tensor first: the method is the same code under the method's
        # name (a bound method pickles by its name), with no call in between
        method = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__,
                                    fn.__closure__)
        method.__kwdefaults__ = fn.__kwdefaults__
        method.__module__ = fn.__module__
    else:
        def method(self, *args, **kwargs):
            return fn(self, *args, **kwargs)
    method.__name__ = name
    method.__qualname__ = f"Tensor.{name}"
    method.__doc__ = f"Same as `torch.Tensor.{name}`."
    return method


for _name, _fn in {**METHODS, **TENSOR_ONLY}.items():
    setattr(Tensor, _name, _bind(_name, _fn))


def _div_method(self, other, *, rounding_mode=None):
    """Same as `torch.Tensor.div`."""
    if rounding_mode is None:                 # straight to apply, as the bound ops
        return _registry.apply(div, (self, other), {})
    return div_(self, other, rounding_mode=rounding_mode)


Tensor.div = Tensor.divide = _div_method
Tensor.__neg__ = lambda self: neg(self)
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = lambda self: abs_(self)


def _invert(self):
    if self._dtype.is_floating_point:
        raise TypeError("~ (operator.invert) is only implemented on integer and Boolean-type "
                        "tensors")
    return bitwise_not(self)


Tensor.__invert__ = _invert
Tensor.where = lambda self, condition, other: where(condition, self, other)
Tensor.view_as = lambda self, other: view(self, other.shape)
Tensor.reshape_as = lambda self, other: reshape(self, other.shape)
Tensor.expand_as = lambda self, other: expand(self, *other.shape)
Tensor.T = property(lambda self: permute(self, *reversed(range(self.ndim))))
Tensor.mT = property(lambda self: transpose(self, -2, -1))
Tensor.flip = shape.flip_method
Tensor.__reversed__ = lambda self: self if self.ndim == 0 else flip(self, (0,))   # as torch's

__all__ = sorted(set(METHODS) | {"where", "einsum", "REGISTRY", "broadcast_tensors",
                                  "true_divide", "cat", "concat", "concatenate", "stack"})
