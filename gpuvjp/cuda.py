"""gpuvjp.cuda: whether CuPy can use a GPU, and how many there are."""

from __future__ import annotations

from . import _device

__all__ = ["is_available", "device_count", "synchronize"]


def is_available() -> bool:
    """Same as `torch.cuda.is_available`: True when CuPy imports and sees a CUDA GPU."""
    return _device.cuda_available()


def device_count() -> int:
    """Same as `torch.cuda.device_count`."""
    return _device.cuda_device_count()


def synchronize(device=None) -> None:
    """Same as `torch.cuda.synchronize`."""
    cp = _device.cupy_module()
    idx = 0 if device is None else _device.parse_device(device).index
    with cp.cuda.Device(idx):
        cp.cuda.Device(idx).synchronize()
