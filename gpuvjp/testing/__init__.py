"""gpuvjp.testing: an emulated CuPy (`fake_cupy`) for running gpuvjp's `cuda` paths without a GPU.

`GPUVJP_EMULATE_CUDA=1` (or `=2` for two devices), read when gpuvjp is imported, makes the
`cuda` device run on `gpuvjp.testing._fake_cupy`. Without the variable nothing here is imported
by gpuvjp. The emulator checks the Python around the kernels (array types, devices, kernel
calling conventions, streams, capture, memory), never the kernels' speed or their CUDA
compilation; see docs/emulated_cuda.md.
"""

from __future__ import annotations

__all__ = ["fake_cupy", "is_emulated"]


def is_emulated() -> bool:
    """True when gpuvjp's `cuda` device runs on the emulated CuPy."""
    from .. import _device
    return _device.emulated_device_count() > 0


def __getattr__(name):
    if name == "fake_cupy":
        from . import _fake_cupy
        return _fake_cupy
    raise AttributeError(f"module 'gpuvjp.testing' has no attribute {name!r}")
