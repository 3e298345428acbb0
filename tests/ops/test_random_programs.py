"""Random programs of 2-8 ops over random shapes, run under gpuvjp and torch: values and vjps
must agree in float64. CI runs a bounded, derandomised set; GPUVJP_LONG=1 runs many more."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuvjp as gv

torch = pytest.importorskip("torch")

LONG = os.environ.get("GPUVJP_LONG") == "1"


def F(m):
    return m.nn.functional


# Each step maps the running tensor x (and the second input y, broadcastable to x) to a new
# tensor. Domains are kept safe by construction: log, sqrt and division see 1 + x^2.
UNARY = {
    "sin": lambda m, x: m.sin(x),
    "cos": lambda m, x: x.cos(),
    "tanh": lambda m, x: m.tanh(x),
    "sigmoid": lambda m, x: m.sigmoid(x),
    "exp_tanh": lambda m, x: m.exp(m.tanh(x)),
    "square": lambda m, x: x.square(),
    "abs": lambda m, x: m.abs(x),
    "relu": lambda m, x: m.relu(x),
    "neg": lambda m, x: -x,
    "log1p_sq": lambda m, x: m.log(1 + x * x),
    "sqrt1p": lambda m, x: m.sqrt(1 + x * x),
    "recip": lambda m, x: m.reciprocal(1 + x * x),
    "erf": lambda m, x: m.erf(x),
    "softplus": lambda m, x: F(m).softplus(x),
    "gelu": lambda m, x: F(m).gelu(x),
    "silu": lambda m, x: F(m).silu(x),
    "pow3": lambda m, x: x ** 3,
    "clamp": lambda m, x: m.clamp(x, min=-0.7, max=0.9),
}
BINARY = {
    "add": lambda m, x, y: x + y,
    "sub": lambda m, x, y: y - x,
    "mul": lambda m, x, y: x * y,
    "div": lambda m, x, y: x / (1 + y * y),
    "maximum": lambda m, x, y: m.maximum(x, y),
    "minimum": lambda m, x, y: m.minimum(y, x),
    "atan2": lambda m, x, y: m.atan2(x, y + 3),
    "where": lambda m, x, y: m.where(x > y, x, y * 2),
}
# Steps that change the shape take the current rank and return a program or None if they
# do not apply.
RESHAPE = {
    "sum_last": lambda nd: (lambda m, x: x.sum(dim=-1)) if nd else None,
    "mean_first_keep": lambda nd: (lambda m, x: x.mean(dim=0, keepdim=True)) if nd else None,
    "amax_last": lambda nd: (lambda m, x: m.amax(x, -1)) if nd else None,
    "logsumexp": lambda nd: (lambda m, x: m.logsumexp(x, -1)) if nd else None,
    "softmax": lambda nd: (lambda m, x: F(m).softmax(x, -1)) if nd else None,
    "log_softmax_first": lambda nd: (lambda m, x: F(m).log_softmax(x, 0)) if nd else None,
    "cross_entropy_rows": lambda nd: (lambda m, x: F(m).cross_entropy(
        x, _ints(m, x, np.arange(x.shape[0]) % x.shape[1]), reduction="none")) if nd == 2
    else None,
    "index_rows": lambda nd: (lambda m, x: x[_ints(m, x, np.arange(5) % x.shape[0] - 1)])
    if nd else None,
    "transpose": lambda nd: (lambda m, x: x.transpose(0, -1)) if nd >= 2 else None,
    "flatten": lambda nd: (lambda m, x: x.flatten()) if nd >= 1 else None,
    "unsqueeze": lambda nd: (lambda m, x: x.unsqueeze(0)) if nd <= 3 else None,
    "flip": lambda nd: (lambda m, x: x.flip(0)) if nd else None,
    "cumsum": lambda nd: (lambda m, x: x.cumsum(-1)) if nd else None,
}


def _ints(m, x, values):
    """An int64 index tensor on x's device (repeats, and negatives where the values have any)."""
    return m.tensor(np.asarray(values, dtype=np.int64), device=x.device)


@st.composite
def programs(draw):
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    # y broadcasts to x's shape: a suffix of it, with some dims set to 1
    k = draw(st.integers(0, ndim))
    yshape = tuple(1 if draw(st.booleans()) else n for n in shape[ndim - k:])
    steps, cur = [], shape
    for _ in range(draw(st.integers(2, 8))):
        kind = draw(st.sampled_from(["unary", "binary", "reshape"]))
        if kind == "unary":
            name = draw(st.sampled_from(sorted(UNARY)))
            steps.append((name, UNARY[name], False))
        elif kind == "binary" and _broadcasts(yshape, cur):
            name = draw(st.sampled_from(sorted(BINARY)))
            steps.append((name, BINARY[name], True))
        else:
            name = draw(st.sampled_from(sorted(RESHAPE)))
            f = RESHAPE[name](len(cur))
            if f is None:
                continue
            cur = _shape_after(name, cur)
            steps.append((name, f, False))
    seed = draw(st.integers(0, 2**31 - 1))
    return shape, yshape, steps, seed


def _broadcasts(small, shape):
    """Whether `small` broadcasts to exactly `shape`."""
    if len(small) > len(shape):
        return False
    return all(a in (1, b) for a, b in zip(small[::-1], shape[::-1]))


def _shape_after(name, s):
    if name in ("sum_last", "amax_last", "logsumexp"):
        return s[:-1]
    if name == "mean_first_keep":
        return (1,) + s[1:]
    if name == "transpose":
        return (s[-1],) + s[1:-1] + (s[0],)
    if name == "flatten":
        return (int(np.prod(s)),)
    if name == "unsqueeze":
        return (1,) + s
    if name == "cross_entropy_rows":
        return s[:1]
    if name == "index_rows":
        return (5,) + s[1:]
    return s


def _run(m, steps, x, y):
    for _, f, binary in steps:
        x = f(m, x, y) if binary else f(m, x)
    return x


@settings(max_examples=2000 if LONG else 80, deadline=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_program_matches_torch(prog):
    shape, yshape, steps, seed = prog
    rng = np.random.default_rng(seed)
    xa, ya = rng.uniform(-2, 2, shape), rng.uniform(-2, 2, yshape)
    want_out = _run(torch, steps, torch.tensor(xa), torch.tensor(ya))
    v = rng.standard_normal(tuple(want_out.shape))
    names = [s[0] for s in steps]

    def prog_for(m):
        return lambda a, b: _run(m, steps, a, b)
    out, (gx, gy) = gv.vjp(prog_for(gv), (gv.tensor(xa), gv.tensor(ya)), gv.tensor(v))
    wout, (wx, wy) = torch.autograd.functional.vjp(prog_for(torch),
                                                   (torch.tensor(xa), torch.tensor(ya)),
                                                   torch.tensor(v))
    for got, want, what in ((out, wout, "value"), (gx, wx, "vjp x"), (gy, wy, "vjp y")):
        assert tuple(got.shape) == tuple(want.shape), (names, what)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-9,
                                   err_msg=f"{what} of {names} on {shape}, y {yshape}")
