"""Nothing lost or changed: the caller's tensors (their bytes, grad, requires_grad, leaf-ness) are
never modified by any member of the functional family, and a failed call leaves global state (grad
mode, default device, default dtype, forward-mode levels) as it was and the next call right."""

from __future__ import annotations

import numpy as np
import pytest

import gpuvjp as gv

from ._common import FAMILY, Lib, functional, host

try:
    from gpuvjp.autograd import _forward
except ImportError:  # forward mode not landed: nothing of its state to check
    _forward = None

SCALAR = ("hessian", "vhp", "hvp")


def vector_func(a, b):
    return a.exp() * b.sin() + (a @ b.t()).sum(dim=1, keepdim=True)


def scalar_func(a, b):
    return (a.exp() * b.sin()).sum() + (a * a * b).sum()


def make_inputs(device, requires_grad):
    """Two (2, 3) float64 inputs, the second a non-contiguous view of a NumPy array on cpu."""
    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, (2, 3))
    b_base = rng.uniform(-1, 1, (3, 2))
    if device == "cpu":
        x = gv.from_numpy(a)                         # shares a's memory: any write shows there
        y = gv.from_numpy(b_base).t()                # a transposed view
    else:
        x, y = gv.tensor(a, device=device), gv.tensor(b_base, device=device).t()
    if requires_grad:
        x.requires_grad_()
    return (x, y), (a, b_base)


def snapshot(t):
    return (host(t).tobytes(), tuple(t.shape), t.dtype, t.device, t.requires_grad, t.is_leaf,
            t.grad is None, t.grad_fn is None)


def call(name, inputs, v, **kw):
    fn = functional(name)
    func = scalar_func if name in SCALAR else vector_func
    if name in ("jacobian", "hessian"):
        return fn(func, inputs, **kw)
    return fn(func, inputs, v, **kw)


def good_v(name, inputs, device):
    if name in ("jacobian", "hessian"):
        return None
    if name == "vjp":
        return gv.ones((2, 3), dtype=gv.float64, device=device)
    return tuple(gv.ones(t.shape, dtype=t.dtype, device=device) for t in inputs)


OPTIONS = {
    "default": {},
    "create_graph": {"create_graph": True},
    "strict": {"strict": True},
    "vectorize": {"vectorize": True},
    "forward-mode": {"vectorize": True, "strategy": "forward-mode"},
}


def _applies(name, option):
    kw = OPTIONS[option]
    if "strategy" in kw:
        return name == "jacobian"
    return "vectorize" not in kw or name in ("jacobian", "hessian")


@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "requires_grad"])
@pytest.mark.parametrize("name, option", [(n, o) for n in FAMILY for o in OPTIONS
                                          if _applies(n, o)])
def test_caller_tensors_unchanged(name, option, requires_grad, device):
    kw = OPTIONS[option]
    inputs, arrays = make_inputs(device, requires_grad)
    v = good_v(name, inputs, device)
    before_arrays = [a.tobytes() for a in arrays]
    tensors = list(inputs) + ([] if v is None else list(v if isinstance(v, tuple) else (v,)))
    before = [snapshot(t) for t in tensors]
    call(name, inputs, v, **kw)
    assert [snapshot(t) for t in tensors] == before
    assert [a.tobytes() for a in arrays] == before_arrays


# ----- a failed call leaves global state as it was ----------------------------------------------
class Boom(Exception):
    pass


def _raise(*a):
    raise Boom()


FAILURES = {
    # name -> (call that must fail, given (member name, inputs, device)), expected type
    "func-raises": (lambda n, inp, d: _call_with(n, _raise, inp, good_v(n, inp, d)), Boom),
    "func-returns-list": (lambda n, inp, d: _call_with(n, lambda a, b: [a], inp,
                                                       good_v(n, inp, d)), TypeError),
    "op-error-in-func": (lambda n, inp, d: _call_with(n, lambda a, b: a + b.t()[:1, :2], inp,
                                                      good_v(n, inp, d)), RuntimeError),
    "dim-error-in-func": (lambda n, inp, d: _call_with(n, lambda a, b: a.sum(dim=5), inp,
                                                       good_v(n, inp, d)), IndexError),
    "v-wrong-shape": (lambda n, inp, d: call(n, inp, tuple(gv.ones(7, dtype=gv.float64,
                                                                   device=d) for _ in inp)),
                      RuntimeError),
    "v-wrong-type": (lambda n, inp, d: call(n, inp, [1.0, 2.0]), TypeError),
    "strict-violation": (lambda n, inp, d: _call_with(n, lambda a, b: (a * 0).detach().sum(),
                                                      inp, good_v(n, inp, d), strict=True),
                         RuntimeError),
    "integer-input": (lambda n, inp, d: call(n, (inp[0], gv.ones(3, 2, dtype=gv.int64,
                                                                 device=d)),
                                             good_v(n, inp, d)), RuntimeError),
}


def _call_with(name, func, inputs, v, **kw):
    fn = functional(name)
    if name in ("jacobian", "hessian"):
        return fn(func, inputs, **kw)
    return fn(func, inputs, v, **kw)


def _state():
    return (gv.is_grad_enabled(), gv.get_default_device(), gv.get_default_dtype(),
            _forward.levels() if _forward is not None else None)


@pytest.fixture
def default_dtype_float64():
    before = gv.get_default_dtype()
    gv.set_default_dtype(gv.float64)
    yield
    gv.set_default_dtype(before)


@pytest.fixture
def default_device(device):
    """The default device set to the test's device (cuda: a non-default value to keep)."""
    before = gv.get_default_device()
    gv.set_default_device(device)
    yield device
    gv.set_default_device(before)


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["enabled", "no_grad"])
@pytest.mark.parametrize("name, failure", [
    (n, f) for n in FAMILY for f in FAILURES
    if not (f.startswith("v-") and n in ("jacobian", "hessian"))])       # these take no v
def test_failed_call_leaves_state(name, failure, grad_enabled, default_device,
                                  default_dtype_float64):
    device = default_device
    make_fail, expected = FAILURES[failure]
    inputs, _ = make_inputs(device, False)
    snaps = [snapshot(t) for t in inputs]
    want = call(name, inputs, good_v(name, inputs, device))
    with gv.set_grad_enabled(grad_enabled):
        before = _state()
        with pytest.raises(expected):
            make_fail(name, inputs, device)
        assert _state() == before
    assert [snapshot(t) for t in inputs] == snaps
    got = call(name, inputs, good_v(name, inputs, device))      # the next call is right
    _assert_same(got, want)


def _assert_same(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same(g, w)
        return
    np.testing.assert_array_equal(host(got), host(want))


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["enabled", "no_grad"])
@pytest.mark.parametrize("name", FAMILY)
def test_func_sees_grad_mode_as_torch(name, grad_enabled, device):
    """Inside func, grad mode and the inputs' requires_grad are what PyTorch shows (enabled and
    True in every member), whatever the caller's mode; the caller's mode is back afterwards."""
    from ._common import torch
    functional(name)

    def program(L):
        seen = []

        def func(a, b):
            seen.append((L.m.is_grad_enabled(), a.requires_grad, b.requires_grad))
            return scalar_func(a, b) if name in SCALAR else vector_func(a, b)

        rng = np.random.default_rng(3)
        a, b = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (3, 2))
        inputs = (L.t(a), L.t(b).t())
        v = None
        if name == "vjp":
            v = L.t(np.ones((2, 3)))
        elif name not in ("jacobian", "hessian"):
            v = tuple(L.m.ones_like(t) for t in inputs)
        with L.m.set_grad_enabled(grad_enabled):
            L.call(name, func, inputs, v)
            assert L.m.is_grad_enabled() is grad_enabled
        return sorted(set(seen))

    got = program(Lib(gv, device))
    want = program(Lib(torch))
    assert got == want


@pytest.mark.parametrize("name", ["vjp", "jvp", "jacobian"])
def test_func_may_differentiate_inside(name, device):
    """Forward-over-reverse: func takes a gradient itself (jvp of a gradient is an hvp), which
    needs grad mode enabled inside func, as PyTorch has it."""
    from ._common import torch

    def program(L):
        x = L.t(np.array([0.5, -1.0, 2.0]))

        def grad_of_cube(a):
            return L.m.autograd.grad((a ** 3).sum(), a, create_graph=True)[0]

        v = None if name == "jacobian" else L.m.ones_like(x)
        res = L.call(name, grad_of_cube, x, v)
        return [host(t) for t in (res if isinstance(res, tuple) else (res,))]

    got, want = program(Lib(gv, device)), program(Lib(torch))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_failed_call_inside_dual_level_keeps_the_level():
    """A failed call while a forward-mode level is open leaves that level open, and only it."""
    try:
        from gpuvjp.autograd import forward_ad as fwd
    except ImportError:
        pytest.skip("gpuvjp.autograd.forward_ad does not exist yet")
    with fwd.dual_level():
        level = _forward.levels()
        for name in FAMILY:
            if getattr(gv.autograd.functional, name, None) is None:
                continue
            inputs, _ = make_inputs("cpu", False)
            with pytest.raises(Boom):
                _call_with(name, _raise, inputs, good_v(name, inputs, "cpu"))
            assert _forward.levels() == level
    assert _forward.levels() == 0


def test_state_program_matches_torch():
    """The program the tests above run is right: torch computes the same vjp."""
    from ._common import torch
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (3, 2))
    L = Lib(torch)
    got = gv.vjp(vector_func, (gv.tensor(a), gv.tensor(b).t()), gv.ones(2, 3, dtype=gv.float64))
    want = L.F.vjp(vector_func, (torch.tensor(a), torch.tensor(b).t()),
                   torch.ones(2, 3, dtype=torch.float64))
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(host(g), host(w), rtol=1e-12)
