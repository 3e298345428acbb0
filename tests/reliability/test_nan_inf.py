"""NaN and Inf inputs are propagated exactly as PyTorch propagates them, in values and in vjps,
and never raise (not even a NumPy RuntimeWarning turned into an error): the same program under
both libraries, compared elementwise in float64 with NaN positions and Inf signs exact."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpuvjp as gv

from ._common import Lib, host, torch

NAN, INF = np.nan, np.inf
# Every special value next to ordinary ones; 12 elements, so (3, 4) and (4, 3) reshapes work.
X = np.array([NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 2.5, -3.0, 7.0, -1e-3, 0.5])
Y = np.array([1.0, NAN, 2.0, INF, -INF, 0.0, -0.0, NAN, INF, 3.0, 1.0, -0.5])
RTOL = 1e-10


def _nnf(L):
    return L.m.nn.functional


UNARY = {
    # name -> f(L, x); x is X, shape (12,)
    **{n: (lambda n: lambda L, x: getattr(L.m, n)(x))(n) for n in (
        "neg", "exp", "exp2", "log", "log2", "log1p", "expm1", "sqrt", "rsqrt", "square", "abs",
        "sign", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "reciprocal", "erf")},
    "clamp": lambda L, x: L.m.clamp(x, min=-1.0, max=1.0),
    "clamp-min": lambda L, x: L.m.clamp(x, min=0.0),
    "pow-2": lambda L, x: x ** 2,
    "pow-3": lambda L, x: x ** 3,
    "pow-half": lambda L, x: x ** 0.5,
    "pow-neg": lambda L, x: x ** -1.5,
    "pow-neg-half": lambda L, x: x ** -0.5,
    "rpow": lambda L, x: 2.0 ** x,
    "div-scalar": lambda L, x: 1.0 / x,
    "sum": lambda L, x: x.sum(),
    "mean": lambda L, x: x.mean(),
    "sum-dim": lambda L, x: x.reshape(3, 4).sum(dim=1),
    "prod-dim": lambda L, x: x.reshape(3, 4).prod(dim=1),
    "prod-all": lambda L, x: x.prod(),
    "amax": lambda L, x: x.reshape(3, 4).amax(dim=1),
    "amin": lambda L, x: x.reshape(3, 4).amin(dim=0),
    "max-dim": lambda L, x: x.reshape(3, 4).max(dim=1)[0],
    "min-dim": lambda L, x: x.reshape(4, 3).min(dim=0)[0],
    "max-all": lambda L, x: x.max(),
    "min-all": lambda L, x: x.min(),
    "logsumexp": lambda L, x: x.reshape(3, 4).logsumexp(dim=1),
    "norm": lambda L, x: x.reshape(3, 4).norm(dim=1),
    "var": lambda L, x: x.reshape(3, 4).var(dim=1),
    "std": lambda L, x: x.reshape(4, 3).std(dim=1),
    "cumsum": lambda L, x: x.cumsum(0),
    "softmax": lambda L, x: _nnf(L).softmax(x.reshape(3, 4), dim=1),
    "log-softmax": lambda L, x: _nnf(L).log_softmax(x.reshape(3, 4), dim=1),
    "gelu": lambda L, x: _nnf(L).gelu(x),
    "silu": lambda L, x: _nnf(L).silu(x),
    "softplus": lambda L, x: _nnf(L).softplus(x),
    "matmul": lambda L, x: x.reshape(3, 4) @ x.reshape(4, 3),
    "mv": lambda L, x: L.m.mv(x.reshape(3, 4), x[:4]),
    "dot": lambda L, x: L.m.dot(x, x),
    "outer": lambda L, x: L.m.outer(x[:4], x[4:8]),
    "flip-cat": lambda L, x: L.m.cat([x.flip(0), x[:3]]),
    "gather": lambda L, x: L.m.gather(x, 0, L.t(np.array([0, 0, 1, 2, 11]))),
    "mse-loss": lambda L, x: _nnf(L).mse_loss(x, L.t(np.linspace(-1, 1, 12))),
    "cross-entropy": lambda L, x: _nnf(L).cross_entropy(x.reshape(3, 4),
                                                        L.t(np.array([0, 3, 1]))),
}

BINARY = {
    # name -> f(L, x, y); x is X and y is Y, both (12,)
    "add": lambda L, x, y: x + y,
    "sub": lambda L, x, y: x - y,
    "mul": lambda L, x, y: x * y,
    "div": lambda L, x, y: x / y,
    "pow": lambda L, x, y: x ** y,
    "maximum": lambda L, x, y: L.m.maximum(x, y),
    "minimum": lambda L, x, y: L.m.minimum(x, y),
    "atan2": lambda L, x, y: L.m.atan2(x, y),
    "where": lambda L, x, y: L.m.where(x > y, x, y),
    "mul-broadcast": lambda L, x, y: x.reshape(3, 4) * y[:4],
    "matmul": lambda L, x, y: x.reshape(3, 4) @ y.reshape(4, 3),
    "linear": lambda L, x, y: _nnf(L).linear(x.reshape(3, 4), y.reshape(3, 4), y[:3]),
}


# Rows of special values for the row-wise ops: +inf with finite, all -inf, -inf with finite,
# +inf twice, +inf with -inf, NaN with +inf, and an ordinary row.
ROWS = np.array([[1.0, INF, 0.0, 2.0], [-INF, -INF, -INF, -INF], [1.0, -INF, 2.0, -INF],
                 [INF, INF, 0.0, 1.0], [INF, -INF, -INF, 3.0], [NAN, INF, 0.0, 1.0],
                 [0.5, -1.0, 2.0, 0.0]])
ROW_OPS = {
    "softmax": lambda L, x: _nnf(L).softmax(x, dim=1),
    "softmax-dim0": lambda L, x: _nnf(L).softmax(x.T, dim=0),
    "log-softmax": lambda L, x: _nnf(L).log_softmax(x, dim=1),
    "log-softmax-dim0": lambda L, x: _nnf(L).log_softmax(x.T, dim=0),
    "logsumexp": lambda L, x: x.logsumexp(dim=1),
    "logsumexp-dim0": lambda L, x: x.T.logsumexp(dim=0),
    "cross-entropy-none": lambda L, x: _nnf(L).cross_entropy(
        x, L.t(np.array([0, 1, 2, 3, 3, 2, 1])), reduction="none"),
    "cross-entropy-sum": lambda L, x: _nnf(L).cross_entropy(
        x, L.t(np.array([0, 1, 2, 3, 3, 2, 1])), reduction="sum"),
}


def _v(shape):
    """A cotangent with no zeros (so a NaN in the Jacobian shows in the vjp) and mixed signs."""
    n = int(np.prod(shape))
    v = np.linspace(-1.5, 2.0, n) if n > 1 else np.array([0.75])
    return np.where(v == 0, 0.25, v).reshape(shape)


def _run(L, f, arrays, v=None):
    inputs = tuple(L.t(a) for a in arrays)
    with (torch.no_grad() if not L.is_gv else gv.no_grad()):
        shape = tuple(f(L, *inputs).shape)
    vt = L.t(_v(shape) if v is None else v)
    out, grads = L.F.vjp(lambda *a: f(L, *a), inputs, vt)
    return out, grads


def assert_same_specials(got, want, what):
    """Elementwise equal up to RTOL, NaN where torch has NaN, Inf of the same sign."""
    g, w = host(got), host(want)
    assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
    bad = ~(np.isclose(g, w, rtol=RTOL, atol=0, equal_nan=True) | (g == w))
    if bad.any():
        idx = np.flatnonzero(bad.ravel())
        raise AssertionError(
            f"{what} differs from torch at flat indices {idx.tolist()}: gpuvjp "
            f"{g.ravel()[idx].tolist()}, torch {w.ravel()[idx].tolist()}")


def _compare(f, arrays, device, v=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # warnings have their own test
        got = _run(Lib(gv, device), f, arrays, v)
    want = _run(Lib(torch), f, arrays, v)
    assert_same_specials(got[0], want[0], "value")
    for i, (g, w) in enumerate(zip(got[1], want[1])):
        assert_same_specials(g, w, f"vjp w.r.t. input {i}")


@pytest.mark.parametrize("name", UNARY)
def test_unary_nan_inf(name, device):
    _compare(UNARY[name], (X,), device)


@pytest.mark.parametrize("name", BINARY)
def test_binary_nan_inf(name, device):
    _compare(BINARY[name], (X, Y), device)


@pytest.mark.parametrize("name", ROW_OPS)
def test_rows_of_specials(name, device):
    """Row-wise ops (one reduction pass on the GPU) give PyTorch's NaN and Inf per row."""
    _compare(ROW_OPS[name], (ROWS,), device)


@pytest.mark.parametrize("name", ["mul", "exp", "sum-dim", "matmul", "softmax", "tanh"])
def test_nan_inf_in_v(name, device):
    """A NaN or Inf in v spreads through the vjp as it does in PyTorch (no masking)."""
    f = UNARY.get(name) or (lambda L, x: BINARY[name](L, x, L.t(np.linspace(-2, 2, 12))))
    x = np.linspace(-1.0, 1.3, 12)
    with torch.no_grad():
        shape = tuple(f(Lib(torch), torch.tensor(x)).shape)
    v = _v(shape).ravel()
    v[:3] = [NAN, INF, -INF]
    _compare(f, (x,), device, v.reshape(shape))


def test_nan_inf_raise_no_warnings(device):
    """PyTorch computes with NaN and Inf silently; gpuvjp must not emit NumPy RuntimeWarnings
    ("overflow encountered in exp", "invalid value encountered in sqrt", ...), which a
    warnings-as-errors setup (pytest -W error, filterwarnings=error) turns into exceptions."""
    noisy = {}
    cases = [(n, f, (X,)) for n, f in UNARY.items()] + [(n, f, (X, Y))
                                                        for n, f in BINARY.items()]
    for name, f, arrays in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                _run(Lib(torch), f, arrays)
            except Warning:
                continue                                  # torch warns too: not ours to judge
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _run(Lib(gv, device), f, arrays)
        msgs = sorted({str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)})
        if msgs:
            noisy[name] = msgs
    assert not noisy, f"{len(noisy)} programs warn where torch is silent: {noisy}"


@pytest.mark.parametrize("name", ["vjp", "jvp", "vhp", "hvp", "jacobian", "hessian"])
def test_family_nan_inf(name, device):
    """NaN and Inf flow through every member as through torch (x^3 and exp mixed)."""
    fn = getattr(gv.autograd.functional, name, None)
    if fn is None:
        pytest.skip(f"gpuvjp.autograd.functional.{name} does not exist yet")
    x = X[[0, 1, 2, 5, 7, 10]]

    def program(L):
        xt = L.t(x)
        if name in ("hessian", "vhp", "hvp"):
            func = lambda a: (a ** 3 + a.exp()).sum()          # noqa: E731
        else:
            func = lambda a: a ** 3 * a.exp()                  # noqa: E731
        v = L.t(np.linspace(0.5, 1.5, 6))
        return L.call(name, func, xt, v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = program(Lib(gv, device))
    want = program(Lib(torch))
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same_specials(g, w, f"{name} result {i}")
