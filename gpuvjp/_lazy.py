"""Pending: an elementwise result that is computed only when something reads it.

On the GPU a lazy op (exp) returns a Pending instead of launching; a reduction that receives
one runs the op inside its map expression (one pass over the input, nothing written), and any
other reader materialises it once, through `Tensor._array()`.
"""

from __future__ import annotations

__all__ = ["Pending"]


class Pending:
    __slots__ = ("op", "src", "shape", "ndim", "size", "dtype", "value")

    def __init__(self, op, src):
        self.op = op                  # a fused single-input op: op.gpu(cupy, src) computes it
        self.src = src
        self.shape = src.shape
        self.ndim = src.ndim
        self.size = src.size
        self.dtype = src.dtype
        self.value = None

    def materialize(self):
        if self.value is None:
            from . import _device
            cupy = _device.cupy_module()
            with cupy.cuda.Device(self.src.device.id):
                self.value = self.op.gpu(cupy, self.src)
            self.src = None
        return self.value
