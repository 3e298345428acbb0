"""Tensor pickling and deepcopy against torch: values, dtype, device, requires_grad, leaves."""

import copy
import pickle

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device, _tensor
from tests.conftest import ORACLE_MESSAGES

torch = pytest.importorskip("torch")

DTYPES = ["float16", "float32", "float64", "int32", "int64", "bool"]
SHAPES = [(), (4,), (3, 4), (0, 4)]


def _data(shape, dtype, seed=0):
    a = np.random.default_rng(seed).uniform(-3, 3, shape)
    return (a > 0) if dtype == "bool" else a.astype(dtype)


def _state(t, device=None):
    """What a round trip must keep, read the same way from either library. The torch oracle is
    a CPU build, so a cuda case names the device its torch twin would be on."""
    host = t.detach().cpu().numpy()
    return (host.dtype, host.shape, host.tolist(), str(t.dtype).split(".")[-1],
            device or t.device.type, t.requires_grad, t.is_leaf, t.grad_fn is None,
            t.grad is None)


def _pair(a, dtype, requires_grad=False, device="cpu"):
    g = gv.tensor(a, dtype=getattr(gv, dtype), device=device, requires_grad=requires_grad)
    t = torch.tensor(a, dtype=getattr(torch, dtype), requires_grad=requires_grad)
    return g, t


# ----- pickle ---------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pickle_round_trip_as_torch(dtype, shape, protocol):
    g, t = _pair(_data(shape, dtype), dtype)
    got = pickle.loads(pickle.dumps(g, protocol=protocol))
    assert type(got) is gv.Tensor and got is not g
    assert _state(got) == _state(pickle.loads(pickle.dumps(t, protocol=protocol)))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_pickle_leaf_and_view(requires_grad):
    a = np.arange(12.0).reshape(3, 4)
    g, t = _pair(a, "float64", requires_grad)
    for make in (lambda m, x: x, lambda m, x: x.t(), lambda m, x: x[1:, ::2]):
        want = pickle.loads(pickle.dumps(make(torch, t)))
        got = pickle.loads(pickle.dumps(make(gv, g)))
        assert _state(got) == _state(want)


def test_pickle_non_leaf_comes_back_a_leaf_as_torch():
    a = np.linspace(-1, 1, 6).reshape(2, 3)
    g, t = _pair(a, "float64", requires_grad=True)
    got = pickle.loads(pickle.dumps((g.exp() * 2).sum(dim=1)))
    want = pickle.loads(pickle.dumps((t.exp() * 2).sum(dim=1)))
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-15)
    (_, _, _, *flags), (_, _, _, *want_flags) = _state(got), _state(want)
    assert flags == want_flags
    assert got.requires_grad and got.is_leaf
    got.sum().backward()                       # a fresh leaf: gradients reach it
    np.testing.assert_array_equal(got.grad.numpy(), np.ones(2))


def test_pickle_drops_grad_as_torch():
    g, t = _pair(np.ones(3), "float64", requires_grad=True)
    (g * 2).sum().backward()
    (t * 2).sum().backward()
    assert g.grad is not None
    assert _state(pickle.loads(pickle.dumps(g))) == _state(pickle.loads(pickle.dumps(t)))


def test_pickle_dtypes_and_devices():
    for d in (gv.float16, gv.float32, gv.float64, gv.int32, gv.int64, gv.bool):
        assert pickle.loads(pickle.dumps(d)) is d
    for spec in ("cpu", "cuda", "cuda:1"):
        assert pickle.loads(pickle.dumps(gv.device(spec))) == gv.device(spec)
        assert str(pickle.loads(pickle.dumps(gv.device(spec)))) == str(torch.device(spec)) \
            or spec == "cuda"                  # torch keeps a bare "cuda"; gpuvjp says cuda:0


def test_pickle_in_a_structure():
    g = gv.tensor([1.0, 2.0], requires_grad=True)
    got = pickle.loads(pickle.dumps({"a": [g, g], "b": (g * 3,)}))
    assert got["a"][0] is got["a"][1]          # pickle's memo: one object stays one object
    np.testing.assert_array_equal(got["b"][0].numpy(), [3.0, 6.0])


def test_unpickle_cuda_without_gpu_is_a_clear_error(monkeypatch):
    # The payload a cuda tensor pickles to, unpickled where CuPy sees no GPU.
    monkeypatch.setattr(_device, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="deserialize a cuda tensor.*no CUDA GPU"):
        _tensor._rebuild(gv.Tensor, np.ones(2, np.float32), "float32", "cuda", False, 0)


@pytest.mark.gpu
def test_pickle_cuda_lands_on_the_current_device():
    cupy = _device.cupy_module()               # the emulated one under GPUVJP_EMULATE_CUDA
    g = gv.tensor(np.arange(6.0).reshape(2, 3), device="cuda", requires_grad=True)
    blob = pickle.dumps(g * 2)
    last = cupy.cuda.runtime.getDeviceCount() - 1
    with cupy.cuda.Device(last):
        got = pickle.loads(blob)
    assert got.device == gv.device("cuda", last)
    assert isinstance(got._array(), cupy.ndarray) and got._array().device.id == last
    assert got.requires_grad and got.is_leaf
    np.testing.assert_array_equal(got.cpu().numpy(), np.arange(6.0).reshape(2, 3) * 2)


# ----- deepcopy -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_deepcopy_leaf_as_torch(dtype, device):
    grad = dtype.startswith("float")
    g, t = _pair(_data((3, 4), dtype), dtype, requires_grad=grad, device=device)
    got, want = copy.deepcopy(g), copy.deepcopy(t)
    assert got is not g and got.device == g.device
    assert _state(got) == _state(want, device=g.device.type)


def test_deepcopy_keeps_grad_and_memo_as_torch():
    g, t = _pair(np.array([1.0, -2.0, 3.0]), "float64", requires_grad=True)
    (g * g).sum().backward()
    (t * t).sum().backward()
    got, want = copy.deepcopy([g, g]), copy.deepcopy([t, t])
    assert (got[0] is got[1]) == (want[0] is want[1]) is True
    assert got[0].grad is not g.grad
    np.testing.assert_array_equal(got[0].grad.numpy(), want[0].grad.numpy())
    assert _state(got[0]) == _state(want[0])


def test_deepcopy_is_independent_of_the_original():
    a = np.arange(4.0)
    g = gv.tensor(a)
    c = copy.deepcopy(g)
    np.asarray(g)[0] = 100.0                   # np.asarray may share memory with the tensor
    assert c.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_deepcopy_of_a_no_grad_result_and_a_detached_one():
    for m in (gv, torch):
        x = m.ones(3, requires_grad=True)
        with m.no_grad():
            y = x * 2
        assert copy.deepcopy(y).requires_grad is False
        assert copy.deepcopy((x * 2).detach()).requires_grad is False


def test_deepcopy_non_leaf_raises_as_torch():
    errors = []
    for m in (gv, torch):
        x = m.ones(3, requires_grad=True)
        with pytest.raises(Exception) as info:
            copy.deepcopy(x * 2)
        errors.append(info.value)
    assert type(errors[0]) is type(errors[1]) is RuntimeError
    if ORACLE_MESSAGES:
        assert str(errors[1]).startswith(str(errors[0]))


def test_copy_copy_as_torch():
    g, t = _pair(np.ones(2), "float64", requires_grad=True)
    for got, want in ((copy.copy(g * 2), copy.copy(t * 2)), (copy.copy(g), copy.copy(t))):
        assert _state(got) == _state(want)
    assert copy.copy(g) is not g


def test_pickle_cpu_payload_is_numpy():
    red = gv.ones(2).__reduce_ex__(5)
    assert red[0] is _tensor._rebuild and type(red[1][1]) is np.ndarray


@pytest.mark.parametrize("name", ["sum", "mean", "exp", "all", "max", "new_zeros", "reshape"])
def test_bound_methods_pickle_and_carry_their_names(name):
    t = gv.tensor([1.0, 2.0])
    m = getattr(t, name)
    assert m.__name__ == name and m.__qualname__ == f"Tensor.{name}"
    back = pickle.loads(pickle.dumps(m))
    assert back.__name__ == name
    np.testing.assert_array_equal(back(*([2] if name in ("new_zeros", "reshape") else [])).numpy(),
                                  m(*([2] if name in ("new_zeros", "reshape") else [])).numpy())


def test_dtype_flags_are_read_only_as_torch():
    with pytest.raises(AttributeError):
        gv.int64.is_floating_point = True
    assert gv.float32.is_floating_point and not gv.int64.is_floating_point
