"""NumPy interop against torch: __array__ with NumPy 2's copy= rules, and ndarray / NumPy
scalar operands of Tensor operators (gpuvjp keeps the graph on either side: an addition to
PyTorch, see docs/differences.md)."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import gpuvjp as gv
from tests.conftest import CUDA

torch = pytest.importorskip("torch")

# torch's own __array__ predates NumPy 2's copy argument, and NumPy says so on every call
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


# ----- __array__ ------------------------------------------------------------------------------
def _sharing(m, convert):
    """Does the array `convert` makes share memory with the tensor (write, then read back)?"""
    t = m.tensor([1.0, 2.0], dtype=m.float64)
    a = convert(t)
    a[0] = 7.0
    return float(t[0]) == 7.0, type(a) is np.ndarray, a.dtype


@pytest.mark.parametrize("convert", [np.array, lambda t: np.array(t, copy=True), np.asarray,
                                     lambda t: np.asarray(t, copy=None),
                                     lambda t: np.asarray(t, dtype=np.float64)],
                         ids=["array", "array-copy", "asarray", "asarray-none",
                              "asarray-same-dtype"])
def test_array_copies_and_shares_as_torch(convert):
    assert _sharing(gv, convert) == _sharing(torch, convert)


def test_array_without_copy_shares():
    """NumPy 2's copy=False: no copy needed, none made (torch's __array__ predates the argument
    and fails here)."""
    assert _sharing(gv, lambda t: np.array(t, copy=False)) == (True, True, np.float64)


def test_array_with_another_dtype():
    t = gv.tensor([1.5, 2.5], dtype=gv.float64)
    a = np.asarray(t, dtype=np.float32)
    a[0] = 9
    assert a.dtype == np.float32 and float(t[0]) == 1.5
    with pytest.raises(ValueError, match="copy"):
        np.array(t, dtype=np.float32, copy=False)
    with pytest.raises(ValueError):
        np.array(torch.tensor([1.5], dtype=torch.float64), dtype=np.float32, copy=False)


def test_tensor_that_requires_grad_converts():
    """A documented difference: PyTorch refuses numpy() on a tensor that requires grad."""
    t = gv.tensor([1.0, 2.0], requires_grad=True)
    assert np.asarray(t).tolist() == t.numpy().tolist() == [1.0, 2.0]
    with pytest.raises(RuntimeError, match="requires grad"):
        np.asarray(torch.tensor([1.0, 2.0], requires_grad=True))


@pytest.mark.gpu
def test_array_of_a_cuda_tensor_raises_as_torch():
    t = gv.ones(2, device=CUDA)
    for convert in (np.asarray, np.array, lambda x: np.array(x, copy=False)):
        with pytest.raises(TypeError, match="can't convert cuda"):
            convert(t)
    assert np.array_equal(t.numpy(), [1.0, 1.0])          # the explicit copy works


# ----- operands -------------------------------------------------------------------------------
OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
       "pow": operator.pow}
CMPS = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
        "eq": operator.eq, "ne": operator.ne}
ARRAYS = {"f64": np.array([0.5, 1.5, 2.0]), "f32": np.array([0.5, 1.5, 2.0], np.float32),
          "i64": np.array([1, 2, 3]), "0d-f64": np.array(1.5), "b": np.array([True, False, True])}


def _want(op, t_np, dtype, nd, nd_left):
    """torch's result with the ndarray as a tensor: tensor promotion, as gpuvjp promises."""
    t, o = torch.tensor(t_np, dtype=dtype), torch.from_numpy(nd.copy())
    return op(o, t) if nd_left else op(t, o)


@pytest.mark.parametrize("nd_left", [False, True], ids=["t-op-nd", "nd-op-t"])
@pytest.mark.parametrize("arr", sorted(ARRAYS))
@pytest.mark.parametrize("name", sorted(OPS) + sorted(CMPS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ndarray_operand_promotes_like_a_tensor(name, arr, nd_left, dtype):
    op = {**OPS, **CMPS}[name]
    nd = ARRAYS[arr]
    t_np = np.array([1.25, 0.75, 2.5])
    if name == "sub" and nd.dtype == bool:
        pytest.skip("sub with a bool operand is an error in both (tested in test_oracle)")
    got = op(nd, gv.tensor(t_np, dtype=getattr(gv, dtype))) if nd_left else \
        op(gv.tensor(t_np, dtype=getattr(gv, dtype)), nd)
    want = _want(op, t_np, getattr(torch, dtype), nd, nd_left)
    assert type(got) is gv.Tensor
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


@pytest.mark.parametrize("nd_left", [False, True], ids=["t-op-nd", "nd-op-t"])
@pytest.mark.parametrize("name", sorted(OPS) + ["matmul"])
def test_ndarray_operand_keeps_the_graph(name, nd_left, rng):
    op = OPS.get(name, operator.matmul)
    x_np, nd = rng.uniform(0.5, 2, (3, 3)), rng.uniform(0.5, 2, (3, 3))

    def f(m, x):
        other = nd if m is gv else torch.from_numpy(nd)
        return (op(other, x) if nd_left else op(x, other)).exp()
    x = gv.tensor(x_np, requires_grad=True)
    out = f(gv, x)
    assert type(out) is gv.Tensor and out.requires_grad
    out.sum().backward()
    tx = torch.tensor(x_np, requires_grad=True)
    f(torch, tx).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)
    got = gv.vjp(lambda t: f(gv, t), gv.tensor(x_np), gv.ones(3, 3, dtype=gv.float64))[1]
    np.testing.assert_allclose(got.numpy(), tx.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("scalar", [np.float64(2.5), np.float32(2.5), np.float16(2.5),
                                    np.int64(3), np.int32(3), np.bool_(True)],
                         ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("dtype", ["float16", "float32", "int32", "int64"])
@pytest.mark.parametrize("name", ["add", "mul", "div", "lt"])
def test_numpy_scalars_count_as_python_scalars(scalar, dtype, name):
    op = {**OPS, **CMPS}[name]
    got, want_py = [], []
    for s in (scalar, scalar.item()):
        for left in (False, True):
            t = gv.tensor([1, 2, 3], dtype=getattr(gv, dtype))
            got.append(op(s, t) if left else op(t, s))
            tt = torch.tensor([1, 2, 3], dtype=getattr(torch, dtype))
            want_py.append(op(scalar.item(), tt) if left else op(tt, scalar.item()))
    for g, w in zip(got, want_py + want_py):
        assert g.dtype.name == str(w.dtype).removeprefix("torch.")
        np.testing.assert_allclose(g.numpy().astype(np.float64), w.numpy().astype(np.float64),
                                   rtol=1e-3 if dtype == "float16" else 1e-7)


def test_ufuncs_refuse_tensors():
    """NumPy defers operators to the Tensor and refuses its ufuncs on one (no silent ndarray
    that drops the graph)."""
    t = gv.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="ufunc"):
        np.exp(t)
    with pytest.raises(TypeError):
        np.add(np.ones(2), t)
    assert type(np.ones(2) + t) is gv.Tensor


def test_unsupported_operands_still_raise():
    t = gv.ones(2)
    for other in ("a", [1, 2], None, np.array(["a", "b"]), np.complex128(1j)):
        with pytest.raises(TypeError):
            t + other
        with pytest.raises(TypeError):
            other * t


@pytest.mark.gpu
def test_ndarray_operand_goes_to_the_tensors_device():
    t = gv.ones(2, device=CUDA, requires_grad=True)
    out = np.array([1.0, 2.0], np.float32) * t
    assert out.device == t.device and out.requires_grad
    np.testing.assert_allclose(out.cpu().numpy(), [1.0, 2.0])
