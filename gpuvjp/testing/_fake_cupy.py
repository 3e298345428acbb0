"""An emulated CuPy: NumPy arrays behind CuPy's interface and its rules, for CI without a GPU.

What it owns: a distinct `ndarray` type (a NumPy array and a device id) that refuses implicit
conversion to NumPy, refuses NumPy operands and arrays from another device; the module-level
NumPy-like functions, wrapped generically (unwrap the arguments, check types and devices, call
NumPy, wrap the results); the kernel objects (`ElementwiseKernel`, `ReductionKernel`,
`RawKernel`), which parse their parameters, enforce CuPy's calling conventions and compute
through the NumPy twins of `gpuvjp.ops._kernels.TWINS`; and `cupy.cuda` (devices, streams with
capture and graph replay, events, a memory pool with a budget, the runtime calls gpuvjp makes).
Every launch, synchronisation, allocation and free is appended to `records`.

What it never does: compile or time anything. A kernel's CUDA source is never read, so its
compilation and speed are checked elsewhere (NVRTC and host-compiler tests, real GPU runs).
During stream capture work runs eagerly as well as being recorded, so reading a captured result
before the graph is launched is not detected.

It imports only NumPy and the standard library at import time (`gpuvjp.ops._kernels` when a
kernel first runs), and nothing of gpuvjp imports it unless GPUVJP_EMULATE_CUDA is set.
"""

from __future__ import annotations

import collections
import contextlib
import math
import operator
import os
import re
import threading
import time
import types
import weakref

import numpy as np

__version__ = "13.0.0"
EMULATED = True

# ----- configuration -----------------------------------------------------------------------------
_config = {
    "devices": max(1, int(os.environ.get("GPUVJP_EMULATE_CUDA", "1") or "1")),
    # bytes per device before OutOfMemoryError
    "budget": int(os.environ.get("GPUVJP_EMULATE_CUDA_MEMORY", str(16 << 30))),
}


def set_device_count(n: int) -> None:
    """How many devices the emulator reports (the GPUVJP_EMULATE_CUDA value)."""
    _config["devices"] = int(n)


def set_memory_budget(nbytes: int) -> None:
    """Bytes each emulated device holds; an allocation past it raises OutOfMemoryError."""
    _config["budget"] = int(nbytes)


# ----- records -----------------------------------------------------------------------------------
# One plain tuple per event, (kind, name, device, stream, nbytes): kind is "launch" (a kernel or
# a library call), "sync" (a host read or a synchronize), "alloc" or "free". Plain tuples, not a
# class of this package, so leak checks that count gpuvjp objects do not count the log. Bounded
# so that a long test session does not grow without limit.
RECORD_FIELDS = ("kind", "name", "device", "stream", "nbytes")
records: collections.deque = collections.deque(maxlen=200_000)


def clear_records() -> None:
    records.clear()


def launches(kind: str = "launch") -> list[str]:
    """Names of the recorded entries of `kind`, in order."""
    return [r[1] for r in records if r[0] == kind]


def _record(kind, name, nbytes=0, device=None):
    dev = _cur_dev() if device is None else device
    records.append((kind, name, dev, _cur_stream_id(dev), nbytes))


# ----- errors ------------------------------------------------------------------------------------
class CUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError."""


class OutOfMemoryError(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError."""

    def __init__(self, size, total):
        super().__init__(f"Out of memory allocating {size:,} bytes "
                         f"(allocated so far: {total:,} bytes).")


class CompileException(Exception):
    """cupy.cuda.compiler.CompileException."""


def _unsupported(obj):
    return TypeError(f"Unsupported type {type(obj)}")


# ----- thread state: current device and stream ---------------------------------------------------
_tls = threading.local()


def _cur_dev() -> int:
    return getattr(_tls, "dev", 0)


def _streams() -> dict:
    s = getattr(_tls, "streams", None)
    if s is None:
        s = _tls.streams = {}
    return s


def _cur_stream(dev=None):
    return _streams().get(_cur_dev() if dev is None else dev, Stream.null)


def _cur_stream_id(dev):
    s = _streams().get(dev)
    return 0 if s is None else s.ptr


def _capturing():
    """The graph being captured on the current stream, or None."""
    s = _streams().get(_cur_dev())
    return None if s is None else s._capture


def _refuse_capture(library, name):
    if _capturing() is not None:
        raise CUDARuntimeError(
            f"cudaErrorStreamCaptureUnsupported: {library} call {name} is not permitted while "
            "the stream is capturing")


def _host_read(name):
    if _capturing() is not None:
        raise CUDARuntimeError(f"cudaErrorStreamCaptureUnsupported: {name} synchronises the "
                               "device, which is not permitted while the stream is capturing")
    _record("sync", name)


def _check_device_id(i):
    if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < _config["devices"]:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
    return int(i)


# ----- memory: a pool per device -----------------------------------------------------------------
_lock = threading.RLock()


def _rounded(nbytes):
    return -(-int(nbytes) // 512) * 512


class _DevicePool:
    __slots__ = ("used", "cached", "high", "limit")

    def __init__(self):
        self.used = self.cached = self.high = 0
        self.limit = 0


class MemoryPool:
    """cupy.cuda.MemoryPool: used, total (used + cached free blocks) and high-water bytes, per
    device (the current one)."""

    def __init__(self, allocator=None):
        self._pools = collections.defaultdict(_DevicePool)

    def _p(self):
        return self._pools[_cur_dev()]

    def used_bytes(self):
        return self._p().used

    def free_bytes(self):
        return self._p().cached

    def total_bytes(self):
        p = self._p()
        return p.used + p.cached

    def high_water_bytes(self):
        """Not CuPy's: the most bytes in use at once since the last reset."""
        return self._p().high

    def reset_high_water(self):
        p = self._p()
        p.high = p.used

    def n_free_blocks(self):
        return 1 if self._p().cached else 0

    def free_all_blocks(self, stream=None):
        with _lock:
            self._p().cached = 0

    def set_limit(self, size=None, fraction=None):
        if fraction is not None:
            size = int(fraction * _config["budget"])
        self._p().limit = int(size or 0)

    def get_limit(self):
        return self._p().limit

    def malloc(self, nbytes):
        """The allocator for `cupy.cuda.using_allocator`: arrays made under it count here."""
        size = self._malloc(nbytes, _cur_dev())
        self._free(size, _cur_dev())
        return MemoryPointer(0, _cur_dev())

    def _malloc(self, nbytes, dev):
        size = _rounded(nbytes)
        with _lock:
            p = self._pools[dev]
            budget = _config["budget"] if not p.limit else min(p.limit, _config["budget"])
            if p.used + size > budget:
                p.cached = 0                    # CuPy frees the cached blocks, then retries
                raise OutOfMemoryError(int(nbytes), p.used)
            if p.cached >= size:
                p.cached -= size
            elif p.used + p.cached + size > budget:
                p.cached = 0
            p.used += size
            p.high = max(p.high, p.used)
        for hook in _hooks():
            hook.malloc_postprocess(device_id=dev, size=nbytes, mem_size=size, mem_ptr=0,
                                    pmem_id=0)
        _record("alloc", "malloc", size, dev)
        return size

    def _free(self, size, dev):
        with _lock:
            p = self._pools[dev]
            p.used -= size
            p.cached += size
        for hook in _hooks():
            hook.free_postprocess(device_id=dev, mem_size=size, mem_ptr=0, pmem_id=0)
        records.append(("free", "free", dev, 0, size))


class PinnedMemoryPool:
    def used_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def n_free_blocks(self):
        return 0

    def free_all_blocks(self):
        pass


_pool = MemoryPool()
_pinned_pool = PinnedMemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool


class MemoryHook:
    """cupy.cuda.MemoryHook: `with hook:` calls its malloc/free postprocess methods."""

    name = "MemoryHook"

    def __enter__(self):
        _hooks().append(self)
        return self

    def __exit__(self, *exc):
        _hooks().remove(self)
        return False

    def malloc_postprocess(self, **kw):
        pass

    def free_postprocess(self, **kw):
        pass


def _hooks():
    h = getattr(_tls, "hooks", None)
    if h is None:
        h = _tls.hooks = []
    return h


class _Mem:
    """One allocation: freed back to the pool when the last array using it goes."""

    __slots__ = ("size", "dev", "pool", "__weakref__")

    def __init__(self, nbytes, dev):
        self.dev = dev
        self.pool = getattr(_tls, "pool", None) or _pool      # cupy.cuda.using_allocator
        self.size = self.pool._malloc(nbytes, dev)

    def __del__(self):
        try:
            self.pool._free(self.size, self.dev)
        except Exception:      # interpreter shutdown
            pass


_owners: "weakref.WeakValueDictionary[int, _Mem]" = weakref.WeakValueDictionary()


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _precheck(nbytes):
    """Refuse an allocation past the budget before NumPy tries it (NumPy's calloc would not)."""
    p = _pool._pools[_cur_dev()]
    if p.used + _rounded(nbytes) > _config["budget"]:
        raise OutOfMemoryError(int(nbytes), p.used)


# ----- the array type ----------------------------------------------------------------------------
def _wrap(a, dev=None):
    """An ndarray over NumPy array `a` on `dev`, sharing the allocation of a view's base."""
    dev = _cur_dev() if dev is None else dev
    root = _root(a)
    mem = _owners.get(id(root))
    if mem is not None:
        dev = mem.dev                               # a view lives where its buffer does
    else:
        mem = _Mem(root.nbytes, dev)
        _owners[id(root)] = mem
        _tls.fresh = True
    out = object.__new__(ndarray)
    out._a, out._dev, out._mem = a, dev, mem
    return out


class Device:
    """cupy.cuda.Device: a context that makes device `id` current (per thread)."""

    def __init__(self, device=None):
        self.id = _cur_dev() if device is None else _check_device_id(
            device.id if isinstance(device, Device) else device)

    def __enter__(self):
        stack = getattr(_tls, "dev_stack", None)
        if stack is None:
            stack = _tls.dev_stack = []
        stack.append(_cur_dev())
        _tls.dev = self.id
        return self

    def __exit__(self, *exc):
        _tls.dev = _tls.dev_stack.pop()
        return False

    def use(self):
        _tls.dev = self.id

    def synchronize(self):
        _host_read("Device.synchronize")

    @property
    def compute_capability(self):
        return "90"

    @property
    def attributes(self):
        return {"MultiProcessorCount": 132, "MaxThreadsPerBlock": 1024,
                "MaxSharedMemoryPerBlock": 49152, "WarpSize": 32}

    @property
    def mem_info(self):
        with Device(self.id):
            return runtime.memGetInfo()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("Device", self.id))

    def __int__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class MemoryPointer:
    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr, device_id):
        self.ptr, self.device_id = ptr, device_id

    @property
    def device(self):
        return Device(self.device_id)


class ndarray:
    """cupy.ndarray: a NumPy array `_a` on emulated device `_dev`.

    Implicit conversion to NumPy raises TypeError, as CuPy's does; host reads (`get`, `item`,
    `tolist`, `bool`, `float`, `int`) are recorded as synchronisations.
    """

    __slots__ = ("_a", "_dev", "_mem", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the emulated ndarray takes no memptr or strides")
        _precheck(math.prod(_shape(shape)) * np.dtype(dtype).itemsize)
        a = np.empty(shape, dtype, order=order)
        self._a, self._dev = a, _cur_dev()
        self._mem = _Mem(a.nbytes, self._dev)
        _owners[id(a)] = self._mem

    # ----- attributes ---------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: Device(self._dev))
    data = property(lambda self: MemoryPointer(self._a.__array_interface__["data"][0],
                                               self._dev))
    T = property(lambda self: self.transpose())
    mT = property(lambda self: self.swapaxes(-1, -2))

    @property
    def real(self):
        return _wrap(self._a.real, self._dev)

    @property
    def imag(self):
        return _wrap(self._a.imag, self._dev)

    @property
    def base(self):
        return None if self._a.base is None else _wrap(self._a.base, self._dev)

    @property
    def __cuda_array_interface__(self):
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "version": 3,
                "data": (a.__array_interface__["data"][0], False),
                "strides": None if a.flags.c_contiguous else a.strides,
                "stream": 1}

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_a", "_dev", "_mem"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap_result(attr, self._dev)
        return _Method(self, name)

    # ----- host reads, each a synchronisation ------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        _host_read("get")
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("Shape or dtype mismatch")
        self._a[...] = arr
        _record("launch", "memcpyHtoD")

    def item(self, *args):
        _host_read("item")
        return self._a.item(*args)

    def tolist(self):
        _host_read("tolist")
        return self._a.tolist()

    def __bool__(self):
        _host_read("bool")
        return bool(self._a)

    def __float__(self):
        _host_read("float")
        return float(self._a)

    def __int__(self):
        _host_read("int")
        return int(self._a)

    def __complex__(self):
        _host_read("complex")
        return complex(self._a)

    def __index__(self):
        _host_read("index")
        return operator.index(self._a)

    def __repr__(self):
        _host_read("repr")
        return repr(self._a)

    def __str__(self):
        _host_read("str")
        return str(self._a)

    def __format__(self, spec):
        _host_read("format")
        return format(self._a, spec)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    # ----- NumPy protocols: NumPy functions on emulated arrays stay on the device --------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        uf = _Ufunc(ufunc)
        return uf(*inputs, **kwargs) if method == "__call__" else getattr(uf, method)(
            *inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        return _call(func, func.__name__, args, kwargs)

    # ----- containers ---------------------------------------------------------------------------
    def __len__(self):
        if not self.ndim:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if not self.ndim:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, key):
        return _call(operator.getitem, "getitem", (self, key), {}, host_ok=True)

    def __setitem__(self, key, value):
        _call(operator.setitem, "setitem", (self, key, value), {}, host_ok=True)

    __hash__ = None

    def copy(self, order="C"):
        dev = _cur_dev()
        _record("launch", "copy")
        return _wrap(np.array(self._a, order=order), dev)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        return _rebuild, (np.array(self._a), self._dev)

    # ----- DLPack ----------------------------------------------------------------------------
    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        return self._a.__dlpack__()

    def __dlpack_device__(self):
        return (2, self._dev)                      # kDLCUDA

    def toDlpack(self):
        return self._a.__dlpack__()

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)


def _rebuild(a, dev):
    with Device(min(dev, _config["devices"] - 1)):
        return asarray(a)


class _Method:
    """A bound method of ndarray `arr`, run on its NumPy array."""

    __slots__ = ("arr", "name")

    def __init__(self, arr, name):
        self.arr, self.name = arr, name

    def __call__(self, *args, **kwargs):
        arr = self.arr
        if self.name in _CUBLAS:
            _refuse_capture("cuBLAS", self.name)
        return _call(lambda a, *r, **k: getattr(a, self.name)(*r, **k), self.name,
                     (arr, *args), kwargs)


def _binary(uf, reflected=False, inplace=False):
    def op(self, other):
        if not isinstance(other, ndarray) and \
                getattr(other, "__array_priority__", 0) > ndarray.__array_priority__:
            return NotImplemented                  # CuPy's _should_use_rop
        if inplace:
            return _Ufunc(uf)(self, other, out=self)
        return _Ufunc(uf)(other, self) if reflected else _Ufunc(uf)(self, other)
    return op


for _name, _uf in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                   ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                   ("mod", np.remainder), ("pow", np.power), ("and", np.bitwise_and),
                   ("or", np.bitwise_or), ("xor", np.bitwise_xor), ("lshift", np.left_shift),
                   ("rshift", np.right_shift)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, reflected=True))
    setattr(ndarray, f"__i{_name}__", _binary(_uf, inplace=True))
for _name, _uf in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                   ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
for _name, _uf in [("neg", np.negative), ("pos", np.positive), ("abs", np.absolute),
                   ("invert", np.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _u=_uf: _Ufunc(_u)(self))
ndarray.__divmod__ = lambda self, o: (self // o, self % o)


# ----- the generic wrapper: unwrap, check, call NumPy, wrap --------------------------------------
def _peer_error(resides, current):
    return ValueError(f"The device where the array resides ({resides}) is different from the "
                      f"current device ({current}). Peer access is unavailable between these "
                      "devices.")


def _unwrap(obj, devs, host_ok, ufunc=False):
    """NumPy arrays of `obj`'s emulated arrays; their devices are appended to `devs` (checked
    once it is known whether the call launches anything: views of another device's array are
    fine, as on CuPy)."""
    t = type(obj)
    if t is ndarray:
        devs.append(obj._dev)
        return obj._a
    if t is np.ndarray:
        if not host_ok:
            raise _unsupported(obj)
        return obj
    if t is tuple or t is list:
        if ufunc:
            raise _unsupported(obj)
        return t(_unwrap(o, devs, host_ok) for o in obj)
    if ufunc and not isinstance(obj, (int, float, complex, bool, np.generic)) \
            and obj is not None:
        raise _unsupported(obj)
    return obj


def _wrap_result(r, dev):
    t = type(r)
    if t is np.ndarray:
        return _wrap(r, dev)
    if isinstance(r, np.generic):
        return _wrap(np.asarray(r), dev)
    if isinstance(r, tuple):
        return tuple(_wrap_result(x, dev) for x in r)
    if t is list:
        return [_wrap_result(x, dev) for x in r]
    return r


def _arrays_in(obj, out):
    if type(obj) is ndarray:
        out.append(obj)
    elif type(obj) in (tuple, list):
        for o in obj:
            _arrays_in(o, out)
    return out


def _call(fn, name, args, kwargs, host_ok=False, ufunc=False, library=None):
    """Run NumPy's `fn` on the arrays inside `args`: devices checked, NumPy operands refused
    (except where CuPy takes host data: `host_ok`), results wrapped on the current device."""
    dev = _cur_dev()
    if library is not None:
        _refuse_capture(library, name)
    devs = []
    np_args = [_unwrap(a, devs, host_ok, ufunc) for a in args]
    np_kwargs = {k: _unwrap(v, devs, host_ok or k not in ("out",)) for k, v in kwargs.items()}
    if ufunc:
        shapes = [np.shape(a) for a in np_args if isinstance(a, np.ndarray)]
        if shapes:
            try:
                _precheck(math.prod(np.broadcast_shapes(*shapes)) * 8)
            except ValueError:
                pass                                # NumPy raises its own error below
    _tls.fresh = False
    try:
        with np.errstate(all="ignore"):
            r = fn(*np_args, **np_kwargs)
    except MemoryError as exc:
        if isinstance(exc, OutOfMemoryError):
            raise
        raise OutOfMemoryError(0, _pool._pools[dev].used) from exc
    out = kwargs.get("out")
    if out is not None and r is not None:
        result = out
    else:
        result = _wrap_result(r, dev)
    # a launch: something written (a new array, out=, an in-place method); views and empty
    # allocations launch nothing, as on CuPy
    if (out is not None or r is None or _tls.fresh) and name not in _NO_LAUNCH:
        for d in devs:
            if d != dev:
                raise _peer_error(d, dev)
        _record("launch", name)
        graph = _capturing()
        if graph is not None:
            graph._add(name, lambda: _replay(fn, name, args, kwargs, result))
    return result


_NO_LAUNCH = {"empty", "empty_like"}


def _replay(fn, name, args, kwargs, result):
    np_args = [_unwrap(a, [], True) for a in args]
    np_kwargs = {k: _unwrap(v, [], True) for k, v in kwargs.items()}
    with np.errstate(all="ignore"):
        r = fn(*np_args, **np_kwargs)
    _record("launch", name)
    if r is None or "out" in kwargs:
        return
    for dst, src in zip(_arrays_in(result, []), _flat(r)):
        if dst._a is not src:
            np.copyto(dst._a, src, casting="unsafe")


def _flat(r):
    if isinstance(r, (tuple, list)):
        for x in r:
            yield from _flat(x)
    elif r is not None:
        yield np.asarray(r)


def _shape(shape):
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(s) for s in shape)


class _Ufunc:
    """A NumPy ufunc under CuPy's rules: operands are emulated arrays or scalars."""

    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout, self.nargs = uf.nin, uf.nout, uf.nargs

    def __call__(self, *args, **kwargs):
        return _call(self._uf, self.__name__, args, kwargs, ufunc=True)

    def at(self, a, indices, b=None):
        if type(a) is not ndarray:
            raise _unsupported(a)
        args = (a, indices) if b is None else (a, indices, b)
        if b is not None and type(b) is np.ndarray:
            raise _unsupported(b)
        _call(self._uf.at, f"{self.__name__}.at", args, {})

    def reduce(self, *args, **kwargs):
        return _call(self._uf.reduce, f"{self.__name__}.reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return _call(self._uf.accumulate, f"{self.__name__}.accumulate", args, kwargs)

    def outer(self, *args, **kwargs):
        return _call(self._uf.outer, f"{self.__name__}.outer", args, kwargs)

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"


# Library calls that CuPy routes to cuBLAS, cuSOLVER or cuRAND: they refuse stream capture.
_CUBLAS = {"matmul", "dot", "vdot", "inner", "tensordot", "einsum", "multi_dot",
           "matrix_power", "kron"}


def _wrap_function(fn, name, library=None):
    def call(*args, **kwargs):
        return _call(fn, name, args, kwargs, library=library)
    call.__name__ = name
    call.__doc__ = f"Emulated cupy.{name}: NumPy's, on emulated arrays."
    return call


def _namespace_getattr(ns, npmod, library_of):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        obj = getattr(npmod, name)
        if isinstance(obj, np.ufunc):
            obj = _Ufunc(obj)
        elif callable(obj) and not isinstance(obj, type):
            obj = _wrap_function(obj, name, library_of(name))
        ns.__dict__[name] = obj
        return obj
    return __getattr__


_cache: dict = {}


def __getattr__(name):
    # cached apart from globals(): names such as max and abs must not shadow the builtins here
    obj = _cache.get(name)
    if obj is not None:
        return obj
    if name.startswith("__"):
        raise AttributeError(name)
    obj = getattr(np, name)
    if isinstance(obj, np.ufunc):
        obj = _Ufunc(obj)
    elif isinstance(obj, types.ModuleType):
        raise AttributeError(f"the emulated cupy has no submodule {name!r}")
    elif callable(obj) and not isinstance(obj, type):
        obj = _wrap_function(obj, name, "cuBLAS" if name in _CUBLAS else None)
    if obj is not None:
        _cache[name] = obj
    return obj


# ----- creation and transfers --------------------------------------------------------------------
def _sized(fn, name):
    def create(shape, *args, **kwargs):
        dtype = kwargs.get("dtype", args[0] if args else float)
        _precheck(math.prod(_shape(shape)) * np.dtype(dtype if dtype is not None
                                                      else float).itemsize)
        return _call(fn, name, (shape, *args), kwargs)
    create.__name__ = name
    return create


zeros = _sized(np.zeros, "zeros")
ones = _sized(np.ones, "ones")
empty = _sized(np.empty, "empty")


def full(shape, fill_value, dtype=None, order="C"):
    dt = np.result_type(fill_value) if dtype is None else np.dtype(dtype)
    _precheck(math.prod(_shape(shape)) * dt.itemsize)
    return _call(np.full, "full", (shape, fill_value), {"dtype": dtype, "order": order})


def _like(fn, name):
    def create(a, *args, **kwargs):
        if type(a) is not ndarray:
            raise _unsupported(a)
        _precheck(a.nbytes)
        return _call(fn, name, (a, *args), kwargs)
    create.__name__ = name
    return create


zeros_like = _like(np.zeros_like, "zeros_like")
ones_like = _like(np.ones_like, "ones_like")
empty_like = _like(np.empty_like, "empty_like")
full_like = _like(np.full_like, "full_like")


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False):
    """cupy.array: host data is copied to the current device; an array on another device is
    copied here (CuPy's peer copy)."""
    dev = _cur_dev()
    if type(obj) is ndarray:
        if obj._dev != dev:
            copy = True
        a = np.array(obj._a, dtype=dtype, copy=copy or None, order=order, ndmin=ndmin)
        if a is obj._a:
            return obj
        _record("launch", "copy")
        return _wrap(a, dev)
    host = _unwrap(obj, [], True)
    if isinstance(host, (list, tuple)):
        host = _host_sequence(host)
    a = np.array(host, dtype=dtype, copy=True, order=order, ndmin=ndmin)
    _precheck(a.nbytes)
    _record("launch", "memcpyHtoD", a.nbytes)
    return _wrap(a, dev)


def _host_sequence(seq):
    return [_host_sequence(s) if isinstance(s, (list, tuple)) else s for s in seq]


def asarray(a, dtype=None, order=None, blocking=False):
    return array(a, dtype=dtype, copy=False, order=order or "K")


asanyarray = asarray


def ascontiguousarray(a, dtype=None):
    if type(a) is not ndarray:
        return array(a, dtype=dtype, order="C")
    return _call(np.ascontiguousarray, "ascontiguousarray", (a,), {"dtype": dtype})


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if type(a) is ndarray:
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    import sys
    return sys.modules[__name__] if any(type(a) is ndarray for a in args) else np


def from_dlpack(obj, *, device=None, copy=None):
    """cupy.from_dlpack: a CUDA array (DLPack device 2) shared, never copied."""
    if type(obj) is ndarray:
        return _wrap(obj._a.view(), obj._dev)
    if hasattr(obj, "__dlpack_device__"):
        kind, dev = obj.__dlpack_device__()
        if int(kind) != 2:
            raise BufferError(f"the array is on DLPack device type {int(kind)}, not CUDA (2)")
        capsule = obj.__dlpack__()
    else:
        kind, dev, capsule = 2, _cur_dev(), obj
    a = np.from_dlpack(_Capsule(capsule))
    return _wrap(a, int(dev))


fromDlpack = from_dlpack


class _Capsule:
    """A DLPack capsule made by the emulator (NumPy memory) as a NumPy-readable producer."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)


def matmul(a, b, out=None, **kwargs):
    if out is not None:
        kwargs["out"] = out
    return _call(np.matmul, "matmul", (a, b), kwargs, library="cuBLAS")


def is_available():
    return _config["devices"] > 0


def show_config():
    print(f"emulated CuPy {__version__} over NumPy {np.__version__}, "
          f"{_config['devices']} device(s)")


# ----- linalg (cuSOLVER; matrix products cuBLAS), fft (cuFFT) ------------------------------------
linalg = types.ModuleType(f"{__name__}.linalg")
linalg.__getattr__ = _namespace_getattr(
    linalg, np.linalg, lambda n: None if n == "norm" else
    ("cuBLAS" if n in _CUBLAS else "cuSOLVER"))
fft = types.ModuleType(f"{__name__}.fft")
fft.__getattr__ = _namespace_getattr(fft, np.fft, lambda n: None)


# ----- random (cuRAND): one generator per device -------------------------------------------------
random = types.ModuleType(f"{__name__}.random")
_generators: dict[int, np.random.Generator] = {}


def _gen():
    dev = _cur_dev()
    g = _generators.get(dev)
    if g is None:
        g = _generators[dev] = np.random.default_rng(None)
    return g


def _seed(seed=None):
    _generators[_cur_dev()] = np.random.default_rng(seed)


def _sampler(method, dtype_arg=True):
    def sample(*args, size=None, dtype=None, **kwargs):
        _refuse_capture("cuRAND", method)
        if size is not None:
            _precheck(math.prod(_shape(size)) * 8)
        kw = dict(kwargs)
        if size is not None:
            kw["size"] = size
        if dtype_arg and dtype is not None and method in ("random", "standard_normal"):
            kw["dtype"] = np.dtype(dtype)
        r = getattr(_gen(), method)(*args, **kw)
        _record("launch", f"curand.{method}")
        r = np.asarray(r)
        if dtype is not None:
            r = r.astype(dtype, copy=False)
        return _wrap(r)
    sample.__name__ = method
    return sample


def _random_shape(method):
    def sample(*shape, dtype=float):
        return getattr(random, method)(size=shape or None, dtype=dtype)
    return sample


random.seed = _seed
random.random = random.random_sample = _sampler("random")
random.standard_normal = _sampler("standard_normal")
random.normal = _sampler("normal", False)
random.uniform = _sampler("uniform", False)
random.integers = _sampler("integers", False)
random.rand = _random_shape("random")
random.randn = _random_shape("standard_normal")


def _randint(low, high=None, size=None, dtype=int):
    return random.integers(low, high, size=size, dtype=dtype)


random.randint = _randint


# ----- kernels: CuPy's parameter rules, computed through the twins -------------------------------
def twins():
    from gpuvjp.ops import _kernels
    return _kernels.TWINS


class _Param:
    """CuPy's ParameterInfo: `[raw] type name`; a one-letter type is a placeholder."""

    __slots__ = ("raw", "ctype", "dtype", "name", "is_const")

    def __init__(self, text, is_const=True):
        self.is_const = is_const
        tokens = text.split()
        if len(tokens) not in (2, 3) or (len(tokens) == 3 and tokens[0] != "raw"):
            raise ValueError(f"Invalid parameter: {text.strip()!r}")
        self.raw = len(tokens) == 3
        self.ctype, self.name = tokens[-2], tokens[-1]
        if not self.name.isidentifier():
            raise ValueError(f"Invalid parameter name: {self.name!r}")
        if len(self.ctype) == 1:
            self.dtype = None                      # a type placeholder
        else:
            try:
                self.dtype = np.dtype(self.ctype)
            except TypeError:
                raise ValueError(f"Invalid type of parameter {self.name!r}: {self.ctype!r}") \
                    from None

    def __repr__(self):
        return f"{'raw ' if self.raw else ''}{self.ctype} {self.name}"


def _parse(params, is_const=True):
    return tuple(_Param(p, is_const) for p in params.split(",")) if params.strip() else ()


def _check_names(kind, name, params):
    names = [p.name for p in params]
    for n in names:
        if n in ("i", "n") or n.startswith("_"):
            raise ValueError(f"{kind} {name}: parameter name {n!r} is reserved by CuPy "
                             "(i, n and names starting with _ are its own)")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"{kind} {name}: duplicate parameter names {sorted(dup)}")


def _bind(name, in_params, out_params, ins, outs):
    """CuPy's _decide_params_type: output arrays bind first, then input arrays; a scalar binds
    nothing. Returns {placeholder: dtype}."""
    bound = {}
    for params, args in ((out_params, outs), (in_params, ins)):
        for p, a in zip(params, args):
            if type(a) is not ndarray:
                continue
            if p.dtype is not None:
                if a.dtype != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype.type} {p.dtype.type}"
                                    f" (kernel {name}: {p.name} is {p.ctype}, got {a.dtype})")
            elif p.ctype in bound:
                if bound[p.ctype] != a.dtype:
                    raise TypeError(
                        f"Type is mismatched. {p.name} {a.dtype.type} {bound[p.ctype].type} "
                        f"{p.ctype} (kernel {name}: type placeholder {p.ctype} bound to "
                        f"{bound[p.ctype]} and {a.dtype})")
            else:
                bound[p.ctype] = a.dtype
    for p in (*in_params, *out_params):
        if p.dtype is None and p.ctype not in bound:
            raise TypeError(f"kernel {name}: the type of placeholder {p.ctype} ({p.name}) is "
                            "undecided: no array argument binds it")
    return bound


def _check_args(name, args):
    dev = _cur_dev()
    for a in args:
        if type(a) is ndarray:
            if a._dev != dev:
                raise _peer_error(a._dev, dev)
        elif type(a) is np.ndarray or not (a is None or isinstance(
                a, (int, float, complex, bool, np.generic))):
            raise _unsupported(a)


def _scalar(p, bound, a):
    return (p.dtype or bound[p.ctype]).type(a)


def _find_twin(kind, name):
    fn = twins().get(name)
    if fn is None:
        raise RuntimeError(f"the emulated CuPy has no NumPy twin for {kind} {name!r}: register "
                           "one with gpuvjp.ops._kernels.register_twin")
    return fn


class ElementwiseKernel:
    """cupy.ElementwiseKernel: inputs (non-raw ones broadcast) and outputs bound by CuPy's
    rules, computed by the twin registered under `name`."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        self.in_params, self.out_params = _parse(in_params), _parse(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        self.operation, self.name, self.preamble = operation, name, preamble
        self.no_return, self.return_tuple = no_return, return_tuple
        self.kwargs = kwargs
        self.options = tuple(kwargs.get("options", ()))
        _check_names("ElementwiseKernel", name, self.in_params + self.out_params)

    def __call__(self, *args, size=None, block_size=None, stream=None):
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        _check_args(self.name, args)
        ins, outs = list(args[:self.nin]), list(args[self.nin:])
        bound = _bind(self.name, self.in_params, self.out_params, ins, outs)
        shaped = [a.shape for p, a in zip(self.in_params + self.out_params, args)
                  if type(a) is ndarray and not p.raw]
        if shaped:
            shape = np.broadcast_shapes(*shaped)
            if size is not None and math.prod(shape) != size:
                raise ValueError("Loop size is already determined by the array arguments")
        elif size is not None:
            shape = (int(size),)
        else:
            raise ValueError("Loop size is undecided")
        for p, o in zip(self.out_params, outs):
            if not p.raw and o.shape != shape:
                raise ValueError(f"Out shape is mismatched: {o.shape}, the broadcast shape is "
                                 f"{shape}")
        given = bool(outs)
        if not given:
            for p in self.out_params:
                if p.raw:
                    raise ValueError(f"Output array size is undecided for raw {p.name}")
                outs.append(empty(shape, bound.get(p.ctype, p.dtype)))
        self._launch(ins, outs, shape, bound, given)
        graph = _capturing()
        if graph is not None:
            graph._add(self.name, lambda: self._launch(ins, outs, shape, bound, given))
        if self.no_return:
            return None
        return outs[0] if self.nout == 1 and not self.return_tuple else tuple(outs)

    def _launch(self, ins, outs, shape, bound, given):
        """The twin receives the arguments the kernel was called with (outputs only if given)."""
        fn = _find_twin("ElementwiseKernel", self.name)
        np_args = []
        for p, a in zip(self.in_params + self.out_params, ins + outs if given else ins):
            if type(a) is not ndarray:
                np_args.append(_scalar(p, bound, a))
            elif p.raw:
                np_args.append(a._a)
            else:
                np_args.append(np.broadcast_to(a._a, shape))
        with np.errstate(all="ignore"):
            res = fn(*np_args)
        _record("launch", self.name)
        written = [o for p, o in zip(self.out_params, outs) if not p.raw]
        if not written:
            return
        res = res if isinstance(res, tuple) else (res,)
        if len(res) != len(written):
            raise RuntimeError(f"the twin of {self.name} returned {len(res)} values for "
                               f"{len(written)} outputs")
        for o, r in zip(written, res):
            np.copyto(o._a, r, casting="unsafe")


def _renaming_collisions(name, params, exprs):
    """CuPy's CUB reduction renames parameters inside the expressions by plain substring
    replacement: a name inside a longer identifier ("x" in "exp") breaks the kernel."""
    for p in params:
        for expr in exprs:
            for m in re.finditer(re.escape(p.name), expr):
                s, e = m.start(), m.end()
                before = expr[s - 1] if s else " "
                after = expr[e] if e < len(expr) else " "
                if before.isalnum() or before == "_" or after.isalnum() or after == "_":
                    word = re.search(r"[\w:]*" + re.escape(p.name) + r"\w*", expr[max(0, s - 40):])
                    raise CompileException(
                        f"{name}: parameter name {p.name!r} occurs inside "
                        f"{word.group(0) if word else expr!r}; CuPy renames parameters in the "
                        "reduction's expressions by plain substring replacement, so this kernel "
                        "would not compile")


class ReductionKernel:
    """cupy.ReductionKernel: checked as CuPy does (types, output shapes, parameter renaming),
    computed by the twin registered under `name`: fn(*inputs, axis=, keepdims=)."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", reduce_type=None, reduce_dims=True, preamble="",
                 options=()):
        self.in_params, self.out_params = _parse(in_params), _parse(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        self._params = self.in_params + self.out_params
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, \
            post_map_expr
        self.identity, self.name, self.reduce_type = identity, name, reduce_type
        self.preamble, self.options = preamble, tuple(options)
        _check_names("ReductionKernel", name, self._params)

    def __call__(self, *args, out=None, axis=None, keepdims=False, stream=None,
                 reduce_dims=True):
        if out is not None:
            args = (*args, out)
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        _check_args(self.name, args)
        _renaming_collisions(self.name, self._params,
                             (self.map_expr, self.reduce_expr, self.post_map_expr))
        ins, outs = list(args[:self.nin]), list(args[self.nin:])
        bound = _bind(self.name, self.in_params, self.out_params, ins, outs)
        shaped = [a.shape for p, a in zip(self.in_params, ins) if type(a) is ndarray
                  and not p.raw]
        if not shaped:
            raise ValueError(f"{self.name}: a reduction needs an array input")
        in_shape = np.broadcast_shapes(*shaped)
        ndim = len(in_shape)
        if axis is None:
            axes = tuple(range(ndim))
        else:
            axes = tuple(operator.index(a) for a in (axis if isinstance(axis, tuple)
                                                     else (axis,)))
            if any(not -ndim <= a < max(ndim, 1) for a in axes):
                raise ValueError(f"Axis overrun: {axis} for a {ndim}-d input")
            axes = tuple(a % max(ndim, 1) for a in axes)
            if len(set(axes)) != len(axes):
                raise ValueError(f"duplicate value in 'axis': {axis}")
        out_shape = tuple(1 if d in axes else s for d, s in enumerate(in_shape)
                          if keepdims or d not in axes)
        for p, o in zip(self.out_params, outs):
            if o.shape != out_shape:
                raise ValueError(f"Out shape is mismatched: {self.name} output {p.name} has "
                                 f"shape {o.shape}, the reduction gives {out_shape}")
        if not outs:
            outs = [empty(out_shape, bound.get(p.ctype, p.dtype)) for p in self.out_params]
        self._launch(ins, outs, in_shape, axis, keepdims, bound)
        graph = _capturing()
        if graph is not None:
            graph._add(self.name, lambda: self._launch(ins, outs, in_shape, axis, keepdims,
                                                       bound))
        return outs[0]

    def _launch(self, ins, outs, in_shape, axis, keepdims, bound):
        fn = _find_twin("ReductionKernel", self.name)
        np_args = []
        for p, a in zip(self.in_params, ins):
            if type(a) is not ndarray:
                np_args.append(_scalar(p, bound, a))
            else:
                np_args.append(a._a if p.raw else np.broadcast_to(a._a, in_shape))
        with np.errstate(all="ignore"):
            res = fn(*np_args, axis=axis, keepdims=keepdims)
        _record("launch", self.name)
        res = res if isinstance(res, tuple) else (res,)
        if len(res) != len(outs):
            raise RuntimeError(f"the twin of {self.name} returned {len(res)} values for "
                               f"{len(outs)} outputs")
        for o, r in zip(outs, res):
            r = np.asarray(r)
            if r.shape != o.shape:
                raise RuntimeError(f"the twin of {self.name} returned shape {r.shape}, the "
                                   f"output is {o.shape}")
            np.copyto(o._a, r, casting="unsafe")


class RawKernel:
    """cupy.RawKernel: launched as kernel(grid, block, args, shared_mem=0), computed by the
    twin registered under `name`: fn(grid, block, args, shared_mem=0) mutating its arrays."""

    max_threads_per_block = 1024

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=False):
        self.code, self.name, self.options = code, name, tuple(options)
        self.backend = backend
        self.attributes = {"max_threads_per_block": 1024}

    def compile(self, log_stream=None):
        pass

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        grid, block = _dims("grid", grid), _dims("block", block)
        if math.prod(block) > 1024 or any(d < 1 for d in grid + block):
            raise CUDARuntimeError(f"cudaErrorInvalidConfiguration: {self.name} launched with "
                                   f"grid {grid}, block {block}")
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        _check_args(self.name, args)
        self._launch(grid, block, args, shared_mem)
        graph = _capturing()
        if graph is not None:
            graph._add(self.name, lambda: self._launch(grid, block, args, shared_mem))

    def _launch(self, grid, block, args, shared_mem):
        fn = _find_twin("RawKernel", self.name)
        np_args = tuple(a._a if type(a) is ndarray else a for a in args)
        with np.errstate(all="ignore"):
            fn(grid, block, np_args, shared_mem=shared_mem)
        _record("launch", self.name)


def _dims(what, d):
    d = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(d) <= 3:
        raise ValueError(f"{what} must be an int or a tuple of 1 to 3 ints, got {d}")
    return tuple(int(x) for x in d) + (1,) * (3 - len(d))


class RawModule:
    """cupy.RawModule: get_function(name) is a RawKernel computed by the twin of `name`."""

    def __init__(self, *, code=None, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False,
                 name_expressions=None, jitify=False):
        self.code, self.options = code, tuple(options)

    def compile(self, log_stream=None):
        pass

    def get_function(self, name):
        return RawKernel(self.code, name, self.options)


def memoize(for_each_device=False):
    def deco(f):
        import functools
        return functools.cache(f)
    return deco


# ----- cupy.cuda ---------------------------------------------------------------------------------
class Event:
    """cupy.cuda.Event: records a host time stamp (and the stream it was recorded on, for
    tests of stream ordering); elapsed times are not GPU timings."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None
        self.stream = None

    def record(self, stream=None):
        self.t = time.perf_counter()
        self.stream = stream if stream is not None else _cur_stream()

    def synchronize(self):
        _host_read("Event.synchronize")

    @property
    def done(self):
        return True


def get_elapsed_time(start, end):
    return (end.t - start.t) * 1e3


class Graph:
    """cupy.cuda.Graph: the launches a capture recorded, replayed in order by `launch`."""

    def __init__(self):
        self._launches = []

    def _add(self, name, replay):
        self._launches.append((name, replay))

    def launch(self, stream=None):
        if _capturing() is not None:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: a graph launch inside "
                                   "a capture")
        for _, replay in self._launches:
            replay()                                # each replay records its launch
        _record("launch", "graph_launch")

    def upload(self, stream=None):
        pass

    def __len__(self):
        return len(self._launches)


_stream_ids = iter(range(1, 1 << 62))


class Stream:
    """cupy.cuda.Stream: a context that makes it current (per thread and device), with capture
    into a Graph."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.ptr = 0 if null else next(_stream_ids)
        self.device_id = _cur_dev()
        self._capture = None
        self._prev = []
        # the latest events this stream was made to wait on, in order (bounded: the null stream
        # lives as long as the process)
        self.waited = collections.deque(maxlen=64)

    def __enter__(self):
        s = _streams()
        self._prev.append(s.get(self.device_id))
        s[self.device_id] = self
        return self

    def __exit__(self, *exc):
        prev = self._prev.pop()
        s = _streams()
        if prev is None:
            s.pop(self.device_id, None)
        else:
            s[self.device_id] = prev
        return False

    def use(self):
        _streams()[self.device_id] = self
        return self

    def synchronize(self):
        if self._capture is not None:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: synchronize of a "
                                   "capturing stream")
        _record("sync", "Stream.synchronize")

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        self.waited.append(event)

    @property
    def done(self):
        return True

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: the null stream cannot "
                                   "be captured")
        if self._capture is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is already capturing")
        self._capture = Graph()

    def end_capture(self):
        if self._capture is None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        graph, self._capture = self._capture, None
        return graph

    def is_capturing(self):
        return self._capture is not None

    def __repr__(self):
        return f"<Stream {self.ptr} (device {self.device_id})>"


Stream.null = Stream(null=True)


def get_current_stream(device_id=None):
    return _cur_stream(device_id)


@contextlib.contextmanager
def using_allocator(allocator=None):
    """cupy.cuda.using_allocator: arrays made inside count in the MemoryPool whose `malloc`
    is `allocator` (any other allocator: the default pool)."""
    prev = getattr(_tls, "pool", None)
    _tls.pool = getattr(allocator, "__self__", None) if isinstance(
        getattr(allocator, "__self__", None), MemoryPool) else None
    try:
        yield
    finally:
        _tls.pool = prev


class _Runtime(types.ModuleType):
    CUDARuntimeError = CUDARuntimeError
    is_hip = False

    @staticmethod
    def getDeviceCount():
        return _config["devices"]

    @staticmethod
    def getDevice():
        return _cur_dev()

    @staticmethod
    def setDevice(i):
        _tls.dev = _check_device_id(i)

    @staticmethod
    def memGetInfo():
        p = _pool._pools[_cur_dev()]
        budget = _config["budget"]
        return max(budget - p.used - p.cached, 0), budget

    @staticmethod
    def deviceSynchronize():
        _host_read("deviceSynchronize")

    @staticmethod
    def getDeviceProperties(i):
        _check_device_id(i)
        return {"name": b"gpuvjp emulated CUDA device", "totalGlobalMem": _config["budget"],
                "major": 9, "minor": 0, "multiProcessorCount": 132,
                "maxThreadsPerBlock": 1024, "sharedMemPerBlock": 49152}

    @staticmethod
    def runtimeGetVersion():
        return 13000

    @staticmethod
    def driverGetVersion():
        return 13000


runtime = _Runtime(f"{__name__}.cuda.runtime")

cuda = types.ModuleType(f"{__name__}.cuda")
cuda.__dict__.update(
    Device=Device, Stream=Stream, Event=Event, Graph=Graph, MemoryPool=MemoryPool,
    PinnedMemoryPool=PinnedMemoryPool, MemoryHook=MemoryHook, MemoryPointer=MemoryPointer,
    OutOfMemoryError=OutOfMemoryError, CUDARuntimeError=CUDARuntimeError, runtime=runtime,
    get_current_stream=get_current_stream, get_elapsed_time=get_elapsed_time,
    using_allocator=using_allocator,
    is_available=is_available, set_allocator=lambda allocator=None: None,
    set_pinned_memory_allocator=lambda allocator=None: None,
    memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError, MemoryPool=MemoryPool),
    compiler=types.SimpleNamespace(CompileException=CompileException),
    graph=types.SimpleNamespace(Graph=Graph),
)
