"""dtypes and PyTorch's type-promotion rules (python scalars do not promote)."""

from __future__ import annotations

import numpy as np

__all__ = ["dtype", "float16", "float32", "float64", "int32", "int64", "bool_",
           "from_numpy_dtype", "to_dtype", "result_type", "get_default_dtype"]

_BOOL, _INT, _FLOAT = 0, 1, 2


class dtype:
    """Same as `torch.dtype`: printable as `gpuvjp.float32`, with `is_floating_point`."""

    __slots__ = ("name", "np", "category", "rank", "itemsize")

    def __init__(self, name, np_dtype, category, rank):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.category = category
        self.rank = rank
        self.itemsize = self.np.itemsize

    @property
    def is_floating_point(self):
        return self.category == _FLOAT

    @property
    def scalar_name(self):
        """PyTorch's ScalarType name, as its error messages print it ("Float", "Long")."""
        return _SCALAR_NAMES[self.name]

    @property
    def is_complex(self):
        return False

    @property
    def is_signed(self):
        return self.category != _BOOL

    def __repr__(self):
        return f"gpuvjp.{self.name}"

    def __reduce__(self):
        return "bool_" if self is bool_ else self.name      # the module-level name


float16 = dtype("float16", np.float16, _FLOAT, 0)
float32 = dtype("float32", np.float32, _FLOAT, 1)
float64 = dtype("float64", np.float64, _FLOAT, 2)
int32 = dtype("int32", np.int32, _INT, 0)
int64 = dtype("int64", np.int64, _INT, 1)
bool_ = dtype("bool", np.bool_, _BOOL, 0)

_SCALAR_NAMES = {"float16": "Half", "float32": "Float", "float64": "Double", "int32": "Int",
                 "int64": "Long", "bool": "Bool"}
_BY_NP = {d.np: d for d in (float16, float32, float64, int32, int64, bool_)}
# NumPy types without a gpuvjp twin widen to the nearest one (as torch.tensor does for lists).
_WIDEN = {np.dtype(np.int8): int32, np.dtype(np.int16): int32, np.dtype(np.uint8): int32,
          np.dtype(np.uint16): int32, np.dtype(np.uint32): int64}


def from_numpy_dtype(npd, strict=False) -> dtype:
    npd = np.dtype(npd)
    d = _BY_NP.get(npd)
    if d is None and not strict:
        d = _WIDEN.get(npd)
    if d is None:
        raise TypeError(
            f"can't convert an array of dtype {npd} to a gpuvjp tensor: the supported "
            "dtypes are float16, float32, float64, int32, int64 and bool")
    return d


def to_dtype(d) -> dtype:
    """A gpuvjp dtype from a gpuvjp dtype, a NumPy dtype or its name."""
    if isinstance(d, dtype):
        return d
    if d is bool:
        return bool_
    if d is float:
        return get_default_dtype()
    if d is int:
        return int64
    try:
        return from_numpy_dtype(np.dtype(d), strict=True)
    except Exception:
        raise TypeError(f"dtype must be a gpuvjp dtype, got {d!r}") from None


_default_float = [float32]


def get_default_dtype() -> dtype:
    return _default_float[0]


def set_default_dtype(d) -> None:
    d = to_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default_float[0] = d


def _promote(a: dtype | None, b: dtype | None) -> dtype | None:
    if a is None:
        return b
    if b is None or a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    return a if a.rank >= b.rank else b


def scalar_dtype(x) -> dtype:
    """The dtype a python scalar stands for: bool, int64, or the default float."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (int, np.integer)):
        return int64
    return get_default_dtype()


def result_type(*args) -> dtype:
    """PyTorch's result type: tensors of dim > 0 first, then 0-d tensors, then scalars,
    each later group counting only when it is of a higher category (bool < int < float)."""
    dim_t = zero_t = scal = None
    for a in args:
        d = getattr(a, "dtype", None)
        if isinstance(d, dtype):
            if a.ndim > 0:
                dim_t = _promote(dim_t, d)
            else:
                zero_t = _promote(zero_t, d)
        elif a is not None:
            scal = _promote(scal, scalar_dtype(a))
    return _combine(dim_t, _combine(zero_t, scal))


def _combine(higher, lower):
    if higher is None:
        return lower
    if lower is None or higher.category >= lower.category:
        return higher
    return _promote(higher, lower)
