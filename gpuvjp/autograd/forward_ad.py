"""gpuvjp.autograd.forward_ad: dual tensors, as `torch.autograd.forward_ad`."""

from __future__ import annotations

import collections
import contextlib

from . import _forward

__all__ = ["dual_level", "make_dual", "unpack_dual", "UnpackedDualTensor", "enter_dual_level",
           "exit_dual_level"]

UnpackedDualTensor = collections.namedtuple("UnpackedDualTensor", ["primal", "tangent"])


def enter_dual_level():
    """Same as `torch.autograd.forward_ad.enter_dual_level`."""
    return _forward.enter()


def exit_dual_level(*, level=None):
    """Same as `torch.autograd.forward_ad.exit_dual_level`."""
    _forward.exit_()


@contextlib.contextmanager
def dual_level():
    """Same as `torch.autograd.forward_ad.dual_level`."""
    level = _forward.enter()
    try:
        yield level
    finally:
        _forward.exit_()


def make_dual(tensor, tangent, *, level=None):
    """Same as `torch.autograd.forward_ad.make_dual`: a new tensor carrying `tangent`."""
    from .._tensor import Tensor
    from ..ops.shape import reshape_, to_device, to_dtype
    if _forward.levels() == 0:
        raise RuntimeError("To create a dual Tensor, you must first enter a dual level: use "
                           "`with forward_ad.dual_level():`")
    if not isinstance(tensor, Tensor) or not isinstance(tangent, Tensor):
        raise TypeError("make_dual expects Tensors for 'tensor' and 'tangent'")
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"Expected primal to be floating point, but got: {tensor.dtype}")
    if tangent.shape != tensor.shape:
        raise RuntimeError(f"Trying to set a forward gradient that has a different size than "
                           f"that of the original Tensor, this is not supported. Tensor is of "
                           f"size {list(tensor.shape)} while the given forward gradient is of "
                           f"size {list(tangent.shape)}.")
    out = reshape_(tensor, shape=tensor.shape) if tensor.requires_grad else tensor.detach()
    tangent = to_dtype(to_device(tangent, tensor.device), tensor.dtype)
    out._tangent = tangent
    return out


def unpack_dual(tensor, *, level=None):
    """Same as `torch.autograd.forward_ad.unpack_dual`: (primal, tangent or None)."""
    t = tensor._tangent if _forward.levels() > 0 else None
    primal = tensor.detach() if tensor._tangent is not None else tensor
    if tensor._tangent is not None and tensor.requires_grad:
        from ..ops.shape import reshape_
        primal = reshape_(tensor, shape=tensor.shape)
        primal._tangent = None
    return UnpackedDualTensor(primal, t)
