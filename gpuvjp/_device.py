"""Devices ("cpu", "cuda:N") and the array module `xp` (NumPy, or CuPy imported lazily)."""

from __future__ import annotations

import contextvars
import functools
import os
import threading

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
def _emulate_setting(value):
    value = (value or "").strip()
    if value in ("", "0"):
        return 0
    if not value.isdigit():
        raise RuntimeError(f"GPUVJP_EMULATE_CUDA must be a number of emulated devices (0, 1 or "
                           f"2, ...), got {value!r}")
    return int(value)


# GPUVJP_EMULATE_CUDA=N (read once, at import): `cuda` runs on gpuvjp.testing's emulated CuPy
# with N devices. Every CuPy import of gpuvjp goes through _cupy(), so the switch holds for all.
_EMULATED = _emulate_setting(os.environ.get("GPUVJP_EMULATE_CUDA"))


def emulated_device_count() -> int:
    """Devices of the emulated CuPy (GPUVJP_EMULATE_CUDA), 0 when the real CuPy is used."""
    return _EMULATED


@functools.cache
def _cupy():
    if _EMULATED:
        from .testing import _fake_cupy
        _fake_cupy.set_device_count(_EMULATED)
        return _fake_cupy
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


def cupy_library():
    """CuPy (or the emulated CuPy), whether or not a GPU is present: building kernel objects
    needs no GPU (NVRTC compiles without one)."""
    cp = _cupy()
    if cp is None:
        raise RuntimeError("device 'cuda' needs CuPy: pip install 'gpuvjp[cuda]'")
    return cp


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
    """Context in which `dev`'s arrays are made (CuPy's current device); a no-op on cpu and
    inside a `scope` of `dev`, which already made it current."""
    if dev.type == "cpu" or _CURRENT.dev is dev:
        return _NULL
    return cupy_module().cuda.Device(dev.index)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NULL = _Null()


# ----- compute scope: one error state and one current device for a whole call ----------
class _Current(threading.local):
    dev = None                  # the device whose scope this thread is in, or None


_CURRENT = _Current()


# NumPy's error state lives in a context variable (NumPy 2); setting it to a state prepared
# once is what `np.errstate(all="ignore")` does, without building the context object and its
# keyword handling on every call. Where the variable is not there, errstate is used.
try:
    from numpy._core._ufunc_config import _extobj_contextvar as _ERR
except ImportError:                                    # pragma: no cover - other NumPy builds
    _ERR = None
_QUIET = {}                 # an error state -> the same state with every warning off


def _quiet_state(cur):
    """The error state `cur` with every warning off, made once and kept in _QUIET."""
    with np.errstate(all="ignore"):
        q = _ERR.get()
    if len(_QUIET) > 64:                    # the caller keeps changing np.seterr: bounded
        _QUIET.clear()
    _QUIET[cur] = q
    return q


def enter(dev):
    """Enter a compute scope of `dev` (see `scope`); returns what `leave` restores, or None
    where this thread is in a scope of `dev` already. For hot paths: `scope` is the same as a
    context manager."""
    prev = _CURRENT.dev
    if prev is dev:
        return None
    if dev.type == "cpu" and _ERR is not None:
        cur = _ERR.get()
        quiet = _QUIET.get(cur)
        ctx = _ERR.set(quiet if quiet is not None else _quiet_state(cur))
    else:
        ctx = (np.errstate(all="ignore") if dev.type == "cpu"
               else cupy_module().cuda.Device(dev.index))
        ctx.__enter__()
    _CURRENT.dev = dev
    return (prev, ctx)


def leave(state, exc=(None, None, None)):
    """Leave the scope `enter` returned `state` for."""
    if state is not None:
        prev, ctx = state
        _CURRENT.dev = prev
        if type(ctx) is _Token:
            _ERR.reset(ctx)
        else:
            ctx.__exit__(*exc)


_Token = contextvars.Token


class scope:
    """Context for a whole computation on `dev` (a functional call, one op outside one):
    on cpu NumPy's floating-point warnings are off (nan and inf propagate silently, as in
    PyTorch); on cuda `dev` is CuPy's current device. Ops on `dev` inside it enter nothing
    themselves, so a call pays for one context, not one per op. Code inside a scope that
    makes another CuPy device current must leave it before calling gpuvjp ops on `dev`."""

    __slots__ = ("dev", "_state")

    def __init__(self, dev):
        self.dev = dev

    def __enter__(self):
        self._state = enter(self.dev)
        return self

    def __exit__(self, *exc):
        leave(self._state, exc)
        self._state = None
        return False


def compute(dev: device):
    """The context one op on `dev` computes in: nothing inside a scope of `dev`."""
    return _NULL if _CURRENT.dev is dev else scope(dev)

# ----- default device -------------------------------------------------------------------
_default = [None]


def get_default_device() -> device:
    if _default[0] is None:
        _default[0] = parse_device(os.environ.get("GPUVJP_DEVICE", "cpu") or "cpu")
    return _default[0]


def set_default_device(spec) -> None:
    """Same as `torch.set_default_device`; None restores "cpu"."""
    _default[0] = CPU if spec is None else parse_device(spec)
