"""Forward mode on every op: gv.jvp (tangents carried through each op) against the double-vjp
path and against torch.autograd.functional.jvp, in float64, for every program of the op
tables, plus batched tangents (a forward-mode jacobian) against torch's jacobian."""

from __future__ import annotations

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp.autograd import functional as F
from tests.ops import cases
from tests.ops import test_gradcheck as gc
from tests.ops import test_more_ops as more
from tests.ops import test_shape_nn as shape_nn

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-6, 1e-9


def _first_shape(shapes):
    """The first non-empty shape of an op's table (a jvp on an empty input shows nothing)."""
    for s in shapes:
        if all(n > 0 for n in s):
            return s
    return shapes[0]


def _programs():
    """name -> (program(m, *xs), domain, input shapes) over the op tables."""
    progs = {}
    for name, (f, dom) in cases.UNARY.items():
        progs[name] = (f, dom, [(3, 4)])
    for name, (f, dom) in cases.BINARY.items():
        progs[name] = (f, dom, [(3, 1), (4,)])
    for table in (more.UNARY, more.REDUCE):
        for name, (f, dom, shapes) in table.items():
            progs[name] = (f, dom, [_first_shape(shapes)])
    for name, (f, dom) in more.BINARY.items():
        progs[name] = (f, dom, [(3, 4), (3, 4)])
    for name, (f, dom, shapes) in shape_nn.CASES.items():
        progs[f"nn-{name}"] = (f, dom, list(shapes))
    for name, (x_shape, y_shape) in zip(["matmul-vv", "matmul-mv", "matmul-vm", "matmul-mm",
                                         "matmul-bm", "matmul-bb", "matmul-bcast", "matmul-vb"],
                                        gc.MATMUL_SHAPES):
        progs[name] = (lambda m, x, y: x @ y, (-2, 2), [x_shape, y_shape])
    for name, f in gc.SHAPE_CASES.items():
        if name == "broadcast_to":              # written with gv.broadcast_to: gv only
            continue
        progs[f"shape-{name}"] = (lambda m, x, _f=f: _f(x), (-2, 2), [(2, 3, 4)])
    progs["einsum"] = (lambda m, x, y: m.einsum("ij,jk->ik", x, y), (-2, 2), [(2, 3), (3, 4)])
    progs["broadcast_to"] = (lambda m, x: m.broadcast_to(x[0, :1], (3, 3, 4)).cos(), (-2, 2),
                             [(2, 3, 4)])
    for name in ("basic", "int", "neg_int", "none_ellipsis"):
        f = gc.INDEX_CASES[name]
        progs[f"index-{name}"] = (lambda m, x, _f=f: _f(x), (-2, 2), [(3, 4)])
    return progs


PROGRAMS = _programs()


def _run(m, f, arrays, tangents, impl=None, device="cpu"):
    if m is torch:
        xs = tuple(torch.tensor(a) for a in arrays)
        vs = tuple(torch.tensor(t) for t in tangents)
        return torch.autograd.functional.jvp(lambda *a: f(torch, *a), xs, vs)
    xs = tuple(gv.tensor(a, device=device) for a in arrays)
    vs = tuple(gv.tensor(t, device=device) for t in tangents)
    return impl(lambda *a: f(gv, *a), xs, vs)


def _flat(res):
    return list(res) if isinstance(res, (tuple, list)) else [res]


def _close(got, want):
    for g, w in zip(_flat(got), _flat(want)):
        w = w.detach().numpy() if hasattr(w, "detach") else np.asarray(w)
        np.testing.assert_allclose(g.numpy(), w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_forward_mode_matches_double_vjp_and_torch(name, device, rng):
    f, dom, shapes = PROGRAMS[name]
    arrays = [cases.sample(rng, s, dom) for s in shapes]
    tangents = [rng.standard_normal(s) for s in shapes]
    out_f, jv_f = _run(gv, f, arrays, tangents, F._jvp_forward, device)
    out_b, jv_b = _run(gv, f, arrays, tangents, F._jvp_double_backward, device)
    out_t, jv_t = _run(torch, f, arrays, tangents)
    assert len(_flat(jv_f)) == len(_flat(jv_t))
    _close(jv_f, jv_t)
    _close(jv_b, jv_t)
    _close(out_f, out_t)


BATCHED = ["exp", "tanh", "sigmoid", "div", "pow", "maximum", "where", "logsumexp",
           "norm_dim", "var_dim", "prod_dim", "amax_dim", "erf", "nn-softmax", "nn-log_softmax",
           "nn-gelu", "nn-cat", "nn-gather", "matmul-bcast", "shape-permute", "index-basic"]


@pytest.mark.parametrize("name", [n for n in BATCHED if n in PROGRAMS])
def test_batched_tangents_give_torch_jacobian(name, device, rng):
    """jacobian(strategy="forward-mode", vectorize=True): all tangents in one pass."""
    f, dom, shapes = PROGRAMS[name]
    arrays = [cases.sample(rng, s, dom) for s in shapes]
    got = gv.jacobian(lambda *a: f(gv, *a), tuple(gv.tensor(a, device=device) for a in arrays),
                      vectorize=True, strategy="forward-mode")
    want = torch.autograd.functional.jacobian(lambda *a: f(torch, *a),
                                              tuple(torch.tensor(a) for a in arrays))

    def leaves(x):
        return [y for z in x for y in leaves(z)] if isinstance(x, (tuple, list)) else [x]
    for g, w in zip(leaves(got), leaves(want)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=RTOL, atol=ATOL)
