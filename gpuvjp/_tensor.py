"""Tensor: a NumPy (cpu) or CuPy (cuda) array, its dtype and device, and its place in the graph."""

from __future__ import annotations

import numpy as np

from . import _device, _dtype, _memory_format, _trace
from ._lazy import Pending
from ._size import Size

_new_size = tuple.__new__                 # Size(shape) without re-checking NumPy's ints
_new_tensor = object.__new__

__all__ = ["Tensor"]


class Tensor:
    """Same as `torch.Tensor` for the ops gpuvjp supports. Tensors are values: no op writes
    into an existing tensor, so views share memory safely."""

    # _nb: leading batch dims of the array that the tensor's shape does not show (a batched
    # sweep: vectorized jacobian, batched tangents). _tangent: the forward-mode tangent.
    __slots__ = ("_data", "_dev", "_dtype", "_node", "_requires_grad", "grad", "_nb",
                 "_tangent", "__weakref__")
    # NumPy defers every operator with an ndarray (`nd + t`, `nd < t`) to the Tensor's own,
    # reflected, operator, and refuses to apply its ufuncs to a Tensor (docs/differences.md).
    __array_ufunc__ = None

    def __init__(self, data=()):
        from ._creation import tensor
        t = tensor(data, dtype=_dtype.get_default_dtype() if not isinstance(data, Tensor)
                   else None)
        self._data, self._dev, self._dtype = t._data, t._dev, t._dtype
        self._node, self._requires_grad, self.grad = None, False, None
        self._nb, self._tangent = 0, None

    @classmethod
    def _make(cls, data, dev, dtype, node):
        t = _new_tensor(cls)
        t._data = data
        t._dev = dev
        t._dtype = dtype
        t._node = node
        t._requires_grad = node is not None
        t.grad = None
        t._nb = 0
        t._tangent = None
        return t

    def _array(self):
        """The backing array: every read of a tensor's data goes through here."""
        d = self._data
        if type(d) is Pending:
            d = self._data = d.materialize()
        return d

    # ----- metadata --------------------------------------------------------------------------
    @property
    def shape(self):
        s = self._data.shape
        return _new_size(Size, s[self._nb:] if self._nb else s)

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._dev

    @property
    def is_cuda(self):
        return self._dev.type == "cuda"

    @property
    def ndim(self):
        return self._data.ndim - self._nb

    @property
    def grad_fn(self):
        """The node that made this tensor, as `torch.Tensor.grad_fn` (None for a leaf)."""
        node = self._node
        if node is None:
            return None
        from .autograd.graph import grad_fn
        return grad_fn(node)

    @property
    def is_leaf(self):
        return self._node is None

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if self._node is not None and value:
            raise RuntimeError("you can only change requires_grad flags of leaf variables.")
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad=True):
        """Same as `torch.Tensor.requires_grad_`."""
        requires_grad = bool(requires_grad)
        if self._node is not None:
            if not requires_grad:
                raise RuntimeError(
                    "you can only change requires_grad flags of leaf variables. If you want to "
                    "use a computed variable in a subgraph that doesn't require differentiation "
                    "use var_no_grad = var.detach().")
            return self
        if requires_grad and not self._dtype.is_floating_point:
            raise RuntimeError("only Tensors of floating point dtype can require gradients")
        if _trace.ON and requires_grad != self._requires_grad:
            _trace.write(self, "requires_grad_()")
        self._requires_grad = requires_grad
        return self

    @property
    def data(self):
        return self.detach()

    def size(self, dim=None):
        """Same as `torch.Tensor.size`: the shape as a `gpuvjp.Size`, or the size of `dim`."""
        if dim is None:
            return self.shape
        from .ops._util import norm_dim
        return self.shape[norm_dim(dim, self.ndim)]

    def dim(self):
        return self.ndim

    def numel(self):
        if self._nb:
            return int(np.prod(self.shape, dtype=np.int64))
        return int(self._data.size)

    nelement = numel

    def element_size(self):
        return self._dtype.itemsize

    @property
    def itemsize(self):
        return self._dtype.itemsize

    @property
    def nbytes(self):
        return self.numel() * self._dtype.itemsize

    def ndimension(self):
        return self.ndim

    def is_complex(self):
        return False

    is_sparse = is_quantized = is_meta = False        # dense, real tensors on a real device

    def get_device(self):
        """Same as `torch.Tensor.get_device`: the CUDA device index, or -1 on the CPU."""
        return -1 if self._dev.type == "cpu" else self._dev.index

    def stride(self, dim=None):
        """Same as `torch.Tensor.stride`: the step, in elements, of each dim of the backing
        array (a transposed tensor's are swapped, an expanded dim's is 0)."""
        a = self._array()
        steps = [s // a.itemsize for s in a.strides[self._nb:]]
        shape, nxt = a.shape[self._nb:], 1
        for d in range(len(steps) - 1, -1, -1):
            if shape[d] == 1:             # any step is right there: PyTorch's (as contiguous)
                steps[d] = nxt
            nxt = steps[d] * max(shape[d], 1)
        steps = tuple(steps)
        if dim is None:
            return steps
        from .ops._util import norm_dim
        return steps[norm_dim(dim, self.ndim)]

    def is_contiguous(self, memory_format=None):
        """Same as `torch.Tensor.is_contiguous` (row-major order, memory_format
        `gv.contiguous_format`)."""
        _memory_format.check(memory_format, "is_contiguous")
        a = self._array()
        return bool(a[(0,) * self._nb].flags.c_contiguous if self._nb else a.flags.c_contiguous)

    @property
    def H(self):
        """Same as `torch.Tensor.H`: the transpose of a matrix (gpuvjp's dtypes are real)."""
        if self.ndim not in (0, 2):
            raise RuntimeError("tensor.H is only supported on matrices (2-D tensors). Got "
                               f"{self.ndim}-D tensor." + (" For batches of matrices, consider "
                                                           "using tensor.mH" if self.ndim > 2
                                                           else ""))
        return self.T if self.ndim == 2 else self

    @property
    def mH(self):
        """Same as `torch.Tensor.mH`: the transpose of the last two dims (real dtypes)."""
        if self.ndim < 2:
            raise RuntimeError("tensor.mH is only supported on matrices or batches of matrices. "
                               f"Got {self.ndim}-D tensor.")
        return self.mT

    def retain_grad(self):
        """Same as `torch.Tensor.retain_grad`: a non-leaf keeps its gradient in `.grad` after
        `backward()` (a leaf already does)."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._node is not None:
            from .autograd.graph import retain
            retain(self)

    @property
    def retains_grad(self):
        if self._node is None:
            return False
        from .autograd.graph import retains
        return retains(self)

    def is_floating_point(self):
        return self._dtype.is_floating_point

    def type(self, dtype=None, non_blocking=False):  # noqa: A003  (PyTorch's name)
        """Same as `torch.Tensor.type`: with no argument, PyTorch's type name of the tensor
        (`"torch.FloatTensor"`, `"torch.cuda.FloatTensor"`); with a dtype or such a name, the
        tensor cast to it (`self` when it already is)."""
        cuda = "cuda." if self._dev.type == "cuda" else ""
        if dtype is None:
            return f"torch.{cuda}{_TYPE_NAMES[self._dtype.name]}"
        if isinstance(dtype, str):
            name = dtype.replace("torch.", "", 1).replace("cuda.", "", 1)
            by_name = {v: k for k, v in _TYPE_NAMES.items()}
            if not dtype.startswith("torch.") or name not in by_name:
                raise ValueError(f"invalid type: '{dtype}'")
            device = "cuda" if ".cuda." in dtype else "cpu"
            dtype = _dtype.to_dtype(by_name[name])
            if (self._dev.type == "cuda") != (device == "cuda"):
                return self.to(device, dtype)
        elif not isinstance(dtype, _dtype.dtype):
            raise TypeError("dtype must be a type, str, or dtype object")
        return self if dtype is self._dtype else self.to(dtype)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    __hash__ = object.__hash__

    # ----- conversion --------------------------------------------------------------------------
    def _host(self):
        a = self._array()
        if _trace.ON:
            _trace.read(a)
        return a if self._dev.type == "cpu" else a.get()

    def numpy(self, *, force=False):
        """Same as `torch.Tensor.numpy`, but a cuda tensor is copied to the host."""
        return self._host()

    def __array__(self, dtype=None, copy=None):
        """The NumPy array of a cpu tensor, with NumPy 2's `copy=` meaning: `np.asarray(t)`
        shares memory, `np.array(t)` copies, and `copy=False` raises ValueError where a copy
        is needed (another dtype). A cuda tensor raises TypeError, as PyTorch's."""
        if self._dev.type != "cpu":
            raise TypeError(f"can't convert {self._dev} device type tensor to numpy. Use "
                            "Tensor.cpu() to copy the tensor to host memory first.")
        a = self._array()
        if _trace.ON:
            _trace.read(a)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"Unable to avoid copy while converting a {self._dtype} tensor "
                                 f"to a NumPy array of dtype {np.dtype(dtype)}.")
            return a.astype(dtype)
        return a.copy() if copy else a

    def item(self):
        """Same as `torch.Tensor.item`."""
        n = self.numel()
        if n != 1:
            raise RuntimeError(f"a Tensor with {n} elements cannot be converted to Scalar")
        return self._host().reshape(()).item()

    def tolist(self):
        return self._host().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an "
                            "index")
        return int(self.item())

    def __bool__(self):
        n = self.numel()
        if n != 1:
            raise RuntimeError("Boolean value of Tensor with "
                               f"{'no values' if n == 0 else 'more than one value'} is ambiguous")
        return bool(self.item())

    def __dlpack__(self, *args, **kwargs):
        # The array's own __dlpack__ honours `stream` (CuPy makes the consumer's stream wait).
        # On the host PyTorch asserts stream is None; a bad option value is a ValueError here.
        if self._dev.type == "cpu" and (args[:1] or (kwargs.get("stream"),))[0] is not None:
            raise ValueError("stream should be None on cpu.")
        return self._array().__dlpack__(*args, **kwargs)

    @property
    def __cuda_array_interface__(self):
        """The CUDA array interface of a cuda tensor's array (zero-copy for CuPy, Numba...).
        A CPU tensor raises AttributeError, as PyTorch's, so `hasattr` is False. Unlike
        PyTorch, a tensor that requires grad has one too (as its `numpy()` does), so a
        Function's forward hands its inputs to CuPy directly."""
        if self._dev.type != "cuda":
            raise AttributeError(
                f"Can't get __cuda_array_interface__ on non-CUDA tensor type: "
                f"torch.{_TYPE_NAMES.get(self._dtype.name, 'Tensor')} If CUDA data is "
                "required use tensor.cuda() to copy tensor to device memory.")
        return self._array().__cuda_array_interface__

    def __dlpack_device__(self):
        return self._array().__dlpack_device__()

    def to(self, *args, dtype=None, device=None, copy=False, non_blocking=False):
        """Same as `torch.Tensor.to(device)`, `.to(dtype)`, `.to(device, dtype)`, `.to(other)`."""
        from .ops.shape import to_device, to_dtype
        for a in args:
            if isinstance(a, _dtype.dtype):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            elif isinstance(a, (str, _device.device, int)):
                device = a
            else:
                raise TypeError(f"to() received an invalid combination of arguments: "
                                f"{type(a).__name__}")
        out = self
        if device is not None:
            out = to_device(out, device)
        if dtype is not None:
            out = to_dtype(out, dtype)
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else _device.device("cuda", device)
                       if isinstance(device, int) else device)

    def float(self):
        return self.to(_dtype.float32)

    def double(self):
        return self.to(_dtype.float64)

    def half(self):
        return self.to(_dtype.float16)

    def long(self):
        return self.to(_dtype.int64)

    def int(self):
        return self.to(_dtype.int32)

    def bool(self):
        return self.to(_dtype.bool_)

    def type_as(self, other):
        return self.to(other.dtype)

    # ----- graph -----------------------------------------------------------------------------
    def detach(self):
        """Same as `torch.Tensor.detach`: shares data, no history."""
        t = _new_tensor(Tensor)                 # _make's slots, in line: vjp detaches twice
        t._data = self._data
        t._dev = self._dev
        t._dtype = self._dtype
        t._node = None
        t._requires_grad = False
        t.grad = None
        t._nb = self._nb
        t._tangent = None
        return t

    def detach_(self):
        if self._node is not None:
            self._node = None
        self._requires_grad = False
        return self

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Same as `torch.Tensor.backward`."""
        from .autograd import backward
        backward(self, gradient, retain_graph=retain_graph, create_graph=create_graph,
                 inputs=inputs)

    # ----- pickling and deepcopy ------------------------------------------------------------
    # As torch: a pickle keeps the values, dtype, device type and requires_grad, never the graph,
    # .grad or a forward-mode tangent, so a non-leaf comes back a leaf. The array travels as a
    # NumPy array (out-of-band with pickle protocol 5), and a cuda tensor lands on the current
    # CUDA device of the process that unpickles it (a Dask worker's own GPU).
    def __reduce_ex__(self, protocol):
        return (_rebuild, (type(self), self._host(), self._dtype.name, self._dev.type,
                           self._requires_grad, self._nb))

    def __deepcopy__(self, memo):
        """Same as torch: only leaves deepcopy; the copy keeps device, requires_grad, .grad."""
        if self._node is not None:
            raise RuntimeError("Only Tensors created explicitly by the user (graph leaves) "
                               "support the deepcopy protocol at the moment.")
        with _device.use(self._dev):
            data = self._array().copy()
        t = type(self)._make(data, self._dev, self._dtype, None)
        t._requires_grad, t._nb = self._requires_grad, self._nb
        memo[id(self)] = t
        if self.grad is not None:
            t.grad = self.grad.__deepcopy__(memo)
        return t

    # ----- printing ----------------------------------------------------------------------------
    def __repr__(self):
        a = self._host()
        opts = {}
        if a.dtype.kind == "f" and a.size and not np.all(np.isfinite(a) & (a == np.round(a))):
            opts = dict(precision=4, floatmode="fixed")          # PyTorch's default printing
        body = np.array2string(a, separator=", ", prefix="tensor(", **opts)
        extra = ""
        if self._dev.type != "cpu":
            extra += f", device='{self._dev}'"
        if self._dtype not in (_dtype.float32, _dtype.int64, _dtype.bool_) or self.numel() == 0:
            extra += f", dtype={self._dtype}"
        if self._node is not None:
            extra += f", grad_fn=<{self._node.name()}>"
        elif self._requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ----- indexing ------------------------------------------------------------------------------
    def __getitem__(self, key):
        from .ops.shape import getitem
        return getitem(self, key)

    def __contains__(self, element):
        """Same as `torch.Tensor.__contains__`: `element` (a number or a tensor) equals some
        entry (broadcast)."""
        if not isinstance(element, (Tensor, bool, int, float, np.generic)):
            raise RuntimeError("Tensor.__contains__ only supports Tensor or scalar, but you "
                               f"passed in a {type(element)}.")
        return bool((self == element)._host().any())

    def __format__(self, format_spec):
        """A 0-d tensor formats as its number (`f"{t:.3f}"`), as in torch."""
        if self.ndim == 0 and type(self) is Tensor:
            return self.item().__format__(format_spec)
        return object.__format__(self, format_spec)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __setitem__(self, key, value):
        raise RuntimeError("gpuvjp tensors are values: in-place assignment is not supported; "
                           "build a new tensor with gpuvjp.where or indexing instead")


_TYPE_NAMES = {"float16": "HalfTensor", "float32": "FloatTensor", "float64": "DoubleTensor",
               "int32": "IntTensor", "int64": "LongTensor", "bool": "BoolTensor"}


def _operand(other, like):
    """The other operand of a Tensor operator, or NotImplemented: a NumPy scalar counts as the
    Python scalar it holds, an ndarray as a (copied) tensor on `like`'s device."""
    if isinstance(other, Tensor):
        return other
    if isinstance(other, np.generic):
        return other.item() if other.dtype.kind in "biuf" else NotImplemented
    if isinstance(other, (bool, int, float)):
        return other
    if isinstance(other, np.ndarray):
        from ._creation import tensor
        return tensor(other, device=like._dev)
    return NotImplemented


_PLAIN = (Tensor, bool, int, float)     # operands used as they are (exact types: np.float64
                                        # is a float, and counts as a Python scalar instead)


def _binary(fn_name, reflected=False):
    fn = []                     # (apply's module, the op), looked up on first use: ops import us

    def method(self, other):
        if type(other) not in _PLAIN:
            other = _operand(other, self)
            if other is NotImplemented:
                return NotImplemented
        if not fn:
            fn.extend(_operator(fn_name))
        if fn[1] is None:       # a function of its own (checks, or a composite)
            return fn[0](other, self) if reflected else fn[0](self, other)
        return fn[0].apply(fn[1], (other, self) if reflected else (self, other), {})
    method.__name__ = fn_name
    return method


def _operator(fn_name):
    """(ops._registry, the Op) where the operator is the Op itself (add and sub: alpha is 1),
    so a call goes straight to apply; (the ops function, None) otherwise."""
    from . import ops
    from .ops import _registry
    fn = getattr(ops, fn_name)
    op = _registry.REGISTRY.get(fn_name) if fn_name in ("add", "sub") else fn
    return (_registry, op) if isinstance(op, _registry.Op) else (fn, None)


for _name, _fn in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "div"),
                   ("pow", "pow"), ("matmul", "matmul"), ("eq", "eq"), ("ne", "ne"),
                   ("lt", "lt"), ("le", "le"), ("gt", "gt"), ("ge", "ge"),
                   ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor")):
    setattr(Tensor, f"__{_name}__", _binary(_fn))
    if _name in ("add", "sub", "mul", "truediv", "pow", "matmul", "and", "or", "xor"):
        setattr(Tensor, f"__r{_name}__", _binary(_fn, reflected=True))
Tensor.__hash__ = object.__hash__


def _rebuild(cls, data, dtype_name, device_type, requires_grad, nb):
    """Unpickle a Tensor (see `Tensor.__reduce_ex__`)."""
    dev = _device.CPU
    if device_type == "cuda":
        if not _device.cuda_available():
            raise RuntimeError(
                "Attempting to deserialize a cuda tensor, but CuPy sees no CUDA GPU on this "
                "machine. Move it to the CPU with .cpu() before pickling it.")
        data = _device.cupy_module().asarray(data)
        dev = _device.device_of_array(data)
    t = cls._make(data, dev, _dtype.to_dtype(dtype_name), None)
    t._requires_grad, t._nb = requires_grad, nb
    return t
Tensor.__mod__ = _binary("remainder")            # torch's `%`: remainder, the sign of the divisor
Tensor.__rmod__ = _binary("remainder", reflected=True)
Tensor.__floordiv__ = _binary("floor_divide")    # torch's `//`
Tensor.__rfloordiv__ = _binary("floor_divide", reflected=True)
