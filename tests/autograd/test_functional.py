"""jvp, jacobian, hessian, vhp, hvp, gradcheck and gradgradcheck against torch: values, return
structures, graph flags, strict mode, errors (type and message), one program for both libraries."""

from __future__ import annotations

import numpy as np
import pytest

import gpuvjp as gv
from tests.conftest import ORACLE_MESSAGES
from gpuvjp.autograd import functional as F
from gpuvjp.autograd.gradcheck import GradcheckError

torch = pytest.importorskip("torch")
TF = torch.autograd.functional

RTOL, ATOL = 1e-6, 1e-12


# ----- helpers: one program, two libraries -------------------------------------------------
class Lib:
    """gpuvjp on `device`, or torch on cpu: `L.m` is the module, `L.f(name)` the functional."""

    def __init__(self, m, device="cpu"):
        self.m, self.device = m, device

    def t(self, a, requires_grad=False):
        if self.m is gv:
            return gv.tensor(a, dtype=gv.float64, device=self.device,
                             requires_grad=requires_grad)
        return torch.tensor(a, dtype=torch.float64, requires_grad=requires_grad)

    def f(self, name):
        return getattr(F if self.m is gv else TF, name)

    def grad(self, *args, **kwargs):
        return self.m.autograd.grad(*args, **kwargs)


def both(program, device):
    return program(Lib(gv, device)), program(Lib(torch))


def outcome(call):
    try:
        return True, call()
    except Exception as e:  # noqa: BLE001  (any error is compared with torch's)
        return False, (type(e), str(e))


def assert_same_outcome(program, device, flags=True):
    """Equal results (values, structure and, with `flags`, graph flags), or the same error type
    and message."""
    ok_want, want = outcome(lambda: program(Lib(torch)))
    ok_got, got = outcome(lambda: program(Lib(gv, device)))
    if not ok_want:
        assert not ok_got, f"torch raised {want}, gpuvjp returned a result"
        assert got == want
        return
    assert ok_got, f"gpuvjp raised {got}, torch returned a result"
    want = lists_to_tuples(want)
    assert_matches(got, want)
    if flags:
        assert graph_flags(got) == graph_flags(want)


def lists_to_tuples(res):
    """NOTE: torch's forward-mode jacobian returns lists where the API promises tuples
    (its _tuple_postprocess unpacks a list of lists); gpuvjp returns tuples throughout."""
    if isinstance(res, (list, tuple)):
        return tuple(lists_to_tuples(r) for r in res)
    return res


def assert_matches(got, want, rtol=RTOL, atol=ATOL):
    """Same structure (Tensor / tuple), shapes, dtypes and values."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple), f"expected a tuple, got {type(got).__name__}"
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_matches(g, w, rtol, atol)
        return
    assert isinstance(got, gv.Tensor), f"expected a Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == tuple(want.shape)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=rtol, atol=atol)


def graph_flags(res):
    if isinstance(res, tuple):
        return tuple(graph_flags(r) for r in res)
    return (res.requires_grad, res.grad_fn is not None)


def assert_same_result(got, want):
    assert_matches(got, want)
    assert graph_flags(got) == graph_flags(want)


def flat(res):
    if isinstance(res, tuple):
        return [t for r in res for t in flat(r)]
    return [res]


def sample(rng, shape, lo=-2.0, hi=2.0):
    """float64 values kept 0.05 away from the kinks at 0 and +-0.5 (relu, abs, clamp)."""
    a = rng.uniform(lo, hi, size=shape)
    for k in (0.0, 0.5, -0.5):
        a = np.where(np.abs(a - k) < 0.05, a + 0.1, a)
    return a


def tensors(L, arrays, as_tuple, requires_grad=False):
    ts = tuple(L.t(a, requires_grad) for a in arrays)
    return ts if as_tuple else ts[0]


# ----- programs: (func, input shapes); a single input may be passed bare or as a 1-tuple -----
FUNCS = {
    "t-t": (lambda m, x: m.tanh(x) * x, [(2, 3)]),
    "t-tup": (lambda m, x: (x.sin(), (x * x).sum(dim=1)), [(2, 3)]),
    "t-scalar": (lambda m, x: (x.exp() / (1 + x * x)).sum(), [(3,)]),
    "tup-t": (lambda m, x, y: (x.exp() * y).sum(dim=0), [(2, 3), (3,)]),
    "tup-tup": (lambda m, x, y: (x @ y, m.sigmoid(y).mean(), x.transpose(0, 1) - 1),
                [(2, 3), (3,)]),
    "unused-input": (lambda m, x, y: (x.cos(), x.sum() * 2), [(3,), (2,)]),
    "scalar-in": (lambda m, x: (x.sin() * x, x.reshape(1).expand(2) ** 2), [()]),
}
IN_FORMS = [(n, as_tuple) for n, (_, shapes) in FUNCS.items()
            for as_tuple in ([False, True] if len(shapes) == 1 else [True])]
IN_IDS = [f"{n}-{'tuple' if t else 'bare'}" for n, t in IN_FORMS]


def program_inputs(rng, name):
    func, shapes = FUNCS[name]
    return func, [sample(rng, s) for s in shapes]


# ----- jvp -----------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["jvp", "_jvp_double_backward"])
@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
@pytest.mark.parametrize("name, as_tuple", IN_FORMS, ids=IN_IDS)
def test_jvp_structures(name, as_tuple, create_graph, impl, device, rng):
    func, xs = program_inputs(rng, name)
    vs = [sample(rng, np.shape(x)) for x in xs]

    def program(L):
        f = L.f("jvp") if L.m is torch else getattr(F, impl)
        return f(lambda *a: func(L.m, *a), tensors(L, xs, as_tuple, create_graph),
                 tensors(L, vs, as_tuple), create_graph=create_graph)

    assert_same_outcome(program, device)


@pytest.mark.parametrize("case", ["scalar", "one-element", "two-elements", "tuple-of-two"])
def test_jvp_v_none(case, device, rng):
    shapes = {"scalar": [()], "one-element": [(1, 1)], "two-elements": [(2,)],
              "tuple-of-two": [(), ()]}[case]
    xs = [sample(rng, s) for s in shapes]

    def program(L):
        return L.f("jvp")(lambda *a: sum(t.exp() for t in a), tensors(L, xs, len(xs) > 1))

    assert_same_outcome(program, device)


@pytest.mark.parametrize("fn", ["jvp", "hvp", "vhp"])
@pytest.mark.parametrize("case", ["short-tuple", "long-tuple", "tuple-for-tensor", "bad-shape",
                                  "bad-shape-in-tuple", "not-a-tensor", "int-in-tuple"])
def test_bad_v(fn, case, device, rng):
    x, y = sample(rng, (3,)), sample(rng, (2,))

    def program(L):
        tx, ty = L.t(x), L.t(y)
        func = lambda a, b=None: (a * a).sum() + (0 if b is None else (b * b).sum())  # noqa: E731
        inputs, v = {
            "short-tuple": ((tx, ty), (tx,)),
            "long-tuple": ((tx, ty), (tx, ty, ty)),
            "tuple-for-tensor": (tx, (tx, tx)),
            "bad-shape": (tx, ty),
            "bad-shape-in-tuple": ((tx, ty), (tx, tx)),
            "not-a-tensor": (tx, 3.0),
            "int-in-tuple": ((tx, ty), (tx, 1)),
        }[case]
        return L.f(fn)(func, inputs, v)

    assert_same_outcome(program, device)


# ----- strict mode and zeros, for every function of the family ----------------------------------
def _linear(m, x, y):
    return 2 * x + y.sum()


STRICT = {
    # name -> (func(m, x, y), functional names to run)
    "independent-input": (lambda m, x, y: (x * x).sin(), "all"),
    "non-differentiable-output": (lambda m, x, y: m.ones(3, dtype=m.float64), "all"),
    "one-output-detached": (lambda m, x, y: ((x * y).sum(), x.detach()), "first-order"),
    "linear": (_linear, "all"),
    "quadratic": (lambda m, x, y: (x * x).sum() + (x * y).sum(), "all"),
    "cubic": (lambda m, x, y: (x ** 3).sum() * y.sum(), "all"),
    "relu": (lambda m, x, y: (m.relu(x) * y).sum(), "all"),
}
SCALAR_ONLY = {"hessian", "vhp", "hvp"}


def _call(L, fn, func, xt, yt, v_x, v_y, kwargs):
    """One functional on the two-input program; v has the shape of whatever fn needs."""
    f = L.f(fn)
    if fn in ("jacobian", "hessian"):
        return f(func, (xt, yt), **kwargs)
    return f(func, (xt, yt), (v_x, v_y), **kwargs)


STRICT_FNS = ["jvp", "jacobian", "hessian", "vhp", "hvp"]


@pytest.mark.parametrize("strict", [False, True], ids=["", "strict"])
@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
@pytest.mark.parametrize("fn", STRICT_FNS)
@pytest.mark.parametrize("name", STRICT)
def test_strict_and_zeros(name, fn, create_graph, strict, device, rng):
    fm, which = STRICT[name]
    if which == "first-order" and fn in SCALAR_ONLY:
        pytest.skip("needs a scalar output")
    x, y, vx, vy = (sample(rng, (3,)) for _ in range(4))

    def program(L):
        func = lambda a, b: fm(L.m, a, b)  # noqa: E731
        return _call(L, fn, func, L.t(x), L.t(y), L.t(vx), L.t(vy),
                     dict(create_graph=create_graph, strict=strict))

    assert_same_outcome(program, device)


@pytest.mark.parametrize("strict", [False, True], ids=["", "strict"])
def test_jvp_output_from_captured_tensor(strict, device, rng):
    """An output that requires grad but does not reach the inputs: the back_trick message."""
    x, w = sample(rng, (3,)), sample(rng, (2,))

    def program(L):
        wt = L.t(w, requires_grad=True)
        return L.f("jvp")(lambda a: (a * 2, wt * 3), L.t(x), L.t(x), strict=strict)

    assert_same_outcome(program, device)


@pytest.mark.parametrize("fn", ["jvp", "jacobian", "hessian", "vhp", "hvp"])
def test_bad_inputs_and_outputs(fn, device, rng):
    x = sample(rng, (3,))
    for program in (
        lambda L: _call(L, fn, lambda a, b: (a * b).sum(), L.t(x), 3, L.t(x), L.t(x), {}),
        lambda L: _call(L, fn, lambda a, b: [a.sum()], L.t(x), L.t(x), L.t(x), L.t(x), {}),
        lambda L: _call(L, fn, lambda a, b: ((a * b).sum(), 2), L.t(x), L.t(x), L.t(x),
                        L.t(x), {}),
    ):
        assert_same_outcome(program, device)


@pytest.mark.parametrize("fn", ["hessian", "vhp", "hvp"])
@pytest.mark.parametrize("case", ["tuple-out", "vector-out", "1tuple-out", "shape-1-out"])
def test_scalar_output_required(fn, case, device, rng):
    x = sample(rng, (3,))
    func = {"tuple-out": lambda a: (a.sum(), a.sum()), "vector-out": lambda a: a * a,
            "1tuple-out": lambda a: ((a * a).sum(),),
            "shape-1-out": lambda a: (a * a).sum().reshape(1, 1)}[case]

    def program(L):
        args = (L.t(x),) if fn == "hessian" else (L.t(x), L.t(x))
        return L.f(fn)(func, *args)

    assert_same_outcome(program, device)


# ----- jacobian --------------------------------------------------------------------------------
MODES = [(False, "reverse-mode"), (True, "reverse-mode"), (True, "forward-mode")]
MODE_IDS = ["rows", "vectorized", "forward"]


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
@pytest.mark.parametrize("vectorize, strategy", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name, as_tuple", IN_FORMS, ids=IN_IDS)
def test_jacobian(name, as_tuple, vectorize, strategy, create_graph, device, rng):
    func, xs = program_inputs(rng, name)
    # NOTE: torch's forward mode returns a result that requires grad when the inputs do
    requires_grad = create_graph and strategy == "reverse-mode"

    def program(L):
        return L.f("jacobian")(lambda *a: func(L.m, *a), tensors(L, xs, as_tuple, requires_grad),
                               create_graph=create_graph, vectorize=vectorize,
                               strategy=strategy)

    assert_same_outcome(program, device)


@pytest.mark.parametrize("name, as_tuple", IN_FORMS, ids=IN_IDS)
def test_jacobian_modes_and_chunks_agree(name, as_tuple, device, rng):
    func, xs = program_inputs(rng, name)
    L = Lib(gv, device)
    f = lambda *a: func(gv, *a)  # noqa: E731
    inputs = tensors(L, xs, as_tuple)
    want = F.jacobian(f, inputs)
    for kwargs in [dict(vectorize=True), dict(vectorize=True, strategy="forward-mode"),
                   dict(strategy="auto"), dict(vectorize=True, strategy="auto"),
                   dict(vectorize=True, chunk_size=1), dict(vectorize=True, chunk_size=2),
                   dict(vectorize=True, chunk_size=1000), dict(vectorize=True, chunk_size="auto"),
                   dict(vectorize=True, strategy="forward-mode", chunk_size=1),
                   dict(vectorize=True, strategy="forward-mode", chunk_size=4),
                   dict(vectorize=True, strategy="forward-mode", chunk_size="auto"),
                   dict(vectorize=True, chunk_size=np.int64(3)), dict(chunk_size=3)]:
        assert_same_gv(F.jacobian(f, inputs, **kwargs), want)


def assert_same_gv(got, want):
    """Two gpuvjp results: same structure, shapes, dtypes, values and graph flags."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same_gv(g, w)
        return
    assert isinstance(got, gv.Tensor)
    assert (got.shape, got.dtype) == (want.shape, want.dtype)
    assert graph_flags(got) == graph_flags(want)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-15)


def test_jacobian_auto_chunk_small_memory(device, rng, monkeypatch):
    """With almost no free memory, "auto" takes one row per sweep and still agrees."""
    x = sample(rng, (4,))
    f = lambda a: (a.exp() * a.sum(), a.sin())  # noqa: E731
    want = F.jacobian(f, gv.tensor(x, device=device))
    monkeypatch.setattr(F, "_free_bytes", lambda dev: 0)
    seen = []
    real = F._batched_vjp
    monkeypatch.setattr(F, "_batched_vjp",
                        lambda o, i, g, c: seen.append(g[0].shape[0]) or real(o, i, g, c))
    got = F.jacobian(f, gv.tensor(x, device=device), vectorize=True, chunk_size="auto")
    assert seen == [1] * 8
    assert_same_gv(got, want)
    assert F._resolve_chunk("auto", 5, 10, gv.device(device)) in range(1, 6)


def test_jacobian_vectorized_calls_batched_vjp_once(device, rng, monkeypatch):
    seen = []
    real = F._batched_vjp
    monkeypatch.setattr(F, "_batched_vjp",
                        lambda o, i, g, c: seen.append(tuple(t.shape for t in g)) or
                        real(o, i, g, c))
    F.jacobian(lambda a, b: (a * b, a.sum()), (gv.ones(3, device=device),
                                              gv.ones(3, device=device)), vectorize=True)
    assert seen == [((4, 3), (4, 1))]


def test_jacobian_forward_calls_batched_jvp(device, monkeypatch):
    seen = []
    real = F._batched_jvp
    monkeypatch.setattr(F, "_batched_jvp",
                        lambda f, i, t: seen.append(tuple(x.shape for x in t)) or real(f, i, t))
    F.jacobian(lambda a, b: a.sum() * b.sum(), (gv.ones(2, 2, device=device),
                                            gv.ones(3, 1, device=device)),
               vectorize=True, strategy="forward-mode", chunk_size=5)
    assert seen == [((5, 2, 2), (5, 3, 1)), ((2, 2, 2), (2, 3, 1))]


@pytest.mark.parametrize("in_numel, out_numel, want", [(2, 6, "forward"), (6, 2, "reverse"),
                                                        (3, 3, "reverse")])
def test_jacobian_auto_strategy(in_numel, out_numel, want, device, monkeypatch):
    used = []
    real_vjp, real_jvp = F._batched_vjp, F._batched_jvp
    monkeypatch.setattr(F, "_batched_vjp",
                        lambda *a: used.append("reverse") or real_vjp(*a))
    monkeypatch.setattr(F, "_batched_jvp",
                        lambda *a: used.append("forward") or real_jvp(*a))
    x = gv.ones(in_numel, dtype=gv.float64, device=device)
    f = lambda a: a.sum().reshape(1).expand(out_numel) * 2  # noqa: E731
    F.jacobian(f, x, vectorize=True, strategy="auto")
    assert set(used) == {want}
    used.clear()
    F.jacobian(f, x, strategy="auto")                 # without vectorize: the row loop
    assert used == []


def test_batched_vjp_contract(device, rng):
    """(batch, *input.shape) per input, None for an unused input, each row a plain vjp."""
    x, y, z = sample(rng, (2, 3)), sample(rng, (3,)), sample(rng, (2,))
    xt, yt, zt = (gv.tensor(a, device=device, requires_grad=True) for a in (x, y, z))
    out = (xt.sin() * yt, (xt * xt).sum())
    cots = (gv.tensor(sample(rng, (4, 2, 3)), device=device),
            gv.tensor(sample(rng, (4,)), device=device))
    res = F._batched_vjp(out, (xt, yt, zt), cots, False)
    assert res[2] is None
    assert [tuple(r.shape) for r in res[:2]] == [(4, 2, 3), (4, 3)]
    for b in range(4):
        want = gv.autograd.grad(out, (xt, yt), (cots[0][b], cots[1][b]), retain_graph=True)
        for r, w in zip(res, want):
            np.testing.assert_allclose(r[b].numpy(), w.numpy(), rtol=RTOL)


def test_batched_jvp_contract(device, rng):
    x, y = sample(rng, (2, 3)), sample(rng, (3,))
    inputs = (gv.tensor(x, device=device), gv.tensor(y, device=device))
    tans = (gv.tensor(sample(rng, (3, 2, 3)), device=device),
            gv.tensor(sample(rng, (3, 3)), device=device))
    f = lambda a, b: (a * b, (a.exp() * b).sum())  # noqa: E731
    is_tuple, outs, res = F._batched_jvp(f, inputs, tans)
    assert is_tuple and [tuple(o.shape) for o in outs] == [(2, 3), ()]
    assert [tuple(r.shape) for r in res] == [(3, 2, 3), (3,)]
    for b in range(3):
        _, want = F.jvp(f, inputs, (tans[0][b], tans[1][b]))
        for r, w in zip(res, want):
            np.testing.assert_allclose(r[b].numpy(), w.numpy(), rtol=RTOL)


def test_jacobian_empty_output(device):
    x = gv.ones(3, dtype=gv.float64, device=device)
    for kwargs in [{}, dict(vectorize=True), dict(vectorize=True, strategy="forward-mode")]:
        j = F.jacobian(lambda a: a[:0] * 2, x, **kwargs)
        assert tuple(j.shape) == (0, 3)


def test_jacobian_empty_input(device):
    x = gv.ones(0, 2, dtype=gv.float64, device=device)
    for kwargs in [{}, dict(vectorize=True), dict(vectorize=True, strategy="forward-mode")]:
        j = F.jacobian(lambda a: (a * 2, a.sum().reshape(1)), x, **kwargs)
        assert [tuple(t.shape) for t in j] == [(0, 2, 0, 2), (1, 0, 2)]


# ----- option errors -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(strategy="forward-mode"), dict(strategy="forward-mode", create_graph=True),
    dict(strategy="forward-mode", strict=True), dict(strategy="forward-mode", vectorize=True,
                                                     strict=True),
    dict(vectorize=True, strict=True)], ids=["fwd-no-vectorize", "fwd-create-graph",
                                             "fwd-strict", "fwd-vec-strict", "vec-strict"])
def test_jacobian_option_errors_like_torch(kwargs, device, rng):
    x = sample(rng, (3,))
    assert_same_outcome(lambda L: L.f("jacobian")(lambda a: a.sin(), L.t(x), **kwargs), device)


def test_forward_mode_bad_output_like_torch(device, rng):
    x = sample(rng, (3,))
    assert_same_outcome(lambda L: L.f("jacobian")(lambda a: 3, L.t(x), vectorize=True,
                                                  strategy="forward-mode"), device)


@pytest.mark.parametrize("kwargs", [
    dict(strategy="bogus"), dict(strategy=None), dict(chunk_size=0), dict(chunk_size=-2),
    dict(chunk_size=1.5), dict(chunk_size=True), dict(chunk_size="big"),
    dict(vectorize=True, chunk_size=0), dict(chunk_size=np.float64(2))])
def test_jacobian_bad_option_is_value_error(kwargs, device):
    calls = []
    with pytest.raises(ValueError, match="strategy|chunk_size"):
        F.jacobian(lambda a: calls.append(1) or a, gv.ones(2, device=device), **kwargs)
    assert calls == []                           # checked before func runs


def test_hessian_bad_strategy_is_value_error(device):
    with pytest.raises(ValueError, match="bogus"):
        F.hessian(lambda a: a.sum(), gv.ones(2, device=device), outer_jacobian_strategy="bogus")


@pytest.mark.parametrize("fn", ["jvp", "jacobian", "hessian", "vhp", "hvp"])
def test_non_callable_func(fn, device):
    with pytest.raises(TypeError, match="func"):
        getattr(F, fn)(3, gv.ones(1, device=device))


@pytest.mark.parametrize("fn", ["jvp", "jacobian", "hessian", "vhp", "hvp"])
def test_error_in_func_propagates_and_restores_grad_mode(fn, device):
    class Boom(Exception):
        pass

    def func(x):
        raise Boom()

    with gv.no_grad():
        with pytest.raises(Boom):
            getattr(F, fn)(func, gv.ones(1, device=device))
        assert not gv.is_grad_enabled()
    assert gv.is_grad_enabled()


# ----- hessian, vhp, hvp -------------------------------------------------------------------
def _softplus_quad(m, x, y):
    return ((1 + (x @ y.reshape(3, 1)).exp()).log() ** 2).sum()


SCALAR_FUNCS = {
    "cubic": (lambda m, x: (x ** 3).sum(), [(4,)]),
    "tanh-sigmoid": (lambda m, x: (m.tanh(x) * m.sigmoid(x)).mean(), [(2, 2)]),
    "sqrt-norm": (lambda m, x: ((x * x).sum(dim=1, keepdim=True) + 1).sqrt().sum(), [(2, 3)]),
    "matmul": (_softplus_quad, [(2, 3), (3,)]),
    "two-inputs": (lambda m, x, y: (x.sin() * y.cos().sum()).mean() + (x * x).sum() * y[0],
                   [(3,), (2,)]),
    "kinks": (lambda m, x, y: (m.relu(x) ** 2 + m.abs(x) * m.maximum(x, y)
                               + m.clamp(x, -1.0, 1.0) ** 3).sum(), [(4,), (4,)]),
    "where": (lambda m, x: m.where(x > 0, x * x * x, x.exp()).sum(), [(4,)]),
    "scalar-input": (lambda m, x: (x.sin() * x.exp()), [()]),
    "unused-input": (lambda m, x, y: (x * x * x).sum(), [(2,), (3,)]),
}
SCALAR_FORMS = [(n, t) for n, (_, s) in SCALAR_FUNCS.items()
                for t in ([False, True] if len(s) == 1 else [True])]
SCALAR_IDS = [f"{n}-{'tuple' if t else 'bare'}" for n, t in SCALAR_FORMS]
HESSIAN_MODES = [(False, "reverse-mode"), (True, "reverse-mode"), (True, "forward-mode")]


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
@pytest.mark.parametrize("vectorize, outer", HESSIAN_MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name, as_tuple", SCALAR_FORMS, ids=SCALAR_IDS)
def test_hessian(name, as_tuple, vectorize, outer, create_graph, device, rng):
    func, shapes = SCALAR_FUNCS[name]
    xs = [sample(rng, s) for s in shapes]
    requires_grad = create_graph and outer == "reverse-mode"

    def program(L):
        return L.f("hessian")(lambda *a: func(L.m, *a), tensors(L, xs, as_tuple, requires_grad),
                              create_graph=create_graph, vectorize=vectorize,
                              outer_jacobian_strategy=outer)

    # NOTE: torch's forward-over-reverse hessian calls requires_grad_() on the dual inputs, so
    # its result has a grad_fn even without create_graph; gpuvjp's is detached.
    assert_same_outcome(program, device, flags=outer == "reverse-mode")


@pytest.mark.parametrize("create_graph", [False, True], ids=["", "create_graph"])
@pytest.mark.parametrize("fn", ["vhp", "hvp"])
@pytest.mark.parametrize("name, as_tuple", SCALAR_FORMS, ids=SCALAR_IDS)
def test_vhp_hvp(name, as_tuple, fn, create_graph, device, rng):
    func, shapes = SCALAR_FUNCS[name]
    xs = [sample(rng, s) for s in shapes]
    vs = [sample(rng, s) for s in shapes]

    def program(L):
        return L.f(fn)(lambda *a: func(L.m, *a), tensors(L, xs, as_tuple, create_graph),
                       tensors(L, vs, as_tuple), create_graph=create_graph)

    assert_same_outcome(program, device)


@pytest.mark.parametrize("fn", ["vhp", "hvp"])
def test_vhp_hvp_v_none(fn, device, rng):
    for shape in [(), (1,), (2,)]:
        x = sample(rng, shape)
        assert_same_outcome(lambda L: L.f(fn)(lambda a: (a ** 4).sum(), L.t(x)), device)


def test_hvp_equals_vhp_and_hessian_product(device, rng):
    x, v = sample(rng, (2, 3)), sample(rng, (2, 3))
    f = lambda a: (a.sin() * a.sum(dim=0)).exp().sum()  # noqa: E731
    xt, vt = gv.tensor(x, device=device), gv.tensor(v, device=device)
    _, hv = F.hvp(f, xt, vt)
    _, vh = F.vhp(f, xt, vt)
    h = F.hessian(f, xt).numpy().reshape(6, 6)
    np.testing.assert_allclose(hv.numpy().reshape(-1), h @ v.reshape(-1), rtol=1e-10)
    np.testing.assert_allclose(vh.numpy().reshape(-1), v.reshape(-1) @ h, rtol=1e-10)


# ----- create_graph: results are differentiable, further grads match torch ---------------------
def _further(fn):
    """A program that takes fn's result with create_graph=True and differentiates a weighted
    sum of squares of it with respect to the caller's inputs."""
    def program(L, xs, vs, func, as_tuple):
        inputs = tensors(L, xs, True, requires_grad=True)
        args = inputs if as_tuple else inputs[0]
        f = lambda *a: func(L.m, *a)  # noqa: E731
        if fn in ("jacobian", "hessian"):
            res = L.f(fn)(f, args, create_graph=True)
        elif fn == "jacobian-vectorized":
            res = L.f("jacobian")(f, args, create_graph=True, vectorize=True)
        elif fn == "hessian-vectorized":
            res = L.f("hessian")(f, args, create_graph=True, vectorize=True)
        else:
            res = L.f(fn)(f, args, tensors(L, vs, as_tuple), create_graph=True)
        total = sum(((t * t).sum() * (k + 1) for k, t in enumerate(flat(res))), 0)
        return L.grad(total, inputs, allow_unused=True)
    return program


@pytest.mark.parametrize("fn", ["jvp", "jacobian", "jacobian-vectorized"])
@pytest.mark.parametrize("name", ["t-t", "t-tup", "tup-tup", "tup-t"])
def test_create_graph_further_grad_first_order(fn, name, device, rng):
    func, xs = program_inputs(rng, name)
    vs = [sample(rng, np.shape(x)) for x in xs]
    as_tuple = len(xs) > 1
    got, want = both(lambda L: _further(fn)(L, xs, vs, func, as_tuple), device)
    assert_matches(got, want, rtol=1e-9)


@pytest.mark.parametrize("fn", ["hessian", "hessian-vectorized", "vhp", "hvp"])
@pytest.mark.parametrize("name", ["cubic", "tanh-sigmoid", "matmul", "two-inputs"])
def test_create_graph_further_grad_second_order(fn, name, device, rng):
    func, shapes = SCALAR_FUNCS[name]
    xs = [sample(rng, s) for s in shapes]
    vs = [sample(rng, s) for s in shapes]
    got, want = both(lambda L: _further(fn)(L, xs, vs, func, len(xs) > 1), device)
    assert_matches(got, want, rtol=1e-9)


def test_third_derivative_of_a_hessian_entry(device, rng):
    x = sample(rng, (3,))

    def program(L):
        xt = L.t(x, requires_grad=True)
        f = lambda a: (a[0] * a[1].sin() * a[2].exp() + a.tanh().sum() ** 2)  # noqa: E731
        h = L.f("hessian")(f, xt, create_graph=True)
        return L.grad(h[0, 1], xt, retain_graph=True)[0], L.grad(h[2, 2], xt)[0]

    got, want = both(program, device)
    assert_matches(got, want, rtol=1e-9)
    # d/dx2 of H[0,1] = cos(x1) exp(x2)
    np.testing.assert_allclose(got[0].numpy()[2], np.cos(x[1]) * np.exp(x[2]), rtol=1e-12)


def test_results_detached_and_caller_untouched(device, rng):
    x = sample(rng, (3,))
    xt = gv.tensor(x, device=device, requires_grad=True)
    f = lambda a: (a.sin() * a).sum()  # noqa: E731
    for res in (F.jvp(f, xt, xt), F.jacobian(f, xt), F.jacobian(f, xt, vectorize=True),
                F.hessian(f, xt), F.vhp(f, xt, xt), F.hvp(f, xt, xt)):
        for t in flat(res):
            assert not t.requires_grad and t.grad_fn is None
    assert xt.grad is None


# ----- gradcheck, gradgradcheck ---------------------------------------------------------------
GOOD = {
    "sin-mul": (lambda m, x, y: (x.sin() * y, (x.exp() * y).sum()), [(2, 3), (3,)]),
    "matmul-tanh": (lambda m, x, y: m.tanh(x @ y), [(2, 3), (3, 2)]),
    "reductions": (lambda m, x: (x.mean(dim=0), (x * x).sum(dim=1, keepdim=True).sqrt()),
                   [(2, 3)]),
    "sigmoid-div": (lambda m, x, y: m.sigmoid(x) / (1 + y * y), [(4,), (4,)]),
}


@pytest.mark.parametrize("fast_mode", [False, True], ids=["", "fast"])
@pytest.mark.parametrize("name", GOOD)
def test_gradcheck_passes_like_torch(name, fast_mode, device, rng):
    func, shapes = GOOD[name]
    xs = [sample(rng, s) for s in shapes]
    for lib_check in ("gradcheck", "gradgradcheck"):
        def program(L):
            inputs = tuple(L.t(a, requires_grad=True) for a in xs)
            check = getattr(L.m.autograd, lib_check)
            return check(lambda *a: func(L.m, *a), inputs, fast_mode=fast_mode)
        got, want = both(program, device)
        assert got is True and want is True


def _straight_through(m, x):
    """Value sin(x), gradient 1: a deliberately wrong derivative."""
    return x.sin().detach() + x - x.detach()


def test_gradcheck_fails_like_torch(device, rng):
    x = sample(rng, (3,))

    def program(L):
        return L.m.autograd.gradcheck(lambda a: _straight_through(L.m, a),
                                      (L.t(x, requires_grad=True),))

    want = outcome(lambda: program(Lib(torch)))[1]
    ok, got = outcome(lambda: program(Lib(gv, device)))
    assert not ok and got[0] is GradcheckError and issubclass(got[0], RuntimeError)
    assert got[1].splitlines()[0] == want[1].splitlines()[0] == \
        "Jacobian mismatch for output 0 with respect to input 0,"
    assert not gv.autograd.gradcheck(lambda a: _straight_through(gv, a),
                                     gv.tensor(x, device=device, requires_grad=True),
                                     raise_exception=False)
    with pytest.raises(GradcheckError, match="v\\^T J u"):
        gv.autograd.gradcheck(lambda a: _straight_through(gv, a),
                              gv.tensor(x, device=device, requires_grad=True), fast_mode=True)


@pytest.fixture
def custom_ops():
    """Ops declared through the registry for one test, removed afterwards."""
    from gpuvjp.ops._registry import REGISTRY, defop, defvjp
    names = []

    def make(name, rule):
        op = defop(name, lambda xp, x: x * x)
        defvjp(op, rule)
        names.append(name)
        return op

    yield make
    for n in names:
        REGISTRY.pop(n, None)


def test_gradcheck_catches_a_wrong_rule(custom_ops, device, rng):
    wrong = custom_ops("test_wrong_square", lambda g, ans, x: g * x)        # missing the 2
    first_order_only = custom_ops("test_detached_square",
                                  lambda g, ans, x: 2 * g * x.detach())     # right, once
    x = gv.tensor(sample(rng, (3,)), device=device, requires_grad=True)
    with pytest.raises(GradcheckError, match="Jacobian mismatch for output 0 with respect to "
                                             "input 0"):
        gv.autograd.gradcheck(wrong, x)
    assert gv.autograd.gradcheck(first_order_only, x)
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        gv.autograd.gradgradcheck(first_order_only, x)
    assert not gv.autograd.gradgradcheck(first_order_only, x, raise_exception=False)


@pytest.mark.parametrize("case", ["no-input-requires-grad", "no-differentiable-output"])
def test_gradcheck_errors_like_torch(case, device, rng):
    x = sample(rng, (3,))

    def program(L):
        if case == "no-input-requires-grad":
            return L.m.autograd.gradcheck(lambda a: a * 2, (L.t(x),))
        return L.m.autograd.gradcheck(lambda a: a.detach() * 2, (L.t(x, requires_grad=True),))

    ok_want, want = outcome(lambda: program(Lib(torch)))
    ok_got, got = outcome(lambda: program(Lib(gv, device)))
    assert not ok_want and not ok_got
    if ORACLE_MESSAGES:
        assert got[1] == want[1]
    assert got[0].__name__ == want[0].__name__


def test_gradcheck_warns_on_float32(device):
    x = gv.ones(2, dtype=gv.float32, device=device, requires_grad=True)
    with pytest.warns(UserWarning, match="double precision"):
        gv.autograd.gradcheck(lambda a: a * 3, x, atol=1e-2, rtol=1e-2, eps=1e-3)


def test_public_names():
    for name in ["vjp", "jvp", "jacobian", "hessian", "vhp", "hvp"]:
        assert name in F.__all__ and callable(getattr(F, name))
    assert gv.autograd.gradcheck is not None and gv.autograd.gradgradcheck is not None
