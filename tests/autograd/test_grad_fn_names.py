"""grad_fn names against torch: PyTorch's node names (`ExpBackward0`, `SumBackward1`, ...) for
the same programs, every registry op's name a node class torch has, and the documented
differences pinned."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp.ops._registry import REGISTRY, default_torch_name

torch = pytest.importorskip("torch")

# One expression per line, evaluated under both libraries with x (3, 4), y (4, 5), v (4,),
# b (2, 3, 4), c (2, 4, 5), all requiring grad; `m` is the module, `F` its nn.functional.
PROGRAMS = [
    "x @ y", "m.mm(x, y)", "v @ v", "m.dot(v, v)", "x @ v", "m.mv(x, v)", "m.bmm(b, c)",
    "m.outer(v, v)", "F.linear(x, y.t())",
    "x.reshape(-1)", "x.view(12)", "x.flatten()", "x.unsqueeze(0)", "x[None].squeeze(0)",
    "x[None][None].squeeze()", "x.transpose(0, 1)", "x.mT", "b.permute(2, 0, 1)",
    "v.expand(3, 4)", "m.broadcast_to(v, (3, 4))",
    "x[1:]", "x[1]", "x[:, 1:]", "x[:, 1]", "x[1:, 2]", "x[None, 1]", "x[1, None]", "x[None]",
    "x[...]", "x[m.tensor([0, 2])]", "x[x > 1]", "x[1, [0, 1]]",
    "x.sum()", "x.sum(1)", "x.sum(dim=0, keepdim=True)", "x.prod()", "x.prod(1)",
    "x.amax(1)", "x.amin()", "x.max()", "x.max(1)[0]", "x.min()", "x.min(1)[0]",
    "x.logsumexp(1)", "x.norm()", "x.norm(dim=1)", "x.var()", "x.var(1)", "x.std()",
    "x.std(1)", "x.cumsum(1)",
    "m.cat([x, x])", "m.stack([x, x])", "x.flip(0)", "x.index_select(0, m.tensor([1]))",
    "x.gather(1, m.tensor([[0], [1], [2]]))",
    "x + x", "x + 1", "x - x", "x - 1", "1 - x", "x * x", "x * 2", "x / x", "x / 2",
    "x ** x", "x ** 2", "2 ** x", "m.pow(x, 0.5)",
    "-x", "x.exp()", "x.log()", "x.sqrt()", "x.sin()", "x.cos()", "x.tan()", "x.tanh()",
    "x.sigmoid()", "x.relu()", "x.abs()", "x.sign()", "x.exp2()", "x.log2()", "x.log1p()",
    "x.expm1()", "x.rsqrt()", "x.reciprocal()", "x.square()", "x.erf()", "m.atan2(x, x)",
    "x.clamp(0, 1)", "x.clamp(min=0)", "x.clamp(max=0)", "m.maximum(x, x)",
    "m.minimum(x, x)", "m.where(x > 1, x, x)", "x.clone()", "x.float()",
    "x.transpose(0, 1).contiguous()", "m.fmod(x, 1.5)", "m.fmod(x, x)", "m.remainder(x, 2)",
    "m.remainder(x, x)", "x % 1.5", "x.select(1, 2)", "x.narrow(1, 1, 2)",
    "x.div(2, rounding_mode='floor')",
    "F.gelu(x)", "F.gelu(x, approximate='tanh')", "F.silu(x)", "F.softplus(x)",
    "x.softmax(1)", "x.log_softmax(1)", "F.relu(x)",
]

# Where gpuvjp's graph differs from PyTorch's (one op standing for several PyTorch functions,
# or a composite): the name gpuvjp gives, pinned, and listed in docs/differences.md.
DIFFERENCES = {
    "b @ c": "BmmBackward0",                       # torch: UnsafeViewBackward0
    "b @ y": "BmmBackward0",                       # torch: UnsafeViewBackward0
    "v @ y": "MvBackward0",                        # torch: SqueezeBackward4
    "m.einsum('ij,jk->ik', x, y)": "EinsumBackward0",    # torch: ViewBackward0
    "x.t()": "TransposeBackward0",                 # torch: TBackward0
    "x.T": "TransposeBackward0",                   # torch: PermuteBackward0
    "b.permute(0, 2, 1)": "TransposeBackward0",    # torch: PermuteBackward0 (2 dims swapped)
    "x.t().reshape(-1)": "ViewBackward0",          # torch: UnsafeViewBackward0
    "x.unsqueeze(0).squeeze()": "SqueezeBackward1",      # torch: SqueezeBackward0
    "x.reshape(1, 3, 4)": "UnsqueezeBackward0",    # torch: ViewBackward0
    "x.split(2)[0]": "SliceBackward0",             # torch: SplitBackward0
    "x.chunk(2)[1]": "SliceBackward0",             # torch: SplitBackward0
    "x.mean()": "DivBackward0",                    # torch: MeanBackward0
    "x.mean(1)": "DivBackward0",                   # torch: MeanBackward1
    "2 / x": "DivBackward0",                       # torch: MulBackward0
    "x.clamp(m.zeros(3, 4))": "WhereBackward0",    # torch: ClampBackward0
    "m.norm(x, p='nuc')": "NuclearNormBackward0",  # torch: SumBackward1
    "F.cross_entropy(x, m.tensor([0, 1, 2]))": "DivBackward0",   # torch: NllLossBackward0
    "F.cross_entropy(x, m.tensor([0, 1, 2]), reduction='sum')": "SumBackward0",  # NllLoss...
    "F.cross_entropy(x, m.tensor([0, 1, 2]), reduction='none')": "WhereBackward0",  # NllLoss...
    "F.mse_loss(x, x.detach())": "DivBackward0",   # torch: MseLossBackward0
    "x.sum((0, 1))": "SumBackward0",               # torch: SumBackward1 (dim given)
    "x.split([1, 2])[1]": "SliceBackward0",        # torch: SplitWithSizesBackward0
    "x.unbind(1)[0]": "SelectBackward0",           # torch: UnbindBackward0
    "x.repeat(2, 1)": "ViewBackward0",             # torch: RepeatBackward0
    "x.tile(2)": "ViewBackward0",                  # torch: RepeatBackward0
    "x.repeat_interleave(2, dim=0)": "IndexSelectBackward0",     # torch: ViewBackward0
    "x.masked_fill(x > 1, 0.0)": "WhereBackward0",  # torch: MaskedFillBackward0
    "m.clamp_min(x, 1.0)": "ClampBackward1",       # torch: ClampMinBackward0
    "m.clamp_max(x, 1.0)": "ClampBackward1",       # torch: ClampMaxBackward0
    "m.diag(v)": "DiagonalBackwardBackward0",      # torch: DiagEmbedBackward0
    "x.diag()": "DiagonalBackward0",               # torch: DiagonalBackward0_copy
    "x.trace()": "SumBackward0",                   # torch: TraceBackward0
    "m.addmm(x, x, y[:, :4])": "AddBackward0",     # torch: AddmmBackward0
    "m.baddbmm(b, b, c[:, :, :4])": "AddBackward0",  # torch: BaddbmmBackward0
    "m.lerp(x, x * 2, 0.3)": "AddBackward0",       # torch: LerpBackward0
    "m.lerp(x, x * 2, x)": "WhereBackward0",       # torch: LerpBackward1
    "x.round(decimals=1)": "DivBackward0",         # torch: RoundBackward1
    "x.frac()": "SubBackward0",                    # torch: FracBackward0
    "x.div(2, rounding_mode='trunc')": "TruncBackward0",         # torch: DivBackward2
}

SHAPES = {"x": (3, 4), "y": (4, 5), "v": (4,), "b": (2, 3, 4), "c": (2, 4, 5)}


def _node(m, expr):
    rng = np.random.default_rng(0)
    env = {k: m.tensor(rng.uniform(0.5, 2.0, s), requires_grad=True) for k, s in SHAPES.items()}
    env.update(m=m, F=m.nn.functional)
    return eval(expr, env).grad_fn


@pytest.mark.parametrize("expr", PROGRAMS)
def test_name_matches_torch(expr):
    got, want = _node(gv, expr), _node(torch, expr)
    assert got.name() == want.name() == type(want).__name__


@pytest.mark.parametrize("expr", sorted(DIFFERENCES))
def test_documented_differences(expr):
    want = _node(torch, expr).name()
    got = _node(gv, expr).name()
    assert got == DIFFERENCES[expr] and got != want


def test_repr_has_torch_shape():
    node = _node(gv, "x.exp()")
    assert re.fullmatch(r"<ExpBackward0 object at 0x[0-9a-f]+>", repr(node))
    assert repr(gv.ones(2, requires_grad=True).exp()).endswith("grad_fn=<ExpBackward0>)")


def test_names_survive_the_sweep():
    """A node's name is the same after backward released its saved tensors."""
    x = gv.ones(3, requires_grad=True)
    exprs = {"PowBackward0": x ** 2, "PowBackward2": 2 ** x, "PowBackward1": x ** x,
             "RsubBackward1": 1 - x, "UnsqueezeBackward0": x.unsqueeze(0),
             "SumBackward0": x.sum()}
    for name, out in exprs.items():
        assert out.grad_fn.name() == name
        out.sum().backward()
        assert out.grad_fn.name() == name


def test_every_registry_op_is_named_as_torch_names_it():
    """Each differentiable op whose name is a torch function has a name torch's autograd has
    a node for (the default spelling is PyTorch's code generator's)."""
    torch_nodes = {n for n in dir(torch._C._functions) if "Backward" in n}
    decomposed = {"einsum", "nuclear_norm"}        # torch records their parts instead
    checked = 0
    for name, op in REGISTRY.items():
        public = hasattr(torch, name) or hasattr(torch.nn.functional, name)
        if not (public and op.differentiable and op.vjps) or name in decomposed:
            continue
        if isinstance(op.torch_name, str):
            assert op.torch_name in torch_nodes, (
                f"op {name!r} is named {op.torch_name}, a node torch does not have: give it "
                "PyTorch's grad_fn name in TORCH_NAMES (gpuvjp/ops/_registry.py)")
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("name, want", [
    ("exp", "ExpBackward0"), ("log1p", "Log1PBackward0"), ("index_select",
     "IndexSelectBackward0"), ("log_softmax", "LogSoftmaxBackward0"),
    ("tanh_bwd", "TanhBackwardBackward0"), ("atan2", "Atan2Backward0")])
def test_default_spelling(name, want):
    assert default_torch_name(name) == want


# ----- grad_fn objects: class, next_functions, metadata ------------------------------------
# Where gpuvjp's graph has another shape than PyTorch's: one getitem node for an index that
# PyTorch applies in steps, outer as a product of unsqueezed vectors, `t()` as a transpose.
# Listed in docs/differences.md.
STRUCTURE_DIFFERENCES = {"x[1:, 2]", "x[None, 1]", "x[1, None]", "x[1, [0, 1]]",
                         "m.outer(v, v)", "F.linear(x, y.t())"}


def _tree(fn, depth=0):
    """The graph below `fn` as nested (class name, ((child, output index), ...))."""
    if fn is None or depth > 6:
        return fn
    return type(fn).__name__, tuple((_tree(f, depth + 1), k) for f, k in fn.next_functions)


@pytest.mark.parametrize("expr", [p for p in PROGRAMS if p not in STRUCTURE_DIFFERENCES] +
                         ["2 * x", "1 + x", "x - 1", "m.where(x > 1, x, 0.0)",
                          "m.cat([x, x]).sum(0)", "(x.exp() * x.detach()).sum()"])
def test_graph_matches_torch(expr):
    got, want = _tree(_node(gv, expr)), _tree(_node(torch, expr))
    assert got == want


@pytest.mark.parametrize("expr", sorted(STRUCTURE_DIFFERENCES))
def test_documented_structure_differences(expr):
    assert _tree(_node(gv, expr)) != _tree(_node(torch, expr))
    assert _node(gv, expr).name() == _node(torch, expr).name()


@pytest.mark.parametrize("m", [gv, torch], ids=["gpuvjp", "torch"])
def test_grad_fn_object(m):
    x = m.ones(3, requires_grad=True)
    out = x.exp() * 2
    fn = out.grad_fn
    assert type(fn).__name__ == "MulBackward0" and repr(type(fn)) == "<class 'MulBackward0'>"
    assert isinstance(fn, m.autograd.graph.Node) and fn is out.grad_fn
    assert re.fullmatch(r"<MulBackward0 object at 0x[0-9a-f]+>", repr(fn))
    acc = fn.next_functions[0][0].next_functions[0][0]
    assert type(acc).__name__ == "AccumulateGrad" and acc.variable is x
    assert acc.name() == "torch::autograd::AccumulateGrad" and acc.next_functions == ()
    assert re.fullmatch(r"<AccumulateGrad object at 0x[0-9a-f]+>", repr(acc))
    assert acc is (x * 3).grad_fn.next_functions[0][0] and x.grad_fn is None
    fn.metadata["tag"] = 1
    del fn
    assert out.grad_fn.metadata == {"tag": 1} and acc.metadata == {}
    out.sum().backward()                       # a swept node keeps its edges and name
    assert type(out.grad_fn.next_functions[0][0]).__name__ == "ExpBackward0"
    with pytest.raises(TypeError, match="cannot create 'MulBackward0' instances"):
        type(out.grad_fn)()


@pytest.mark.parametrize("m", [gv, torch], ids=["gpuvjp", "torch"])
def test_function_grad_fn_reads_its_ctx(m):
    class Pair(m.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            ctx.scale = 3
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, ga, gb):
            return ga * 2 + gb * 3

    x = m.ones(2, requires_grad=True)
    a, b = Pair.apply(x)
    fn = a.grad_fn
    assert type(fn).__name__ == "PairBackward" and fn.name() == "PairBackward"
    assert fn.scale == 3 and fn.saved_tensors[0] is x
    assert fn.next_functions[0][0].variable is x
    first, second = (b * 1).grad_fn.next_functions
    assert first == (fn, 1) and second == (None, 0)


def test_grad_fn_views_make_no_cycle():
    """A grad_fn object holds its node; the node does not hold it: dropping both frees both."""
    import gc
    import weakref
    gc.disable()
    try:
        x = gv.ones(3, requires_grad=True)
        out = x.exp().sum()
        fn = out.grad_fn
        fn.metadata["k"] = fn.next_functions
        node, view = weakref.ref(out._node), weakref.ref(fn)
        del out, fn
        assert node() is None and view() is None
    finally:
        gc.enable()


def test_node_hooks_refuse_clearly():
    fn = gv.ones(2, requires_grad=True).exp().grad_fn
    for register in (fn.register_hook, fn.register_prehook):
        with pytest.raises(NotImplementedError, match="hooks on grad_fn"):
            register(lambda *a: None)


def test_gradient_graph_reaches_the_leaf_as_accumulate_grad():
    """backward(create_graph=True) holds the leaf weakly through a stand-in node; grad_fn shows
    the leaf's AccumulateGrad there, as PyTorch's graph does."""
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    accs = [f for f, _ in x.grad.grad_fn.next_functions if f is not None]
    assert [type(f).__name__ for f in accs] == ["AccumulateGrad"] and accs[0].variable is x
