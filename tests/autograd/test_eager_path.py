"""The lean eager path: what a first-order sweep does not record, Python scalars that never
promote, and one compute scope per functional call (structure, not timing)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device
from gpuvjp.ops import _registry

torch = pytest.importorskip("torch")


@pytest.fixture
def applied(monkeypatch):
    """The names of the ops run through apply while the test runs, in order."""
    names = []
    real = _registry.apply

    def counting(op, args, params):
        names.append(op.name)
        return real(op, args, params)
    monkeypatch.setattr(_registry, "apply", counting)
    return names


def _x(*shape):
    return gv.tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)


# ----- a cotangent broadcast back is a view, and a first-order sweep records nothing ---------
def test_the_cotangent_of_a_reduced_input_is_a_view_of_v(device, applied):
    x = _x(4, 4).to(device)
    v = gv.tensor([1.0, 2.0, 3.0, 4.0], dtype=gv.float64, device=device)
    out = x.sum(dim=1)
    del applied[:]
    (g,) = gv.autograd.grad(out, x, v)
    assert applied == []                                   # keep and expand ran as views
    assert g.grad_fn is None and not g.requires_grad
    data = g._array()
    assert data.strides[1] == 0                            # broadcast, not materialised
    assert _ptr(data) == _ptr(v._array())                  # v's own memory
    np.testing.assert_array_equal(g.cpu().numpy(), np.repeat([[1.0], [2], [3], [4]], 4, 1))


@pytest.mark.parametrize("dim", [1, (0, 2), (-1,), (0, 1, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_the_cotangent_of_a_sum_over_any_dims_is_one_view_of_v(dim, keepdim, device, applied):
    a = np.random.default_rng(2).standard_normal((2, 3, 4))
    x = gv.tensor(a, requires_grad=True).to(device)
    out = x.sum(dim=dim, keepdim=keepdim)
    v = gv.tensor(np.arange(1.0, 1.0 + out.numel()).reshape(out.shape), device=device)
    del applied[:]
    (g,) = gv.autograd.grad(out, x, v)
    assert applied == []                                   # no reshape, no expand: one view
    assert _ptr(g._array()) == _ptr(v._array())
    t = torch.tensor(a, requires_grad=True)
    (want,) = torch.autograd.grad(t.sum(dim=dim, keepdim=keepdim), t, torch.tensor(v.numpy()))
    np.testing.assert_array_equal(g.cpu().numpy(), want.numpy())


def _ptr(a):
    """The address of an array's first element (NumPy or CuPy)."""
    return a.data.ptr if hasattr(a.data, "ptr") else a.__array_interface__["data"][0]


def test_the_cotangent_of_a_broadcast_operand_records_no_node(applied):
    x, y = _x(4, 1), _x(1, 4)
    out = x * y                                            # both broadcast to (4, 4)
    del applied[:]
    gx, gy = gv.autograd.grad(out, (x, y), gv.ones(4, 4))
    assert "expand" not in applied and "reshape" not in applied
    assert applied.count("mul") == 2 and applied.count("sum") == 2
    assert gx.shape == (4, 1) and gy.shape == (1, 4)
    assert gx.grad_fn is None and gy.grad_fn is None


def test_under_create_graph_the_broadcast_back_is_recorded():
    x = _x(4, 4)
    v = gv.tensor([1.0, 2.0, 3.0, 4.0], dtype=gv.float64, requires_grad=True)
    (g,) = gv.autograd.grad((x.exp()).sum(dim=1), x, v, create_graph=True)
    assert g.grad_fn is not None
    # the recorded broadcast carries the gradient on to v: d<g, 1>/dv = row sums of exp(x)
    (gv_,) = gv.autograd.grad(g.sum(), v)
    np.testing.assert_allclose(gv_.numpy(), np.exp(x.detach().numpy()).sum(1), rtol=1e-12)


def test_plain_views_under_no_grad_and_recorded_ones_with_grad(applied):
    x = _x(3, 1)
    with gv.no_grad():
        del applied[:]
        e = x.expand(3, 4)
        r = x.reshape(3)
    assert applied == [] and e.grad_fn is None and r.grad_fn is None
    assert e._array().strides[1] == 0
    e = x.expand(3, 4)
    assert applied == ["expand"] and e.grad_fn is not None


def test_a_batched_cotangent_still_goes_through_the_ops():
    # vectorized jacobian of a reduction: the broadcast back carries the batch dim
    x = gv.tensor(np.arange(6.0).reshape(2, 3))
    jac = gv.autograd.functional.jacobian(lambda t: t.exp().sum(dim=1), x, vectorize=True)
    want = torch.autograd.functional.jacobian(lambda t: t.exp().sum(dim=1),
                                              torch.arange(6.0, dtype=torch.float64).reshape(2, 3),
                                              vectorize=True)
    np.testing.assert_allclose(jac.numpy(), want.numpy(), rtol=1e-12)


def test_hessian_through_broadcasts_matches_torch():
    a = np.random.default_rng(1).standard_normal((3, 1))
    f = lambda m, t: (t.expand(3, 4).exp() * t).sum()               # noqa: E731
    got = gv.autograd.functional.hessian(lambda t: f(gv, t), gv.tensor(a))
    want = torch.autograd.functional.hessian(lambda t: f(torch, t), torch.tensor(a))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)


# ----- Python scalars: weak, no dtype computed, PyTorch's result --------------------------
@pytest.mark.parametrize("dtype, scalar", [
    ("float32", 2), ("float32", 2.5), ("float32", True), ("float16", 3.0),
    ("int32", 2), ("int32", 2.5), ("int64", True), ("bool", 1), ("bool", 1.5),
    ("bool", False)])
@pytest.mark.parametrize("op", ["mul", "add", "rsub", "div"])
def test_python_scalars_do_not_widen(dtype, scalar, op):
    fns = {"mul": lambda t, s: t * s, "add": lambda t, s: s + t, "rsub": lambda t, s: s - t,
           "div": lambda t, s: t / s}
    a = np.array([1, 0, 1])
    tt = torch.tensor(a).to(getattr(torch, dtype))
    try:
        want = fns[op](tt, scalar)
    except RuntimeError:
        return                                             # e.g. bool - bool: torch refuses
    got = fns[op](gv.tensor(a).to(getattr(gv, dtype)), scalar)
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    np.testing.assert_allclose(got.numpy().astype(float), want.numpy().astype(float))


def test_a_scalar_leaves_the_gradient_dtype_alone():
    x = gv.tensor([1.0, 2.0], dtype=gv.float32, requires_grad=True)
    _, g = gv.autograd.functional.vjp(lambda t: 2 * t + 3.5, x, gv.ones(2, dtype=gv.float32))
    assert g.dtype is gv.float32
    np.testing.assert_array_equal(g.numpy(), [2.0, 2.0])


def test_promoted_inputs_get_their_gradient_cast_back():
    x = gv.tensor([1.0, 2.0], dtype=gv.float32)
    y = gv.tensor([3.0, 4.0], dtype=gv.float64)
    _, (gx, gy) = gv.autograd.functional.vjp(lambda a, b: a * b, (x, y), gv.ones(2))
    assert gx.dtype is gv.float32 and gy.dtype is gv.float64
    np.testing.assert_array_equal(gx.numpy(), [3.0, 4.0])


# ----- one compute scope per functional call ------------------------------------------------
def test_one_error_state_per_vjp_call(monkeypatch):
    entered, scopes = [], []
    real, real_enter = np.errstate, _device.enter

    def counting(**kw):
        entered.append(kw)
        return real(**kw)

    def counting_enter(dev):
        state = real_enter(dev)
        if state is not None:                   # a scope entered, not one already in
            scopes.append(dev)
        return state
    monkeypatch.setattr(np, "errstate", counting)
    monkeypatch.setattr(_device, "enter", counting_enter)
    _device._QUIET.clear()                      # the quiet state is built once, here
    x = gv.tensor(np.linspace(0.5, 2.0, 12).reshape(3, 4))
    for _ in range(3):
        gv.autograd.functional.vjp(lambda t: (t.exp() * 2.0 + t.log()).sum(dim=1), x,
                                   gv.ones(3))
    assert scopes == [x.device] * 3             # one scope per call, none per op
    # NumPy 2: errstate once per process (the quiet state is cached); NumPy 1: once a call
    assert len(entered) == (1 if _device._ERR is not None else 3)


def test_a_scope_that_fails_to_open_leaves_grad_mode_alone(monkeypatch):
    x = _x(3)
    y = (x.exp() * x).sum()

    def broken(dev):
        raise RuntimeError("device unavailable")
    monkeypatch.setattr(_device, "enter", broken)
    with pytest.raises(RuntimeError, match="device unavailable"):
        gv.autograd.grad(y, x)
    monkeypatch.undo()
    assert gv.is_grad_enabled()
    assert (x * 2).requires_grad


def test_error_state_is_the_callers_outside_a_call():
    with np.errstate(divide="raise"):
        gv.autograd.functional.vjp(lambda t: t.log(), gv.tensor([0.0, 1.0]), gv.ones(2))
        with pytest.raises(FloatingPointError):
            np.log(np.zeros(1))
    with np.errstate(divide="warn"), warnings.catch_warnings():
        warnings.simplefilter("error")
        gv.autograd.functional.vjp(lambda t: t.log(), gv.tensor([0.0, 1.0]), gv.ones(2))
        with pytest.raises(RuntimeWarning):
            np.log(np.zeros(1))


def test_nan_and_inf_propagate_silently_inside_and_outside_a_call():
    x = gv.tensor([-1.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, g = gv.autograd.functional.vjp(lambda t: t.log(), x, gv.ones(3))
        assert np.isnan(out.numpy()[0]) and np.isinf(g.numpy()[1])
        assert np.isinf((x / 0.0).numpy()[2])              # one op outside a call
    assert _device._CURRENT.dev is None                    # the scope was left


def test_nested_functionals_share_the_scope():
    x = gv.tensor([0.5, 1.5], dtype=gv.float64)
    h = gv.autograd.functional.hessian(lambda t: (t.exp() * t).sum(), x)
    th = torch.autograd.functional.hessian(lambda t: (t.exp() * t).sum(),
                                           torch.tensor([0.5, 1.5], dtype=torch.float64))
    np.testing.assert_allclose(h.numpy(), th.numpy(), rtol=1e-12)
    assert _device._CURRENT.dev is None


def test_a_node_that_saved_nothing_sweeps_three_times():
    # sum and expand keep only their inputs' metadata after a sweep: PyTorch lets such a
    # graph be swept again, and the metadata of a metadata survives another release
    x = _x(3, 1)
    y = x.expand(3, 4).sum()
    for _ in range(3):
        y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((3, 1), 12.0))


def test_an_error_inside_a_call_leaves_the_callers_error_state():
    def fails(t):
        t.log()
        raise ValueError("from func")
    with np.errstate(divide="raise"):
        with pytest.raises(ValueError, match="from func"):
            gv.autograd.functional.vjp(fails, gv.tensor([0.0, 1.0]), gv.ones(2))
        with pytest.raises(FloatingPointError):
            np.log(np.zeros(1))
    assert _device._CURRENT.dev is None


# ----- sum on NumPy inside a scope: the op's np_fn, with torch's accumulation dtypes -------
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("dim, keepdim", [(1, False), (-1, True), ((0, 1), False), (None, False)])
def test_sum_inside_a_scope_matches_torch(dtype, dim, keepdim):
    a = (np.arange(12).reshape(3, 4) % 5 - 2).astype(dtype)
    want = torch.from_numpy(a).sum(*(() if dim is None else (dim,)), keepdim=keepdim) \
        if dim is not None else torch.from_numpy(a).sum()
    with _device.scope(_device.CPU):
        got = gv.tensor(a).sum(dim=dim, keepdim=keepdim) if dim is not None else \
            gv.tensor(a).sum()
    assert got.dtype.name == str(want.dtype).replace("torch.", "")
    assert got.shape == tuple(want.shape)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


# ----- how much Python one tiny vjp runs (structure: counted, not timed) -------------------
def _gpuvjp_calls(fn):
    """The number of Python function calls in the gpuvjp package while fn() runs."""
    import os
    import sys
    root = os.path.dirname(os.path.abspath(gv.__file__))
    calls = []

    def prof(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(root):
            calls.append(frame.f_code.co_name)
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("name, func, shapes, most", [
    ("identity", lambda t: t, [(2,)], 15),
    ("exp_reducer", lambda t: t.exp().sum(dim=1), [(4, 4)], 41),
    ("adder", lambda a, b: 2 * a + 3 * b, [(2,), (2,)], 46),
])
def test_a_tiny_vjp_runs_few_python_calls(name, func, shapes, most):
    # W4 of benchmarks/bench_percall_cpu.md: each op is one apply, each node one rule, the
    # functional's fixed cost a handful of calls; a new layer on this path shows up here
    rng = np.random.default_rng(0)
    inputs = tuple(gv.tensor(rng.standard_normal(s)) for s in shapes)
    v = gv.tensor(rng.standard_normal(func(*inputs).shape))
    gv.autograd.functional.vjp(func, inputs, v)                 # warm: imports done
    calls = _gpuvjp_calls(lambda: gv.autograd.functional.vjp(func, inputs, v))
    assert len(calls) <= most, calls
    assert calls.count("apply") == {"identity": 0, "exp_reducer": 3, "adder": 5}[name]
