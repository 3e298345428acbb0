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
