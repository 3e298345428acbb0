"""gv.vjp against torch.autograd.functional.vjp: values, return structures, graph flags, grad
mode, strict mode and errors (type and message), the same program run under both libraries."""

from __future__ import annotations

import numpy as np
import pytest

import gpuvjp as gv
from tests.autograd._lib import RTOL, assert_matches, assert_same_error, both, dtype_name

torch = pytest.importorskip("torch")



# ----- helpers: one program, two libraries -------------------------------------------------
def graph_flags(res):
    """(requires_grad, has grad_fn) of every tensor in a nested result."""
    if isinstance(res, tuple):
        return tuple(graph_flags(r) for r in res)
    return (res.requires_grad, res.grad_fn is not None)


def assert_same_result(got, want):
    assert_matches(got, want)
    assert graph_flags(got) == graph_flags(want)


def sample(rng, shape, lo=-2.0, hi=2.0):
    """float64 values kept 0.05 away from the kinks at 0 and +-0.5 (relu, abs, clamp)."""
    a = rng.uniform(lo, hi, size=shape)
    for k in (0.0, 0.5, -0.5, 0.25):
        a = np.where(np.abs(a - k) < 0.05, a + 0.1, a)
    return a


# ----- the doc examples -------------------------------------------------------------------
def exp_reducer(x):
    return x.exp().sum(dim=1)


def adder(x, y):
    return 2 * x + 3 * y


def test_doc_exp_reducer(device, rng):
    x = rng.uniform(0, 1, (4, 4))
    got, want = both(lambda L: L.vjp(exp_reducer, L.t(x), L.t(np.ones(4))),
                     device)
    assert_same_result(got, want)
    np.testing.assert_allclose(got[1].numpy(), np.exp(x), rtol=RTOL)


def test_doc_exp_reducer_create_graph(device, rng):
    x = rng.uniform(0, 1, (4, 4))

    def program(L):
        xt = L.t(x, requires_grad=True)
        out, res = L.vjp(exp_reducer, xt, L.t(np.ones(4)), create_graph=True)
        d_out = L.grad(out.sum(), xt, retain_graph=True)
        d_res = L.grad(res.sum(), xt)
        return (out, res), d_out + d_res

    (got, got_d), (want, want_d) = both(program, device)
    assert_same_result(got, want)
    assert all(t.grad_fn is not None and t.requires_grad for t in got)
    assert_matches(got_d, want_d)
    np.testing.assert_allclose(got_d[1].numpy(), np.exp(x), rtol=RTOL)


def test_doc_exp_reducer_create_graph_plain_input(device, rng):
    x = rng.uniform(0, 1, (4, 4))
    got, want = both(lambda L: L.vjp(exp_reducer, L.t(x), L.t(np.ones(4)),
                                     create_graph=True), device)
    assert_same_result(got, want)


def test_doc_adder(device, rng):
    x, y = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
    got, want = both(lambda L: L.vjp(adder, (L.t(x), L.t(y)), L.t(np.ones(2))),
                     device)
    assert_same_result(got, want)
    np.testing.assert_array_equal(got[1][0].numpy(), np.full(2, 2.0))
    np.testing.assert_array_equal(got[1][1].numpy(), np.full(2, 3.0))


# ----- return structures --------------------------------------------------------------------
def _two_out(x, y):
    return x * y, (x + y).sum()


STRUCTURES = {
    # name -> (func, input shapes, input as tuple?, v shapes (None: v=None), v as tuple?)
    "tensor-in-tensor-out": (lambda x: x.sin() * 2, [(3,)], False, [(3,)], False),
    "tuple-in-tensor-out": (lambda x, y: x * y, [(3,), (3,)], True, [(3,)], False),
    "1tuple-in-tensor-out": (lambda x: x.cos(), [(2, 3)], True, [(2, 3)], False),
    "tensor-in-tuple-out": (lambda x: (x.sin(), x.sum()), [(3,)], False, [(3,), ()], True),
    "tuple-in-tuple-out": (_two_out, [(3,), (3,)], True, [(3,), ()], True),
    "tensor-in-1tuple-out": (lambda x: (x * x,), [(3,)], False, [(3,)], True),
    "1tuple-out-bare-v": (lambda x: (x * x,), [(3,)], False, [(3,)], False),
    "tensor-out-1tuple-v": (lambda x: x * x, [(3,)], False, [(3,)], True),
    "1tuple-in-1tuple-out": (lambda x: (x.exp(),), [(4,)], True, [(4,)], True),
    "scalar-out-v-none": (lambda x: (x * x).sum(), [(3,)], False, None, False),
    "shape1-out-v-none": (lambda x: (x * x).sum().reshape(1), [(3,)], False, None, False),
    "shape11-out-v-none": (lambda x: (x * x).sum().reshape(1, 1), [(3,)], True, None, False),
    "1tuple-scalar-out-v-none": (lambda x: ((x * x).sum(),), [(3,)], False, None, False),
    "scalar-in-scalar-out": (lambda x: x.sin(), [()], False, [()], False),
    "two-in-scalar-v-none": (lambda x, y: (x * y).sum(), [(2, 2), (2, 2)], True, None, False),
    "identity": (lambda x: x, [(3,)], False, [(3,)], False),
    "returns-an-input": (lambda x, y: y, [(3,), (2,)], True, [(2,)], False),
    "same-output-twice": (lambda x: (lambda y: (y, y))(x.sin()), [(3,)], False, [(3,), (3,)],
                          True),
    "inputs-as-outputs": (lambda x, y: (y, x), [(3,), (2,)], True, [(2,), (3,)], True),
    "empty": (lambda x: x.exp() * 2, [(0, 3)], False, [(0, 3)], False),
    "empty-sum-v-none": (lambda x: x.exp().sum(), [(0, 3)], False, None, False),
}


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
@pytest.mark.parametrize("name", STRUCTURES)
def test_structures(name, create_graph, device, rng):
    func, in_shapes, in_tuple, v_shapes, v_tuple = STRUCTURES[name]
    xs = [sample(rng, s) for s in in_shapes]
    vs = None if v_shapes is None else [sample(rng, s) for s in v_shapes]

    def program(L):
        inputs = tuple(L.t(a) for a in xs)
        v = None if vs is None else tuple(L.t(a) for a in vs)
        return L.vjp(func, inputs if in_tuple else inputs[0],
                     v if v is None or v_tuple else v[0], create_graph=create_graph)

    got, want = both(program, device)
    assert_same_result(got, want)


# ----- v=None --------------------------------------------------------------------------------
@pytest.mark.parametrize("func", [
    lambda x: x * 2,
    lambda x: x.sum(dim=0),
    lambda x: (x.sum(), x.sum()),
    lambda x: (x.sum(),  x * 2),
    lambda x: x[:0],
], ids=["elementwise", "reduced-to-3", "two-scalars", "scalar-and-tensor", "empty"])
def test_v_none_needs_single_element(func, device, rng):
    x = sample(rng, (2, 3))
    assert_same_error(lambda L: L.vjp(func, L.t(x)), device)


# ----- errors ------------------------------------------------------------------------------
BAD_INPUTS = {
    "list": lambda L, x: [x],
    "numpy": lambda L, x: np.ones(3),
    "none": lambda L, x: None,
    "int": lambda L, x: 3,
    "float": lambda L, x: 1.5,
    "nested-tuple": lambda L, x: ((x, x),),
    "tuple-with-float": lambda L, x: (x, 1.0),
    "tuple-with-list": lambda L, x: (x, [1.0, 2.0]),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_inputs(name, device, rng):
    x = sample(rng, (3,))
    bad = BAD_INPUTS[name]
    assert_same_error(lambda L: L.vjp(lambda *a: a[0], bad(L, L.t(x)), L.t(x)), device)


BAD_OUTPUTS = {
    "list": lambda x: [x * 2],
    "none": lambda x: None,
    "int": lambda x: 3,
    "numpy": lambda x: np.ones(3),
    "tuple-with-int": lambda x: (x * 2, 1),
    "tuple-with-none": lambda x: (None, x * 2),
    "nested-tuple": lambda x: ((x * 2,),),
}


@pytest.mark.parametrize("name", BAD_OUTPUTS)
def test_bad_outputs(name, device, rng):
    x = sample(rng, (3,))
    assert_same_error(lambda L: L.vjp(BAD_OUTPUTS[name], L.t(x), L.t(x)), device)


BAD_V = {
    # name -> (func, v from (L, x of shape (3,)))
    "shape": (lambda x: x * 2, lambda L, x: L.t(np.ones(4))),
    "shape-2d": (lambda x: x * 2, lambda L, x: L.t(np.ones((1, 3)))),
    "shape-scalar": (lambda x: x.sum(), lambda L, x: L.t(np.ones(1))),
    "shape-entry-1": (lambda x: (x * 2, x.sum()), lambda L, x: (L.t(np.ones(3)),
                                                              L.t(np.ones(3)))),
    "tuple-too-short": (lambda x: (x * 2, x.sum()), lambda L, x: (L.t(np.ones(3)),)),
    "bare-v-two-outputs": (lambda x: (x * 2, x.sum()), lambda L, x: L.t(np.ones(3))),
    "tuple-too-long": (lambda x: (x * 2, x.sum()), lambda L, x: (x, L.t(1.0), L.t(1.0))),
    "tuple-for-single-output": (lambda x: x * 2, lambda L, x: (L.t(np.ones(3)),
                                                               L.t(np.ones(3)))),
    "list": (lambda x: x * 2, lambda L, x: [1.0, 1.0, 1.0]),
    "numpy": (lambda x: x * 2, lambda L, x: np.ones(3)),
    "float": (lambda x: x.sum(), lambda L, x: 1.0),
    "tuple-with-float": (lambda x: (x * 2, x.sum()), lambda L, x: (L.t(np.ones(3)), 1.0)),
    "list-of-tensors": (lambda x: (x * 2, x.sum()), lambda L, x: [L.t(np.ones(3)),
                                                                  L.t(1.0)]),
}


@pytest.mark.parametrize("name", BAD_V)
def test_bad_v(name, device, rng):
    func, make_v = BAD_V[name]
    x = sample(rng, (3,))

    def program(L):
        xt = L.t(x)
        return L.vjp(func, xt, make_v(L, xt))

    assert_same_error(program, device)


@pytest.mark.parametrize("func", [None, 3, "exp", (lambda x: x,)], ids=["none", "int", "str",
                                                                        "tuple"])
def test_non_callable_func(func, device):
    x = gv.ones(3, device=device)
    with pytest.raises(TypeError, match="func"):
        gv.vjp(func, x, x)


def test_torch_tensor_input_is_a_type_error(device):
    with pytest.raises(TypeError, match="inputs"):
        gv.vjp(lambda x: x, torch.ones(3), gv.ones(3, device=device))


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_integer_input(dtype, device):
    def program(L):
        x = L.t(np.ones(3), dtype=getattr(L.m, dtype))
        return L.vjp(lambda x: x * 2, x, L.t(np.ones(3)))

    assert_same_error(program, device, additive=True)


def test_integer_input_in_tuple(device, rng):
    def program(L):
        x, n = L.t(sample(rng, (3,))), L.t(np.arange(3))
        return L.vjp(lambda x, n: x * n, (x, n), L.t(np.ones(3)))

    assert_same_error(program, device, additive=True)


def test_integer_v_is_cast(device, rng):
    """torch accepts an integer v and casts it to the output's dtype."""
    x = sample(rng, (3,))
    got, want = both(lambda L: L.vjp(lambda x: x * x, L.t(x), L.t(np.arange(3))), device)
    assert_same_result(got, want)


# ----- strict mode ---------------------------------------------------------------------------
def test_strict_output_independent_of_an_input(device, rng):
    x, y = sample(rng, (3,)), sample(rng, (2, 2))
    assert_same_error(lambda L: L.vjp(lambda x, y: x * 2, (L.t(x), L.t(y)), L.t(np.ones(3)),
                                      strict=True), device)


NON_DIFFERENTIABLE = {
    "constant": lambda m, x: m.ones_like(x),
    "detach": lambda m, x: x.detach(),
    "detach-times-2": lambda m, x: x.detach() * 2,
    "comparison": lambda m, x: (x > 0),
}


@pytest.mark.parametrize("name", NON_DIFFERENTIABLE)
def test_strict_non_differentiable_output(name, device, rng):
    f, x = NON_DIFFERENTIABLE[name], sample(rng, (3,))
    assert_same_error(lambda L: L.vjp(lambda x: f(L.m, x), L.t(x), L.t(np.ones(3)),
                                      strict=True), device)


@pytest.mark.parametrize("name", ["constant", "detach", "detach-times-2"])
@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
def test_non_strict_non_differentiable_output_gives_zeros(name, create_graph, device, rng):
    f, x = NON_DIFFERENTIABLE[name], sample(rng, (3,))
    got, want = both(lambda L: L.vjp(lambda x: f(L.m, x), L.t(x), L.t(np.ones(3)),
                                     create_graph=create_graph), device)
    assert_same_result(got, want)


def test_strict_one_of_two_outputs_non_differentiable(device, rng):
    x = sample(rng, (3,))
    assert_same_error(lambda L: L.vjp(lambda x: (x * 2, x.detach()), L.t(x),
                                      (L.t(np.ones(3)), L.t(np.ones(3))), strict=True), device)


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
def test_non_strict_skips_non_differentiable_outputs(create_graph, device, rng):
    x, v, w = sample(rng, (3,)), sample(rng, (3,)), sample(rng, (2,))

    def program(L):
        return L.vjp(lambda x: (L.m.ones_like(x[:2]), x.sin(), x.detach()), L.t(x),
                     (L.t(w), L.t(v), L.t(v)), create_graph=create_graph)

    got, want = both(program, device)
    assert_same_result(got, want)


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
def test_non_strict_independent_input_gives_zeros(create_graph, device, rng):
    x = sample(rng, (3,))
    y = sample(rng, (2, 2)).astype(np.float32)

    def program(L):
        return L.vjp(lambda x, y: x.sin(), (L.t(x), L.t(y)), L.t(np.ones(3)),
                     create_graph=create_graph)

    got, want = both(program, device)
    assert_same_result(got, want)
    zeros = got[1][1]
    assert zeros.shape == (2, 2) and zeros.dtype == gv.float32
    assert not zeros.numpy().any()


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
def test_strict_passes_when_every_input_is_used(create_graph, device, rng):
    x, y = sample(rng, (3,)), sample(rng, (3,))
    got, want = both(lambda L: L.vjp(lambda x, y: x * y.sin(), (L.t(x), L.t(y)),
                                     L.t(np.ones(3)), create_graph=create_graph, strict=True),
                     device)
    assert_same_result(got, want)


LINEAR = {
    "identity": lambda x: x,
    "scale": lambda x: 2 * x,
    "add-const": lambda x: x + 1,
    "sum": lambda x: x.sum(),
    "sum-dim": lambda x: x.sum(dim=1),
    "reshape": lambda x: x.reshape(-1),
    "transpose": lambda x: x.t(),
    "slice": lambda x: x[1:, ::2],
    "neg": lambda x: -x,
}


@pytest.mark.parametrize("name", LINEAR)
def test_strict_create_graph_linear_raises(name, device, rng):
    x = sample(rng, (2, 3))

    def program(L):
        xt = L.t(x)
        v = L.t(np.ones(tuple(LINEAR[name](xt).shape)))
        return L.vjp(LINEAR[name], xt, v, create_graph=True, strict=True)

    assert_same_error(program, device)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_create_graph_non_strict(name, device, rng):
    x = sample(rng, (2, 3))

    def program(L):
        xt = L.t(x)
        v = L.t(np.ones(tuple(LINEAR[name](xt).shape)))
        return L.vjp(LINEAR[name], xt, v, create_graph=True)

    got, want = both(program, device)
    assert_same_result(got, want)


# ----- detachment, and the caller's tensors ----------------------------------------------------
@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "requires_grad"])
def test_results_detached_without_create_graph(requires_grad, device, rng):
    x, y = sample(rng, (3,)), sample(rng, (3,))

    def program(L):
        inputs = (L.t(x, requires_grad=requires_grad), L.t(y, requires_grad=requires_grad))
        return L.vjp(lambda x, y: (x * y, (x.exp() * y).sum()), inputs,
                     (L.t(np.ones(3)), L.t(1.0)))

    got, want = both(program, device)
    assert_same_result(got, want)
    for t in got[0] + got[1]:
        assert not t.requires_grad and t.grad_fn is None


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "requires_grad"])
def test_caller_tensors_untouched(requires_grad, create_graph, device, rng):
    arrays = [sample(rng, (3,)), sample(rng, (3,)), sample(rng, (3,))]
    x, y, v = (gv.tensor(a, device=device, requires_grad=requires_grad) for a in arrays)
    before = [t.numpy().tobytes() for t in (x, y, v)]
    gv.vjp(lambda x, y: x * y.sin() + x.exp(), (x, y), v, create_graph=create_graph)
    assert [t.numpy().tobytes() for t in (x, y, v)] == before
    for t in (x, y, v):
        assert t.grad is None
        assert t.requires_grad is requires_grad
        assert t.is_leaf


def test_func_sees_new_tensor_objects(device, rng):
    """Gradients are taken w.r.t. fresh tensors, so a func that captures the caller's tensor
    treats it as a constant (pytorch/pytorch#32576)."""
    x = sample(rng, (3,))

    def program(L):
        xt = L.t(x)
        return L.vjp(lambda a: a * xt, xt, L.t(np.ones(3)))

    got, want = both(program, device)
    assert_same_result(got, want)


def test_create_graph_differentiable_wrt_caller_input(device, rng):
    x, y, v = sample(rng, (3,)), sample(rng, (3,)), sample(rng, (3,))

    def program(L):
        xt, yt = L.t(x, requires_grad=True), L.t(y)
        out, (gx, gy) = L.vjp(lambda x, y: x.sin() * y * x, (xt, yt), L.t(v),
                              create_graph=True)
        d = L.grad((gx * gx).sum() + gy.sum() + out.sum(), xt)
        return (out, (gx, gy)), d, xt.grad

    (got, got_d, got_g), (want, want_d, want_g) = both(program, device)
    assert_same_result(got, want)
    assert_matches(got_d, want_d)
    assert got_g is None and want_g is None


def test_create_graph_differentiable_wrt_v(device, rng):
    x, v = sample(rng, (2, 3)), sample(rng, (2,))

    def program(L):
        vt = L.t(v, requires_grad=True)
        out, res = L.vjp(lambda x: x.sin().sum(dim=1), L.t(x), vt, create_graph=True)
        return (out, res), L.grad((res * res).sum(), vt)

    (got, got_d), (want, want_d) = both(program, device)
    assert_same_result(got, want)
    assert_matches(got_d, want_d)


def test_v_requires_grad_without_create_graph(device, rng):
    x, v = sample(rng, (3,)), sample(rng, (3,))

    def program(L):
        vt = L.t(v, requires_grad=True)
        res = L.vjp(lambda x: x.sin(), L.t(x), vt)
        return res, vt.grad

    (got, got_g), (want, want_g) = both(program, device)
    assert_same_result(got, want)
    assert got_g is None and want_g is None


# ----- grad mode ---------------------------------------------------------------------------
@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
def test_inside_no_grad(create_graph, device, rng):
    x, v = sample(rng, (2, 3)), sample(rng, (2,))

    def program(L):
        with L.m.no_grad():
            res = L.vjp(lambda x: (x * x.cos()).sum(dim=1), L.t(x), L.t(v),
                        create_graph=create_graph)
            assert not L.m.is_grad_enabled()
        assert L.m.is_grad_enabled()
        return res

    got, want = both(program, device)
    assert_same_result(got, want)


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["enabled", "no_grad"])
def test_func_sees_grad_enabled(grad_enabled, device):
    seen = []

    def func(x):
        seen.append(gv.is_grad_enabled())
        return x * 2

    with gv.set_grad_enabled(grad_enabled):
        gv.vjp(func, gv.ones(3, device=device), gv.ones(3, device=device))
        assert gv.is_grad_enabled() is grad_enabled
    assert seen == [True]


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom("inside func"), ValueError("bad"), KeyError("k")],
                         ids=["custom", "ValueError", "KeyError"])
@pytest.mark.parametrize("grad_enabled", [True, False], ids=["enabled", "no_grad"])
def test_error_in_func_propagates_and_restores_grad_mode(exc, grad_enabled, device):
    def func(x):
        raise exc

    with gv.set_grad_enabled(grad_enabled):
        with pytest.raises(type(exc)) as info:
            gv.vjp(func, gv.ones(3, device=device), gv.ones(3, device=device))
        assert info.value is exc
        assert gv.is_grad_enabled() is grad_enabled
    assert gv.is_grad_enabled()


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["enabled", "no_grad"])
def test_vjp_error_restores_grad_mode(grad_enabled, device):
    with gv.set_grad_enabled(grad_enabled):
        with pytest.raises(RuntimeError):
            gv.vjp(lambda x: x * 2, gv.ones(3, device=device), gv.ones(4, device=device))
        with pytest.raises(RuntimeError):
            gv.vjp(lambda x: x * 2, gv.ones(3, device=device), strict=True)
        with pytest.raises(RuntimeError):
            gv.vjp(lambda x: x.detach(), gv.ones(3, device=device), gv.ones(3, device=device),
                   strict=True)
        assert gv.is_grad_enabled() is grad_enabled


# ----- dtypes --------------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype, v_dtype", [("float32", "float32"), ("float64", "float64"),
                                              ("float32", "float64"), ("float64", "float32")])
def test_dtypes(x_dtype, v_dtype, device, rng):
    x, y, v = sample(rng, (2, 3)), sample(rng, (2, 3)), sample(rng, (2,))

    def program(L):
        inputs = (L.t(x, dtype=getattr(L.m, x_dtype)), L.t(y, dtype=getattr(L.m, x_dtype)))
        return L.vjp(lambda x, y: (x * y.exp()).sum(dim=1), inputs,
                     L.t(v, dtype=getattr(L.m, v_dtype)))

    got, want = both(program, device)
    assert dtype_name(got[1][0]) == dtype_name(got[1][1]) == x_dtype
    assert_matches(got, want, rtol=1e-5 if "float32" in (x_dtype, v_dtype) else RTOL, atol=1e-6)


def test_mixed_input_dtypes(device, rng):
    x, y, v = sample(rng, (3,)), sample(rng, (3,)), sample(rng, (3,))

    def program(L):
        inputs = (L.t(x, dtype=L.m.float32), L.t(y, dtype=L.m.float64))
        return L.vjp(lambda x, y: x * y, inputs, L.t(v))

    got, want = both(program, device)
    assert_matches(got, want, rtol=1e-5, atol=1e-6)


# ----- broadcasting --------------------------------------------------------------------------
BROADCAST = {
    "add": lambda m, x, y: x + y,
    "mul": lambda m, x, y: x * y * x,
    "div": lambda m, x, y: m.sin(x) / (y * y + 1),
    "where": lambda m, x, y: m.where(x > y, x, y * y),
    "maximum": lambda m, x, y: m.maximum(x, y),
}


@pytest.mark.parametrize("shapes", [((3, 1), (4,)), ((1, 4), (3, 1)), ((), (3, 4)),
                                    ((2, 1, 4), (3, 1))],
                         ids=lambda s: "x".join(str(d) for d in s[0]) + "-"
                         + "x".join(str(d) for d in s[1]))
@pytest.mark.parametrize("name", BROADCAST)
def test_broadcasting(name, shapes, device, rng):
    f = BROADCAST[name]
    x, y = sample(rng, shapes[0]), sample(rng, shapes[1])
    v = sample(rng, np.broadcast_shapes(*shapes))
    got, want = both(lambda L: L.vjp(lambda a, b: f(L.m, a, b), (L.t(x), L.t(y)), L.t(v)),
                     device)
    assert_same_result(got, want)
    assert got[1][0].shape == shapes[0] and got[1][1].shape == shapes[1]


# ----- many ops, against torch in float64 (the oracle of issue #2) ---------------------------
CASES = {
    "sin": lambda m, x: m.sin(x),
    "cos": lambda m, x: x.cos(),
    "tanh": lambda m, x: m.tanh(x),
    "sigmoid": lambda m, x: m.sigmoid(x),
    "relu": lambda m, x: m.relu(x),
    "pow": lambda m, x: x ** 3,
    "pow-frac": lambda m, x: m.pow(m.abs(x) + 0.5, 2.5),
    "pow-tensor": lambda m, x: m.pow(m.abs(x) + 0.5, m.cos(x)),
    "rpow": lambda m, x: 2.0 ** x,
    "div": lambda m, x: x / (x * x + 1),
    "rdiv": lambda m, x: 1.5 / (x * x + 1),
    "sqrt": lambda m, x: m.sqrt(x * x + 1),
    "log": lambda m, x: m.log(m.abs(x)),
    "abs": lambda m, x: m.abs(x),
    "clamp": lambda m, x: m.clamp(x, min=-0.5, max=0.5),
    "clamp-min": lambda m, x: x.clamp(min=0.25),
    "clamp-max": lambda m, x: m.clamp(x, max=-0.5),
    "where": lambda m, x: m.where(x > 0, m.sin(x), x * x),
    "maximum": lambda m, x: m.maximum(x, m.cos(x)),
    "minimum": lambda m, x: m.minimum(x, m.cos(x)),
    "matmul": lambda m, x: x @ x.t(),
    "matmul-fn": lambda m, x: m.matmul(m.sin(x), x.transpose(0, 1)),
    "matmul-vec": lambda m, x: x @ x[0],
    "sum-dim": lambda m, x: x.sum(dim=1),
    "sum-keepdim": lambda m, x: m.sum(x * x, dim=1, keepdim=True),
    "sum-neg-dim": lambda m, x: x.sum(dim=-2),
    "sum-dims": lambda m, x: (x * x).reshape(3, 2, 2).sum(dim=(0, 2)),
    "sum-all": lambda m, x: (x * x).sum(),
    "mean-dim": lambda m, x: x.mean(dim=0),
    "mean-keepdim": lambda m, x: m.mean(x * x, dim=-1, keepdim=True),
    "mean-all": lambda m, x: m.sin(x).mean(),
    "reshape": lambda m, x: m.sin(x).reshape(2, 6),
    "reshape-neg": lambda m, x: x.reshape(-1, 3) * 2,
    "transpose": lambda m, x: m.transpose(x * x, 0, 1),
    "permute": lambda m, x: x.reshape(3, 2, 2).permute(2, 0, 1),
    "unsqueeze": lambda m, x: x.unsqueeze(1) * x.unsqueeze(0),
    "squeeze": lambda m, x: x[:1].squeeze(0),
    "squeeze-dim": lambda m, x: m.squeeze(m.sin(x).unsqueeze(-1), -1),
    "expand": lambda m, x: x[:, :1].expand(3, 5),
    "expand-neg": lambda m, x: x.unsqueeze(0).expand(2, -1, -1) * x,
    "slice": lambda m, x: x[1:, ::2],
    "slice-neg": lambda m, x: x[-1, 1:3] * x[0, :2],
    "none-ellipsis": lambda m, x: x[None, ...],
    "index-int": lambda m, x: x[1] * x[:, -1].sum(),
    "chain": lambda m, x: m.tanh(x @ x.t()).sum(dim=0) * m.sigmoid(x).mean(dim=1),
    "chain-shapes": lambda m, x: (m.exp(x.t()) * x.t()[:, 1:2]).sum(dim=1),
}


@pytest.mark.parametrize("name", CASES)
def test_oracle(name, device, rng):
    f = CASES[name]
    x = sample(rng, (3, 4))
    shape = tuple(f(torch, torch.tensor(x)).shape)
    v = sample(rng, shape)
    got, want = both(lambda L: L.vjp(lambda t: f(L.m, t), L.t(x), L.t(v)), device)
    assert_same_result(got, want)


@pytest.mark.parametrize("name", CASES)
def test_oracle_create_graph(name, device, rng):
    """The vjp differentiated again, w.r.t. the caller's input (zeros where it is constant)."""
    f = CASES[name]
    x = sample(rng, (3, 4))
    shape = tuple(f(torch, torch.tensor(x)).shape)
    v, w = sample(rng, shape), sample(rng, (3, 4))

    def program(L):
        xt = L.t(x, requires_grad=True)
        out, res = L.vjp(lambda t: f(L.m, t), xt, L.t(v), create_graph=True)
        total = (res * L.t(w)).sum() + (out * out).sum()
        return out, res, L.grad(total, xt)[0]

    got, want = both(program, device)
    assert_matches(got, want)


# ----- devices -------------------------------------------------------------------------------
@pytest.mark.gpu
def test_v_on_another_device_is_an_error():
    x = gv.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match="v"):
        gv.vjp(lambda x: x * 2, x, gv.ones(3, device="cpu"))


@pytest.mark.gpu
def test_results_stay_on_the_input_device(rng):
    x, y = sample(rng, (3,)), sample(rng, (2,))
    out, (gx, gy) = gv.vjp(lambda x, y: x.sin() * 2, (gv.tensor(x, device="cuda"),
                                                      gv.tensor(y, device="cuda")),
                           gv.ones(3, dtype=gv.float64, device="cuda"))
    assert out.is_cuda and gx.is_cuda and gy.is_cuda
