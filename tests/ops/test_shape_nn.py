"""cat ... gather and gpuvjp.nn.functional (#3): gradchecks (first and second order) and the same
programs under torch: values, vjps, dtypes and errors."""

import warnings

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


def F(m):
    return m.nn.functional


def const(m, x, *shape):
    """A fixed float tensor like x (independent of x's values: gradchecks perturb x)."""
    n = int(np.prod(shape))
    return m.linspace(0.5, 2.0, n, dtype=x.dtype, device=x.device).reshape(shape)


def idx(m, x, data):
    """An int64 index tensor on x's device (both libraries want index and input together)."""
    return m.tensor(data, device=x.device)


# name -> (program, domain, shape); `m` is the module (gv or torch). Programs may return a tuple.
UNARY = {
    # ----- cat / stack / split / chunk / flip
    "cat": (lambda m, x: m.cat([x, x * 2, x[:1]]), (-2, 2), (3, 4)),
    "cat_neg_dim": (lambda m, x: m.cat((x.exp(), x), dim=-1), (-2, 2), (2, 3)),
    "cat_one": (lambda m, x: m.cat([x], 1) * x, (-2, 2), (2, 3)),
    "cat_legacy_empty": (lambda m, x: m.cat([m.zeros(0, dtype=x.dtype, device=x.device), x,
                                             x[:0].reshape(0)], 1), (-2, 2), (2, 3)),
    "cat_3d_mid": (lambda m, x: m.cat([x, x[:, :1] * x[:, 1:2]], 1), (-2, 2), (2, 3, 2)),
    "stack": (lambda m, x: m.stack([x, x * x]), (-2, 2), (3, 4)),
    "stack_neg_dim": (lambda m, x: m.stack((x, x.sin(), x), dim=-1), (-2, 2), (2, 3)),
    "stack_0d": (lambda m, x: m.stack([x[0, 0], x[1, 1] * x[0, 0]]), (-2, 2), (2, 3)),
    "split": (lambda m, x: m.split(x, 2), (-2, 2), (5, 2)),
    "split_sizes_neg_dim": (lambda m, x: x.split([1, 0, 3], dim=-1), (-2, 2), (2, 4)),
    "split_product": (lambda m, x: (lambda a, b: a * b)(*m.split(x, 2, dim=1)), (-2, 2), (3, 4)),
    "chunk": (lambda m, x: m.chunk(x, 3, dim=-1), (-2, 2), (2, 5)),
    "chunk_product": (lambda m, x: (lambda a, b: a.exp() * b)(*x.chunk(2)), (-2, 2), (4, 3)),
    "flip": (lambda m, x: m.flip(x, [0, -1]) * x, (-2, 2), (3, 4)),
    "flip_method": (lambda m, x: x.flip(-1).cos(), (-2, 2), (2, 3, 2)),
    "flip_method_tuple": (lambda m, x: x.flip((0, 2)) * x, (-2, 2), (2, 3, 2)),
    "flip_0d": (lambda m, x: m.flip(x.sum(), [0]) * x, (-2, 2), (2, 3)),
    # ----- index_select / gather: repeated indices accumulate
    "index_select": (lambda m, x: m.index_select(x, 0, idx(m, x, [2, 0, 2, 2])), (-2, 2), (3, 4)),
    "index_select_neg_dim": (lambda m, x: x.index_select(-1, idx(m, x, [1, 1, 0])) ** 2,
                             (-2, 2), (2, 3)),
    "index_select_0d_index": (lambda m, x: x.index_select(1, idx(m, x, 2)), (-2, 2), (3, 4)),
    "index_select_int32": (lambda m, x: x.index_select(0, idx(m, x, [1, 1]).int()), (-2, 2),
                           (2, 3)),
    "index_select_0d": (lambda m, x: m.index_select(x.sum(), 0, idx(m, x, [0])) * x,
                        (-2, 2), (2, 3)),
    "gather": (lambda m, x: m.gather(x, 1, idx(m, x, [[0, 0, 3], [1, 1, 1], [3, 2, 0]])),
               (-2, 2), (3, 4)),
    "gather_neg_dim_small": (lambda m, x: x.gather(-2, idx(m, x, [[2, 2], [0, 2]])) * 3,
                             (-2, 2), (3, 4)),
    "gather_long_dim": (lambda m, x: m.gather(x, 0, idx(m, x, [[1, 0, 1]] * 5)), (-2, 2), (2, 3)),
    "gather_3d": (lambda m, x: x.gather(1, idx(m, x, [[[1, 0], [1, 1]], [[0, 0], [2, 1]]])),
                  (-2, 2), (2, 3, 2)),
    "gather_0d": (lambda m, x: m.gather(x[1], 0, idx(m, x, 0)) * x, (-2, 2), (3,)),
    "gather_empty": (lambda m, x: m.gather(x, 1, m.zeros(3, 0, dtype=m.int64, device=x.device)),
                     (-2, 2), (3, 4)),
    # ----- nn.functional
    "relu": (lambda m, x: F(m).relu(x), (-2, 2), (3, 4)),
    "gelu": (lambda m, x: F(m).gelu(x), (-3, 3), (3, 4)),
    "gelu_tanh": (lambda m, x: F(m).gelu(x, approximate="tanh"), (-3, 3), (3, 4)),
    "silu": (lambda m, x: F(m).silu(x), (-3, 3), (3, 4)),
    "softplus": (lambda m, x: F(m).softplus(x), (-3, 3), (3, 4)),
    "softplus_beta_threshold": (lambda m, x: F(m).softplus(x, beta=2.5, threshold=3),
                                (-2, 2), (3, 4)),
    "sigmoid": (lambda m, x: F(m).sigmoid(x), (-3, 3), (3, 4)),
    "tanh": (lambda m, x: F(m).tanh(x), (-2, 2), (3, 4)),
    "softmax": (lambda m, x: F(m).softmax(x, -1), (-3, 3), (3, 4)),
    "softmax_dim0": (lambda m, x: F(m).softmax(x, dim=0), (-3, 3), (2, 3, 2)),
    "softmax_large": (lambda m, x: F(m).softmax(x * 400, 1), (-2, 2), (3, 4)),
    "softmax_0d": (lambda m, x: F(m).softmax(x.sum(), 0) * x, (-3, 3), (2, 2)),
    "log_softmax": (lambda m, x: F(m).log_softmax(x, 1), (-3, 3), (3, 4)),
    "log_softmax_neg_dim": (lambda m, x: F(m).log_softmax(x * 400, -2), (-2, 2), (2, 3, 2)),
    # logits far from 0: float32 keeps its precision only if x - max is formed before exp
    "softmax_shifted": (lambda m, x: F(m).softmax(x + 4000, 1), (-3, 3), (3, 4)),
    "log_softmax_shifted": (lambda m, x: F(m).log_softmax(x - 3000, 0), (-3, 3), (3, 4)),
    "cross_entropy_shifted": (lambda m, x: F(m).cross_entropy(x + 2000, idx(m, x, [1, 0, 3])),
                              (-3, 3), (3, 4)),
    "linear": (lambda m, x: F(m).linear(x, x[:2] * 0.5, x[0, :2]), (-2, 2), (3, 3)),
    "cross_entropy": (lambda m, x: F(m).cross_entropy(x, idx(m, x, [0, 3, 3])), (-3, 3), (3, 4)),
    "cross_entropy_sum": (lambda m, x: F(m).cross_entropy(x, idx(m, x, [1, 1, 0]),
                                                          reduction="sum"), (-3, 3), (3, 4)),
    "cross_entropy_none": (lambda m, x: F(m).cross_entropy(x, idx(m, x, [2, 0, 1]),
                                                           reduction="none"), (-3, 3), (3, 4)),
    "cross_entropy_1d": (lambda m, x: F(m).cross_entropy(x, idx(m, x, 2)), (-3, 3), (4,)),
    "cross_entropy_ignore": (lambda m, x: F(m).cross_entropy(x, idx(m, x, [0, -100, 2])),
                             (-3, 3), (3, 4)),
    "cross_entropy_weight": (lambda m, x: F(m).cross_entropy(
        x, idx(m, x, [0, 3, 3, -1]), weight=const(m, x, 4), ignore_index=-1),
        (-3, 3), (4, 4)),
    "cross_entropy_smoothing": (lambda m, x: F(m).cross_entropy(
        x, idx(m, x, [0, 3, -100]), weight=const(m, x, 4), label_smoothing=0.3),
        (-3, 3), (3, 4)),
    "cross_entropy_3d": (lambda m, x: F(m).cross_entropy(x, idx(m, x, [[0, 2], [1, 1]])),
                         (-3, 3), (2, 3, 2)),
    "cross_entropy_probs": (lambda m, x: F(m).cross_entropy(
        x, F(m).softmax(const(m, x, 3, 4), 1), label_smoothing=0.1), (-3, 3), (3, 4)),
}

BINARY = {
    "cat_two": (lambda m, x, y: m.cat([y, x, y], dim=1), (-2, 2), ((2, 3), (2, 1))),
    "stack_two": (lambda m, x, y: m.stack([x, y], 1), (-2, 2), ((2, 3), (2, 3))),
    "mse_loss": (lambda m, x, y: F(m).mse_loss(x, y), (-2, 2), ((3, 4), (3, 4))),
    "mse_loss_sum": (lambda m, x, y: F(m).mse_loss(x, y, reduction="sum"), (-2, 2),
                     ((3, 4), (3, 4))),
    "mse_loss_none": (lambda m, x, y: F(m).mse_loss(x, y, reduction="none"), (-2, 2),
                      ((3, 4), (3, 4))),
    "mse_loss_weight": (lambda m, x, y: F(m).mse_loss(x, y, weight=y * y), (-2, 2),
                        ((2, 3), (2, 3))),
    "cross_entropy_probs_target": (lambda m, x, y: F(m).cross_entropy(x, y * y), (-2, 2),
                                   ((3, 4), (3, 4))),
    "cross_entropy_probs_none": (lambda m, x, y: F(m).cross_entropy(x, y.exp(), reduction="none"),
                                 (-2, 2), ((2, 4, 3), (2, 4, 3))),
}
CASES = {**{k: (f, d, (s,)) for k, (f, d, s) in UNARY.items()}, **BINARY}


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _inputs(name, rng):
    _, domain, shapes = CASES[name]
    return [sample(rng, s, domain) for s in shapes]


def _vjp_of(f):
    """xs -> vjp(f)(xs, v) with a fixed v per output, as a differentiable function (order 2)."""
    def g(*xs):
        outs = _as_tuple(f(*xs))
        vs = tuple(gv.tensor(np.linspace(-1, 1, o.numel()).reshape(o.shape) + 0.3 * (k + 1),
                             dtype=o.dtype, device=o.device) for k, o in enumerate(outs))
        _, grads = gv.vjp(lambda *a: _as_tuple(f(*a)), xs, vs, create_graph=True)
        return grads
    return g


# ----- gradchecks ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_first_order(name, device, rng):
    f = CASES[name][0]
    gradcheck(lambda *xs: f(gv, *xs), _inputs(name, rng), device, rng)


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_order(name, device, rng):
    f = CASES[name][0]
    gradcheck(_vjp_of(lambda *xs: f(gv, *xs)), _inputs(name, rng), device, rng, full=False)


# ----- the same programs under torch: values, vjps, dtypes ----------------------------------
TOL = {"float64": dict(rtol=1e-6, atol=1e-9), "float32": dict(rtol=2e-5, atol=2e-6)}


def _run(m, f, arrays, vs, dtype, device="cpu"):
    kw = {} if m is torch else dict(device=device)
    xs = tuple(m.tensor(a, dtype=getattr(m, dtype), **kw) for a in arrays)
    vt = tuple(m.tensor(v, dtype=getattr(m, dtype), **kw) for v in vs)
    fn = (lambda *a: _as_tuple(f(m, *a)))
    outs, grads = (gv.vjp if m is gv else torch.autograd.functional.vjp)(fn, xs, vt)
    return outs, grads


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_against_torch(name, dtype, device, rng):
    f = CASES[name][0]
    arrays = _inputs(name, rng)
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in _as_tuple(f(torch, *map(torch.tensor, arrays)))]
    vs = [rng.standard_normal(s) for s in shapes]
    got_out, got_g = _run(gv, f, arrays, vs, dtype, device)
    want_out, want_g = _run(torch, f, arrays, vs, dtype)
    for got, want in zip(got_out + got_g, want_out + want_g):
        assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), **TOL[dtype])


# The row-wise nn ops run float16 in float32 (one rounding at the end), as PyTorch does.
FLOAT16 = ["softmax", "softmax_dim0", "softmax_large", "log_softmax", "log_softmax_neg_dim",
           "cross_entropy", "cross_entropy_sum", "cross_entropy_none", "cross_entropy_1d",
           "cross_entropy_ignore", "cross_entropy_weight", "cross_entropy_3d"]


@needs_torch
@pytest.mark.parametrize("name", FLOAT16)
def test_against_torch_float16(name, device, rng):
    f = CASES[name][0]
    arrays = _inputs(name, rng)
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in _as_tuple(f(torch, *map(torch.tensor, arrays)))]
    vs = [rng.standard_normal(s) for s in shapes]
    got_out, got_g = _run(gv, f, arrays, vs, "float16", device)
    want_out, want_g = _run(torch, f, arrays, vs, "float16")
    for got, want in zip(got_out + got_g, want_out + want_g):
        assert str(got.dtype).split(".")[-1] == "float16" == str(want.dtype).split(".")[-1]
        np.testing.assert_allclose(got.numpy().astype(np.float64),
                                   want.detach().numpy().astype(np.float64), rtol=4e-3, atol=2e-3)


PROMOTIONS = [("int32", "float16"), ("int64", "int32"), ("bool", "int32"), ("float32", "float64"),
              ("bool", "float16"), ("int64", "float32")]


@needs_torch
@pytest.mark.parametrize("a, b", PROMOTIONS)
@pytest.mark.parametrize("op", ["cat", "stack"])
def test_promotion(op, a, b):
    def prog(m):
        x = m.tensor([1, 0, 1]).to(getattr(m, a))
        y = m.tensor([0, 1, 1]).to(getattr(m, b))
        return getattr(m, op)([x, y, x])
    got, want = prog(gv), prog(torch)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    np.testing.assert_array_equal(got.numpy(), want.numpy())


PIECES = [
    lambda m, x: m.split(x, 2), lambda m, x: m.split(x, 7), lambda m, x: x.split(1, -1),
    lambda m, x: m.split(x, [0, 5]), lambda m, x: m.split(x[:0], 0), lambda m, x: m.split(x[:0], 3),
    lambda m, x: m.chunk(x, 2), lambda m, x: x.chunk(6), lambda m, x: x.chunk(4, dim=1),
    lambda m, x: m.chunk(x[:0], 3), lambda m, x: m.chunk(x[:, :0], 2, 1),
    lambda m, x: m.split(x, m.tensor(3)),
]


@needs_torch
@pytest.mark.parametrize("k", range(len(PIECES)))
def test_split_chunk_pieces(k):
    x = np.arange(15.0).reshape(5, 3)
    got, want = PIECES[k](gv, gv.tensor(x)), PIECES[k](torch, torch.tensor(x))
    assert isinstance(got, tuple) and len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w.numpy())
        assert g.shape == tuple(w.shape)


def test_repeated_indices_accumulate():
    x = gv.tensor([1.0, 2.0, 3.0], requires_grad=True)
    i = gv.tensor([2, 2, 0, 2])
    (g,) = gv.autograd.grad(gv.index_select(x, 0, i).sum(), x)
    np.testing.assert_array_equal(g.numpy(), [1.0, 0.0, 3.0])
    (g,) = gv.autograd.grad(gv.gather(x, 0, i).sum(), x)
    np.testing.assert_array_equal(g.numpy(), [1.0, 0.0, 3.0])


@needs_torch
def test_softmax_implicit_dim_warns():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    for m in (gv, torch):
        with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
            out = F(m).softmax(m.tensor(x))
        with pytest.warns(UserWarning, match="Implicit dimension choice for log_softmax"):
            F(m).log_softmax(m.tensor(x[0]))
        np.testing.assert_allclose(out.numpy(), torch.softmax(torch.tensor(x), 0).numpy())
    with pytest.raises(TypeError):
        gv.nn.functional.softmax()


@needs_torch
def test_nonfinite_and_half():
    """Rows of -inf give nan, +inf give nan, float16 is computed in float32 and rounded once."""
    rows = [[-np.inf, -np.inf, 0.0], [np.inf, 1.0, 2.0], [-np.inf, 1.0, 2.0], [1e4, -1e4, 0.0]]
    for fn in ("softmax", "log_softmax"):
        for dtype in ("float64", "float32", "float16"):
            got = getattr(F(gv), fn)(gv.tensor(rows, dtype=getattr(gv, dtype)), -1)
            want = getattr(F(torch), fn)(torch.tensor(rows, dtype=getattr(torch, dtype)), -1)
            np.testing.assert_allclose(got.numpy().astype(np.float64),
                                       want.numpy().astype(np.float64), rtol=1e-3)
    for fn in ("gelu", "silu", "softplus"):
        a = np.linspace(-30, 30, 41)
        got = getattr(F(gv), fn)(gv.tensor(a, dtype=gv.float16))
        want = getattr(F(torch), fn)(torch.tensor(a, dtype=torch.float16))
        assert got.dtype is gv.float16        # PyTorch's vectorised erf is off by ulps here
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-2, atol=1e-7)
    a = np.array([-40.0, -5.0, 19.9, 20.1, 1e3])
    np.testing.assert_allclose(F(gv).softplus(gv.tensor(a)).numpy(),
                               F(torch).softplus(torch.tensor(a)).numpy(), rtol=1e-12)


# ----- errors: the same exception type, and PyTorch's message where noted ----------------------
def _x(m, *shape, dtype="float32"):
    return m.zeros(*shape, dtype=getattr(m, dtype))


def _t(m, data):
    return m.tensor(data)


ERRORS = {
    "cat_empty": lambda m: m.cat([]),
    "cat_0d": lambda m: m.cat([_t(m, 1.0), _t(m, 2.0)]),
    "cat_ndim": lambda m: m.cat([_x(m, 2, 3), _x(m, 2, 3, 1)]),
    "cat_size": lambda m: m.cat([_x(m, 2, 3), _x(m, 2, 4)]),
    "cat_size_after_skip": lambda m: m.cat([_x(m, 2, 3), _x(m, 0), _x(m, 3, 4)], 1),
    "cat_dim": lambda m: m.cat([_x(m, 2, 3), _x(m, 2, 3)], dim=2),
    "cat_not_list": lambda m: m.cat(_x(m, 2, 3)),
    "cat_not_tensor": lambda m: m.cat([_x(m, 2), 3]),
    "stack_empty": lambda m: m.stack([]),
    "stack_size": lambda m: m.stack([_x(m, 3), _x(m, 4)]),
    "stack_dim": lambda m: m.stack([_x(m, 3), _x(m, 3)], dim=-3),
    "split_0d": lambda m: m.split(_t(m, 1.0), 1),
    "split_zero": lambda m: m.split(_x(m, 5, 2), 0),
    "split_negative": lambda m: m.split(_x(m, 5, 2), -1),
    "split_sum": lambda m: m.split(_x(m, 5, 2), [1, 2]),
    "split_negative_size": lambda m: m.split(_x(m, 5, 2), [-1, 6]),
    "split_float_size": lambda m: m.split(_x(m, 5, 2), [2.0, 3]),
    "split_dim": lambda m: m.split(_x(m, 5, 2), 1, dim=2),
    "chunk_zero": lambda m: m.chunk(_x(m, 5, 2), 0),
    "chunk_0d": lambda m: m.chunk(_t(m, 1.0), 1),
    "chunk_float": lambda m: m.chunk(_x(m, 5, 2), 2.0),
    "chunk_dim": lambda m: _x(m, 5, 2).chunk(2, dim=-3),
    "flip_int": lambda m: m.flip(_x(m, 2, 3), 0),
    "flip_dup": lambda m: m.flip(_x(m, 2, 3), [0, -2]),
    "flip_dim": lambda m: m.flip(_x(m, 2, 3), [2]),
    "flip_float": lambda m: m.flip(_x(m, 2, 3), [0.0]),
    "index_select_float": lambda m: m.index_select(_x(m, 3, 4), 1, _t(m, [1.0])),
    "index_select_bool": lambda m: m.index_select(_x(m, 3, 4), 1, _t(m, [True])),
    "index_select_2d": lambda m: m.index_select(_x(m, 3, 4), 1, _t(m, [[1]])),
    "index_select_oob": lambda m: m.index_select(_x(m, 3, 4), 0, _t(m, [3])),
    "index_select_oob_last": lambda m: m.index_select(_x(m, 2, 3, 4), -1, _t(m, [0, 4])),
    "index_select_negative": lambda m: m.index_select(_x(m, 4), 0, _t(m, [-1])),
    "index_select_dim": lambda m: m.index_select(_x(m, 3, 4), 2, _t(m, [0])),
    "index_select_0d_many": lambda m: m.index_select(_t(m, 5.0), 0, _t(m, [0, 0])),
    "index_select_0d_oob": lambda m: m.index_select(_t(m, 5.0), 0, _t(m, [1])),
    "index_select_empty_dim": lambda m: m.index_select(_x(m, 0, 4), 0, _t(m, [0])),
    "index_select_list": lambda m: m.index_select(_x(m, 3, 4), 0, [0]),
    "gather_float": lambda m: m.gather(_x(m, 3, 4), 1, _t(m, [[0.0]])),
    "gather_ndim": lambda m: m.gather(_x(m, 3, 4), 1, _t(m, [0])),
    "gather_larger": lambda m: m.gather(_x(m, 3, 4), 1, _t(m, [[0]] * 4)),
    "gather_oob": lambda m: m.gather(_x(m, 3, 4), 1, _t(m, [[0, 4]])),
    "gather_negative": lambda m: m.gather(_x(m, 3, 4), 0, _t(m, [[-1]])),
    "gather_dim": lambda m: m.gather(_x(m, 3, 4), -3, _t(m, [[0]])),
    "gather_0d_oob": lambda m: m.gather(_t(m, 5.0), 0, _t(m, 1)),
    "relu_bool": lambda m: F(m).relu(_t(m, [True])),
    "gelu_approximate": lambda m: F(m).gelu(_x(m, 3), approximate="foo"),
    "gelu_int": lambda m: F(m).gelu(_t(m, [1, 2])),
    "silu_int": lambda m: F(m).silu(_t(m, [1, 2])),
    "softplus_int": lambda m: F(m).softplus(_t(m, [1, 2])),
    "softmax_int": lambda m: F(m).softmax(_t(m, [1, 2]), 0),
    "softmax_int_dim0": lambda m: F(m).softmax(_x(m, 2, 3, dtype="int64"), 0),
    "log_softmax_bool": lambda m: F(m).log_softmax(_t(m, [True]), 0),
    "softmax_dim": lambda m: F(m).softmax(_x(m, 3, 4), 2),
    "mse_reduction": lambda m: F(m).mse_loss(_x(m, 3), _x(m, 3), reduction="avg"),
    "mse_shapes": lambda m: F(m).mse_loss(_x(m, 3, 4), _x(m, 3)),
    "mse_int": lambda m: F(m).mse_loss(_t(m, [1, 2]), _t(m, [1, 2])),
    "mse_weight_shape": lambda m: F(m).mse_loss(_x(m, 3), _x(m, 3), weight=_x(m, 1)),
    "mse_weight_reduction": lambda m: F(m).mse_loss(_x(m, 3), _x(m, 3), weight=_x(m, 3),
                                                    reduction="x"),
    "mse_not_tensor": lambda m: F(m).mse_loss(_x(m, 3), 1.0),
    "ce_reduction": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, 1, 2]), reduction="avg"),
    "ce_int32_target": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, 1, 2]).int()),
    "ce_float_target": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0.0, 1.0, 2.0])),
    "ce_long_probs": lambda m: F(m).cross_entropy(_x(m, 3, 4), _x(m, 3, 4, dtype="int64")),
    "ce_batch": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, 1])),
    "ce_0d_target": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, 1)),
    "ce_multi_target": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [[0], [1], [2]])),
    "ce_1d_target_size": lambda m: F(m).cross_entropy(_x(m, 4), _t(m, [1, 2])),
    "ce_3d_target": lambda m: F(m).cross_entropy(_x(m, 2, 4, 5), _x(m, 2, 4, dtype="int64")),
    "ce_4d_target_dims": lambda m: F(m).cross_entropy(_x(m, 2, 4, 5, 6),
                                                      _x(m, 2, 5, dtype="int64")),
    "ce_4d_target_size": lambda m: F(m).cross_entropy(_x(m, 2, 4, 5, 6),
                                                      _x(m, 2, 5, 7, dtype="int64")),
    "ce_oob": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, 4, 1])),
    "ce_negative": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, -1, 1])),
    "ce_weight_size": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, 1, 2]),
                                                   weight=_x(m, 3)),
    "ce_weight_dtype": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, 1, 2]),
                                                    weight=_x(m, 4, dtype="float64")),
    "ce_smoothing": lambda m: F(m).cross_entropy(_x(m, 3, 4), _t(m, [0, 1, 2]),
                                                 label_smoothing=1.5),
    "ce_probs_smoothing": lambda m: F(m).cross_entropy(_x(m, 3, 4), _x(m, 3, 4),
                                                       label_smoothing=2.0),
    "ce_probs_ignore": lambda m: F(m).cross_entropy(_x(m, 3, 4), _x(m, 3, 4), ignore_index=1),
    "ce_probs_weight": lambda m: F(m).cross_entropy(_x(m, 3, 4), _x(m, 3, 4), weight=_x(m, 3)),
    "ce_int_logits": lambda m: F(m).cross_entropy(_x(m, 1, 4, dtype="int64"), _t(m, [0])),
    "ce_0d_input": lambda m: F(m).cross_entropy(_t(m, 1.0), _t(m, 0)),
    "ce_list_target": lambda m: F(m).cross_entropy(_x(m, 3, 4), [0, 1, 2]),
}
# Where the message differs from PyTorch's (the type still matches): PyTorch's CPU kernels word
# some index errors differently by dim; python's own messages name different attributes.
TYPE_ONLY = {"index_select_oob", "index_select_negative", "mse_not_tensor", "ce_0d_input",
             "cat_not_list", "stack_dim"}


def _error(program):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as info:
            program()
    return info.value


@needs_torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors(name):
    want = _error(lambda: ERRORS[name](torch))
    got = _error(lambda: ERRORS[name](gv))
    assert type(got) is type(want), f"{type(got).__name__}: {got} / torch: {want!r}"
    if name not in TYPE_ONLY:
        assert str(got) == str(want)


@needs_torch
@pytest.mark.parametrize("call", [
    lambda m, x: m.softmax(x, 1), lambda m, x: m.log_softmax(x, -1),
    lambda m, x: x.softmax(0), lambda m, x: x.log_softmax(dim=1),
    lambda m, x: m.softmax(x, dim=0, dtype=m.float32), lambda m, x: x.log_softmax(1, m.float32)])
def test_top_level_and_method_softmax(call, device, rng):
    """torch.softmax / torch.log_softmax and the Tensor methods: values, dtypes, vjps."""
    x = rng.uniform(-3, 3, (3, 4))
    v = rng.standard_normal((3, 4))
    got = gv.vjp(lambda a: call(gv, a), gv.tensor(x, device=device), gv.tensor(v, device=device))
    want = torch.autograd.functional.vjp(lambda a: call(torch, a), torch.tensor(x),
                                         torch.tensor(v))
    for g, w in zip(got, want):
        assert str(g.dtype).split(".")[-1] == str(w.dtype).split(".")[-1]
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-6, atol=1e-7)


@needs_torch
@pytest.mark.parametrize("call", [lambda m, x: m.softmax(x), lambda m, x: m.softmax(x, None),
                                  lambda m, x: x.log_softmax(), lambda m, x: x.softmax(1.0),
                                  lambda m, x: m.softmax(x, True)])
def test_top_level_softmax_needs_an_int_dim(call):
    with pytest.raises(TypeError) as want:
        call(torch, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="dim") as got:
        call(gv, gv.zeros(2, 3))
    if "must be int" in str(want.value):
        assert str(got.value) == str(want.value)


@needs_torch
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_without_classes(reduction, label_smoothing, device):
    """(N, 0) logits with every target ignored: PyTorch's nan (mean, smoothing) and zeros."""
    def f(m, dev=None):
        t = m.tensor([0, 0], device=dev) if dev else m.tensor([0, 0])
        return lambda a: F(m).cross_entropy(a, t, ignore_index=0, reduction=reduction,
                                            label_smoothing=label_smoothing)
    vshape = (2,) if reduction == "none" else ()
    got = gv.vjp(f(gv, device), gv.zeros(2, 0, dtype=gv.float64, device=device),
                 gv.ones(*vshape, dtype=gv.float64, device=device))
    want = torch.autograd.functional.vjp(f(torch), torch.zeros(2, 0, dtype=torch.float64),
                                         torch.ones(vshape, dtype=torch.float64))
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        np.testing.assert_array_equal(g.numpy(), w.numpy())


@needs_torch
@pytest.mark.parametrize("dim", [np.int64(1), np.int32(-2), "tensor"])
def test_top_level_softmax_takes_integer_like_dims(dim):
    x = np.arange(6.0).reshape(2, 3)
    dg, dt = (gv.tensor(1), torch.tensor(1)) if isinstance(dim, str) else (dim, dim)
    got = (gv.softmax(gv.tensor(x), dg), gv.tensor(x).log_softmax(dg))
    want = (torch.softmax(torch.tensor(x), dt), torch.tensor(x).log_softmax(dt))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_of_batched_0d_inputs(fn):
    """A batch of 0-d inputs (the hidden batch dim of vectorized jacobians) is a batch of
    one-element softmaxes: 1 and 0."""
    from gpuvjp.ops.batching import rebatch, unbatch
    out = unbatch(getattr(F(gv), fn)(rebatch(gv.tensor([1.0, -2.0, 30.0])), 0))
    np.testing.assert_array_equal(out.numpy(), [1.0] * 3 if fn == "softmax" else [0.0] * 3)
