"""Programs written once and run under gpuvjp and torch: `m` is the module (gv or torch)."""

from __future__ import annotations

import numpy as np

# name -> (program, number of tensor inputs, domain (lo, hi) of the inputs)
UNARY = {
    "neg": (lambda m, x: -x, (-2, 2)),
    "exp": (lambda m, x: m.exp(x), (-2, 2)),
    "log": (lambda m, x: m.log(x), (0.1, 4)),
    "sqrt": (lambda m, x: m.sqrt(x), (0.1, 4)),
    "sin": (lambda m, x: m.sin(x), (-2, 2)),
    "cos": (lambda m, x: m.cos(x), (-2, 2)),
    "tanh": (lambda m, x: m.tanh(x), (-2, 2)),
    "sigmoid": (lambda m, x: m.sigmoid(x), (-4, 4)),
    "relu": (lambda m, x: m.relu(x), (-2, 2)),
    "abs": (lambda m, x: m.abs(x), (-2, 2)),
    "clamp": (lambda m, x: m.clamp(x, min=-0.5, max=0.7), (-2, 2)),
    "clamp_min": (lambda m, x: m.clamp(x, min=0.1), (-2, 2)),
    "pow_scalar": (lambda m, x: x ** 3, (-2, 2)),
    "pow_frac": (lambda m, x: m.pow(x, 1.5), (0.1, 3)),
    "rpow": (lambda m, x: 2.0 ** x, (-2, 2)),
    "rdiv": (lambda m, x: 1.5 / x, (0.5, 3)),
    "sum": (lambda m, x: x.sum(), (-2, 2)),
    "sum_dim": (lambda m, x: x.sum(dim=-1), (-2, 2)),
    "sum_keep": (lambda m, x: x.sum(dim=0, keepdim=True), (-2, 2)),
    "mean": (lambda m, x: x.mean(), (-2, 2)),
    "mean_dim": (lambda m, x: x.mean(dim=-1, keepdim=True), (-2, 2)),
    "exp_sum": (lambda m, x: x.exp().sum(dim=-1), (-2, 2)),
    "reshape": (lambda m, x: x.reshape(-1), (-2, 2)),
    "unsqueeze": (lambda m, x: x.unsqueeze(0) * 2, (-2, 2)),
    "flip_t": (lambda m, x: x.transpose(0, -1) if x.ndim else x * 1, (-2, 2)),
    "square_mul": (lambda m, x: x * x, (-2, 2)),
}

BINARY = {
    "add": (lambda m, x, y: x + y, (-2, 2)),
    "sub": (lambda m, x, y: x - y, (-2, 2)),
    "mul": (lambda m, x, y: x * y, (-2, 2)),
    "div": (lambda m, x, y: x / y, (0.5, 2)),
    "pow": (lambda m, x, y: m.pow(x, y), (0.5, 2)),
    "maximum": (lambda m, x, y: m.maximum(x, y), (-2, 2)),
    "minimum": (lambda m, x, y: m.minimum(x, y), (-2, 2)),
    "where": (lambda m, x, y: m.where(x > y, x, y * 2), (-2, 2)),
    "add_alpha": (lambda m, x, y: m.add(x, y, alpha=2.5), (-2, 2)),
}

# 2-D shapes: (), (4,), (3, 4), (1, 4) against (3, 4), (0, 4), and a transposed view
UNARY_SHAPES = [(), (4,), (3, 4), (0, 4), (2, 3, 4)]
BINARY_SHAPES = [((), ()), ((4,), (4,)), ((3, 4), (3, 4)), ((1, 4), (3, 4)), ((3, 1), (4,)),
                 ((0, 4), (1, 4)), ((), (3, 4))]


def sample(rng, shape, domain, kink_free=True):
    lo, hi = domain
    a = rng.uniform(lo, hi, size=shape)
    if kink_free:          # keep away from kinks (relu, abs, clamp at 0, -0.5, 0.7, 0.1)
        for k in (0.0, -0.5, 0.7, 0.1):
            a = np.where(np.abs(a - k) < 1e-3, a + 2e-3, a)
    return a
