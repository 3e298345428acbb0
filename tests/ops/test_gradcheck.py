"""Every op x shapes: first-order vjp against central differences, and second order (the vjp
itself differentiated) in float64."""

import numpy as np
import pytest

import gpuvjp as gv
from tests._check import gradcheck
from tests.ops.cases import BINARY, BINARY_SHAPES, UNARY, UNARY_SHAPES, sample

SKIP_SHAPES = {"flip_t": [(0, 4)], "unsqueeze": []}


def _ids(shape):
    return str(shape).replace(" ", "")


@pytest.mark.parametrize("shape", UNARY_SHAPES, ids=_ids)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_first_order(name, shape, device, rng):
    f, domain = UNARY[name]
    gradcheck(lambda x: f(gv, x), [sample(rng, shape, domain)], device, rng)


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=lambda s: f"{_ids(s[0])}-{_ids(s[1])}")
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_first_order(name, shapes, device, rng):
    f, domain = BINARY[name]
    arrays = [sample(rng, s, domain) for s in shapes]
    gradcheck(lambda x, y: f(gv, x, y), arrays, device, rng)


def _vjp_of(f, n_in):
    """x -> vjp(f)(x, v) with a fixed v, as a differentiable function (order 2)."""
    def g(*xs):
        out = f(*xs)
        v = gv.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape) + 0.3,
                      dtype=out.dtype, device=out.device)        # fixed: independent of x
        _, grads = gv.vjp(lambda *a: f(*a), xs if n_in > 1 else xs[0], v, create_graph=True)
        return grads if isinstance(grads, tuple) else (grads,)
    return g


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_second_order(name, device, rng):
    f, domain = UNARY[name]
    gradcheck(_vjp_of(lambda x: f(gv, x), 1), [sample(rng, (2, 3), domain)], device, rng)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_second_order(name, device, rng):
    f, domain = BINARY[name]
    arrays = [sample(rng, (3, 1), domain), sample(rng, (1, 2), domain)]
    gradcheck(_vjp_of(lambda x, y: f(gv, x, y), 2), arrays, device, rng)


MATMUL_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)),
                 ((5, 2, 3), (3, 4)), ((5, 2, 3), (5, 3, 4)), ((2, 1, 2, 3), (5, 3, 2)),
                 ((3,), (2, 3, 4))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{_ids(s[0])}@{_ids(s[1])}")
def test_matmul(shapes, device, rng):
    arrays = [rng.standard_normal(s) for s in shapes]
    gradcheck(lambda x, y: x @ y, arrays, device, rng)
    gradcheck(_vjp_of(lambda x, y: gv.matmul(x, y), 2), arrays, device, rng)


INDEX_CASES = {
    "basic": lambda x: x[1:, ::2],
    "int": lambda x: x[1],
    "neg_int": lambda x: x[-1, 1:],
    "none_ellipsis": lambda x: x[None, ..., 0],
    "int_array_repeats": lambda x: x[gv.tensor([0, 2, 0, 0])],
    "bool_mask": lambda x: x[x > 0],
    "mixed": lambda x: x[gv.tensor([1, 1]), 1:3],
}


@pytest.mark.parametrize("name", sorted(INDEX_CASES))
def test_indexing(name, device, rng):
    # index tensors are made on the cpu: they follow the indexed tensor to its device
    gradcheck(INDEX_CASES[name], [rng.uniform(-2, 2, size=(3, 4))], device, rng)


SHAPE_CASES = {
    "permute": lambda x: x.permute(2, 0, 1) * 1.5,
    "transpose_neg": lambda x: x.transpose(-1, -3).exp(),
    "expand": lambda x: x[:, :1].expand(2, 5, 4).sin(),
    "squeeze": lambda x: x[:, :1].squeeze(1).squeeze(),
    "flatten": lambda x: x.flatten(1) * 2,
    "view_then_sum": lambda x: x.view(6, 4).sum(0),
    "t_matmul": lambda x: x[0].t() @ x[1],
    "broadcast_to": lambda x: gv.broadcast_to(x[0, :1], (3, 3, 4)).cos(),
}


@pytest.mark.parametrize("name", sorted(SHAPE_CASES))
def test_shape_ops(name, device, rng):
    gradcheck(SHAPE_CASES[name], [rng.uniform(-2, 2, size=(2, 3, 4))], device, rng)


def test_noncontiguous_input(device, rng):
    """A transposed NumPy view as input: gradients land in the input's own layout."""
    a = rng.uniform(-2, 2, size=(4, 3)).T
    gradcheck(lambda x: (x * x).sum(dim=0), [a], device, rng)
    assert np.isfinite(a).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(1024, 1024), (300, 2048), (5, 3, 4096)])
def test_lazy_exp_sum_on_large_inputs(shape, dtype, rng):
    """x.exp().sum(dim) on the GPU runs as one reduction over a pending exp: compare value and
    vjp with NumPy at sizes where CuPy picks its large-reduction code paths."""
    x = rng.uniform(-1, 1, size=shape).astype(dtype)
    xg = gv.tensor(x, device="cuda")
    v = gv.ones(shape[:-1], dtype=getattr(gv, dtype), device="cuda")
    out, g = gv.vjp(lambda t: t.exp().sum(dim=-1), xg, v)
    want = np.exp(x.astype(np.float64))
    tol = 1e-2 if dtype == "float16" else 1e-5
    np.testing.assert_allclose(out.numpy(), want.sum(-1), rtol=tol)
    np.testing.assert_allclose(g.numpy(), want, rtol=tol)
