"""Elementwise binary ops (broadcasting as PyTorch; gradients summed back by the graph)."""

from __future__ import annotations

import math

import numpy as np

from .. import _dtype, _trace
from .._tensor import Tensor
from ._registry import FLOAT, KEEP, _reconcile, defop, defvjp, fused
from ._registry import apply as _apply
from ._util import broadcast_shapes

# ----- add, sub, mul ---------------------------------------------------------------------------
add_ = defop("add", np.add, saves_ans=False,
             saves_inputs=False)
defvjp(add_, lambda g, ans, x, y: g, lambda g, ans, x, y: g)

sub_ = defop("sub", np.subtract, saves_ans=False,
             saves_inputs=False)
def _bool_operands(args):
    """How many operands are bool, Python's True and False included (PyTorch counts them)."""
    return sum(a._dtype is _dtype.bool_ if isinstance(a, Tensor) else type(a) is bool
               for a in args)


sub_.bool_error = lambda args: (
    "Subtraction, the `-` operator, with two bool tensors is not supported. Use the `^` or "
    "`logical_xor()` operator instead." if _bool_operands(args) == 2 else
    "Subtraction, the `-` operator, with a bool tensor is not supported. If you are trying to "
    "invert a mask, use the `~` or `logical_not()` operator instead.")
defvjp(sub_, lambda g, ans, x, y: g, lambda g, ans, x, y: -g)

mul = defop("mul", np.multiply, saves_ans=False)
defvjp(mul, lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x)


def add(input, other, *, alpha=1):
    """Same as `torch.add`."""
    return add_(input, other if alpha == 1 else other * alpha)


def sub(input, other, *, alpha=1):
    """Same as `torch.sub`."""
    return sub_(input, other if alpha == 1 else other * alpha)


# ----- div -------------------------------------------------------------------------------------
# z = x / y, dz/dx = 1 / y, dz/dy = -z / y (reuses z: one fused launch, no x read)
div = defop("div", np.true_divide, promote=FLOAT)
div_bwd_y = fused("div_bwd_y", "binary", "T g, T ans, T y", "T gy",
                  twin=lambda g, ans, y: -g * ans / y)
defvjp(div, lambda g, ans, x, y: g / y, lambda g, ans, x, y: div_bwd_y(g, ans, y))
defvjp(div_bwd_y, lambda gg, _, g, ans, y: div_bwd_y(gg, ans, y),
                  lambda gg, _, g, ans, y: div_bwd_y(gg, g, y),
                  lambda gg, _, g, ans, y: gg * g * ans / (y * y))

# ----- pow -------------------------------------------------------------------------------------
# z = x^y, dz/dx = y x^(y-1) (0 where y == 0), dz/dy = z log(x) (0 where x == 0 and y >= 0)
def _pow_exact(xp, x, e):
    """x^e with PyTorch's special cases: e = 1/2 is sqrt, e = -1/2 is 1 / sqrt (they differ
    from pow at -0 and -inf)."""
    if isinstance(e, float) and e in (0.5, -0.5) and x.dtype.kind == "f":
        r = xp.sqrt(x)
        return r if e > 0 else x.dtype.type(1) / r
    if hasattr(e, "dtype") and e.dtype.kind == "f":
        return xp.where(e == 0.5, xp.sqrt(x), xp.where(e == -0.5, 1 / xp.sqrt(x), xp.power(x, e)))
    return xp.power(x, e)


pow_ = defop("pow", _pow_exact, elementwise=True)
pow_bwd_x = fused("pow_bwd_x", "binary", "T g, T x, T y", "T gx",
                  twin=lambda g, x, y: np.where(y == 0, 0, g * y * _pow_exact(np, x, y - 1)))
pow_bwd_y = fused("pow_bwd_y", "binary", "T g, T ans, T x, T y", "T gy",
                  twin=lambda g, ans, x, y: np.where((x == 0) & (y >= 0), 0, g * ans * np.log(
                      np.where((x == 0) & (y >= 0), 1, x))))
defvjp(pow_, lambda g, ans, x, y: pow_bwd_x(g, x, y),
             lambda g, ans, x, y: pow_bwd_y(g, ans, x, y))
defvjp(pow_bwd_x, lambda gg, _, g, x, y: pow_bwd_x(gg, x, y),
                  lambda gg, _, g, x, y: pow_bwd_x(gg * g * y, x, y - 1),
                  lambda gg, _, g, x, y: gg * g * _pow_dy_of_dx(x, y))
defvjp(pow_bwd_y, lambda gg, _, g, ans, x, y: pow_bwd_y(gg, ans, x, y),
                  lambda gg, _, g, ans, x, y: pow_bwd_y(gg, g, x, y),
                  lambda gg, _, g, ans, x, y: gg * g * ans / x,
                  None)


def _pow_dy_of_dx(x, y):
    # d/dy [y x^(y-1)] = x^(y-1) (1 + y log x)
    return pow_(x, y - 1) * (1 + y * log(x))


def pow(input, exponent):
    """Same as `torch.pow`."""
    return pow_(input, exponent)


# ----- atan2 -----------------------------------------------------------------------------------
# z = atan2(x, y) = atan(x / y), dz/dx = y / (x^2 + y^2), dz/dy = -x / (x^2 + y^2); both 0 at
# x = y = 0, where PyTorch masks 1 / (x^2 + y^2) (its second order is NaN there, and so is ours)
def _atan2_recip(x, y):
    from .unary import reciprocal
    denom = x * x + y * y
    return where(eq(denom, 0), 0.0, reciprocal(denom))


atan2_ = defop("atan2", np.arctan2, promote=FLOAT, saves_ans=False)
defvjp(atan2_, lambda g, ans, x, y: g * y * _atan2_recip(x, y),
               lambda g, ans, x, y: g * -x * _atan2_recip(x, y))


def atan2(input, other):
    """Same as `torch.atan2` (a python scalar `other` is also accepted)."""
    if hasattr(input, "_dev") and hasattr(other, "_dev"):
        broadcast_shapes(input.shape, other.shape)      # PyTorch's RuntimeError, not NumPy's
    return atan2_(input, other)


arctan2 = atan2


# ----- maximum, minimum, where -----------------------------------------------------------------
# Ties split the gradient in half, as PyTorch.
def _max_rule(g, x, y, sign):
    # zero only where x loses outright, so a nan operand passes g to both (PyTorch's rule)
    lose = lt(x, y) if sign > 0 else gt(x, y)
    return where(eq(x, y), g / 2, where(lose, zeros_like_(g), g))


maximum = defop("maximum", np.maximum, saves_ans=False)
defvjp(maximum, lambda g, ans, x, y: _max_rule(g, x, y, 1),
                lambda g, ans, x, y: _max_rule(g, y, x, 1))

minimum = defop("minimum", np.minimum, saves_ans=False)
defvjp(minimum, lambda g, ans, x, y: _max_rule(g, x, y, -1),
                lambda g, ans, x, y: _max_rule(g, y, x, -1))

where_ = defop("where", lambda xp, c, x, y: xp.where(c, x, y), promote=KEEP, saves_ans=False,
                elementwise=True)
defvjp(where_, None,
       lambda g, ans, c, x, y: where_(c, g, zeros_like_(g)),
       lambda g, ans, c, x, y: where_(c, zeros_like_(g), g))


def where(condition, input, other):
    """Same as `torch.where(condition, input, other)` (scalars allowed for input/other)."""
    from .._dtype import result_type
    from .shape import to_dtype
    if not hasattr(condition, "_dev"):
        raise TypeError("where(): argument 'condition' must be a Tensor")
    if condition._dtype.name != "bool":
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a "
                           f"tensor with dtype {condition._dtype.scalar_name}")
    dt = result_type(input, other)
    ref = input if hasattr(input, "_dev") else other
    if not hasattr(ref, "_dev"):
        ref = condition
    args = [condition, to_dtype(_as_tensor(input, dt, ref), dt),
            to_dtype(_as_tensor(other, dt, ref), dt)]
    dev = _reconcile(where_, args)            # 0-d CPU tensors join a cuda where, as PyTorch's
    if any(a._dev != dev for a in args):
        from .shape import to_device
        args = [a if a._dev == dev else to_device(a, dev) for a in args]
    return where_(*args)


def _as_tensor(v, dt, ref):
    if hasattr(v, "_dev"):
        return v
    from .._creation import full
    return full((), v, dtype=dt, device=ref.device)



# ----- clamp -----------------------------------------------------------------------------------
# y = clamp(x, min, max); the gradient passes where min <= x <= max (inclusive, as PyTorch)
def _clamp_impl(xp, x, min, max):
    if min is None:
        return xp.minimum(x, max)
    return xp.maximum(x, min) if max is None else xp.minimum(xp.maximum(x, min), max)


clamp_ = defop("clamp", _clamp_impl, saves_ans=False, elementwise=True)
defvjp(clamp_, lambda g, ans, x, min, max: where_(_in_range(x, min, max), g, zeros_like_(g)))


def _in_range(x, lo, hi):
    m = None if lo is None else ge(x, lo)
    if hi is not None:
        m = le(x, hi) if m is None else logical_and(m, le(x, hi))
    return m


def clamp(input, min=None, max=None):
    """Same as `torch.clamp` (scalar or tensor bounds)."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if hasattr(min, "_dev") or hasattr(max, "_dev"):
        out = input
        if min is not None:
            out = where(lt(out, min), min, out)
        if max is not None:
            out = where(gt(out, max), max, out)
        return out
    return clamp_(input, min=min, max=max)


clip = clamp

# ----- clamp_min, clamp_max --------------------------------------------------------------------
def clamp_min(input, min):    # noqa: A002  (PyTorch's argument name)
    """Same as `torch.clamp_min`: clamp(input, min=min)."""
    return clamp(input, min=min)


def clamp_max(input, max):    # noqa: A002
    """Same as `torch.clamp_max`: clamp(input, max=max)."""
    return clamp(input, max=max)


# ----- masked_fill -----------------------------------------------------------------------------
def masked_fill(input, mask, value):
    """Same as `torch.masked_fill`: `value` where the bool `mask` (broadcast) is True, `input`
    elsewhere, in input's dtype. A 0-d tensor `value` gets the gradient of the filled places."""
    if not hasattr(mask, "_dev"):
        raise TypeError(f"masked_fill(): argument 'mask' must be Tensor, not "
                        f"{type(mask).__name__}")
    if mask._dtype.name != "bool":
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                           f"{mask._dtype.scalar_name.lower()}")
    from .shape import to_dtype
    if hasattr(value, "_dev"):
        if value.ndim != 0:
            raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but "
                               f"got tensor with {value.ndim} dimension(s).")
        value = to_dtype(value, input._dtype)
    else:
        value = _as_tensor(value, input._dtype, input)
    return where_(mask, value, input)


# ----- hypot, logaddexp ------------------------------------------------------------------------
# z = sqrt(x^2 + y^2) without overflow, dz/dx = x / z, dz/dy = y / z (nan at 0, as PyTorch)
hypot_ = defop("hypot", np.hypot)
defvjp(hypot_, lambda g, ans, x, y: g * x / ans, lambda g, ans, x, y: g * y / ans)

# z = log(exp(x) + exp(y)) without overflow, dz/dx = sigmoid(x - y), dz/dy = sigmoid(y - x)
logaddexp_ = defop("logaddexp", np.logaddexp, saves_ans=False)
defvjp(logaddexp_, lambda g, ans, x, y: g * sigmoid(x - y),
                   lambda g, ans, x, y: g * sigmoid(y - x))


def _floating(name, input, other):
    """PyTorch's checks: two tensors, whose promoted dtype is floating (the message names the
    kernel PyTorch dispatches to on the device)."""
    for arg, pos, a in (("input", 1, input), ("other", 2, other)):
        if not hasattr(a, "_dev"):
            raise TypeError(f"{name}(): argument '{arg}' (position {pos}) must be Tensor, not "
                            f"{type(a).__name__}")
    dt = _dtype.result_type(input, other)
    if not dt.is_floating_point:
        raise NotImplementedError(
            f'"{name}_{input._dev.type}" not implemented for \'{dt.scalar_name}\'')


def hypot(input, other):
    """Same as `torch.hypot`: sqrt(input^2 + other^2), elementwise, without overflow."""
    _floating("hypot", input, other)
    return hypot_(input, other)


def logaddexp(input, other):
    """Same as `torch.logaddexp`: log(exp(input) + exp(other)), elementwise, without overflow."""
    _floating("logaddexp", input, other)
    return logaddexp_(input, other)


# ----- fmod, remainder -------------------------------------------------------------------------
# fmod: x - trunc(x / y) y (the sign of x); remainder: x - floor(x / y) y (the sign of y).
# dz/dx = 1, dz/dy = -trunc(x / y) or -floor(x / y), as PyTorch.
fmod_ = defop("fmod", np.fmod, saves_ans=False)
defvjp(fmod_, lambda g, ans, x, y: g, lambda g, ans, x, y: -g * trunc_(x / y))

remainder_ = defop("remainder", np.remainder, saves_ans=False)
defvjp(remainder_, lambda g, ans, x, y: g, lambda g, ans, x, y: -g * floor_(x / y))


def _is_integral(a):
    if hasattr(a, "_dtype"):
        return not a._dtype.is_floating_point
    return isinstance(a, (int, np.integer))


def _integer_division_by_zero(input, other):
    """Raise as PyTorch's CPU kernels do for an integer division by zero. A divisor tensor on
    the GPU is not read (that would cost a sync per call): there the result is 0 where the
    divisor is 0 (docs/differences.md)."""
    if not (_is_integral(input) and _is_integral(other)):
        return
    if hasattr(other, "_dtype"):
        if other._dev.type != "cpu":
            return
        a = other._array()
        if _trace.ON:
            _trace.read(a, "an integer division-by-zero check")
        zero = not a.all()
    else:
        zero = other == 0
    if zero:
        raise RuntimeError("ZeroDivisionError")


def fmod(input, other):
    """Same as `torch.fmod`: the remainder of input / other with the sign of input. An integer
    division by zero raises RuntimeError on the CPU, as PyTorch's."""
    _integer_division_by_zero(input, other)
    return fmod_(input, other)


def remainder(input, other):
    """Same as `torch.remainder`: the remainder of input / other with the sign of other (Python's
    %). A Python number `input` is accepted, as PyTorch's. An integer division by zero raises
    RuntimeError on the CPU, as PyTorch's."""
    _integer_division_by_zero(input, other)
    return remainder_(input, other)


# ----- div with rounding_mode, floor_divide ----------------------------------------------------
# q = floor(x / y) as Python's // (NumPy's floor_divide: 1.0 // 0.1 is 9.0), or trunc(x / y).
# The gradient is 0 almost everywhere, as PyTorch's.
floor_divide_ = defop("floor_divide", np.floor_divide, saves_ans=False, saves_inputs=False)
defvjp(floor_divide_, lambda g, ans, x, y: zeros_like_(g), lambda g, ans, x, y: zeros_like_(g))


def _rounded_div(input, other, rounding_mode):
    dt = _dtype.result_type(input, other)
    if dt is _dtype.bool_:
        dev = next(a for a in (input, other) if hasattr(a, "_dev"))._dev.type
        raise NotImplementedError(f'"div_{rounding_mode}_{dev}" not implemented for \'Bool\'')
    _integer_division_by_zero(input, other)
    if rounding_mode == "floor":
        return floor_divide_(input, other)
    if dt.is_floating_point:
        return trunc_(div(input, other))
    # integers: |x| // |y| with the sign of x y
    def sign_abs(a):
        if hasattr(a, "_dev"):
            return sign(a), abs_(a)
        return (a > 0) - (a < 0), abs(a)
    (sx, ax), (sy, ay) = sign_abs(input), sign_abs(other)
    return sx * sy * floor_divide_(ax, ay)


def div_(input, other, *, rounding_mode=None):
    """Same as `torch.div`: input / other; with `rounding_mode` "trunc" or "floor", the
    quotient rounded toward zero or down (an integer division by zero raises RuntimeError on
    the CPU, as PyTorch's)."""
    if rounding_mode is None:
        return _apply(div, (input, other), {})
    if rounding_mode not in ("trunc", "floor"):
        raise RuntimeError("div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                           f"but found '{rounding_mode}'")
    return _rounded_div(input, other, rounding_mode)


def floor_divide(input, other):
    """Same as `torch.floor_divide` (and `//`): the quotient rounded down, as Python's //."""
    return _rounded_div(input, other, "floor")


# ----- lerp ------------------------------------------------------------------------------------
# the C++ type names PyTorch's lerp messages print
_CPP_NAMES = {"float16": "c10::Half", "float32": "float", "float64": "double", "int32": "int",
              "int64": "long int", "bool": "bool"}


def lerp(input, end, weight):
    """Same as `torch.lerp`: input + weight (end - input), elementwise. As PyTorch, it is
    computed as end - (end - input)(1 - weight) where |weight| >= 0.5, so weight = 1 gives end
    exactly; the gradients are 1 - weight, weight and end - input either way. `end` and a
    `weight` tensor of one or more dims must have input's dtype (RuntimeError otherwise)."""
    for arg, a in (("input", input), ("end", end)):
        if not hasattr(a, "_dev"):
            raise TypeError(f"lerp(): argument '{arg}' must be Tensor, not {type(a).__name__}")
    tensor_weight = hasattr(weight, "_dev")
    for arg, a in (("end", end), ("weight", weight if tensor_weight and weight.ndim else end)):
        if a._dtype is not input._dtype:
            raise RuntimeError(f"expected dtype {_CPP_NAMES[input._dtype.name]} for `{arg}` "
                               f"but got dtype {_CPP_NAMES[a._dtype.name]}")
    if not input._dtype.is_floating_point:
        kernel = "lerp_cuda" if input._dev.type == "cuda" else \
            f"lerp_kernel_{'tensor' if tensor_weight else 'scalar'}"
        raise NotImplementedError(f'"{kernel}" not implemented for '
                                  f"'{input._dtype.scalar_name}'")
    diff = end - input
    if not tensor_weight:
        return input + weight * diff if abs(weight) < 0.5 else end - diff * (1 - weight)
    return where(lt(abs_(weight), 0.5), input + weight * diff, end - diff * (1 - weight))


# ----- comparisons and logical ops (no gradient, bool results) ---------------------------------
from .. import _dtype as _dt  # noqa: E402

eq = defop("eq", np.equal, differentiable=False, out_dtype=_dt.bool_)
ne = defop("ne", np.not_equal, differentiable=False, out_dtype=_dt.bool_)
lt = defop("lt", np.less, differentiable=False, out_dtype=_dt.bool_)
le = defop("le", np.less_equal, differentiable=False, out_dtype=_dt.bool_)
gt = defop("gt", np.greater, differentiable=False, out_dtype=_dt.bool_)
ge = defop("ge", np.greater_equal, differentiable=False, out_dtype=_dt.bool_)
logical_and = defop("logical_and", np.logical_and, differentiable=False, out_dtype=_dt.bool_)
logical_or = defop("logical_or", np.logical_or, differentiable=False, out_dtype=_dt.bool_)
logical_xor = defop("logical_xor", np.logical_xor, differentiable=False, out_dtype=_dt.bool_)
logical_not = defop("logical_not", np.logical_not, differentiable=False, out_dtype=_dt.bool_)

# ----- isnan, isinf, isfinite (no gradient, bool results) ------------------------------------
def isnan(input):
    """Same as `torch.isnan`: True where `input` is NaN (only NaN differs from itself)."""
    return ne(input, input)


def isinf(input):
    """Same as `torch.isinf`: True where `input` is +inf or -inf."""
    if not input._dtype.is_floating_point:
        return ne(input, input)                        # all False
    return eq(abs_(input), math.inf)


def isfinite(input):
    """Same as `torch.isfinite`: True where `input` is neither NaN nor infinite (x - x is 0
    exactly there, NaN elsewhere)."""
    if not input._dtype.is_floating_point:
        return eq(input, input)                        # all True
    return eq(input - input, 0)


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Same as `torch.isclose`: |input - other| <= atol + rtol |other|, elementwise (equal
    infinities are close; NaNs are close to each other only with `equal_nan`)."""
    if input._dtype is not other._dtype:
        raise RuntimeError(f"{input._dtype.scalar_name} did not match "
                           f"{other._dtype.scalar_name}")
    a, b = input.detach(), other.detach()
    if not a._dtype.is_floating_point:
        if a._dtype is _dt.bool_:
            return eq(a, b)
        a, b = a.double(), b.double()
    close = logical_or(eq(a, b), le(abs_(a - b), atol + rtol * abs_(b)))
    if equal_nan:
        close = logical_or(close, logical_and(isnan(a), isnan(b)))
    return close


# ----- bitwise ops (integer and bool tensors; no gradient) -------------------------------------
bitwise_and_ = defop("bitwise_and", np.bitwise_and, differentiable=False)
bitwise_or_ = defop("bitwise_or", np.bitwise_or, differentiable=False)
bitwise_xor_ = defop("bitwise_xor", np.bitwise_xor, differentiable=False)
bitwise_not_ = defop("bitwise_not", np.invert, differentiable=False)


def _integral(name, *args):
    """PyTorch's bitwise kernels take integers and bools only (the message names the kernel)."""
    dt = _dtype.result_type(*args)
    if dt.is_floating_point:
        dev = next(a for a in args if hasattr(a, "_dev"))._dev.type
        raise NotImplementedError(f'"{name}_{dev}" not implemented for \'{dt.scalar_name}\'')


def bitwise_and(input, other):
    """Same as `torch.bitwise_and`: `&` of integer or bool tensors (logical for bool)."""
    _integral("bitwise_and", input, other)
    return bitwise_and_(input, other)


def bitwise_or(input, other):
    """Same as `torch.bitwise_or`: `|` of integer or bool tensors (logical for bool)."""
    _integral("bitwise_or", input, other)
    return bitwise_or_(input, other)


def bitwise_xor(input, other):
    """Same as `torch.bitwise_xor`: `^` of integer or bool tensors (logical for bool)."""
    _integral("bitwise_xor", input, other)
    return bitwise_xor_(input, other)


def bitwise_not(input):
    """Same as `torch.bitwise_not`: `~` of an integer or bool tensor (logical for bool)."""
    _integral("bitwise_not", input)
    return bitwise_not_(input)


from .unary import (abs_, floor_, log, sigmoid, sign, trunc_,  # noqa: E402  (rules above)
                    zeros_like_)
