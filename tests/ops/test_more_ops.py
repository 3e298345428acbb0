"""exp2 ... atan2, prod ... cumsum (#3): gradchecks (first and second order) and the same programs
under torch: values, vjps, second-order vjps, dtypes, tie-breaking and errors."""

import math

import numpy as np
import pytest

import gpuvjp as gv
from tests._check import gradcheck
from tests.ops.cases import sample

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (CPU build) is not installed")
# Edge cases on purpose: torch warns about var's degrees of freedom, NumPy about 1/0 and inf - inf.
pytestmark = [pytest.mark.filterwarnings("ignore:.*degrees of freedom:UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

ALL = [(), (4,), (3, 4), (0, 4)]
ND1 = [(4,), (3, 4), (0, 4)]
ND2 = [(3, 4), (2, 3, 4)]
FULL = [(), (4,), (3, 4)]          # a reduction over everything: no identity on empty input
INF = math.inf

# name -> (program, domain, shapes); `m` is the module (gv or torch)
UNARY = {
    "exp2": (lambda m, x: m.exp2(x), (-2, 2), ALL),
    "log2": (lambda m, x: x.log2(), (0.1, 4), ALL),
    "log1p": (lambda m, x: m.log1p(x), (-0.9, 3), ALL),
    "expm1": (lambda m, x: x.expm1(), (-2, 2), ALL),
    "rsqrt": (lambda m, x: m.rsqrt(x), (0.2, 4), ALL),
    "square": (lambda m, x: x.square(), (-2, 2), ALL),
    "tan": (lambda m, x: m.tan(x), (-1.3, 1.3), ALL),
    "reciprocal": (lambda m, x: m.reciprocal(x), (0.3, 3), ALL),
    "reciprocal_neg": (lambda m, x: (-x).reciprocal(), (0.3, 3), ALL),
    "erf": (lambda m, x: m.erf(x), (-2.5, 2.5), ALL),
    "erf_method": (lambda m, x: (x * 3).erf(), (-1, 1), ALL),
    "atan2_scalar_y": (lambda m, x: m.atan2(x, m.ones_like(x) * 0.7), (-2, 2), ALL),
}

BINARY = {
    "atan2": (lambda m, x, y: m.atan2(x, y), (-2, 2)),
    "atan2_method": (lambda m, x, y: x.atan2(y * y + 0.5), (-2, 2)),
}
BINARY_SHAPES = [((), ()), ((4,), (4,)), ((3, 4), (3, 4)), ((1, 4), (3, 4)), ((3, 1), (4,)),
                 ((0, 4), (1, 4)), ((), (3, 4))]

REDUCE = {
    "prod": (lambda m, x: x.prod(), (0.5, 1.5), ALL),
    "prod_dim": (lambda m, x: m.prod(x, -1), (-2, 2), ALL),
    "prod_keep": (lambda m, x: x.prod(0, keepdim=True), (-2, 2), ALL),
    "amax": (lambda m, x: x.amax(), (-2, 2), FULL),
    "amax_dim": (lambda m, x: m.amax(x, -1), (-2, 2), ALL),
    "amax_tuple": (lambda m, x: x.amax((0, -1)), (-2, 2), ND2),
    "amin_keep": (lambda m, x: m.amin(x, dim=-1, keepdim=True), (-2, 2), ALL),
    "amin_tuple": (lambda m, x: x.amin(dim=(-1, 0), keepdim=True), (-2, 2), ND2),
    "max": (lambda m, x: m.max(x), (-2, 2), FULL),
    "min": (lambda m, x: x.min(), (-2, 2), FULL),
    "max_dim": (lambda m, x: m.max(x, -1).values, (-2, 2), ALL),
    "max_dim_keep": (lambda m, x: x.max(dim=-1, keepdim=True)[0], (-2, 2), ALL),
    "min_dim": (lambda m, x: x.min(0).values * 2, (-2, 2), FULL),
    "max_other": (lambda m, x: m.max(x, x.flip(-1) if x.ndim else x * 0.5), (-2, 2), FULL),
    "logsumexp": (lambda m, x: m.logsumexp(x, -1), (-3, 3), ALL),
    "logsumexp_keep": (lambda m, x: x.logsumexp(0, keepdim=True), (-3, 3), ALL),
    "logsumexp_tuple": (lambda m, x: m.logsumexp(x, (0, -1)), (-3, 3), ND2),
    "norm": (lambda m, x: x.norm(), (-2, 2), ALL),
    "norm_dim": (lambda m, x: m.norm(x, dim=-1), (-2, 2), ALL),
    "norm_p1": (lambda m, x: x.norm(p=1, dim=0, keepdim=True), (-2, 2), ALL),
    "norm_p3": (lambda m, x: x.norm(3, -1), (-2, 2), ALL),
    "norm_p1_5": (lambda m, x: x.norm(1.5), (-2, 2), ALL),
    "norm_p0_5": (lambda m, x: x.norm(0.5), (-2, 2), ALL),
    "norm_inf": (lambda m, x: x.norm(p=INF), (-2, 2), FULL),
    "norm_fro_tuple": (lambda m, x: x.norm(p="fro", dim=(0, 1)), (-2, 2), ND2),
    "norm_nuc": (lambda m, x: x.norm("nuc"), (-2, 2), [(3, 4), (4, 2), (3, 3), (0, 3)]),
    "norm_nuc_dims": (lambda m, x: m.norm(x, p="nuc", dim=(-1, 0), keepdim=True), (-2, 2),
                      ND2),
    "var": (lambda m, x: x.var(), (-2, 2), ND1),
    "var_dim": (lambda m, x: m.var(x, -1), (-2, 2), ND1),
    "var_unbiased": (lambda m, x: x.var(0, False, True), (-2, 2), ALL),
    "var_correction": (lambda m, x: x.var(dim=-1, correction=0, keepdim=True), (-2, 2), ALL),
    "var_legacy": (lambda m, x: x.var(False), (-2, 2), ALL),
    "std": (lambda m, x: m.std(x), (-2, 2), ND1),
    "std_dim": (lambda m, x: x.std(-1, keepdim=True), (-2, 2), ND1),
    "std_correction": (lambda m, x: x.std(dim=0, correction=0), (-2, 2), ALL),
    "cumsum": (lambda m, x: x.cumsum(0), (-2, 2), ALL),
    "cumsum_neg": (lambda m, x: m.cumsum(x, dim=-1) * x, (-2, 2), ALL),
}
if not hasattr(gv.Tensor, "flip"):          # flip comes with the shape ops of #3
    del REDUCE["max_other"]

UNARY.update(REDUCE)
CASES = UNARY


def _ids(shape):
    return str(shape).replace(" ", "")


def _params(cases):
    return [pytest.param(n, s, id=f"{n}-{_ids(s)}") for n, (_, _, ss) in cases.items() for s in ss]


def _vjp_of(f, n_in):
    """x -> vjp(f)(x, v) with a fixed v, as a differentiable function (order 2)."""
    def g(*xs):
        out = f(*xs)
        v = gv.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape) + 0.3,
                      dtype=out.dtype, device=out.device)
        _, grads = gv.vjp(f, xs if n_in > 1 else xs[0], v, create_graph=True)
        return grads if isinstance(grads, tuple) else (grads,)
    return g


# ----- gradchecks ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shape", _params(CASES))
def test_first_order(name, shape, device, rng):
    f, domain, _ = CASES[name]
    gradcheck(lambda x: f(gv, x), [sample(rng, shape, domain)], device, rng)


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_order(name, device, rng):
    f, domain, shapes = CASES[name]
    shape = (2, 3, 2) if shapes is ND2 else (2, 3)
    gradcheck(_vjp_of(lambda x: f(gv, x), 1), [sample(rng, shape, domain)], device, rng)


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=lambda s: f"{_ids(s[0])}-{_ids(s[1])}")
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary(name, shapes, device, rng):
    f, domain = BINARY[name]
    arrays = [sample(rng, s, domain) for s in shapes]
    gradcheck(lambda x, y: f(gv, x, y), arrays, device, rng)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_second_order(name, device, rng):
    f, domain = BINARY[name]
    arrays = [sample(rng, (3, 1), domain), sample(rng, (1, 2), domain)]
    gradcheck(_vjp_of(lambda x, y: f(gv, x, y), 2), arrays, device, rng)


# prod is multilinear, so central differences are exact at zeros too (first and second order)
PROD_ZEROS = {
    "one_zero": np.array([[0.5, 2.0, -1.5], [1.2, 0.0, 0.7], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]),
    "no_zero_row": np.array([[0.5, 2.0, -1.5], [1.2, 0.8, 0.7]]),
}


@pytest.mark.parametrize("dim", [None, 0, -1])
@pytest.mark.parametrize("key", sorted(PROD_ZEROS))
def test_prod_with_zeros(key, dim, device, rng):
    x = PROD_ZEROS[key]
    f = (lambda t: t.prod()) if dim is None else (lambda t: t.prod(dim))
    gradcheck(f, [x], device, rng, full=True)
    gradcheck(_vjp_of(f, 1), [x], device, rng, full=True)
    gradcheck(lambda t: t[:1, :2].prod(), [x], device, rng, full=True)    # exactly one zero


# ----- oracle: the same program under torch ------------------------------------------------------
def _run(m, f, x, v, dev=None):
    if m is gv:
        xt = gv.tensor(x, device=dev)
        out = f(gv, xt)
        _, g = gv.vjp(lambda t: f(gv, t), xt, gv.tensor(v, device=dev))
        return out, g
    xt = torch.tensor(x)
    out = f(torch, xt)
    _, g = torch.autograd.functional.vjp(lambda t: f(torch, t), xt, torch.tensor(v))
    return out, g


def _np(t):
    return t.numpy() if isinstance(t, gv.Tensor) else t.detach().numpy()


def _assert_close(got, want, rtol=1e-6, atol=1e-12):
    got, want = _np(got), _np(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _oracle(f, x, device, rng):
    with torch.no_grad():
        shape = f(torch, torch.tensor(x)).shape
    v = rng.standard_normal(tuple(shape))
    out, g = _run(gv, f, x, v, device)
    want_out, want_g = _run(torch, f, x, v)
    _assert_close(out, want_out)
    _assert_close(g, want_g)


@needs_torch
@pytest.mark.parametrize("name, shape", _params(CASES))
def test_oracle(name, shape, device, rng):
    f, domain, _ = CASES[name]
    _oracle(f, sample(rng, shape, domain), device, rng)


@needs_torch
@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=lambda s: f"{_ids(s[0])}-{_ids(s[1])}")
@pytest.mark.parametrize("name", sorted(BINARY))
def test_oracle_binary(name, shapes, device, rng):
    f, domain = BINARY[name]
    x, y = (sample(rng, s, domain) for s in shapes)
    v = rng.standard_normal(np.broadcast_shapes(x.shape, y.shape))
    got = gv.vjp(lambda a, b: f(gv, a, b), (gv.tensor(x, device=device),
                                            gv.tensor(y, device=device)),
                 gv.tensor(v, device=device))
    want = torch.autograd.functional.vjp(lambda a, b: f(torch, a, b),
                                         (torch.tensor(x), torch.tensor(y)), torch.tensor(v))
    _assert_close(got[0], want[0])
    for a, b in zip(got[1], want[1]):
        _assert_close(a, b)


# PyTorch computes no nuclear norm in float16 (both raise: test_errors, norm_nuc_half)
LOW_PRECISION = [pytest.param(n, d, r, a, id=f"{d}-{n}") for n in sorted(CASES)
                 for d, r, a in [("float32", 2e-6, 1e-6), ("float16", 4e-3, 2e-3)]
                 if not (d == "float16" and n.startswith("norm_nuc"))]


@needs_torch
@pytest.mark.parametrize("name, dtype, rtol, atol", LOW_PRECISION)
def test_oracle_low_precision(name, dtype, rtol, atol, device, rng):
    f, domain, shapes = CASES[name]
    x = sample(rng, (2, 3, 4) if shapes is ND2 else (3, 4), domain)
    got = f(gv, gv.tensor(x, dtype=getattr(gv, dtype), device=device))
    want = f(torch, torch.tensor(x, dtype=getattr(torch, dtype)))
    assert got.dtype.name == str(want.dtype).replace("torch.", "")
    np.testing.assert_allclose(got.numpy().astype(np.float64), want.numpy().astype(np.float64),
                               rtol=rtol, atol=atol)


# Inputs where the choice matters: ties, zeros, NaN, infinities, a zero norm, a constant slice.
TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 1.0, 2.0], [-5.0, 5.0, 5.0, -5.0]])
NANS = np.array([[1.0, np.nan, 3.0, np.nan], [2.0, 2.0, 1.0, 2.0]])
ZEROS = np.array([[0.0, 2.0, -3.0, 0.5], [0.0, 0.0, 5.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
LSE = np.array([[-INF, -INF, -INF], [-INF, 0.5, 1.0], [2.0, 3.0, 4.0]])
FLAT = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
SPECIAL = {
    "max_ties": (lambda m, x: x.max(), TIES),
    "min_ties": (lambda m, x: m.min(x), TIES),
    "max_dim_ties": (lambda m, x: x.max(1).values, TIES),
    "max_dim0_ties": (lambda m, x: x.max(0, keepdim=True).values, TIES),
    "min_dim_ties": (lambda m, x: m.min(x, -1)[0], TIES),
    "amax_ties": (lambda m, x: x.amax(-1), TIES),
    "amin_ties": (lambda m, x: x.amin((0, 1)), TIES),
    "amax_all_ties": (lambda m, x: m.amax(x), TIES),
    "norm_inf_ties": (lambda m, x: x.norm(p=INF, dim=1), TIES),
    "norm_ninf_ties": (lambda m, x: x.norm(p=-INF), TIES),
    "max_nan": (lambda m, x: x.max(), NANS),
    "max_dim_nan": (lambda m, x: x.max(1).values, NANS),
    "min_dim_nan": (lambda m, x: x.min(-1).values, NANS),
    "amax_nan": (lambda m, x: x.amax(1), NANS),
    "prod_zeros": (lambda m, x: x.prod(), ZEROS),
    "prod_zeros_dim": (lambda m, x: x.prod(1), ZEROS),
    "prod_zeros_dim0": (lambda m, x: x.prod(0, keepdim=True), ZEROS),
    "prod_one_zero": (lambda m, x: x[0].prod(), ZEROS),
    "logsumexp_inf": (lambda m, x: m.logsumexp(x, 1), LSE),
    "logsumexp_inf_all": (lambda m, x: m.logsumexp(x, (0, 1)), LSE),
    "norm_zero": (lambda m, x: x.norm(dim=1), FLAT),
    "norm_p3_zero": (lambda m, x: x.norm(p=3, dim=1), FLAT),
    "norm_p05_zero": (lambda m, x: x.norm(p=0.5, dim=1), ZEROS),
    "norm_p0": (lambda m, x: x.norm(p=0), ZEROS),
    "norm_p1_zero": (lambda m, x: x.norm(p=1), ZEROS),
    "std_flat": (lambda m, x: x.std(1), FLAT),
    "var_big_correction": (lambda m, x: x.var(1, correction=5), FLAT),
    "var_dof_zero": (lambda m, x: x.var(1, correction=3), FLAT),
    "var_all_big_correction": (lambda m, x: x.var(correction=12), FLAT),
    "var_one": (lambda m, x: x[0, :1].var(), FLAT),
    "cumsum_single": (lambda m, x: x[:, :1].cumsum(1), FLAT),
    "rsqrt_zero": (lambda m, x: x.rsqrt(), FLAT),
    "reciprocal_zero": (lambda m, x: x.reciprocal(), FLAT),
    "erf_tails": (lambda m, x: m.erf(x * 3), TIES),
    "log1p_small": (lambda m, x: m.log1p(x * 1e-10), TIES),
    "expm1_small": (lambda m, x: m.expm1(x * 1e-10), TIES),
    "atan2_zero": (lambda m, x: m.atan2(x, x[:, :1]), ZEROS),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_oracle_special(name, device, rng):
    f, x = SPECIAL[name]
    _oracle(f, x, device, rng)


def _second(m, f, x, v, w, dev=None):
    """<w, d/dx vjp(f)(x, v)>: the second-order vjp under module m."""
    xt = m.tensor(x, requires_grad=True, **({"device": dev} if m is gv else {}))
    (g,) = m.autograd.grad(f(m, xt), xt, m.tensor(v, device=xt.device), create_graph=True)
    if not g.requires_grad:                  # a rule that does not depend on x (linear ops)
        return m.zeros_like(xt)
    (h,) = m.autograd.grad(g, xt, m.tensor(w, device=xt.device), allow_unused=True)
    return h if h is not None else m.zeros_like(xt)


SECOND = ["prod_zeros", "prod_zeros_dim", "prod_zeros_dim0", "prod_one_zero", "max_dim_ties",
          "amax_ties", "logsumexp_inf", "std_flat", "erf_tails", "atan2_zero", "max_ties"]


@needs_torch
@pytest.mark.parametrize("name", SECOND)
def test_oracle_second_order(name, device, rng):
    f, x = SPECIAL[name]
    with torch.no_grad():
        shape = f(torch, torch.tensor(x)).shape
    v, w = rng.standard_normal(tuple(shape)), rng.standard_normal(x.shape)
    _assert_close(_second(gv, f, x, v, w, device), _second(torch, f, x, v, w))


@needs_torch
@pytest.mark.parametrize("name, shape", _params({k: CASES[k] for k in (
    "erf", "tan", "logsumexp", "norm_dim", "var_dim", "std", "prod_dim", "max_dim", "cumsum")}))
def test_oracle_second_order_random(name, shape, device, rng):
    f, domain, _ = CASES[name]
    x = sample(rng, shape, domain)
    with torch.no_grad():
        out_shape = f(torch, torch.tensor(x)).shape
    v, w = rng.standard_normal(tuple(out_shape)), rng.standard_normal(x.shape)
    _assert_close(_second(gv, f, x, v, w, device), _second(torch, f, x, v, w))


# ----- dtypes of integer and bool inputs, and max/min results ------------------------------------
INT_PROGRAMS = {
    "exp2": lambda m, x: m.exp2(x), "log2": lambda m, x: m.log2(x),
    "log1p": lambda m, x: m.log1p(x), "expm1": lambda m, x: m.expm1(x),
    "rsqrt": lambda m, x: m.rsqrt(x), "square": lambda m, x: m.square(x),
    "tan": lambda m, x: m.tan(x), "reciprocal": lambda m, x: m.reciprocal(x),
    "erf": lambda m, x: m.erf(x), "atan2": lambda m, x: m.atan2(x, x),
    "prod": lambda m, x: m.prod(x), "prod_dim": lambda m, x: x.prod(0),
    "cumsum": lambda m, x: m.cumsum(x, 0), "amax": lambda m, x: x.amax(0),
    "amin": lambda m, x: m.amin(x), "max": lambda m, x: x.max(),
    "max_dim": lambda m, x: x.max(0).values, "max_idx": lambda m, x: x.min(0).indices,
    "argmax": lambda m, x: x.argmax(), "argmin_dim": lambda m, x: m.argmin(x, 0, True),
    "logsumexp": lambda m, x: m.logsumexp(x, 0),
    "cumsum_dtype": lambda m, x: x.cumsum(0, dtype=m.float64),
    "prod_dtype": lambda m, x: x.prod(dtype=m.float32),
}


# NOTE: _registry._promote returns early when every tensor has the same dtype, before FLOAT
# promotion, so exp(int tensor) computes in float64 instead of float32. Fixed there, this is False.
_FLOAT_PROMOTION_BUG = gv.sqrt(gv.tensor([4])).dtype is not gv.float32


@needs_torch
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
@pytest.mark.parametrize("name", sorted(INT_PROGRAMS))
def test_integer_inputs(name, dtype, device):
    f = INT_PROGRAMS[name]
    data = [1, 0, 1, 1] if dtype == "bool" else [3, 1, 2, 3]
    try:
        want = f(torch, torch.tensor(data, dtype=getattr(torch, dtype)))
    except Exception as exc:                  # argmax of bool: the same error type
        with pytest.raises(type(exc)):
            f(gv, gv.tensor(data, dtype=getattr(gv, dtype), device=device))
        return
    if _FLOAT_PROMOTION_BUG and want.dtype == torch.get_default_dtype() and "dtype" not in name:
        pytest.xfail("registry: promote=FLOAT skips a lone integer tensor (see #3 report)")
    got = f(gv, gv.tensor(data, dtype=getattr(gv, dtype), device=device))
    assert got.dtype.name == str(want.dtype).replace("torch.", "")
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_max_return_type(device):
    x = gv.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 1.0]], device=device)
    r = x.max(dim=1)
    values, indices = r
    assert r.values is values and r.indices is indices and r[0] is values
    assert isinstance(r, tuple) and len(r) == 2
    assert indices.dtype is gv.int64 and indices.tolist() == [1, 0]
    assert values.tolist() == [3.0, 2.0]
    assert gv.min(x, 0, keepdim=True).indices.shape == (1, 3)
    assert gv.max(x, gv.zeros_like(x)).tolist() == gv.maximum(x, gv.zeros_like(x)).tolist()
    s = gv.tensor(2.5, device=device).max(0)
    assert s.values.shape == () and s.indices.item() == 0


# ----- errors: the exception type PyTorch raises ------------------------------------------------
ERRORS = {
    "max_empty": (lambda m, x: x.max(), (0, 4)),
    "min_empty": (lambda m, x: m.min(x), (0, 4)),
    "amax_empty": (lambda m, x: x.amax(), (0, 4)),
    "amin_empty_dim": (lambda m, x: x.amin(0), (0, 4)),
    "max_empty_dim": (lambda m, x: x.max(0), (0, 4)),
    "argmax_empty": (lambda m, x: x.argmax(), (0, 4)),
    "argmin_empty_dim": (lambda m, x: x.argmin(0), (0, 4)),
    "norm_inf_empty": (lambda m, x: x.norm(p=INF), (0, 4)),
    "norm_ninf_empty_dim": (lambda m, x: x.norm(p=-INF, dim=0), (0, 4)),
    "prod_bad_dim": (lambda m, x: x.prod(2), (3, 4)),
    "prod_tuple": (lambda m, x: x.prod((0, 1)), (3, 4)),
    "amax_bad_dim": (lambda m, x: x.amax(-3), (3, 4)),
    "amax_dup": (lambda m, x: x.amax((0, -2)), (3, 4)),
    "max_bad_dim": (lambda m, x: x.max(2), (3, 4)),
    "max_tuple": (lambda m, x: x.max((0, 1)), (3, 4)),
    "min_0d_bad_dim": (lambda m, x: x.min(1), ()),
    "argmax_bad_dim": (lambda m, x: x.argmax(3), (3, 4)),
    "logsumexp_bad_dim": (lambda m, x: m.logsumexp(x, 2), (3, 4)),
    "logsumexp_no_dim": (lambda m, x: m.logsumexp(x), (3, 4)),
    "norm_bad_dim": (lambda m, x: x.norm(dim=2), (3, 4)),
    "norm_bad_p": (lambda m, x: x.norm(p="abc"), (3, 4)),
    "norm_fro_3d": (lambda m, x: x.norm(p="fro", dim=(0, 1, 2)), (2, 3, 4)),
    "norm_int": (lambda m, x: x.long().norm(), (3, 4)),
    "var_bad_dim": (lambda m, x: x.var(-3), (3, 4)),
    "std_bad_dim": (lambda m, x: m.std(x, dim=(0, 5)), (3, 4)),
    "var_int": (lambda m, x: x.long().var(), (3, 4)),
    "std_int": (lambda m, x: m.std(x.int()), (3, 4)),
    "var_both": (lambda m, x: x.var(unbiased=True, correction=1), (3, 4)),
    "cumsum_bad_dim": (lambda m, x: x.cumsum(2), (3, 4)),
    "cumsum_no_dim": (lambda m, x: m.cumsum(x), (3, 4)),
    "atan2_shapes": (lambda m, x: m.atan2(x, x[:2]), (3, 4)),
    "norm_nuc_1d": (lambda m, x: x.norm("nuc"), (4,)),
    "norm_nuc_3d": (lambda m, x: x.norm("nuc"), (2, 3, 4)),
    "norm_nuc_int_dim": (lambda m, x: x.norm("nuc", dim=1), (3, 4)),
    "norm_nuc_same_dims": (lambda m, x: x.norm("nuc", dim=(0, -2)), (3, 4)),
    "norm_nuc_int": (lambda m, x: x.long().norm("nuc"), (3, 4)),
    "norm_nuc_half": (lambda m, x: x.half().norm("nuc"), (3, 4)),
}


@needs_torch
@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4)])
def test_nuclear_norm_hvp_and_forward_hessian(shape, device, rng):
    """Second derivatives by every route: vhp, hvp (double backward through the polar factor's
    vjp) and the forward-over-reverse hessian."""
    x, v = rng.standard_normal(shape), rng.standard_normal(shape)
    f = {m: (lambda a, m=m: m.norm(a * 1.0, p="nuc")) for m in (gv, torch)}
    xs, vs = gv.tensor(x, device=device), gv.tensor(v, device=device)
    tf = torch.autograd.functional
    for got, want in [
            (gv.hvp(f[gv], xs, vs)[1], tf.hvp(f[torch], torch.tensor(x), torch.tensor(v))[1]),
            (gv.vhp(f[gv], xs, vs)[1], tf.vhp(f[torch], torch.tensor(x), torch.tensor(v))[1]),
            (gv.hessian(f[gv], xs, vectorize=True, outer_jacobian_strategy="forward-mode"),
             tf.hessian(f[torch], torch.tensor(x)))]:
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)


def test_nuclear_norm_third_derivative_raises(rng):
    """Orders 1 and 2 of norm(p="nuc") are exact (checked above); order 3 says it is missing."""
    x = gv.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    (g,) = gv.autograd.grad(x.norm("nuc"), x, create_graph=True)
    (h,) = gv.autograd.grad((g * g).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="third derivative of norm"):
        gv.autograd.grad((h * h).sum(), x)


@needs_torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors(name, device):
    f, shape = ERRORS[name]
    with pytest.raises(Exception) as want:
        f(torch, torch.ones(shape))
    with pytest.raises(want.type):
        f(gv, gv.ones(shape, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_erf_kernel_matches_twin(dtype, rng):
    x = rng.uniform(-4, 4, size=(1000,)).astype(dtype)
    x[:4] = [0.0, -0.0, 6.0, -7.5]
    got = gv.erf(gv.tensor(x, device="cuda")).numpy()
    want = gv.erf(gv.tensor(x)).numpy()
    tol = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-14}[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)


# PyTorch's exact words, where gpuvjp composes them itself
MESSAGES = {
    "norm_narrowing": lambda m, x: x.norm(dtype=m.float32),
    "norm_int_dtype": lambda m, x: m.norm(x, p=1, dim=0, dtype=m.int64),
    "norm_int_input": lambda m, x: x.long().norm(dtype=m.float64),
    "norm_int_no_dtype": lambda m, x: x.int().norm(),
    "norm_nuc_narrowing": lambda m, x: x.norm("nuc", dtype=m.float16),
    "norm_nuc_1d": lambda m, x: x[0].norm("nuc"),
    "norm_nuc_3d": lambda m, x: x.reshape(2, 3, 2).norm("nuc"),
    "norm_nuc_int_dim": lambda m, x: x.norm("nuc", dim=1),
    "norm_nuc_same_dims": lambda m, x: x.norm("nuc", dim=(0, -2)),
    "norm_nuc_int": lambda m, x: x.long().norm("nuc"),
    "norm_nuc_half": lambda m, x: x.half().norm("nuc"),
    "norm_nuc_half_dtype": lambda m, x: x.half().norm("nuc", dtype=m.float32),
    "norm_nuc_half_int_dim": lambda m, x: x.half().norm("nuc", dim=1),
    "norm_nuc_int_dtype": lambda m, x: x.norm("nuc", dtype=m.int64),
    "norm_nuc_long_dtype": lambda m, x: x.long().norm("nuc", dtype=m.float32),
    "norm_nuc_dims_before_dtype": lambda m, x: x.norm("nuc", dim=(0, 0), dtype=m.float16),
    "mean_int": lambda m, x: x.long().mean(),
    "where_int_condition": lambda m, x: m.where(x.long(), x, x),
    "neg_bool": lambda m, x: -(x > 3),
    "neg_bool_function": lambda m, x: m.neg(x > 3),
    "sub_two_bools": lambda m, x: (x > 3) - (x < 5),
    "sub_bool_and_python_bool": lambda m, x: (x > 3) - True,
    "sub_bool_and_int": lambda m, x: (x > 3) - 1,
    "sub_int_and_bool": lambda m, x: 1 - (x > 3),
    "sub_float_and_bool": lambda m, x: m.sub(x, x > 3),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_error_messages(name, device):
    f = MESSAGES[name]
    x = np.arange(12.0).reshape(3, 4)
    with pytest.raises(Exception) as want:
        f(torch, torch.tensor(x))
    with pytest.raises(want.type) as got:
        f(gv, gv.tensor(x, device=device))
    assert str(got.value) == str(want.value)


@needs_torch
def test_sign_of_bool_is_bool_as_torch(device):
    x = np.array([True, False, True])
    got, want = gv.sign(gv.tensor(x, device=device)), torch.sign(torch.tensor(x))
    assert got.dtype == gv.bool and want.dtype == torch.bool
    np.testing.assert_array_equal(got.cpu().numpy(), want.numpy())
