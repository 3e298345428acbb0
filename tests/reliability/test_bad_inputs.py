"""Bad inputs to the functional family: the exception type PyTorch raises for the same call, and a
message that names the argument and the index at fault (and the sizes, dims or devices involved).

Each case runs the same program under gpuvjp and torch. `assert_names` is checked on gpuvjp's
message and on PyTorch's too, except in a check marked `additive=True`: there gpuvjp must say more
than PyTorch does (API.md: each message names the argument and the index at fault)."""

from __future__ import annotations

import numpy as np
import pytest

import gpuvjp as gv

from ._common import FAMILY, Lib, assert_names, both_errors, flat, functional, host, torch

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using a target size:UserWarning"),   # mse_loss's, both
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch"),         # torch's forward AD
]

X = np.array([0.3, -1.2, 2.0])
SCALAR = ("hessian", "vhp", "hvp")          # functions of a single-element output
TAKES_V = ("vjp", "jvp", "vhp", "hvp")


def cube(*a):
    return a[0] ** 3


def cube_sum(*a):
    return (a[0] ** 3).sum()


def good_func(name):
    return cube_sum if name in SCALAR else cube


def good_v(L, name, inputs):
    """A v that fits a single (3,) input: the output's shape for vjp, the input's for the others
    (a bad `inputs` is reported before v is looked at, by PyTorch and gpuvjp alike)."""
    if name in ("jacobian", "hessian"):
        return None
    return L.t(np.ones(3))


def check(got, want, *fragments, additive=False):
    """Same type as torch; gpuvjp's message names the fragments (torch's too unless additive)."""
    assert type(got) is type(want), (
        f"gpuvjp raised {type(got).__name__}({got}), torch raised {type(want).__name__}({want})")
    assert_names(got, *fragments)
    if not additive:
        assert_names(want, *fragments)


# ----- inputs that are not tensors or tuples of tensors ------------------------------------------
BAD_INPUTS = {
    # name -> (bad inputs from (L, x), fragments beyond the argument's name)
    "list": (lambda L, x: [x], ()),
    "numpy": (lambda L, x: np.ones(3), ()),
    "none": (lambda L, x: None, ()),
    "int": (lambda L, x: 3, ()),
    "str": (lambda L, x: "x", ()),
    "nested-tuple": (lambda L, x: ((x, x),), ("index 0",)),
    "tuple-with-float": (lambda L, x: (x, 1.0), ("index 1",)),
    "tuple-with-none": (lambda L, x: (x, None), ("index 1",)),
    "tuple-with-numpy": (lambda L, x: (x, np.ones(3)), ("index 1",)),
    "tuple-with-list": (lambda L, x: (x, x, [1.0, 2.0]), ("index 2",)),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.parametrize("name", FAMILY)
def test_inputs_not_tensors(name, case, device):
    functional(name)
    make, fragments = BAD_INPUTS[case]

    def program(L):
        x = L.t(X)
        return L.call(name, good_func(name), make(L, x), good_v(L, name, x))

    got, want = both_errors(program, device)
    check(got, want, "inputs", f"given to {name}", *fragments)
    assert isinstance(got, TypeError)


# ----- integer and bool inputs asked for gradients -----------------------------------------------
INT_INPUTS = {
    # name -> (inputs from (L, x), fragments beyond the argument's name)
    "int64": (lambda L, x: L.t(np.arange(3), dtype=L.m.int64), ()),
    "int32": (lambda L, x: L.t(np.arange(3), dtype=L.m.int32), ()),
    "bool": (lambda L, x: L.t(np.ones(3, bool)), ()),
    "tuple-int64-at-1": (lambda L, x: (x, L.t(np.arange(3), dtype=L.m.int64)), ("index 1",)),
    "tuple-bool-at-0": (lambda L, x: (L.t(np.ones(3, bool)), x), ("index 0",)),
}


def _int_program(name, case, **kw):
    make = INT_INPUTS[case][0]

    def program(L):
        x = L.t(X)
        if kw:
            return L.call(name, lambda *a: (a[0].double() ** 3).sum(), make(L, x), **kw)
        return L.call(name, good_func(name), make(L, x), good_v(L, name, x))
    return program


@pytest.mark.parametrize("case", INT_INPUTS)
@pytest.mark.parametrize("name", FAMILY)
def test_integer_inputs_asked_for_gradients(name, case, device):
    functional(name)
    got, want = both_errors(_int_program(name, case), device)
    check(got, want, "floating point")


@pytest.mark.parametrize("case", ["int64", "tuple-int64-at-1"])
@pytest.mark.parametrize("name", FAMILY)
def test_integer_inputs_named(name, case, device):
    """PyTorch says "only Tensors of floating point dtype can require gradients" without naming
    which input; API.md asks gpuvjp to name the argument and the index as well."""
    functional(name)
    got, want = both_errors(_int_program(name, case), device)
    check(got, want, "inputs", *INT_INPUTS[case][1], additive=True)


FORWARD_MODE = {
    "jacobian": {"vectorize": True, "strategy": "forward-mode"},
    "hessian": {"vectorize": True, "outer_jacobian_strategy": "forward-mode"},
}


@pytest.mark.parametrize("case", ["int64", "bool", "tuple-int64-at-1"])
@pytest.mark.parametrize("name", FORWARD_MODE)
def test_integer_inputs_forward_mode(name, case, device):
    """Forward mode checks the primals too: PyTorch raises ValueError ("Expected primal to be
    floating point or complex, but got: torch.int64") before func runs."""
    functional(name)
    got, want = both_errors(_int_program(name, case, **FORWARD_MODE[name]), device)
    check(got, want, "floating point")


# ----- func returning something that is not a tensor or a tuple of tensors -----------------------
BAD_OUTPUTS = {
    # name -> (func's result from x, fragments beyond the argument's name)
    "list": (lambda L, x: [(x ** 3).sum()], ()),
    "none": (lambda L, x: None, ()),
    "int": (lambda L, x: 3, ()),
    "float": (lambda L, x: 1.5, ()),
    "numpy": (lambda L, x: np.ones(3), ()),
    "tuple-with-int": (lambda L, x: ((x ** 3).sum(), 1), ("index 1",)),
    "tuple-with-none": (lambda L, x: (None, (x ** 3).sum()), ("index 0",)),
    "nested-tuple": (lambda L, x: (((x ** 3).sum(),),), ("index 0",)),
}


@pytest.mark.parametrize("case", BAD_OUTPUTS)
@pytest.mark.parametrize("name", FAMILY)
def test_func_returns_non_tensor(name, case, device):
    functional(name)
    make, fragments = BAD_OUTPUTS[case]

    def program(L):
        x = L.t(X)
        return L.call(name, lambda a: make(L, a), x, good_v(L, name, x))

    got, want = both_errors(program, device)
    check(got, want, "outputs of the user-provided function", f"given to {name}", *fragments)
    assert isinstance(got, TypeError)


# ----- v of the wrong type, shape or count -------------------------------------------------------
BAD_V = {
    # name -> (v from (L, good v), fragments beyond "v")
    "list": (lambda L, v: [1.0, 1.0, 1.0], ()),
    "numpy": (lambda L, v: np.ones(3), ()),
    "float": (lambda L, v: 1.0, ()),
    "str": (lambda L, v: "v", ()),
    "nested-tuple": (lambda L, v: ((v,),), ("index 0",)),
    "tuple-with-float": (lambda L, v: (v, 1.0), ("index 1",)),
    "shape": (lambda L, v: L.t(np.ones(4)), ("[3]", "[4]")),
    "shape-2d": (lambda L, v: L.t(np.ones((1, 3))), ("[3]", "[1, 3]")),
    "shape-scalar": (lambda L, v: L.t(1.0), ("[3]", "[]")),
    "too-many": (lambda L, v: (v, v), ()),
    "empty-tuple": (lambda L, v: (), ()),
    "none-for-3-elements": (lambda L, v: None, ()),
}


@pytest.mark.parametrize("case", BAD_V)
@pytest.mark.parametrize("name", TAKES_V)
def test_bad_v(name, case, device):
    functional(name)
    make, fragments = BAD_V[case]

    def program(L):
        x = L.t(X)
        return L.call(name, good_func(name), x, make(L, good_v(L, name, x)))

    got, want = both_errors(program, device)
    check(got, want, "v", *fragments)
    expected = TypeError if case in ("list", "numpy", "float", "str", "nested-tuple",
                                     "tuple-with-float") else RuntimeError
    assert isinstance(got, expected)


def _two(L, name):
    """A two-entry setup: (func, inputs, good v) whose v is a tuple of two."""
    x, y = L.t(X), L.t(X[::-1].copy())
    if name == "vjp":
        return (lambda a: (a ** 3, (a ** 3).sum())), x, (L.t(np.ones(3)), L.t(1.0))
    if name == "jvp":
        return (lambda a, b: a * b), (x, y), (L.t(np.ones(3)), L.t(np.ones(3)))
    return (lambda a, b: (a * b * b).sum()), (x, y), (L.t(np.ones(3)), L.t(np.ones(3)))


BAD_V_ENTRY = {
    # name -> (v from (L, good two-entry v), fragments beyond "v")
    "entry-1-shape": (lambda L, v: (v[0], L.t(np.ones(5))), ("Entry 1", "[5]")),
    "entry-0-shape": (lambda L, v: (L.t(np.ones((3, 1))), v[1]), ("Entry 0", "[3, 1]")),
    "too-short": (lambda L, v: (v[0],), ("2", "1")),
    "too-long": (lambda L, v: (v[0], v[1], v[1]), ("2", "3")),
    "bare-tensor": (lambda L, v: v[0], ()),
    "entry-1-list": (lambda L, v: (v[0], [1.0]), ("index 1",)),
    "entry-0-none": (lambda L, v: (None, v[1]), ("index 0",)),
}


@pytest.mark.parametrize("case", BAD_V_ENTRY)
@pytest.mark.parametrize("name", TAKES_V)
def test_bad_v_entry(name, case, device):
    functional(name)
    make, fragments = BAD_V_ENTRY[case]

    def program(L):
        func, inputs, v = _two(L, name)
        return L.call(name, func, inputs, make(L, v))

    got, want = both_errors(program, device)
    check(got, want, "v", *fragments)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
@pytest.mark.parametrize("name", TAKES_V)
def test_integer_v_is_cast_as_torch(name, dtype, device):
    """Not an error: PyTorch casts an integer or bool v to the dtype it pairs with."""
    functional(name)

    def program(L):
        x = L.t(X)
        v = L.t(np.array([1, 0, 2]), dtype=getattr(L.m, dtype))
        return L.call(name, good_func(name), x, v)

    got, want = program(Lib(gv, device)), program(Lib(torch))
    for g, w in zip(got, want):
        assert str(g.dtype).split(".")[-1] == str(w.dtype).split(".")[-1]
        np.testing.assert_allclose(host(g), host(w), rtol=1e-12)


# ----- requires_grad on a non-leaf set by the user -----------------------------------------------
NON_LEAF = {
    "attr-false": lambda y: setattr(y, "requires_grad", False),
    "method-false": lambda y: y.requires_grad_(False),
    "attr-true": lambda y: setattr(y, "requires_grad", True),
}


@pytest.mark.parametrize("case", NON_LEAF)
@pytest.mark.parametrize("name", FAMILY)
def test_requires_grad_on_non_leaf_inside_func(name, case, device):
    functional(name)

    def func(a):
        y = a * 2
        NON_LEAF[case](y)
        return (y ** 3).sum() if name in SCALAR else y ** 3

    def program(L):
        x = L.t(X)
        return L.call(name, func, x, good_v(L, name, x))

    got, want = both_errors(program, device)
    check(got, want, "leaf variables")


@pytest.mark.parametrize("case", NON_LEAF)
def test_requires_grad_on_non_leaf_outside(case, device):
    def program(L):
        y = L.t(X, requires_grad=True) * 2
        NON_LEAF[case](y)

    got, want = both_errors(program, device)
    check(got, want, "leaf variables")


@pytest.mark.parametrize("name", FAMILY)
def test_non_leaf_inputs_work_as_torch(name, device):
    """A computed tensor (a non-leaf that requires grad) is a valid input, as in PyTorch."""
    functional(name)

    def program(L):
        x = L.t(X, requires_grad=True) * 1.5
        return L.call(name, good_func(name), x, good_v(L, name, x))

    got, want = program(Lib(gv, device)), program(Lib(torch))
    got, want = flat(got), flat(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(host(g), host(w), rtol=1e-12)


# ----- op errors inside func: shapes that do not broadcast, matmul, dims and indices -------------
def _F(L):
    return L.m.nn.functional


OP_ERRORS = {
    # name -> (func of (L, *inputs), input shapes, fragments)
    "add-broadcast": (lambda L, a, b: a + b, [(3,), (4,)], ("(3)", "(4)", "dimension 0")),
    "sub-broadcast": (lambda L, a, b: a - b, [(3,), (4,)], ("(3)", "(4)")),
    "mul-broadcast-2d": (lambda L, a, b: a * b, [(2, 3), (3, 2)], ("(3)", "(2)", "dimension 1")),
    "div-broadcast": (lambda L, a, b: a / b, [(2, 3), (2,)], ("(3)", "(2)")),
    "pow-broadcast": (lambda L, a, b: a ** b, [(3,), (4,)], ("(3)", "(4)")),
    "maximum-broadcast": (lambda L, a, b: L.m.maximum(a, b), [(3,), (4,)], ("(3)", "(4)")),
    "minimum-broadcast": (lambda L, a, b: L.m.minimum(a, b), [(3,), (4,)], ("(3)", "(4)")),
    "atan2-broadcast": (lambda L, a, b: L.m.atan2(a, b), [(3,), (4,)], ("(3)", "(4)")),
    "where-broadcast": (lambda L, a, b: L.m.where(a > 0, a, b), [(3,), (4,)], ("(3)", "(4)")),
    "mse-loss-broadcast": (lambda L, a, b: _F(L).mse_loss(a, b), [(2, 3), (4, 3)],
                           ("(2)", "(4)")),
    "expand": (lambda L, a: a.expand(2, 4), [(3,)], ("(4)", "(3)")),
    "matmul": (lambda L, a, b: a @ b, [(2, 3), (4, 5)], ("2x3", "4x5")),
    "matmul-batch": (lambda L, a, b: a @ b, [(2, 2, 3), (3, 3, 4)], ("(2)", "(3)")),
    "matmul-vec": (lambda L, a, b: a @ b, [(3,), (4,)], ("3", "4")),
    "mm": (lambda L, a, b: L.m.mm(a, b), [(2, 3), (4, 5)], ("2x3", "4x5")),
    "mv": (lambda L, a, b: L.m.mv(a, b), [(2, 3), (4,)], ("2x3", "4")),
    "bmm": (lambda L, a, b: L.m.bmm(a, b), [(2, 2, 3), (2, 4, 5)], ("3", "4")),
    "dot": (lambda L, a, b: L.m.dot(a, b), [(3,), (4,)], ("3", "4")),
    "linear": (lambda L, a, w: _F(L).linear(a, w), [(2, 3), (4, 5)], ("2x3",)),
    "cat-sizes": (lambda L, a, b: L.m.cat([a, b]), [(2, 3), (2, 4)], ("3", "4", "tensor number 1")),
    "stack-sizes": (lambda L, a, b: L.m.stack([a, b]), [(2, 3), (2, 4)], ("[2, 4]", "entry 1")),
    "reshape": (lambda L, a: a.reshape(4), [(3,)], ("[4]", "3")),
    # out-of-range dims: IndexError, as torch
    "sum-dim": (lambda L, a: a.sum(dim=2), [(2, 3)], ("Dimension out of range", "got 2")),
    "sum-dim-neg": (lambda L, a: a.sum(dim=-3), [(2, 3)], ("Dimension out of range", "-3")),
    "mean-dims": (lambda L, a: a.mean(dim=(0, 2)), [(2, 3)], ("Dimension out of range", "2")),
    "softmax-dim": (lambda L, a: _F(L).softmax(a, dim=2), [(2, 3)], ("got 2",)),
    "log-softmax-dim": (lambda L, a: _F(L).log_softmax(a, dim=-3), [(2, 3)], ("got -3",)),
    "transpose-dim": (lambda L, a: a.transpose(0, 5), [(2, 3)], ("got 5",)),
    "unsqueeze-dim": (lambda L, a: a.unsqueeze(4), [(2, 3)], ("got 4",)),
    "squeeze-dim": (lambda L, a: a.squeeze(4), [(2, 3)], ("got 4",)),
    "cat-dim": (lambda L, a: L.m.cat([a, a], dim=3), [(2, 3)], ("got 3",)),
    "cumsum-dim": (lambda L, a: a.cumsum(2), [(2, 3)], ("got 2",)),
    "logsumexp-dim": (lambda L, a: a.logsumexp(2), [(2, 3)], ("got 2",)),
    "max-dim": (lambda L, a: a.max(dim=2)[0], [(2, 3)], ("got 2",)),
    "amax-dim": (lambda L, a: a.amax(dim=-3), [(2, 3)], ("got -3",)),
    "var-dim": (lambda L, a: a.var(dim=2), [(2, 3)], ("got 2",)),
    "norm-dim": (lambda L, a: a.norm(dim=2), [(2, 3)], ("got 2",)),
    "flip-dim": (lambda L, a: a.flip(2), [(2, 3)], ("got 2",)),
    "permute-dim": (lambda L, a: a.permute(0, 2), [(2, 3)], ("got 2",)),
    "split-dim": (lambda L, a: a.split(1, dim=2)[0], [(2, 3)], ("got 2",)),
    "index-select-dim": (lambda L, a: L.m.index_select(a, 3, L.t(np.array([0]))), [(3,)],
                         ("got 3",)),
    "gather-dim": (lambda L, a: L.m.gather(a, 2, L.t(np.array([0, 1]))), [(3,)], ("got 2",)),
    "sum-dim-0d": (lambda L, a: a.sum(dim=1), [()], ("got 1",)),
    # out-of-range indices
    "index-int": (lambda L, a: a[5], [(3,)], ("5", "size 3")),
    "index-neg": (lambda L, a: a[-4], [(3,)], ("-4", "size 3")),
    "index-dim-1": (lambda L, a: a[:, 2], [(3, 2)], ("2", "dimension 1", "size 2")),
    "index-list": (lambda L, a: a[[0, 3]], [(3,)], ("3", "size 3")),
    "index-tensor": (lambda L, a: a[L.t(np.array([0, 7]))], [(3,)], ("7", "size 3")),
    "index-too-many": (lambda L, a: a[0, 0], [(3,)], ("too many indices",)),
    "index-mask-shape": (lambda L, a: a[L.t(np.array([True, False]))], [(3,)], ("[2]", "[3]")),
    "index-float-tensor": (lambda L, a: a[L.t(np.array([0.5]))], [(3,)], ("long",)),
    "index-select": (lambda L, a: L.m.index_select(a, 0, L.t(np.array([0, 7]))), [(3,)],
                     ("index out of range",)),
    "gather": (lambda L, a: L.m.gather(a, 0, L.t(np.array([0, 7]))), [(3,)], ("7", "size 3")),
    "cross-entropy-target": (lambda L, a: _F(L).cross_entropy(a, L.t(np.array([0, 5]))),
                             [(2, 3)], ("5",)),
}


def _op_program(case, name):
    func, shapes, _ = OP_ERRORS[case]
    rng = np.random.default_rng(7)
    arrays = [rng.uniform(0.5, 1.5, s) for s in shapes]

    def program(L):
        inputs = tuple(L.t(a) for a in arrays)
        v = None
        if name in ("jvp", "vhp", "hvp"):
            v = tuple(L.m.ones_like(t) for t in inputs)
        return L.call(name, lambda *a: func(L, *a), inputs, v)
    return program


@pytest.mark.parametrize("case", OP_ERRORS)
def test_op_errors_inside_vjp(case, device):
    got, want = both_errors(_op_program(case, "vjp"), device)
    check(got, want, *OP_ERRORS[case][2])


@pytest.mark.parametrize("case", ["add-broadcast", "mul-broadcast-2d", "matmul", "sum-dim",
                                  "index-int", "gather"])
@pytest.mark.parametrize("name", [n for n in FAMILY if n != "vjp"])
def test_op_errors_inside_family(name, case, device):
    """The op's error comes out of every member unchanged (nothing wraps or retypes it)."""
    functional(name)
    got, want = both_errors(_op_program(case, name), device)
    check(got, want, *OP_ERRORS[case][2])


def test_error_from_func_is_the_same_object(device):
    """An exception raised by func propagates unchanged, through every member."""
    class Boom(Exception):
        pass

    for name in FAMILY:
        fn = getattr(gv.autograd.functional, name, None)
        if fn is None:
            continue
        boom = Boom(name)

        def func(*a):
            raise boom
        x = gv.tensor(X, device=device)
        args = (func, x) if name in ("jacobian", "hessian") else (func, x, gv.ones_like(x))
        with pytest.raises(Boom) as info:
            fn(*args)
        assert info.value is boom


# ----- the GPU cases: devices -------------------------------------------------------------------
def _cuda(a, index=0, dtype=None):
    return gv.tensor(a, dtype=dtype, device=f"cuda:{index}")


@pytest.mark.gpu
@pytest.mark.parametrize("name", TAKES_V)
def test_v_on_wrong_device(name):
    functional(name)
    fn = functional(name)
    func = good_func(name)
    with pytest.raises(RuntimeError) as info:
        fn(func, _cuda(X), gv.tensor(np.ones(3)))
    assert_names(info.value, "v", "cpu", "cuda")
    with pytest.raises(RuntimeError) as info:
        fn(func, gv.tensor(X), _cuda(np.ones(3)))
    assert_names(info.value, "v", "cpu", "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", TAKES_V)
def test_v_entry_on_wrong_device(name):
    functional(name)
    fn = functional(name)
    L = Lib(gv, "cuda")
    func, inputs, v = _two(L, name)
    with pytest.raises(RuntimeError) as info:
        fn(func, inputs, (v[0], v[1].cpu()))
    assert_names(info.value, "Entry 1", "v", "cpu", "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", FAMILY)
def test_inputs_on_mixed_devices(name):
    functional(name)
    x, y = gv.tensor(X), _cuda(X)

    def func(a, b):
        out = a * b
        return out.sum() if name in SCALAR else out

    v = None
    if name == "vjp":
        v = _cuda(np.ones(3))
    elif name in ("jvp", "vhp", "hvp"):
        v = (gv.ones_like(x), gv.ones_like(y))
    L = Lib(gv, "cuda")
    with pytest.raises(RuntimeError) as info:
        L.call(name, func, (x, y), v)
    assert_names(info.value, "cpu", "cuda:0")


@pytest.mark.gpu
def test_inputs_on_two_gpus():
    if gv.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs; this machine has "
                    f"{gv.cuda.device_count()}")
    x, y = _cuda(X, 0), _cuda(X, 1)
    with pytest.raises(RuntimeError) as info:
        gv.vjp(lambda a, b: a + b, (x, y), _cuda(np.ones(3), 0))
    assert_names(info.value, "cuda:0", "cuda:1")


MIXED_OPS = {
    "add": lambda m, a, b: a + b,
    "mul": lambda m, a, b: a * b,
    "div": lambda m, a, b: a / b,
    "pow": lambda m, a, b: a ** b,
    "maximum": lambda m, a, b: m.maximum(a, b),
    "atan2": lambda m, a, b: m.atan2(a, b),
    "matmul": lambda m, a, b: a.reshape(1, 3) @ b.reshape(3, 1),
    "dot": lambda m, a, b: m.dot(a, b),
    "cat": lambda m, a, b: m.cat([a, b]),
    "stack": lambda m, a, b: m.stack([a, b]),
    "where-cond": lambda m, a, b: m.where(a > 0, b, b),
    "where-other": lambda m, a, b: m.where(b > 0, b, a),
    "gather-index": lambda m, a, b: m.gather(b, 0, m.tensor([0, 1], device=a.device)),
    "index-select-index": lambda m, a, b: m.index_select(b, 0,
                                                         m.tensor([0, 1], device=a.device)),
    "mse-loss": lambda m, a, b: m.nn.functional.mse_loss(a, b),
}


@pytest.mark.gpu
@pytest.mark.parametrize("order", ["cpu-cuda", "cuda-cpu"])
@pytest.mark.parametrize("case", MIXED_OPS)
def test_op_operands_on_mixed_devices(case, order):
    a, b = gv.tensor(X), _cuda(X + 1)
    if order == "cuda-cpu":
        a, b = _cuda(X), gv.tensor(X + 1)
    with pytest.raises(RuntimeError) as info:
        gv.vjp(lambda p, q: MIXED_OPS[case](gv, p, q).sum(), (a, b))
    assert_names(info.value, "cpu", "cuda")


@pytest.mark.gpu
def test_zero_dim_cpu_tensor_joins_a_cuda_op():
    """Not an error: PyTorch lets a 0-d CPU tensor take part in a CUDA op."""
    out, (gx, gs) = gv.vjp(lambda x, s: x * s, (_cuda(X), gv.tensor(2.0, dtype=gv.float64)),
                           _cuda(np.ones(3)))
    assert out.device == gv.device("cuda:0") and gx.device == gv.device("cuda:0")
    assert gs.device == gv.device("cpu")
    np.testing.assert_allclose(gx.numpy(), np.full(3, 2.0))
    np.testing.assert_allclose(gs.numpy(), X.sum())
