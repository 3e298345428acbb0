"""PyTorch behaviours of the functional family against torch: grad mode under no_grad, no
reference cycles (gc off), gradcheck's in-place perturbation, backward(create_graph=True)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import gpuvjp as gv

torch = pytest.importorskip("torch")

SEEN = []                 # weak references to every tensor func was called with


def g(a):
    SEEN.append(weakref.ref(a))
    return a.exp() * a.tanh()


def f(a):
    SEEN.append(weakref.ref(a))
    return (a.exp() * a.tanh()).sum()


def _functionals(m):
    """name -> call(x, v) of every functional and variant, under module m."""
    F = m.autograd.functional
    calls = {}
    for cg in (False, True):
        calls.update({
            f"vjp-cg{cg}": lambda x, v, cg=cg: F.vjp(g, x, v, create_graph=cg),
            f"jvp-cg{cg}": lambda x, v, cg=cg: F.jvp(g, x, v, create_graph=cg),
            f"jvp-strict-cg{cg}": lambda x, v, cg=cg: F.jvp(g, x, v, create_graph=cg,
                                                          strict=True),
            f"vhp-cg{cg}": lambda x, v, cg=cg: F.vhp(f, x, v, create_graph=cg),
            f"hvp-cg{cg}": lambda x, v, cg=cg: F.hvp(f, x, v, create_graph=cg),
        })
        for vec in (False, True):
            calls.update({
                f"jacobian-cg{cg}-vec{vec}":
                    lambda x, v, cg=cg, vec=vec: F.jacobian(g, x, create_graph=cg,
                                                            vectorize=vec),
                f"hessian-cg{cg}-vec{vec}":
                    lambda x, v, cg=cg, vec=vec: F.hessian(f, x, create_graph=cg,
                                                           vectorize=vec),
            })
    calls.update({
        "jacobian-forward": lambda x, v: F.jacobian(g, x, vectorize=True,
                                                    strategy="forward-mode"),
        "hessian-forward": lambda x, v: F.hessian(f, x, vectorize=True,
                                                  outer_jacobian_strategy="forward-mode"),
    })
    if m is gv:
        calls.update({
            "jacobian-auto": lambda x, v: F.jacobian(g, x, vectorize=True, strategy="auto"),
            "jacobian-chunk": lambda x, v: F.jacobian(g, x, vectorize=True, chunk_size=2),
            "jacobian-forward-chunk": lambda x, v: F.jacobian(
                g, x, vectorize=True, strategy="forward-mode", chunk_size="auto"),
        })
    return calls


NAMES = sorted(_functionals(gv))


def _inputs(m, x_grad, v_grad=False, device="cpu"):
    kw = {"device": device} if m is gv else {}
    x = m.tensor([0.5, 1.0, 1.5], dtype=m.float64, requires_grad=x_grad, **kw)
    v = m.tensor([1.0, -2.0, 0.5], dtype=m.float64, requires_grad=v_grad, **kw)
    return x, v


def _flat(out):
    if isinstance(out, tuple):
        return [t for o in out for t in _flat(o)]
    return [out]


# ----- 1. grad mode: results under no_grad ------------------------------------------------------
@pytest.mark.parametrize("v_grad", [False, True], ids=["v", "v-grad"])
@pytest.mark.parametrize("x_grad", [False, True], ids=["x", "x-grad"])
@pytest.mark.parametrize("name", sorted(n for n in NAMES if n in _functionals(torch)
                                         and n != "hessian-forward"))
def test_graphs_under_no_grad_match_torch(name, x_grad, v_grad):
    def flags(m):
        with m.no_grad():
            out = _functionals(m)[name](*_inputs(m, x_grad, v_grad))
            assert not m.is_grad_enabled()
        return [(t.requires_grad, t.grad_fn is not None) for t in _flat(out)]
    assert flags(gv) == flags(torch)


@pytest.mark.parametrize("no_grad", [False, True])
def test_forward_mode_hessian_has_no_graph_without_create_graph(no_grad):
    """A documented difference: torch's forward-over-reverse hessian hands back a result with a
    graph (grad mode on) or one that requires grad with no grad_fn (under no_grad), although
    create_graph=False; gpuvjp's has none either way."""
    x, _ = _inputs(gv, False)
    with gv.no_grad() if no_grad else gv.enable_grad():
        h = _functionals(gv)["hessian-forward"](x, None)
    assert not h.requires_grad and h.grad_fn is None
    tx, _ = _inputs(torch, False)
    with torch.no_grad() if no_grad else torch.enable_grad():
        th = _functionals(torch)["hessian-forward"](tx, None)
    assert th.requires_grad
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), rtol=1e-12)


def test_jvp_create_graph_under_no_grad_is_differentiable():
    """The issue's case: both results carry a graph, and differentiate as torch's."""
    def run(m):
        x, v = _inputs(m, True, True)
        with m.no_grad():
            out, jv = m.autograd.functional.jvp(lambda a: a.exp() * a.tanh(), x, v,
                                                create_graph=True)
        assert out.grad_fn is not None and jv.grad_fn is not None
        return [t.numpy() for t in m.autograd.grad(jv.sum(), (x, v))]
    for got, want in zip(run(gv), run(torch)):
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ----- 2. no reference cycles ---------------------------------------------------------------------
def _alive_after(call):
    """Weak references (to func's inputs, to the results) still alive once the results are
    dropped, with the cyclic collector off: anything alive sits in a reference cycle."""
    call()                                     # warm: caches filled once are not leaks
    gc.disable()
    try:
        SEEN.clear()
        out = call()
        refs = [weakref.ref(t) for t in _flat(out)] + list(SEEN)
        assert SEEN
        del out
        return sum(r() is not None for r in refs)
    finally:
        gc.enable()
        SEEN.clear()


@pytest.mark.parametrize("x_grad", [False, True], ids=["x", "x-grad"])
@pytest.mark.parametrize("name", NAMES)
def test_functionals_leave_no_cycle(name, x_grad, device):
    x, v = _inputs(gv, x_grad, device=device)
    assert _alive_after(lambda: _functionals(gv)[name](x, v)) == 0


def test_user_dual_level_leaves_no_cycle():
    from gpuvjp.autograd import forward_ad as fwad

    def call():
        x = gv.tensor([0.5, 1.0], dtype=gv.float64, requires_grad=True)
        with fwad.dual_level():
            d = fwad.make_dual(x, gv.ones(2, dtype=gv.float64))
            out = g(d)
            t = fwad.unpack_dual(out).tangent
        return out, t
    assert _alive_after(call) == 0


def _function(x):
    """(x * Square(x)).sum(), Square a custom Function that saves its input."""
    m = gv if isinstance(x, gv.Tensor) else torch

    class Square(m.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return 2 * g * a
    return (x * Square.apply(x)).sum()


BACKWARD = {
    "function": _function,
    "pow": lambda x: (x ** 3).sum(), "mul": lambda x: (x * x).sum(),
    "exp-tanh": lambda x: (x.exp() * x.tanh()).sum(), "matmul": lambda x: (x @ x).sum(),
    "linear": lambda x: (2 * x).sum(), "reuse": lambda x: (x * x.sin() + x).sum(),
}


@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_backward_create_graph_leaves_no_cycle(name, device):
    """Unlike torch (leaf -> .grad -> graph -> leaf), the gradient's graph holds the leaf
    weakly: dropping the leaf frees it, its gradient and both graphs."""
    gc.disable()
    try:
        x = gv.tensor([[0.5, 1.0], [1.5, -0.5]], dtype=gv.float64, requires_grad=True,
                      device=device)
        y = BACKWARD[name](x)
        y.backward(create_graph=True)
        refs = [weakref.ref(x), weakref.ref(x.grad), weakref.ref(y)]
        del x, y
        assert [r() is None for r in refs] == [True] * 3
    finally:
        gc.enable()


@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_backward_create_graph_higher_orders_match_torch(name):
    """The weakly held leaf changes nothing while it lives: second derivatives, accumulation
    in .grad and a second sweep of the retained graph match torch (values or error type)."""
    def run(m):
        seen = []

        def step(fn):
            try:
                t = fn()
                seen.append(None if t is None else t.detach().numpy().copy())
            except RuntimeError as exc:
                seen.append(type(exc))
        x = m.tensor([[0.5, 1.0], [1.5, -0.5]], dtype=m.float64, requires_grad=True)
        y = BACKWARD[name](x)
        y.backward(create_graph=True)
        first = x.grad
        step(lambda: first)
        step(lambda: m.autograd.grad((first * first).sum(), x, retain_graph=True,
                                     allow_unused=True)[0])
        y.backward(create_graph=True)                       # the retained forward graph
        step(lambda: x.grad)
        step(lambda: (first.sum().backward(), x.grad)[1])   # through .grad's own graph
        return seen
    got, want = run(gv), run(torch)
    assert len(got) == len(want) == 4
    for a, b in zip(got, want):
        if isinstance(b, np.ndarray):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        else:
            assert a == b


# ----- 3. gradcheck perturbs the caller's tensors -------------------------------------------------
def test_gradcheck_closure_reads_the_perturbation():
    for m in (gv, torch):
        x = m.tensor([1.0, 2.0, 3.0], dtype=m.float64, requires_grad=True)
        assert m.autograd.gradcheck(lambda inp: x * 2, (x,))
        assert m.autograd.gradgradcheck(lambda inp: x ** 3, (x,))
        assert m.autograd.gradcheck(lambda inp: (x * inp).sin(), (x,), fast_mode=True)


def test_gradcheck_calls_func_with_the_callers_tensors_and_restores_them():
    def run(m):
        x = m.tensor([0.5, 1.5], dtype=m.float64, requires_grad=True)
        y = m.tensor([2.0], dtype=m.float64, requires_grad=True)
        calls = []

        def func(a, b):
            calls.append((a is x, b is y, a.tolist(), b.tolist()))
            return a.exp() * b
        assert m.autograd.gradcheck(func, (x, y))
        return calls, x.tolist(), y.tolist(), x.requires_grad
    got, want = run(gv), run(torch)
    assert len(got[0]) == len(want[0]) and all(c[:2] == (True, True) for c in got[0])
    # the same points, perhaps in another order
    np.testing.assert_allclose(sorted(a + b for _, _, a, b in got[0]),
                               sorted(a + b for _, _, a, b in want[0]), rtol=0, atol=1e-15)
    assert got[1:] == want[1:] == ([0.5, 1.5], [2.0], True)


def test_gradcheck_restores_the_input_when_func_raises():
    x = gv.tensor([0.5, 1.5], dtype=gv.float64, requires_grad=True)
    data = x._data
    calls = []

    def func(a):
        calls.append(a.tolist())
        if len(calls) > 2:                    # the first perturbed call
            raise ValueError("inside func")
        return a * 2
    with pytest.raises(ValueError, match="inside func"):
        gv.autograd.gradcheck(func, (x,))
    assert x._data is data and x.tolist() == [0.5, 1.5] and calls[2] != [0.5, 1.5]


def test_gradcheck_perturbs_the_tensor_not_its_memory():
    """A documented difference: a detached alias of the input does not see the perturbation in
    gpuvjp (tensors are values); in torch it shares the storage, and the check fails."""
    def check(m):
        x = m.tensor([0.5, 1.5], dtype=m.float64, requires_grad=True)
        alias = x.detach()
        return m.autograd.gradcheck(lambda a: a + 2 * alias, (x,), raise_exception=False)
    assert check(gv) is True and check(torch) is False
