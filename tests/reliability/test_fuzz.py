"""Fuzz: random malformed arguments (inputs, func's result, v, options) thrown at every member
of the functional family that exists. Only TypeError, RuntimeError (NotImplementedError is one)
and ValueError may come out of gpuvjp, plus IndexError where torch, given the same call, raises
IndexError too; never another type, and never a crash. And gpuvjp rejects only calls that torch
rejects as well (an error raised by func itself passes through, whatever its type).

CI runs a bounded, derandomised search; GPUVJP_LONG=1 searches ten times longer with fresh
randomness each run."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gpuvjp as gv

from ._common import FAMILY, LONG, Lib, torch

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

ALLOWED = (TypeError, RuntimeError, ValueError)
MEMBERS = [n for n in FAMILY if getattr(gv.autograd.functional, n, None) is not None]

# ----- argument specs, realised under either library ----------------------------------------------
shapes = st.lists(st.integers(0, 3), max_size=2).map(tuple)
tensor_spec = st.tuples(st.just("tensor"), shapes,
                        st.sampled_from(["float64", "float64", "float32", "int64", "bool"]),
                        st.booleans())
other_spec = st.one_of(
    st.tuples(st.just("list"), shapes),
    st.tuples(st.just("numpy"), shapes),
    st.just(("none",)),
    st.tuples(st.just("int"), st.integers(-3, 3)),
    st.tuples(st.just("float"), st.floats(allow_nan=True, allow_infinity=True)),
    st.just(("str",)),
    st.just(("module",)),
)
leaf_spec = st.one_of(tensor_spec, tensor_spec, tensor_spec, other_spec)
arg_spec = st.recursive(leaf_spec,
                        lambda inner: st.tuples(st.just("tuple"), st.lists(inner, max_size=3)),
                        max_leaves=4)


def realise(spec, L):
    kind = spec[0]
    if kind == "tensor":
        _, shape, dtype, requires_grad = spec
        n = math.prod(shape)
        data = np.linspace(-1.5, 1.5, n).reshape(shape)
        if dtype == "bool":
            data = data > 0
        t = L.t(data, dtype=getattr(L.m, dtype))
        if requires_grad and dtype.startswith("float"):
            t.requires_grad_()
        return t
    if kind == "list":
        return np.ones(spec[1]).tolist()
    if kind == "numpy":
        return np.ones(spec[1])
    if kind == "none":
        return None
    if kind in ("int", "float"):
        return spec[1]
    if kind == "str":
        return "x"
    if kind == "module":
        return L.m
    return tuple(realise(s, L) for s in spec[1])


# ----- funcs: good ones, ones returning bad things, ones with bad ops inside ----------------------
class FuncError(Exception):
    """Raised by a fuzz func itself (no inputs to work on): user code, so it must propagate."""


def _first(a):
    if not a:
        raise FuncError("func was given no inputs")
    return a[0]


def _last(a):
    if not a:
        raise FuncError("func was given no inputs")
    return a[-1]


FUNCS = {
    "cube": lambda m, *a: _first(a) ** 3,
    "scalar": lambda m, *a: (_first(a) ** 2).sum(),
    "sum-all": lambda m, *a: sum(t.sum() for t in a),
    "exp-reducer": lambda m, *a: _first(a).exp().sum(dim=1),
    "product": lambda m, *a: _first(a) * _last(a),
    "matmul": lambda m, *a: _first(a) @ _last(a),
    "tuple-out": lambda m, *a: (_first(a) * 2, _last(a).sum()),
    "list-out": lambda m, *a: [_first(a)],
    "none-out": lambda m, *a: None,
    "int-out": lambda m, *a: 3,
    "numpy-out": lambda m, *a: np.ones(2),
    "nested-out": lambda m, *a: ((_first(a),),),
    "detached": lambda m, *a: _first(a).detach(),
    "index": lambda m, *a: _first(a)[1],
    "softmax": lambda m, *a: m.nn.functional.softmax(_first(a), dim=-1),
    "mean-dim1": lambda m, *a: _first(a).mean(dim=1),
    "cat": lambda m, *a: m.cat([_first(a), _last(a)]),
    "reshape": lambda m, *a: _first(a).reshape(-1, 2),
    "where": lambda m, *a: m.where(_first(a) > 0, _first(a), _last(a)),
    "max-dim": lambda m, *a: _first(a).max(dim=0)[0],
    "transpose": lambda m, *a: _first(a).transpose(0, 1),
    "set-requires-grad": lambda m, *a: (lambda y: (setattr(y, "requires_grad", False), y)[1])(
        _first(a) * 2),
}

JACOBIAN_OPTIONS = st.fixed_dictionaries({
    "vectorize": st.booleans(),
    "strategy": st.sampled_from(["reverse-mode", "forward-mode", "auto", "sideways", None]),
})
HESSIAN_OPTIONS = st.fixed_dictionaries({
    "vectorize": st.booleans(),
    "outer_jacobian_strategy": st.sampled_from(["reverse-mode", "forward-mode", "bogus"]),
})


@st.composite
def calls(draw):
    name = draw(st.sampled_from(MEMBERS))
    call = {
        "name": name,
        "func": draw(st.sampled_from(sorted(FUNCS) + ["not-callable"])),
        "inputs": draw(arg_spec),
        "v": draw(st.one_of(st.none(), arg_spec)) if name not in ("jacobian", "hessian")
        else None,
        "kw": {"create_graph": draw(st.booleans()), "strict": draw(st.booleans())},
    }
    if name == "jacobian":
        call["kw"].update(draw(JACOBIAN_OPTIONS))
    elif name == "hessian":
        call["kw"].update(draw(HESSIAN_OPTIONS))
    return call


def _run(call, L):
    fn = getattr(L.F, call["name"])
    func = 3 if call["func"] == "not-callable" else (
        lambda *a: FUNCS[call["func"]](L.m, *a))
    inputs = realise(call["inputs"], L)
    kw = {k: v for k, v in call["kw"].items() if v is not None}
    if call["name"] in ("jacobian", "hessian"):
        return fn(func, inputs, **kw)
    return fn(func, inputs, None if call["v"] is None else realise(call["v"], L), **kw)


def _outcome(call, L):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run(call, L)
    except Exception as exc:  # noqa: BLE001  (the type is what is checked)
        return exc
    return None


@pytest.mark.skipif(not MEMBERS, reason="no member of gpuvjp.autograd.functional exists yet")
@hypothesis.settings(max_examples=1500 if LONG else 150, deadline=None, derandomize=not LONG,
                     suppress_health_check=list(hypothesis.HealthCheck),
                     database=None)
@hypothesis.given(call=calls())
def test_malformed_arguments_raise_only_clear_errors(call):
    got = _outcome(call, Lib(gv))
    if got is None or isinstance(got, FuncError):
        return
    want = _outcome(call, Lib(torch))
    detail = (f"{call['name']} raised {type(got).__name__}: {got}\n"
              f"torch raised {type(want).__name__ if want else 'nothing'}: {want}\n"
              f"call: {call}")
    if not (isinstance(got, ALLOWED) or isinstance(got, IndexError) and
            isinstance(want, IndexError)):
        raise AssertionError(f"an exception type torch does not raise here\n{detail}") from got
    # gpuvjp rejects only what torch rejects (it may accept more: strategy="auto", ...)
    if want is None:
        raise AssertionError(f"torch accepts this call\n{detail}") from got
