"""Devices ("cpu", "cuda:N") and the array module `xp` (NumPy, or CuPy imported lazily)."""

from __future__ import annotations

import functools
import os

import numpy as np

__all__ = ["device", "cuda_available", "array_module", "parse_device"]


class device:
    """Same as `torch.device`: a type ("cpu" or "cuda") and, for cuda, an index."""

    __slots__ = ("type", "index")

    def __new__(cls, spec, index=None):
        if isinstance(spec, device):
            return spec
        return _parse(spec, index)

    @classmethod
    def _make(cls, type_, index):
        self = object.__new__(cls)
        object.__setattr__(self, "type", type_)
        object.__setattr__(self, "index", index)
        return self

    def __setattr__(self, name, value):
        raise AttributeError("device is immutable")

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = parse_device(other)
            except (TypeError, RuntimeError):
                return False
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __reduce__(self):
        return (device, (self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        idx = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{idx})"


CPU = device._make("cpu", None)


@functools.lru_cache(maxsize=64)
def _parse(spec, index=None):
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec, index = "cuda", spec
    if not isinstance(spec, str):
        raise TypeError(f"device must be a str, int or gpuvjp.device, got {type(spec).__name__}")
    type_, _, idx = spec.partition(":")
    if type_ not in ("cpu", "cuda") or (idx and not idx.isdigit()):
        raise RuntimeError(
            f"Expected one of cpu, cuda device type at start of device string: {spec}")
    if idx:
        if index is not None:
            raise RuntimeError(f"device string {spec!r} already has an index")
        index = int(idx)
    if type_ == "cpu":
        if index not in (None, 0):
            raise RuntimeError(f"cpu device index must be 0 or absent, got {index}")
        return CPU
    return device._make("cuda", 0 if index is None else int(index))


def parse_device(spec) -> device:
    """Parse a device spec; a bare "cuda" means the current CUDA device (index 0)."""
    if isinstance(spec, device):
        return spec
    return _parse(spec)


# ----- CuPy, imported lazily ----------------------------------------------------------
@functools.cache
def _cupy():
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install
        return None
    return cupy


@functools.cache
def cuda_device_count() -> int:
    cp = _cupy()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device, driver too old
        return 0


def cuda_available() -> bool:
    return cuda_device_count() > 0


def cupy_module():
    """CuPy, or a clear error when this machine cannot run CUDA."""
    cp = _cupy()
    if cp is None:
        raise RuntimeError("device 'cuda' needs CuPy: pip install 'gpuvjp[cuda]'")
    if not cuda_available():
        raise RuntimeError("device 'cuda' requested, but CuPy sees no CUDA GPU on this machine")
    return cp


def check_device(dev: device) -> device:
    if dev.type == "cuda":
        cupy_module()
        n = cuda_device_count()
        if dev.index >= n:
            raise RuntimeError(
                f"CUDA error: invalid device ordinal: cuda:{dev.index} requested, "
                f"{n} device(s) available")
    return dev


def array_module(dev: device):
    return np if dev.type == "cpu" else cupy_module()


def device_of_array(a) -> device:
    """The device holding array `a` (NumPy -> cpu, CuPy -> cuda:N)."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return CPU
    return device._make("cuda", int(a.device.id))


def is_cupy_array(a) -> bool:
    cp = _cupy()
    return cp is not None and isinstance(a, cp.ndarray)


def use(dev: device):
    """Context in which `dev`'s arrays are made (CuPy's current device); a no-op on cpu."""
    if dev.type == "cpu":
        return _NULL
    return cupy_module().cuda.Device(dev.index)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NULL = _Null()

# ----- default device -------------------------------------------------------------------
_default = [None]


def get_default_device() -> device:
    if _default[0] is None:
        _default[0] = parse_device(os.environ.get("GPUVJP_DEVICE", "cpu") or "cpu")
    return _default[0]


def set_default_device(spec) -> None:
    """Same as `torch.set_default_device`; None restores "cpu"."""
    _default[0] = CPU if spec is None else parse_device(spec)
