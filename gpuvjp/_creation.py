"""Creation functions: tensor, as_tensor, from_numpy, zeros/ones/full/empty, arange, rand..."""

from __future__ import annotations

import threading

import numpy as np

from . import _device, _dtype, _trace
from ._tensor import Tensor
from .ops._util import norm_shape

__all__ = ["tensor", "as_tensor", "from_numpy", "from_dlpack", "zeros", "ones", "empty", "full",
           "zeros_like", "ones_like", "full_like", "empty_like", "arange", "linspace", "eye",
           "rand", "randn", "manual_seed"]


def _dev(device):
    if device is None:
        return _device.check_device(_device.get_default_device())
    return _device.check_device(_device.parse_device(device))


def _put(arr, dev):
    """Place a NumPy array on `dev` (a copy to the GPU for cuda)."""
    if dev.type == "cpu":
        return arr
    cp = _device.cupy_module()
    with cp.cuda.Device(dev.index):
        return cp.asarray(arr)


def _finish(arr, dev, requires_grad):
    t = Tensor._make(arr, dev, _dtype.from_numpy_dtype(arr.dtype), None)
    if requires_grad:
        if not t._dtype.is_floating_point:
            raise RuntimeError("Only Tensors of floating point and complex dtype can require "
                               "gradients")
        t._requires_grad = True
    return t


def _infer_np(data, dtype):
    """NumPy array for python data with PyTorch's inference (floats -> default float dtype)."""
    if dtype is not None:
        return np.asarray(data, dtype=_dtype.to_dtype(dtype).np)
    arr = np.asarray(data)
    if arr.dtype == object:
        raise TypeError(f"Could not infer dtype of {type(data).__name__}")
    if arr.dtype.kind == "f" and not isinstance(data, np.ndarray) \
            and not isinstance(data, np.generic):
        arr = arr.astype(_dtype.get_default_dtype().np)
    elif arr.dtype.kind in "iu" and not isinstance(data, np.ndarray):
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "US":
        raise TypeError(f"new(): invalid data type '{arr.dtype.kind == 'U' and 'str'}'")
    return arr


def tensor(data, dtype=None, device=None, requires_grad=False):
    """Same as `torch.tensor`: always copies `data`."""
    if isinstance(data, Tensor):
        t = data.detach().clone()
        if dtype is not None:
            t = t.to(dtype)
        if device is not None:
            t = t.to(device)
        return t.requires_grad_(requires_grad) if requires_grad else t
    dev = _dev(device)
    if _device.is_cupy_array(data):
        arr = data.astype(_dtype.to_dtype(dtype).np if dtype else data.dtype, copy=True)
        if arr.dtype not in _dtype._BY_NP:
            arr = arr.astype(_dtype.from_numpy_dtype(arr.dtype).np)
        src = _device.device_of_array(arr)
        t = _finish(arr, src, False)
        t = t.to(dev) if device is not None else t
        if requires_grad:
            t.requires_grad_(True)
        return t
    if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in data):
        data = [d.tolist() if isinstance(d, Tensor) else d for d in data]
    arr = np.array(_infer_np(data, dtype), copy=True)
    if arr.dtype not in _dtype._BY_NP:
        arr = arr.astype(_dtype.from_numpy_dtype(arr.dtype).np)
    return _finish(_put(arr, dev), dev, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """Same as `torch.as_tensor`: shares memory with a NumPy/CuPy array where it can."""
    if isinstance(data, Tensor):
        t = data
        if dtype is not None:
            t = t.to(dtype)
        return t.to(device) if device is not None else t
    if isinstance(data, np.ndarray) and (device is None or _dev(device).type == "cpu") \
            and (dtype is None or _dtype.to_dtype(dtype).np == data.dtype) \
            and data.dtype in _dtype._BY_NP:
        return from_numpy(data)
    if _device.is_cupy_array(data) and data.dtype in _dtype._BY_NP \
            and (dtype is None or _dtype.to_dtype(dtype).np == data.dtype):
        src = _device.device_of_array(data)
        if device is None or _dev(device) == src:          # shares the CuPy array's memory
            return Tensor._make(data, src, _dtype.from_numpy_dtype(data.dtype), None)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(a):
    """Same as `torch.from_numpy`: the tensor shares `a`'s memory."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(a).__name__})")
    d = _dtype.from_numpy_dtype(a.dtype, strict=True)
    return Tensor._make(a, _device.CPU, d, None)


def from_dlpack(x):
    """Same as `torch.from_dlpack`: a CuPy array on a GPU, a NumPy array on the host."""
    dev_type, _ = x.__dlpack_device__() if hasattr(x, "__dlpack_device__") else (1, 0)
    if int(dev_type) == 1:
        arr = np.from_dlpack(x)
    else:
        arr = _device.cupy_module().from_dlpack(x)
    return Tensor._make(arr, _device.device_of_array(arr),
                        _dtype.from_numpy_dtype(arr.dtype, strict=True), None)


# ----- filled tensors --------------------------------------------------------------------------
def _filled(fill, size, dtype, device, requires_grad, default=None):
    shape = norm_shape(size)
    if any(s < 0 for s in shape):
        raise RuntimeError(f"Trying to create tensor with negative dimension {min(shape)}: "
                           f"{list(shape)}")
    dt = _dtype.to_dtype(dtype) if dtype is not None else (default or _dtype.get_default_dtype())
    dev = _dev(device)
    xp = _device.array_module(dev)
    with _device.use(dev):
        arr = fill(xp, shape, dt.np)
    return _finish(arr, dev, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.zeros`."""
    return _filled(lambda xp, s, d: xp.zeros(s, d), size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.ones`."""
    return _filled(lambda xp, s, d: xp.ones(s, d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.empty`."""
    return _filled(lambda xp, s, d: xp.empty(s, d), size, dtype, device, requires_grad)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.full` (dtype inferred from fill_value when not given)."""
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    default = _dtype.scalar_dtype(fill_value)
    return _filled(lambda xp, s, d: xp.full(s, fill_value, d), (size,), dtype, device,
                   requires_grad, default)


def _like(fn, input, dtype, device, requires_grad):
    return fn(input.shape, dtype=dtype or input.dtype, device=device or input.device,
              requires_grad=requires_grad)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.zeros_like`."""
    return _like(zeros, input, dtype, device, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.ones_like`."""
    return _like(ones, input, dtype, device, requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.empty_like`."""
    return _like(empty, input, dtype, device, requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.full_like`."""
    return full(input.shape, fill_value, dtype=dtype or input.dtype,
                device=device or input.device, requires_grad=requires_grad)


# ----- Tensor.new_*: like the creation functions, dtype and device from the tensor ---------------
def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.Tensor.new_tensor`: `tensor(data)` with self's dtype and device unless
    given (a Tensor `data` is copied, without history)."""
    if isinstance(data, Tensor):
        data = data.detach()
    return tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                  requires_grad=requires_grad)


def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.Tensor.new_zeros`: zeros of `size`, self's dtype and device by default."""
    return zeros(*size, dtype=dtype or self.dtype, device=device or self.device,
                 requires_grad=requires_grad)


def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.Tensor.new_ones`: ones of `size`, self's dtype and device by default."""
    return ones(*size, dtype=dtype or self.dtype, device=device or self.device,
                requires_grad=requires_grad)


def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.Tensor.new_empty`: an uninitialised tensor of `size`, self's dtype and
    device by default."""
    return empty(*size, dtype=dtype or self.dtype, device=device or self.device,
                 requires_grad=requires_grad)


def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.Tensor.new_full`: `fill_value` everywhere, self's dtype and device by
    default."""
    return full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                requires_grad=requires_grad)


# ----- ranges ----------------------------------------------------------------------------------
def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.arange`."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("step must be nonzero")
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dtype = _dtype.get_default_dtype() if is_float else _dtype.int64
    dt = _dtype.to_dtype(dtype)
    arr = np.arange(start, end, step, dtype=np.float64 if dt.is_floating_point else np.int64)
    dev = _dev(device)
    return _finish(_put(arr.astype(dt.np), dev), dev, requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.linspace`."""
    dt = _dtype.to_dtype(dtype) if dtype is not None else _dtype.get_default_dtype()
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    dev = _dev(device)
    arr = np.linspace(start, end, steps, dtype=np.float64).astype(dt.np)
    return _finish(_put(arr, dev), dev, requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    """Same as `torch.eye`."""
    dt = _dtype.to_dtype(dtype) if dtype is not None else _dtype.get_default_dtype()
    dev = _dev(device)
    xp = _device.array_module(dev)
    with _device.use(dev):
        arr = xp.eye(n, n if m is None else m, dtype=dt.np)
    return _finish(arr, dev, requires_grad)


# ----- random ----------------------------------------------------------------------------------
# One seed drives both devices: NumPy's generator on the CPU, CuPy's on each GPU.
_rng = threading.local()
_seed = [None]


def manual_seed(seed):
    """Same as `torch.manual_seed` (seeds the CPU and every CUDA generator)."""
    seed = int(seed)
    _seed[0] = seed
    _rng.__dict__.clear()
    _rng.cpu = np.random.default_rng(seed)
    if _device.cuda_available():
        cp = _device.cupy_module()
        for i in range(_device.cuda_device_count()):
            with cp.cuda.Device(i):
                cp.random.seed(seed)


def _cpu_rng():
    r = getattr(_rng, "cpu", None)
    if r is None:
        r = _rng.cpu = np.random.default_rng(_seed[0])
    return r


def _random(kind, size, dtype, device, requires_grad):
    shape = norm_shape(size)
    dt = _dtype.to_dtype(dtype) if dtype is not None else _dtype.get_default_dtype()
    if not dt.is_floating_point:
        raise RuntimeError(f"\"check_uniform_bounds\" not implemented for '{dt.name}'")
    dev = _dev(device)
    if _trace.ON:
        _trace.invalidate("random number generation")
    if dev.type == "cpu":
        r = _cpu_rng()
        gen_dt = np.float64 if dt is _dtype.float64 else np.float32
        arr = (r.random(shape, dtype=gen_dt) if kind == "rand"
               else r.standard_normal(shape, dtype=gen_dt)).astype(dt.np, copy=False)
    else:
        cp = _device.cupy_module()
        gen_dt = np.float64 if dt is _dtype.float64 else np.float32
        with cp.cuda.Device(dev.index):
            arr = (cp.random.random(shape, dtype=gen_dt) if kind == "rand"
                   else cp.random.standard_normal(shape, dtype=gen_dt)).astype(dt.np, copy=False)
    return _finish(arr, dev, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.rand` (uniform on [0, 1))."""
    return _random("rand", size, dtype, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Same as `torch.randn`."""
    return _random("randn", size, dtype, device, requires_grad)
