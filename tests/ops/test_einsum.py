"""einsum: values and vjps against torch in float64, gradients against central differences
(first and second order), and PyTorch's errors."""

import numpy as np
import pytest

import gpuvjp as gv
from tests._check import gradcheck

torch = pytest.importorskip("torch")

EQUATIONS = {
    "matmul": ("ij,jk->ik", [(2, 3), (3, 4)]),
    "implicit": ("ij,jk", [(2, 3), (3, 4)]),
    "batched": ("bij,bjk->bik", [(5, 2, 3), (5, 3, 4)]),
    "dot": ("i,i->", [(3,), (3,)]),
    "sum_out": ("ij->j", [(3, 4)]),
    "outer3": ("ij,k->ijk", [(2, 3), (4,)]),
    "ellipsis": ("...ij,...jk->...ik", [(5, 2, 3), (3, 4)]),
    "three": ("ab,bc,cd->ad", [(2, 3), (3, 4), (4, 5)]),
    "permute": ("ijk->kji", [(2, 3, 4)]),
    "only_in_one": ("ij,j->i", [(3, 4), (4,)]),
    "sum_both": ("ij,kl->", [(2, 3), (4, 1)]),
}


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_einsum_against_torch(name, device, rng):
    eq, shapes = EQUATIONS[name]
    arrays = [rng.standard_normal(s) for s in shapes]
    want = torch.einsum(eq, *[torch.tensor(a) for a in arrays])
    v = rng.standard_normal(tuple(want.shape))
    out, grads = gv.vjp(lambda *a: gv.einsum(eq, *a),
                        tuple(gv.tensor(a, device=device) for a in arrays),
                        gv.tensor(v, device=device))
    _, want_g = torch.autograd.functional.vjp(lambda *a: torch.einsum(eq, *a),
                                              tuple(torch.tensor(a) for a in arrays),
                                              torch.tensor(v))
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    for g, w in zip(grads, want_g):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["matmul", "three", "only_in_one", "ellipsis"])
def test_einsum_gradcheck(name, device, rng):
    eq, shapes = EQUATIONS[name]
    arrays = [rng.standard_normal(s) for s in shapes]
    gradcheck(lambda *a: gv.einsum(eq, *a), arrays, device, rng)

    def vjp_of(*xs):
        out = gv.einsum(eq, *xs)
        v = gv.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape), device=out.device)
        return gv.vjp(lambda *a: gv.einsum(eq, *a) * gv.einsum(eq, *a), xs, v,
                      create_graph=True)[1]
    gradcheck(vjp_of, arrays, device, rng)


@pytest.mark.parametrize("eq, shapes", [("ij,jk->ik", [(2, 3)]), ("ij->ij", [(2, 3, 4)]),
                                        ("i->i", [(2,), (2,)])])
def test_einsum_errors_like_torch(eq, shapes):
    arrays = [np.ones(s) for s in shapes]
    with pytest.raises(RuntimeError) as want:
        torch.einsum(eq, *[torch.tensor(a) for a in arrays])
    with pytest.raises(RuntimeError) as got:
        gv.einsum(eq, *[gv.tensor(a) for a in arrays])
    assert type(got.value) is type(want.value)
