"""The Tensor attributes and dunder methods PyTorch code reaches for first (sizes, strides,
contiguity, `in`, format, retain_grad, memory formats, `%`, bitwise `& | ^ ~`, isnan/any/all/
allclose/equal, reversed), each against torch."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import gpuvjp as gv

torch = pytest.importorskip("torch")

# One expression per line, evaluated under both libraries; `m` is the module, x a (2, 3) float32
# tensor that requires grad, i a (2, 3) int64 tensor, b a (2, 3, 4) float64 tensor.
SAME = [
    "x.nbytes", "x.itemsize", "i.nbytes", "b.itemsize", "x.element_size()", "x.ndimension()",
    "x.is_complex()", "x.is_sparse", "x.is_quantized", "x.is_meta", "x.get_device()",
    "x.stride()", "x.T.stride()", "x.stride(0)", "x.stride(-1)", "b.permute(2, 0, 1).stride()",
    "x[:, 1:].stride()", "x[0].stride()", "x[None].stride()", "x.expand(4, 2, 3).stride()",
    "x.is_contiguous()", "x.T.is_contiguous()", "x.mT.contiguous().is_contiguous()",
    "x[:, :1].is_contiguous()", "x[:1].is_contiguous()", "b[:, 0].is_contiguous()",
    "x.is_contiguous(memory_format=m.contiguous_format)", "m.tensor(1.0).stride()",
    "x.clone(memory_format=m.contiguous_format).shape",
    "x.clone(memory_format=m.preserve_format).requires_grad",
    "x.contiguous(memory_format=m.contiguous_format).shape",
    "2.0 in x", "7 in x", "m.tensor(6.0) in x", "m.tensor([4.0, 0.0, 0.0]) in x", "3 in i",
    "f'{m.tensor(1.23456):.3f}'", "f'{m.tensor(7):04d}'", "format(m.tensor(2.5), '')",
    "f'{m.tensor(True)}'", "f'{x.sum():>10.2f}'",
    "x.H.shape", "b.mH.shape", "x.mH.shape",
    "(x % 2).tolist()", "(i % 4).tolist()", "(7 % (i + 1)).tolist()", "(x % -1.5).tolist()",
    "(x % 2).requires_grad", "(i % 4).dtype", "(5.5 % (x + 1)).tolist()",
    "i & 3", "3 & i", "i | (x > 2)", "(x > 2) ^ (x < 5)", "~i", "~(x > 2)", "(x > 2) & 1",
    "(x > 2) | True", "i ^ 7", "m.bitwise_and(i, i + 1)", "i.bitwise_or(8)",
    "m.bitwise_not(i.int())", "i.int() | i", "m.bitwise_xor(i, 5)",
    "n.isnan()", "n.isinf()", "n.isfinite()", "i.isnan()", "i.isinf()", "i.isfinite()",
    "(x > 7).isfinite()", "m.isinf(n.half())", "m.isnan(x)", "n.any()", "n.all()", "n.any(1)",
    "n.all(dim=0, keepdim=True)", "i.any(dim=(0, 1))", "(i > 5).any()", "m.all(i, 0)",
    "m.zeros(0).all()", "m.zeros(0).any()", "i.int().any()", "(i > 0).all(1)",
    "m.allclose(n, n)", "m.allclose(n, n, equal_nan=True)", "m.allclose(i, i)",
    "m.allclose(x, x + 1e-6)", "m.allclose(x, x + 1e-3, rtol=1e-3)", "x.allclose(x[:1])",
    "m.isclose(n, n + 1e-6)", "m.isclose(n, n, equal_nan=True)", "m.isclose(i, i + 1)",
    "m.isclose(i > 0, i > 1)", "m.equal(n, n)", "m.equal(i, i + 0)", "m.equal(i, i[:1])",
    "m.equal(i, i.float())", "x.equal(x.detach())",
    "reversed(i)", "reversed(m.tensor(2.0))", "reversed(x).requires_grad",
    "x // 2", "2 // (x + 10)", "x // x", "i // 2", "i // -2", "7 // (i + 10)", "x // 0.0",
    "m.div(i, 4, rounding_mode='trunc')", "m.div(-i, 4, rounding_mode='floor')",
    "m.div(-7, i + 1, rounding_mode='trunc')", "x.div(-4, rounding_mode='trunc')",
    "x.div(0.1, rounding_mode='floor')", "m.div(1.0, m.tensor(0.1), rounding_mode='floor')",
    "m.divide(x, 2, rounding_mode='floor')", "x.div(0.0, rounding_mode='trunc')",
    "m.floor_divide(i.int(), 3)", "x.floor_divide(3)", "x.half() // 2", "m.div(x, 2)",
    "x.div(2, rounding_mode=None)", "(x // 2).requires_grad",
    "x.select(0, 1)", "x.select(-1, -3)", "m.select(b, 2, 3).shape", "x.select(1, m.tensor(1))",
    "x.unbind(1)", "m.unbind(x)", "len(m.unbind(b, -1))", "m.zeros(0, 2).unbind()",
    "x.type()", "i.type()", "(x > 1).type()", "b.half().type()", "x.type(m.float64)",
    "x.type('torch.LongTensor')", "x.type(m.float32) is x", "i.type('torch.LongTensor') is i",
]
# The error each raises, type and message, as torch's.
RAISES = [
    "bool(x)", "bool(m.zeros(0))", "'a' in x", "[1] in x", "f'{x:.3f}'",
    "m.ones(2, 2, 2).H", "m.ones(3).H", "m.ones(3).mH", "m.ones(2).retain_grad()",
    "x.clone(memory_format=1)", "x & x", "i & 1.5", "x | 1", "~x", "m.bitwise_not(x)",
    "m.bitwise_xor(x, i)", "x.allclose(x.double())", "m.isclose(i, i.float())", "n.any(5)",
    "i // 0", "m.div(i, i, rounding_mode='trunc')", "m.tensor([True]) // m.tensor([True])",
    "x.div(2, rounding_mode='round')", "x.select(0, 5)", "x.select(2, 0)", "x.select(0, 1.5)",
    "m.ones(()).select(0, 0)", "m.ones(()).unbind()", "x.unbind(2)", "x.type('float')",
    "x.type(3)",
]


def _env(m):
    env = {"m": m, "x": m.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True),
           "i": m.arange(6).reshape(2, 3), "b": m.zeros(2, 3, 4, dtype=m.float64),
           "n": m.tensor([[1.0, float("nan"), 0.0], [float("inf"), -2.0, -float("inf")]])}
    return env


def _value(r, m):
    if isinstance(r, tuple):
        return tuple(_value(a, m) for a in r)
    if isinstance(r, m.Tensor):
        return ("tensor", str(r.dtype).split(".")[-1], tuple(r.shape), r.tolist())
    if isinstance(r, m.dtype):
        return str(r).split(".")[-1]
    return tuple(r) if isinstance(r, m.Size) else r


@pytest.mark.parametrize("expr", SAME)
def test_same_as_torch(expr):
    got = _value(eval(expr, _env(gv)), gv)
    want = _value(eval(expr, _env(torch)), torch)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("expr", RAISES)
def test_raises_as_torch(expr):
    with pytest.raises(Exception) as want:
        eval(expr, _env(torch))
    with pytest.raises(want.type) as got:
        eval(expr, _env(gv))
    assert str(got.value) == str(want.value).replace("torch.", "gpuvjp.")


@pytest.mark.parametrize("expr", ["x.select(1, 2) * 3", "m.stack(x.unbind(1)[::-1], 1)",
                                  "x.div(2.5, rounding_mode='floor') + x",
                                  "x.div(x.detach() + 1, rounding_mode='trunc') * x"])
def test_vjp_as_torch(expr):
    """select and unbind pass the gradient to their slice; a rounded quotient passes 0."""
    xs = np.arange(1.0, 7.0).reshape(2, 3)
    got = gv.vjp(lambda t: eval(expr, {"m": gv, "x": t}), gv.tensor(xs),
                 gv.ones_like(eval(expr, {"m": gv, "x": gv.tensor(xs)})))
    want = torch.autograd.functional.vjp(lambda t: eval(expr, {"m": torch, "x": t}),
                                         torch.tensor(xs),
                                         torch.ones_like(eval(expr, {"m": torch,
                                                                     "x": torch.tensor(xs)})))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy())


def test_strides_and_contiguity_on_the_device(device):
    i = gv.arange(4, device=device)
    assert (i & 6).tolist() == [0, 0, 2, 2] and (~(i > 1)).tolist() == [True, True, False, False]
    with pytest.raises(NotImplementedError, match=f'"bitwise_or_{gv.device(device).type}"'):
        i.float() | i
    x = gv.zeros(2, 3, 4, device=device)
    assert x.stride() == (12, 4, 1) and x.is_contiguous()
    assert x.transpose(0, 2).stride() == (1, 4, 12) and not x.transpose(0, 2).is_contiguous()
    assert x.get_device() == (-1 if device == "cpu" else gv.device(device).index)
    assert x.type() == ("torch.FloatTensor" if device == "cpu" else "torch.cuda.FloatTensor")
    assert x.type("torch.DoubleTensor").dtype == gv.float64
    assert 0 in x and 1 not in x and f"{x.sum():.1f}" == "0.0"
    assert x.transpose(0, 2).contiguous().is_contiguous() and x.contiguous() is x
    n = gv.tensor([[1.0, float("nan")], [float("inf"), 2.0]], device=device)
    assert n.isnan().any().item() and n.isfinite().all(1).tolist() == [False, False]
    assert gv.allclose(n, n, equal_nan=True) and not gv.equal(n, n)
    assert reversed(n)[0].tolist() == [float("inf"), 2.0]
    i = gv.tensor([7, -7], device=device)
    assert (i // 2).tolist() == [3, -4] and i.div(2, rounding_mode="trunc").tolist() == [3, -3]
    assert n.unbind(1)[0].tolist() == [1.0, float("inf")]
    assert n.select(0, 1).tolist() == [float("inf"), 2.0]


@pytest.mark.parametrize("m", [gv, torch], ids=["gpuvjp", "torch"])
def test_retain_grad(m):
    x = m.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.exp()
    y.retain_grad()
    z = (y * y).sum()
    z.retain_grad()
    assert y.retains_grad and z.retains_grad and not x.retains_grad
    z.backward(retain_graph=True)
    np.testing.assert_allclose(y.grad.numpy(), 2 * np.exp([1.0, 2.0, 3.0]), rtol=1e-6)
    assert z.grad.item() == 1.0 and not y.grad.requires_grad
    z.backward(retain_graph=True)                           # accumulates
    np.testing.assert_allclose(y.grad.numpy(), 4 * np.exp([1.0, 2.0, 3.0]), rtol=1e-6)
    y.grad = None
    m.autograd.grad(z, x)                                   # autograd.grad fills it too
    np.testing.assert_allclose(y.grad.numpy(), 2 * np.exp([1.0, 2.0, 3.0]), rtol=1e-6)
    w = x * 3
    w.retain_grad()
    (w * w).sum().backward(inputs=[x])
    np.testing.assert_allclose(w.grad.numpy(), [6.0, 12.0, 18.0])
    x.retain_grad()                                         # a leaf: nothing changes
    assert not x.retains_grad


def test_retain_grad_create_graph_and_no_cycle():
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    y.retain_grad()
    (y * y).sum().backward(create_graph=True)
    assert y.grad.requires_grad                             # the gradient keeps its graph
    np.testing.assert_allclose(y.grad.detach().numpy(), [2.0, 8.0])
    gc.disable()
    try:
        held = len(gv.autograd.graph.RETAINED)
        a = gv.ones(2, requires_grad=True)
        b = a.exp()
        b.retain_grad()
        (b * 2).sum().backward()
        ref = weakref.ref(b)
        del b
        assert ref() is None and len(gv.autograd.graph.RETAINED) == held
    finally:
        gc.enable()


def test_memory_formats_are_public():
    assert repr(gv.contiguous_format) == "gpuvjp.contiguous_format"
    assert isinstance(gv.preserve_format, gv.memory_format)
    assert {"memory_format", "contiguous_format", "preserve_format"} <= set(gv.__all__)
