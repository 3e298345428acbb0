"""Elementwise unary ops: forward, NumPy twin and backward rule, one block each."""

from __future__ import annotations

import numpy as np

from ._registry import FLOAT, defop, defvjp, fused


def _stable_sigmoid(x):
    # exp of a non-positive number only: no overflow for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


# ----- neg ---------------------------------------------------------------------------------
neg = defop("neg", np.negative, saves_ans=False)
defvjp(neg, lambda g, ans, x: -g)

# ----- exp -----------------------------------------------------------------------------------
# y = exp(x), dy/dx = exp(x). The first-order rule recomputes exp(x) inside one fused launch
# instead of keeping y alive: same bytes read, and y is never stored for the backward. On the
# GPU exp is lazy, so x.exp().sum(dim) is one reduction pass that never writes y.
exp = fused("exp_fwd", "unary", "T x", "T y", twin=np.exp, promote=FLOAT, saves_ans=False)
exp.name = "exp"
exp.lazy = True
exp_bwd = fused("exp_bwd", "unary", "T g, T x", "T gx", twin=lambda g, x: g * np.exp(x))
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
sigmoid = fused("sigmoid_fwd", "unary", "T x", "T y", twin=_stable_sigmoid, promote=FLOAT)
sigmoid.name = "sigmoid"
sigmoid_bwd = fused("sigmoid_bwd", "unary", "T g, T ans", "T gx",
                    twin=lambda g, ans: g * ans * (1 - ans))
defvjp(sigmoid, lambda g, ans, x: sigmoid_bwd(g, ans))
defvjp(sigmoid_bwd, lambda gg, _, g, ans: sigmoid_bwd(gg, ans),
                    lambda gg, _, g, ans: gg * g * (1 - 2 * ans))

# ----- relu ------------------------------------------------------------------------------------
# y = max(x, 0), dy/dx = 1 where x > 0 else 0 (0 at the kink, as PyTorch)
relu = defop("relu", lambda xp, x: xp.maximum(x, x.dtype.type(0)), saves_ans=False)
relu_bwd = fused("relu_bwd", "unary", "T g, T x", "T gx",
                 twin=lambda g, x: np.where(x > 0, g, np.zeros_like(g)))
defvjp(relu, lambda g, ans, x: relu_bwd(g, x))
defvjp(relu_bwd, lambda gg, _, g, x: relu_bwd(gg, x), None)

# ----- abs, sign -------------------------------------------------------------------------------
sign = defop("sign", np.sign, saves_ans=False)
defvjp(sign, lambda g, ans, x: g * 0)

abs_ = defop("abs", np.absolute, saves_ans=False)
defvjp(abs_, lambda g, ans, x: g * sign(x))
