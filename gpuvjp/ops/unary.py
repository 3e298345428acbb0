"""Elementwise unary ops: forward, NumPy twin and backward rule, one block each."""

from __future__ import annotations

import math

import numpy as np

from ._registry import FLOAT, KEEP, defop, defvjp, fused


def _in_float(x, fn, *rest):
    """fn(x, *rest) computed in float32 for float16 arrays and rounded once, as the kernels do."""
    if x.dtype == np.float16:
        rest = (np.asarray(r, dtype=np.float32) for r in rest)
        return fn(x.astype(np.float32), *rest).astype(np.float16)
    return fn(x, *rest)


def _stable_sigmoid(x):
    # exp of a non-positive number only: no overflow for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


# A zero cotangent with no history, for rules whose derivative vanishes (not a public op).
zeros_like_ = defop("zeros_like", lambda xp, x: xp.zeros_like(x), promote=KEEP,
                    differentiable=False, elementwise=True)

# ----- neg ---------------------------------------------------------------------------------
neg = defop("neg", np.negative, saves_ans=False,
            saves_inputs=False)
neg.bool_error = lambda args: ("Negation, the `-` operator, on a bool tensor is not supported. If "
                            "you are trying to invert a mask, use the `~` or `logical_not()` "
                            "operator instead.")
defvjp(neg, lambda g, ans, x: -g)

# ----- exp -----------------------------------------------------------------------------------
# y = exp(x), dy/dx = exp(x). The first-order rule recomputes exp(x) inside one fused launch
# instead of keeping y alive: same bytes read, and y is never stored for the backward. Fused,
# x.exp().sum(dim) is one reduction pass that never writes y.
exp = fused("exp_fwd", "unary", "T x", "T y", twin=np.exp, promote=FLOAT, saves_ans=False,
            public="exp")


def _exp_bwd_twin(g, x):
    e = np.exp(x)
    if type(e) is np.ndarray and getattr(g, "shape", None) == e.shape and g.dtype == e.dtype:
        return np.multiply(g, e, out=e)         # the same values, one buffer fewer
    return g * e


def _exp_bwd_same(g, x):
    e = np.exp(x)
    return np.multiply(g, e, out=e)


# gv.compile's replay: for arrays like these, the twin's first branch and nothing else
_exp_bwd_twin.exact = lambda g, x: (
    (_exp_bwd_same, ()) if type(g) is np.ndarray and type(x) is np.ndarray and x.ndim and
    g.shape == x.shape and g.dtype == x.dtype and x.dtype.kind == "f" else None)
exp_bwd = fused("exp_bwd", "unary", "T g, T x", "T gx", twin=_exp_bwd_twin)
defvjp(exp, lambda g, ans, x: exp_bwd(g, x))
defvjp(exp_bwd, lambda gg, _, g, x: exp_bwd(gg, x),
                lambda gg, _, g, x: exp_bwd(gg * g, x))

# ----- log, sqrt -------------------------------------------------------------------------------
log = defop("log", np.log, promote=FLOAT, saves_ans=False)
defvjp(log, lambda g, ans, x: g / x)

# y = sqrt(x), dy/dx = 1 / (2 y)
sqrt = defop("sqrt", np.sqrt, promote=FLOAT)
defvjp(sqrt, lambda g, ans, x: g / (2 * ans))

# ----- sin, cos --------------------------------------------------------------------------------
sin = defop("sin", np.sin, promote=FLOAT, saves_ans=False)
defvjp(sin, lambda g, ans, x: g * cos(x))

cos = defop("cos", np.cos, promote=FLOAT, saves_ans=False)
defvjp(cos, lambda g, ans, x: -g * sin(x))

# ----- tanh ----------------------------------------------------------------------------------
# y = tanh(x), dy/dx = 1 - y^2. First-order sweeps run one fused launch.
tanh = defop("tanh", np.tanh, promote=FLOAT)
tanh_bwd = fused("tanh_bwd", "unary", "T g, T ans", "T gx", twin=lambda g, ans: g * (1 - ans * ans))
defvjp(tanh, lambda g, ans, x: tanh_bwd(g, ans))
defvjp(tanh_bwd, lambda gg, _, g, ans: tanh_bwd(gg, ans),       # linear in g
                 lambda gg, _, g, ans: -2 * gg * g * ans)

# ----- sigmoid ---------------------------------------------------------------------------------
# y = 1 / (1 + exp(-x)), dy/dx = y (1 - y); the forward never overflows exp.
sigmoid = fused("sigmoid_fwd", "unary", "T x", "T y", twin=_stable_sigmoid, promote=FLOAT,
                public="sigmoid")
sigmoid_bwd = fused("sigmoid_bwd", "unary", "T g, T ans", "T gx",
                    twin=lambda g, ans: g * ans * (1 - ans))
defvjp(sigmoid, lambda g, ans, x: sigmoid_bwd(g, ans))
defvjp(sigmoid_bwd, lambda gg, _, g, ans: sigmoid_bwd(gg, ans),
                    lambda gg, _, g, ans: gg * g * (1 - 2 * ans))

# ----- relu ------------------------------------------------------------------------------------
# y = max(x, 0), dy/dx = 1 where y > 0 else 0 (0 at the kink, as PyTorch). The rule reads y,
# as PyTorch's does, so a second derivative is zero but still connected to x.
relu = defop("relu", lambda xp, x: xp.maximum(x, x.dtype.type(0)), elementwise=True)
relu_bwd = fused("relu_bwd", "unary", "T g, T ans", "T gx",
                 twin=lambda g, ans: np.where(ans <= 0, np.zeros_like(g), g))
defvjp(relu, lambda g, ans, x: relu_bwd(g, ans))
defvjp(relu_bwd, lambda gg, _, g, ans: relu_bwd(gg, ans), lambda gg, _, g, ans: zeros_like_(gg))

# ----- abs, sign -------------------------------------------------------------------------------
def _sign_impl(xp, x):
    if x.dtype == np.bool_:                  # sign(True) = True, as PyTorch
        return x.copy()
    return xp.where(xp.isnan(x), x.dtype.type(0), xp.sign(x))      # sign(nan) = 0, as PyTorch


sign = defop("sign", _sign_impl, saves_ans=False, elementwise=True)
defvjp(sign, lambda g, ans, x: g * 0)

abs_ = defop("abs", np.absolute, saves_ans=False)
defvjp(abs_, lambda g, ans, x: g * sign(x))

# ----- exp2, log2 ------------------------------------------------------------------------------
# y = 2^x, dy/dx = y ln 2;  y = log2(x), dy/dx = 1 / (x ln 2)
_LN2 = math.log(2.0)

exp2 = defop("exp2", np.exp2, promote=FLOAT)
defvjp(exp2, lambda g, ans, x: g * ans * _LN2)

log2 = defop("log2", np.log2, promote=FLOAT, saves_ans=False)
defvjp(log2, lambda g, ans, x: g / (x * _LN2))

# ----- log1p, expm1 ----------------------------------------------------------------------------
# y = log(1 + x), dy/dx = 1 / (1 + x);  y = exp(x) - 1, dy/dx = y + 1 (accurate near 0)
log1p = defop("log1p", np.log1p, promote=FLOAT, saves_ans=False)
defvjp(log1p, lambda g, ans, x: g / (x + 1))

expm1 = defop("expm1", np.expm1, promote=FLOAT)
defvjp(expm1, lambda g, ans, x: g * (ans + 1))

# ----- rsqrt, reciprocal, square -----------------------------------------------------------------
# y = x^(-1/2), dy/dx = -y^3 / 2. One launch on the GPU instead of sqrt then divide.
rsqrt = fused("rsqrt_fwd", "unary", "T x", "T y", promote=FLOAT, public="rsqrt",
              twin=lambda x: _in_float(x, lambda a: 1 / np.sqrt(a)))
defvjp(rsqrt, lambda g, ans, x: -0.5 * g * (ans * ans * ans))

# y = 1 / x, dy/dx = -y^2
reciprocal = defop("reciprocal", np.reciprocal, promote=FLOAT)
defvjp(reciprocal, lambda g, ans, x: -g * (ans * ans))

# y = x^2, dy/dx = 2 x; integers stay integers and bool squares to int64, as PyTorch
square_ = defop("square", np.square, saves_ans=False)
defvjp(square_, lambda g, ans, x: g * (2 * x))


def square(input):
    """Same as `torch.square`."""
    if input._dtype.name == "bool":
        from .shape import to_dtype
        input = to_dtype(input, "int64")
    return square_(input)


# ----- tan -------------------------------------------------------------------------------------
# y = tan(x), dy/dx = 1 + y^2
tan = defop("tan", np.tan, promote=FLOAT)
defvjp(tan, lambda g, ans, x: g * (1 + ans * ans))

# ----- erf -------------------------------------------------------------------------------------
# y = erf(x), dy/dx = 2/sqrt(pi) exp(-x^2). NumPy has no erf: the twin calls math.erf (glibc's,
# correctly rounded to float64 within an ulp) element by element; the GPU runs CUDA's erf.
_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf_twin(x):
    out = _erf_scalar(x.astype(np.float64, copy=False))
    return np.asarray(out, dtype=np.float64).astype(x.dtype, copy=False)


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def _erf_bwd_twin(g, x):
    return _in_float(g, lambda a, b: a * (_TWO_OVER_SQRT_PI * np.exp(-b * b)), x)


erf = fused("erf_fwd", "unary", "T x", "T y", twin=_erf_twin, promote=FLOAT, saves_ans=False,
            public="erf")
erf_bwd = fused("erf_bwd", "unary", "T g, T x", "T gx", twin=_erf_bwd_twin)
defvjp(erf, lambda g, ans, x: erf_bwd(g, x))
defvjp(erf_bwd, lambda gg, _, g, x: erf_bwd(gg, x),            # linear in g
                lambda gg, _, g, x: -2 * x * erf_bwd(gg * g, x))

# ----- sinh, cosh ------------------------------------------------------------------------------
# y = sinh(x), dy/dx = cosh(x);  y = cosh(x), dy/dx = sinh(x)
sinh = defop("sinh", np.sinh, promote=FLOAT, saves_ans=False)
defvjp(sinh, lambda g, ans, x: g * cosh(x))

cosh = defop("cosh", np.cosh, promote=FLOAT, saves_ans=False)
defvjp(cosh, lambda g, ans, x: g * sinh(x))

# ----- asinh, atanh ----------------------------------------------------------------------------
# y = asinh(x), dy/dx = 1 / sqrt(x^2 + 1);  y = atanh(x), dy/dx = 1 / (1 - x^2)
asinh = defop("asinh", np.arcsinh, promote=FLOAT, saves_ans=False)
defvjp(asinh, lambda g, ans, x: g * rsqrt(x * x + 1))

atanh = defop("atanh", np.arctanh, promote=FLOAT, saves_ans=False)
defvjp(atanh, lambda g, ans, x: g / (1 - x * x))

# ----- asin, acos, atan ------------------------------------------------------------------------
# y = asin(x), dy/dx = 1 / sqrt(1 - x^2);  acos: the negative;  y = atan(x), dy/dx = 1 / (1 + x^2)
asin = defop("asin", np.arcsin, promote=FLOAT, saves_ans=False)
defvjp(asin, lambda g, ans, x: g * rsqrt(1 - x * x))

acos = defop("acos", np.arccos, promote=FLOAT, saves_ans=False)
defvjp(acos, lambda g, ans, x: -g * rsqrt(1 - x * x))

atan = defop("atan", np.arctan, promote=FLOAT, saves_ans=False)
defvjp(atan, lambda g, ans, x: g / (1 + x * x))

arcsinh, arctanh, arcsin, arccos, arctan = asinh, atanh, asin, acos, atan

# ----- floor, ceil, trunc, round, frac ---------------------------------------------------------
# Piecewise constant: the gradient is zero (PyTorch's), still connected to x. Integer inputs are
# returned as they are (a copy), as PyTorch; round and frac refuse them, as PyTorch.
floor_ = defop("floor", np.floor, saves_ans=False, saves_inputs=False)
ceil_ = defop("ceil", np.ceil, saves_ans=False, saves_inputs=False)
trunc_ = defop("trunc", np.trunc, saves_ans=False, saves_inputs=False)
rint_ = defop("round", np.rint, saves_ans=False, saves_inputs=False)   # half to even
for _op in (floor_, ceil_, trunc_, rint_):
    defvjp(_op, lambda g, ans, x: zeros_like_(g))


def _rounding(op, input):
    if input._dtype.is_floating_point:
        return op(input)
    from . import clone
    return clone(input)


def floor(input):
    """Same as `torch.floor`: the largest integer <= x, elementwise."""
    return _rounding(floor_, input)


def ceil(input):
    """Same as `torch.ceil`: the smallest integer >= x, elementwise."""
    return _rounding(ceil_, input)


def trunc(input):
    """Same as `torch.trunc`: x rounded towards zero, elementwise."""
    return _rounding(trunc_, input)


fix = trunc


def _floats_only(input, name):
    if not input._dtype.is_floating_point:
        raise NotImplementedError(
            f'"{name}_cpu" not implemented for \'{input._dtype.scalar_name}\'')


def round(input, *, decimals=0):    # noqa: A001  (PyTorch's name)
    """Same as `torch.round`: x rounded to `decimals` decimal places, halves to even.

    With `decimals` != 0 it computes rint(x * 10^d) / 10^d (for d < 0, rint(x / 10^-d) * 10^-d),
    as PyTorch does, so values match PyTorch's rounding of the scaled value. The gradient is
    zero. Integer inputs are returned unchanged with decimals=0 and refused otherwise.
    """
    if decimals == 0:
        return _rounding(rint_, input)
    _floats_only(input, "round")
    if decimals > 0:
        f = 10.0 ** decimals
        return rint_(input * f) / f
    f = 10.0 ** -decimals
    return rint_(input / f) * f


def frac(input):
    """Same as `torch.frac`: x - trunc(x); its gradient is 1."""
    _floats_only(input, "frac")
    return input - trunc_(input)
