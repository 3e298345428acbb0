"""narrow ... remainder (#13): the Tensor methods and functions PyTorch code reaches for. Each
program runs under gpuvjp and torch: gradchecks (first and second order), values and vjps in
float64, values and dtypes in float32, hessians on a few, and errors (type and message)."""

import math

import numpy as np
import pytest

import gpuvjp as gv
from tests._check import gradcheck
from tests.conftest import ORACLE_MESSAGES
from tests.ops.cases import sample

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (CPU build) is not installed")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
# The cuda parametrisations (gpu) cover first-order vjps, values, hessians, vectorized jacobians
# and dtypes; second order, float32 values and forward mode run on the cpu only (the graph and
# the rules are device-free), to keep the emulated pass short.

A, V, M, B = (3, 4), (4,), (2, 3, 4), (2, 3, 2)
UNIT = (-0.9, 0.9)


def idx(m, x, data):
    return m.tensor(data, device=x.device)


# name -> (program(m, *inputs), domain, input shapes); `m` is the module (gv or torch)
CASES = {
    # ----- views, copies and casts
    "narrow": (lambda m, x: x.narrow(1, 1, 2) * x[:, :2], (-2, 2), [A]),
    "narrow_neg": (lambda m, x: m.narrow(x, -1, -3, 2).exp(), (-2, 2), [M]),
    "narrow_0d_start": (lambda m, x: x.narrow(0, idx(m, x, 1), 2), (-2, 2), [A]),
    "repeat": (lambda m, x: x.repeat(2, 1, 3) * 1.5, (-2, 2), [A]),
    "repeat_1d": (lambda m, x: x.repeat(3).sin(), (-2, 2), [V]),
    "repeat_0d": (lambda m, x: x.sum().repeat(2, 2) * x[0], (-2, 2), [V]),
    "repeat_zero": (lambda m, x: x.repeat(0, 2).sum() + x.repeat(1, 1), (-2, 2), [A]),
    "expand_as": (lambda m, x: x[:1].expand_as(x) * x, (-2, 2), [A]),
    "view_as": (lambda m, x: x.view_as(x.t()).cos(), (-2, 2), [A]),
    "reshape_as": (lambda m, x: x.t().reshape_as(x) * x, (-2, 2), [A]),
    "type_as": (lambda m, x: x.float().type_as(x) * x, (-2, 2), [A]),
    "unflatten": (lambda m, x: x.unflatten(1, (2, -1)) * 2, (-2, 2), [A]),
    "unflatten_fn": (lambda m, x: m.unflatten(x, -3, (1, 2, 1)).exp(), (-2, 2), [M]),
    "masked_fill": (lambda m, x: x.masked_fill(x > 0.1, 2.5) * x, (-2, 2), [A]),
    "masked_fill_fn": (lambda m, x: m.masked_fill(x, x[:1] < 0.7, -1.0), (-2, 2), [A]),
    "masked_fill_value": (lambda m, x, y: x.masked_fill(x > 0.1, y.sum() * 3), (-2, 2), [A, (2,)]),
    "movedim": (lambda m, x: m.movedim(x, 0, -1) * 2, (-2, 2), [M]),
    "movedim_tuple": (lambda m, x: x.movedim((0, 1), (2, 0)).sin(), (-2, 2), [M]),
    "moveaxis": (lambda m, x: m.moveaxis(x, -1, 0) * x.sum(), (-2, 2), [M]),
    "roll": (lambda m, x: m.roll(x, 1) * x, (-2, 2), [A]),
    "roll_dims": (lambda m, x: x.roll((1, -2), (0, 1)).exp(), (-2, 2), [A]),
    "roll_neg_dim": (lambda m, x: m.roll(x, 5, -1) * x, (-2, 2), [M]),
    "tile": (lambda m, x: m.tile(x, (2,)) * 2, (-2, 2), [A]),
    "tile_more": (lambda m, x: x.tile((2, 1, 2)).sin(), (-2, 2), [A]),
    "repeat_interleave": (lambda m, x: m.repeat_interleave(x, 2) * 3, (-2, 2), [A]),
    "repeat_interleave_dim": (lambda m, x: x.repeat_interleave(idx(m, x, [1, 0, 2]), dim=0),
                              (-2, 2), [A]),
    "repeat_interleave_neg": (lambda m, x: x.repeat_interleave(3, -1).exp(), (-2, 2), [M]),
    # ----- diagonals and triangles
    "diag_2d": (lambda m, x: m.diag(x) * 2, (-2, 2), [A]),
    "diag_2d_offset": (lambda m, x: x.diag(-1).exp(), (-2, 2), [A]),
    "diag_1d": (lambda m, x: m.diag(x) * 1.5, (-2, 2), [V]),
    "diag_1d_offset": (lambda m, x: x.diag(2).sin(), (-2, 2), [V]),
    "diagonal": (lambda m, x: m.diagonal(x, 1, -1, 0) * 2, (-2, 2), [M]),
    "diagonal_method": (lambda m, x: x.diagonal().exp(), (-2, 2), [A]),
    "diagonal_far": (lambda m, x: m.diagonal(x, offset=-5).sum() + x.sum(), (-2, 2), [A]),
    "tril": (lambda m, x: m.tril(x, -1) * x, (-2, 2), [M]),
    "triu": (lambda m, x: x.triu(1).exp(), (-2, 2), [A]),
    "triu_fn": (lambda m, x: m.triu(x) * 2, (-2, 2), [A]),
    "trace": (lambda m, x: m.trace(x) * x, (-2, 2), [A]),
    "trace_method": (lambda m, x: (x * x).trace(), (-2, 2), [(3, 3)]),
    # ----- cumulative product, matrix products with addends
    "cumprod": (lambda m, x: m.cumprod(x, 1), (0.5, 1.5), [A]),
    "cumprod_neg": (lambda m, x: x.cumprod(-3) * x, (-2, 2), [M]),
    "cumprod_0d": (lambda m, x: m.cumprod(x.sum(), 0) * x, (-2, 2), [V]),
    "addmm": (lambda m, a, b, c: m.addmm(a, b, c), (-2, 2), [V, (3, 2), (2, 4)]),
    "addmm_scaled": (lambda m, a, b, c: a.addmm(b, c, beta=0.5, alpha=-2), (-2, 2),
                     [A, (3, 2), (2, 4)]),
    "addmm_beta0": (lambda m, a, b, c: m.addmm(a, b, c, beta=0), (-2, 2), [(1, 4), (3, 2), (2, 4)]),
    "baddbmm": (lambda m, a, b, c: m.baddbmm(a, b, c), (-2, 2), [A, (2, 3, 2), (2, 2, 4)]),
    "baddbmm_scaled": (lambda m, a, b, c: a.baddbmm(b, c, alpha=0.5, beta=2), (-2, 2),
                       [(2, 3, 4), (2, 3, 2), (2, 2, 4)]),
    # ----- elementwise
    "clamp_min": (lambda m, x: m.clamp_min(x, 0.1), (-2, 2), [A]),
    "clamp_max": (lambda m, x: x.clamp_max(0.7) * x, (-2, 2), [A]),
    "clamp_min_tensor": (lambda m, x, y: x.clamp_min(y), (-2, 2), [A, V]),
    "clamp_max_tensor": (lambda m, x, y: m.clamp_max(x, y), (-2, 2), [A, (3, 1)]),
    "lerp": (lambda m, x, y: m.lerp(x, y, 0.3), (-2, 2), [A, A]),
    "lerp_high": (lambda m, x, y: x.lerp(y, 0.8), (-2, 2), [A, V]),
    "lerp_tensor": (lambda m, x, y, w: m.lerp(x, y, w), (-2, 2), [A, A, V]),
    "hypot": (lambda m, x, y: m.hypot(x, y), (0.3, 2), [A, A]),
    "hypot_method": (lambda m, x, y: x.hypot(-y), (0.3, 2), [A, V]),
    "logaddexp": (lambda m, x, y: m.logaddexp(x, y), (-3, 3), [A, A]),
    "logaddexp_method": (lambda m, x, y: (x * 30).logaddexp(y * 30), (-3, 3), [A, (3, 1)]),
    "sinh": (lambda m, x: m.sinh(x), (-2, 2), [A]),
    "cosh": (lambda m, x: x.cosh(), (-2, 2), [A]),
    "asinh": (lambda m, x: m.asinh(x * 3), (-2, 2), [A]),
    "atanh": (lambda m, x: x.atanh(), UNIT, [A]),
    "asin": (lambda m, x: m.asin(x), UNIT, [A]),
    "acos": (lambda m, x: x.acos(), UNIT, [A]),
    "atan": (lambda m, x: m.atan(x * 3), (-2, 2), [A]),
    "arc_aliases": (lambda m, x: m.arcsin(x) + x.arccos() + m.arctan(x) + x.arcsinh() +
                    m.arctanh(x), UNIT, [A]),
    "floor": (lambda m, x: m.floor(x * 3) * x, (-2, 2), [A]),
    "ceil": (lambda m, x: x.ceil() + x, (-2, 2), [A]),
    "trunc": (lambda m, x: m.trunc(x * 3) * x + m.fix(x), (-2, 2), [A]),
    "round": (lambda m, x: m.round(x * 3) * x, (-2, 2), [A]),
    "round_decimals": (lambda m, x: x.round(decimals=2) * x, (-2, 2), [A]),
    "round_neg_decimals": (lambda m, x: m.round(x * 300, decimals=-1) + x, (-2, 2), [A]),
    "frac": (lambda m, x: m.frac(x * 3) * x, (-2, 2), [A]),
    "fmod": (lambda m, x, y: m.fmod(x * 3, y), (0.5, 2), [A, A]),
    "fmod_neg": (lambda m, x, y: x.fmod(-y) * 2, (-2, 2), [A, V]),
    "fmod_scalar": (lambda m, x: m.fmod(x * 3, -1.3), (-2, 2), [A]),
    "remainder": (lambda m, x, y: m.remainder(x * 3, y), (0.5, 2), [A, A]),
    "remainder_neg": (lambda m, x, y: x.remainder(-y), (-2, 2), [(3, 1), V]),
    "remainder_scalar": (lambda m, x: m.remainder(x * 3, 0.7), (-2, 2), [A]),
}
# Second order: all but the float32 round trip (central differences see float32 rounding).
SECOND = sorted(set(CASES) - {"type_as"})
# Hessians against torch's, on programs whose second derivative is not zero.
HESSIAN = ["cumprod", "cumprod_neg", "hypot", "logaddexp", "lerp_tensor", "sinh", "asinh",
           "atanh", "asin", "acos", "atan", "cosh", "diag_1d_offset", "tile_more", "roll_dims",
           "fmod", "remainder", "addmm_scaled", "baddbmm", "masked_fill_value", "trace"]


def _ids(shape):
    return str(shape).replace(" ", "")


def _inputs(name, rng):
    _, domain, shapes = CASES[name]
    return [sample(rng, s, domain) for s in shapes]


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _vjp_of(f):
    """xs -> vjp(f)(xs, v) with a fixed v, as a differentiable function (order 2)."""
    def g(*xs):
        out = f(*xs)
        v = gv.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape) + 0.3,
                      dtype=out.dtype, device=out.device)
        _, grads = gv.vjp(f, xs, v, create_graph=True)
        return grads
    return g


# ----- gradchecks ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(CASES) - {"type_as"}))   # float32 inside
def test_first_order(name, device, rng):
    f = CASES[name][0]
    full = None if device == "cpu" else False          # the full Jacobian once, on the cpu
    gradcheck(lambda *xs: f(gv, *xs), _inputs(name, rng), device, rng, full=full)


@pytest.mark.parametrize("name", SECOND)
def test_second_order(name, rng, device="cpu"):
    f = CASES[name][0]
    gradcheck(_vjp_of(lambda *xs: f(gv, *xs)), _inputs(name, rng), device, rng, full=False)


# ----- oracle: the same program under torch ------------------------------------------------------
def _np(t):
    return t.numpy() if isinstance(t, gv.Tensor) else t.detach().numpy()


def _close(got, want, rtol=1e-7, atol=1e-12):
    got, want = _np(got), _np(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@needs_torch
@pytest.mark.parametrize("name", sorted(CASES))
def test_oracle(name, device, rng):
    f = CASES[name][0]
    xs = _inputs(name, rng)
    with torch.no_grad():
        shape = tuple(f(torch, *[torch.tensor(x) for x in xs]).shape)
    v = rng.standard_normal(shape)
    out, grads = gv.vjp(lambda *a: f(gv, *a), tuple(gv.tensor(x, device=device) for x in xs),
                        gv.tensor(v, device=device))
    want_out, want_grads = torch.autograd.functional.vjp(
        lambda *a: f(torch, *a), tuple(torch.tensor(x) for x in xs), torch.tensor(v))
    _close(out, want_out)
    for g, w in zip(grads, want_grads):
        _close(g, w)


@needs_torch
@pytest.mark.parametrize("name", sorted(CASES))
def test_oracle_float32(name, rng, device="cpu"):
    f = CASES[name][0]
    xs = _inputs(name, rng)
    got = f(gv, *[gv.tensor(x, dtype=gv.float32, device=device) for x in xs])
    want = f(torch, *[torch.tensor(x, dtype=torch.float32) for x in xs])
    _close(got, want, rtol=2e-6, atol=1e-6)


@needs_torch
@pytest.mark.parametrize("name", HESSIAN)
def test_hessian_oracle(name, device, rng):
    f = CASES[name][0]
    xs = _inputs(name, rng)
    w = [rng.standard_normal(tuple(f(torch, *[torch.tensor(x) for x in xs]).shape))]
    got = gv.hessian(lambda *a: (f(gv, *a) * gv.tensor(w[0], device=device)).sum(),
                     tuple(gv.tensor(x, device=device) for x in xs))
    want = torch.autograd.functional.hessian(
        lambda *a: (f(torch, *a) * torch.tensor(w[0])).sum(), tuple(torch.tensor(x) for x in xs))
    for row_g, row_w in zip(got, want):
        for g, h in zip(row_g, row_w):
            _close(g, h, rtol=1e-6, atol=1e-9)


# ----- forward mode: tangents through each op, against the double-vjp path and torch --------------
JVP = sorted(set(CASES) - {"type_as"})


@needs_torch
@pytest.mark.parametrize("name", JVP)
def test_forward_mode(name, rng, device="cpu"):
    from gpuvjp.autograd import functional as F
    f = CASES[name][0]
    xs = _inputs(name, rng)
    ts = [rng.standard_normal(x.shape) for x in xs]
    want = torch.autograd.functional.jvp(lambda *a: f(torch, *a),
                                         tuple(torch.tensor(x) for x in xs),
                                         tuple(torch.tensor(t) for t in ts))
    for impl in (F._jvp_forward, F._jvp_double_backward):
        got = impl(lambda *a: f(gv, *a), tuple(gv.tensor(x, device=device) for x in xs),
                   tuple(gv.tensor(t, device=device) for t in ts))
        _close(got[0], want[0])
        _close(got[1], want[1], atol=1e-10)


# Batched tangents (a forward-mode jacobian) and batched cotangents (a vectorized jacobian).
BATCHED = ["narrow", "repeat", "tile_more", "roll_dims", "diag_1d", "diagonal", "tril",
           "cumprod", "movedim_tuple", "addmm", "lerp_tensor", "hypot", "logaddexp", "asin",
           "fmod", "masked_fill", "unflatten", "repeat_interleave_dim", "trace"]


@needs_torch
@pytest.mark.parametrize("strategy", ["forward-mode", "reverse-mode"])
@pytest.mark.parametrize("name", BATCHED)
def test_vectorized_jacobian(name, strategy, device, rng):
    f = CASES[name][0]
    xs = _inputs(name, rng)
    got = gv.jacobian(lambda *a: f(gv, *a), tuple(gv.tensor(x, device=device) for x in xs),
                      vectorize=True, strategy=strategy)
    want = torch.autograd.functional.jacobian(lambda *a: f(torch, *a),
                                              tuple(torch.tensor(x) for x in xs))
    for g, w in zip(got, want):
        _close(g, w)


@needs_torch
@pytest.mark.parametrize("name", [n for n in BATCHED if len(CASES[n][2]) == 1])
def test_vectorized_hessian(name, rng, device="cpu"):
    f = CASES[name][0]
    (x,) = _inputs(name, rng)
    w = np.linspace(-1, 1, int(np.prod(f(torch, torch.tensor(x)).shape)))
    got = gv.hessian(lambda t: (f(gv, t).reshape(-1) * gv.tensor(w, device=device)).exp().sum(),
                     gv.tensor(x, device=device), vectorize=True)
    want = torch.autograd.functional.hessian(
        lambda t: (f(torch, t).reshape(-1) * torch.tensor(w)).exp().sum(), torch.tensor(x))
    _close(got, want, rtol=1e-9, atol=1e-10)


# cumprod through zeros: PyTorch's exact gradient (one zero, two zeros, a leading zero)
CUMPROD_ZEROS = np.array([[0.5, 0.0, 2.0, -1.5], [1.2, 0.8, 0.0, 0.0], [0.0, 1.5, 2.0, 0.5]])


@needs_torch
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumprod_with_zeros(dim, device, rng):
    f = lambda m, x: m.cumprod(x, dim)             # noqa: E731
    xg = gv.tensor(CUMPROD_ZEROS, device=device)
    xt = torch.tensor(CUMPROD_ZEROS)
    v = rng.standard_normal(CUMPROD_ZEROS.shape)
    got = gv.vjp(lambda t: f(gv, t), xg, gv.tensor(v, device=device))
    want = torch.autograd.functional.vjp(lambda t: f(torch, t), xt, torch.tensor(v))
    _close(got[0], want[0])
    _close(got[1], want[1])
    hg = gv.hessian(lambda t: (f(gv, t) * gv.tensor(v, device=device)).sum(), xg)
    ht = torch.autograd.functional.hessian(lambda t: (f(torch, t) * torch.tensor(v)).sum(), xt)
    _close(hg, ht)
    gradcheck(lambda t: f(gv, t), [CUMPROD_ZEROS], device, rng, full=True)


# ----- dtypes: integer inputs, results, and the new_* methods -------------------------------------
INT_CASES = {
    "floor": lambda m, x: m.floor(x), "ceil": lambda m, x: x.ceil(),
    "trunc": lambda m, x: m.trunc(x), "round": lambda m, x: x.round(),
    "fmod": lambda m, x: m.fmod(x, 3), "remainder": lambda m, x: x.remainder(-3),
    "remainder_tensor": lambda m, x: m.remainder(x, x.flip(0) + 8),
    "cumprod": lambda m, x: m.cumprod(x, 0), "trace": lambda m, x: m.trace(x.reshape(2, 3)),
    "diag": lambda m, x: m.diag(x), "tril": lambda m, x: m.tril(x.reshape(2, 3)),
    "roll": lambda m, x: x.roll(2), "repeat": lambda m, x: x.repeat(2, 1),
    "masked_fill": lambda m, x: x.masked_fill(x > 1, 2.7), "asin": lambda m, x: m.asin(x * 0),
    "clamp_min": lambda m, x: x.clamp_min(1), "sinh_bool": lambda m, x: m.sinh(x > 1),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(INT_CASES))
def test_integer_inputs(name, device):
    data = [-4, 5, 0, 2, -7, 3]
    got = INT_CASES[name](gv, gv.tensor(data, device=device))
    want = INT_CASES[name](torch, torch.tensor(data))
    _close(got, want)


@needs_torch
@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_new_methods(device):
    x = gv.tensor([[1.0, 2.0]], dtype=gv.float64, device=device)
    xt = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    for fn in (lambda t: t.new_zeros(2, 3), lambda t: t.new_ones((2,)),
               lambda t: t.new_full((2, 2), 7), lambda t: t.new_tensor([1, 2]),
               lambda t: t.new_zeros(3, dtype=getattr(gv if isinstance(t, gv.Tensor) else torch,
                                                      "int64")),
               lambda t: t.new_tensor(t * 2), lambda t: t.new_empty(0, 2)):
        got, want = fn(x), fn(xt)
        assert got.device == x.device
        assert not got.requires_grad
        _close(got, want)
    y = x.new_ones(2, requires_grad=True)
    assert y.requires_grad and y.is_leaf
    z = gv.tensor([1.0], requires_grad=True, device=device)
    assert z.new_tensor(z * 3).grad_fn is None          # copies the data, not the history
    assert x.new_empty((2, 3)).shape == (2, 3)


def test_every_new_name_is_a_function_and_a_method_where_torch_has_both():
    fns = ("narrow unflatten masked_fill clamp_min clamp_max diag diagonal tril triu trace roll "
           "movedim moveaxis repeat_interleave tile cumprod addmm baddbmm lerp hypot logaddexp "
           "sinh cosh asinh atanh asin acos atan arcsinh arctanh arcsin arccos arctan floor ceil "
           "round trunc fix frac fmod remainder").split()
    methods = "repeat expand_as view_as reshape_as type_as new_zeros new_ones new_full " \
              "new_tensor new_empty".split()
    for n in fns:
        assert n in gv.__all__ and callable(getattr(gv, n)), n
        assert callable(getattr(gv.Tensor, n)), n
    for n in methods:
        assert callable(getattr(gv.Tensor, n)), n
        assert n not in gv.__all__, n                  # Tensor methods only, as in torch
    called = {n for f in [c[0] for c in CASES.values()] + list(INT_CASES.values())
              for n in f.__code__.co_names}
    for n in fns + methods[:5]:
        assert n in called, f"{n} has no case in the tables"


# ----- errors: type and message as PyTorch's ------------------------------------------------------
def _x(m):
    return m.ones(2, 3, dtype=m.float64)


ERRORS = {
    "narrow_too_long": lambda m: _x(m).narrow(1, 2, 2),
    "narrow_start": lambda m: _x(m).narrow(1, 4, 0),
    "narrow_length": lambda m: m.narrow(_x(m), 1, 0, -1),
    "narrow_dim": lambda m: _x(m).narrow(3, 0, 1),
    "repeat_fewer_dims": lambda m: _x(m).repeat(2),
    "repeat_negative": lambda m: _x(m).repeat(2, -1),
    "repeat_nothing": lambda m: _x(m).repeat(),
    "unflatten_sizes": lambda m: _x(m).unflatten(1, (2, 2)),
    "unflatten_empty": lambda m: m.unflatten(_x(m), 1, ()),
    "masked_fill_float_mask": lambda m: _x(m).masked_fill(_x(m), 1.5),
    "masked_fill_value_dims": lambda m: _x(m).masked_fill(_x(m) > 0, m.ones(2)),
    "diag_3d": lambda m: m.diag(m.zeros(2, 2, 2)),
    "diag_0d": lambda m: m.zeros(()).diag(),
    "diagonal_same_dims": lambda m: m.diagonal(_x(m), 0, 0, 0),
    "trace_3d": lambda m: m.trace(m.zeros(2, 2, 2)),
    "tril_1d": lambda m: m.tril(m.zeros(3)),
    "triu_1d": lambda m: m.zeros(3).triu(),
    "cumprod_dim": lambda m: m.cumprod(_x(m), 2),
    "cumprod_dim_neg": lambda m: _x(m).cumprod(-3),
    "roll_align": lambda m: m.roll(_x(m), (1, 2), 0),
    "roll_align_none": lambda m: _x(m).roll((1, 2)),
    "movedim_count": lambda m: m.movedim(_x(m), (0, 1), (1,)),
    "movedim_repeated": lambda m: _x(m).movedim((0, 0), (1, 0)),
    "repeat_interleave_size": lambda m: m.repeat_interleave(_x(m), m.tensor([1, 2, 3]), dim=0),
    "repeat_interleave_negative": lambda m: _x(m).repeat_interleave(-1, dim=0),
    "addmm_3d": lambda m: m.addmm(m.zeros(3), m.zeros(2, 3, 1), m.zeros(3, 3)),
    "addmm_broadcast": lambda m: m.addmm(m.zeros(4), m.zeros(2, 3), m.zeros(3, 3)),
    "baddbmm_2d": lambda m: m.baddbmm(m.zeros(3), m.zeros(2, 3), m.zeros(2, 3, 3)),
    "lerp_dtype": lambda m: m.lerp(m.zeros(2), m.zeros(2, dtype=m.float64), 0.5),
    "lerp_weight_dtype": lambda m: m.lerp(m.zeros(2), m.zeros(2), m.zeros(2, dtype=m.float64)),
    "lerp_weight_half": lambda m: m.zeros(2).lerp(m.zeros(2), m.zeros(1, dtype=m.float16)),
    "lerp_weight_long": lambda m: m.lerp(m.zeros(2), m.zeros(2), m.zeros(2, dtype=m.int64)),
    "lerp_end_half": lambda m: m.lerp(m.zeros(2, dtype=m.float16), m.zeros(2), 0.5),
    "lerp_int_scalar": lambda m: m.lerp(m.arange(3), m.arange(3), 0.5),
    "lerp_int_tensor": lambda m: m.lerp(m.arange(3), m.arange(3), m.arange(3)),
    "hypot_int": lambda m: m.hypot(m.arange(3), m.arange(3)),
    "hypot_bool": lambda m: m.hypot(m.arange(3) > 0, m.arange(3) > 1),
    "hypot_number": lambda m: m.hypot(2.0, m.zeros(2)),
    "logaddexp_int": lambda m: m.arange(3).logaddexp(m.arange(3)),
    "logaddexp_int32": lambda m: m.logaddexp(m.arange(3).int(), m.arange(3)),
    "logaddexp_number": lambda m: m.logaddexp(m.zeros(2), 1),
    "fmod_int_by_zero": lambda m: m.fmod(m.tensor([5, -3]), m.tensor([0, 2])),
    "fmod_int_by_zero_number": lambda m: m.tensor([5, -3]).fmod(0),
    "remainder_int_by_zero": lambda m: m.tensor([5, -3]).remainder(m.tensor(0)),
    "remainder_number_by_zero": lambda m: m.remainder(5, m.tensor([1, 0])),
    "round_int_decimals": lambda m: m.round(m.arange(3), decimals=1),
    "frac_int": lambda m: m.arange(3).frac(),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors(name):
    with pytest.raises(Exception) as want:
        ERRORS[name](torch)
    with pytest.raises(Exception) as got:
        ERRORS[name](gv)
    assert got.type is want.type, (got.value, want.value)
    if ORACLE_MESSAGES:
        assert str(got.value).splitlines()[0] == str(want.value).splitlines()[0]


@needs_torch
def test_mixed_dtypes_as_torch(device):
    """A 0-d weight of another dtype (a CPU one joins a cuda lerp), hypot and logaddexp of a
    float and an integer tensor, and an integer fmod by a nonzero divisor (or a float one by
    zero) work as in torch."""
    progs = [lambda m, x: m.lerp(x, x * 2, m.tensor(0.25, dtype=m.float64)),
             lambda m, x: m.lerp(x, x * 2, m.tensor(2)),
             lambda m, x: m.hypot(x, x.long()), lambda m, x: m.logaddexp(x.int(), x),
             lambda m, x: m.fmod(x.long() - 3, idx(m, x, [2, -3, 1, 5])),
             lambda m, x: m.remainder(x.long() - 3, 2), lambda m, x: m.fmod(x, 0.0),
             lambda m, x: m.remainder(x, idx(m, x, [0, 1, 0, 2]))]
    x = np.arange(4.0, dtype=np.float32)
    for f in progs:
        want = f(torch, torch.tensor(x))
        got = f(gv, gv.tensor(x, device=device))
        assert str(got.dtype).split(".")[1] == str(want.dtype).split(".")[1]
        np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), rtol=1e-6)


def test_kernel_names_in_messages_follow_the_device(device):
    """PyTorch's messages name the kernel of the tensor's device (`hypot_cuda` on cuda)."""
    kind = gv.device(device).type
    x = gv.arange(3, device=device)
    for f, kernel in ((gv.hypot, f"hypot_{kind}"), (gv.logaddexp, f"logaddexp_{kind}")):
        with pytest.raises(NotImplementedError, match=f'^"{kernel}" not implemented for '):
            f(x, x)
    lerp = "lerp_cuda" if kind == "cuda" else "lerp_kernel_scalar"
    with pytest.raises(NotImplementedError, match=f'^"{lerp}" not implemented for \'Long\''):
        x.lerp(x, 0.5)


@pytest.mark.gpu
def test_integer_modulo_by_zero_on_cuda_gives_zero():
    """On cuda the divisor is not read back to the host (docs/differences.md): no error, and 0
    where the divisor is 0."""
    x, y = gv.tensor([5, -3, 7], device="cuda"), gv.tensor([0, 2, 0], device="cuda")
    assert gv.fmod(x, y).tolist() == [0, -1, 0]
    assert gv.remainder(x, y).tolist() == [0, 1, 0]


def test_round_halves_to_even_and_decimals(device):
    x = gv.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 1.25, 2.675], dtype=gv.float64, device=device)
    np.testing.assert_array_equal(gv.round(x).numpy(), [0, 2, 2, -0, -2, 1, 3])
    np.testing.assert_array_equal(x.round(decimals=1).numpy(),
                                  np.rint(x.numpy() * 10) / 10)
    assert math.isnan(gv.round(gv.tensor([math.nan], device=device)).item())


# ----- kernels/fuse.cuh: the helpers of the fused remainder, fmod and logaddexp ----------------
HOST_HELPERS = {"fz_remainder": np.remainder, "fz_fmod": np.fmod, "fz_logaddexp": np.logaddexp}
HOST_CASES = [(fn, c) for fn in HOST_HELPERS for c in ("double", "float", "long long", "int")
              if not (fn == "fz_logaddexp" and c in ("long long", "int"))]
NP_OF = {"double": np.float64, "float": np.float32, "long long": np.int64, "int": np.int32}


@pytest.fixture(scope="module")
def fuse_lib(tmp_path_factory):
    from gpuvjp.ops import _kernels
    from tests import _hostcc
    cxx = _hostcc.find_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler found ($CXX, g++, c++ or clang++)")
    src = _kernels.kernel_dir().joinpath("common.cuh").read_text() + "\n"
    src += _kernels.kernel_dir().joinpath("fuse.cuh").read_text() + "\n"
    for fn, c in HOST_CASES:
        tag = c.replace(" ", "_")
        src += (f'extern "C" void check_{fn}_{tag}(const {c}* a, const {c}* b, {c}* out, '
                f"long n) {{ for (long i = 0; i < n; ++i) out[i] = gv::{fn}(a[i], b[i]); }}\n")
    return _hostcc.load(src, tmp_path_factory.getbasetemp() / "hostcc", cxx)


@pytest.mark.parametrize("fn, ctype", HOST_CASES, ids=[f"{f}-{c}" for f, c in HOST_CASES])
def test_fuse_helpers_match_numpy(fn, ctype, fuse_lib, rng):
    """The C the fused kernels run equals the NumPy ufunc the CPU plan runs: signs of zero
    results, zero divisors, infinities and nan included."""
    import ctypes
    dt = NP_OF[ctype]
    if np.dtype(dt).kind == "f":
        edges = [0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 0.5, np.inf, -np.inf, np.nan]
        pool = np.concatenate([edges, rng.uniform(-5, 5, 30)])
    else:
        pool = np.concatenate([[0, 1, -1, 3, -3, 7, -7], rng.integers(-20, 20, 30)])
    a, b = (np.ascontiguousarray(v, dtype=dt) for v in np.meshgrid(pool, pool))
    a, b = a.ravel(), b.ravel()
    out = np.empty_like(a)
    ptr = lambda v: v.ctypes.data_as(ctypes.c_void_p)             # noqa: E731
    getattr(fuse_lib, f"check_{fn}_{ctype.replace(' ', '_')}")(ptr(a), ptr(b), ptr(out),
                                                              ctypes.c_long(a.size))
    with np.errstate(all="ignore"):
        want = HOST_HELPERS[fn](a, b)
    if np.dtype(dt).kind == "f":
        np.testing.assert_allclose(out, want, rtol=1e-6 if dt == np.float32 else 1e-14,
                                   atol=0, equal_nan=True)
        exact = want == 0
        np.testing.assert_array_equal(np.signbit(out[exact]), np.signbit(want[exact]))
    else:
        np.testing.assert_array_equal(out, want)
