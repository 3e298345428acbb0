"""gpuvjp: vector-Jacobian products and their relatives on NVIDIA GPUs, with PyTorch's semantics."""

from . import _dtype
from ._creation import (arange as arange, as_tensor as as_tensor, empty as empty,
                        empty_like as empty_like, eye as eye, from_dlpack as from_dlpack,
                        from_numpy as from_numpy, full as full, full_like as full_like,
                        linspace as linspace, manual_seed as manual_seed, ones as ones,
                        ones_like as ones_like, rand as rand, randn as randn, tensor as tensor,
                        zeros as zeros, zeros_like as zeros_like)
from ._device import device as device
from ._device import get_default_device as get_default_device
from ._device import set_default_device as set_default_device
from ._dtype import dtype as dtype
from ._dtype import float16 as float16, float32 as float32, float64 as float64
from ._dtype import get_default_dtype as get_default_dtype
from ._dtype import int32 as int32, int64 as int64
from ._dtype import set_default_dtype as set_default_dtype
from ._memory_format import contiguous_format as contiguous_format
from ._memory_format import memory_format as memory_format
from ._memory_format import preserve_format as preserve_format
from ._size import Size as Size
from ._tensor import Tensor as Tensor
from . import autograd as autograd
from . import cuda as cuda
from . import distributed as distributed
from . import nn as nn
from . import profiler as profiler
from ._compile import compile as compile  # noqa: A001  (PyTorch's name)
from .autograd import enable_grad as enable_grad, is_grad_enabled as is_grad_enabled
from .autograd import no_grad as no_grad, set_grad_enabled as set_grad_enabled
from .autograd.functional import hessian as hessian, hvp as hvp, jacobian as jacobian
from .autograd.functional import jvp as jvp, vhp as vhp, vjp as vjp
from .ops import *  # noqa: F401,F403  (every op, by its PyTorch name)
from .ops import __all__ as _ops_all
del REGISTRY  # noqa: F821  (internal: gpuvjp.ops.REGISTRY)
from .nn.functional import log_softmax_top as log_softmax, softmax_top as softmax
from .ops.binary import div_ as div, div_ as divide  # rounding_mode (ops.div: the op itself)

bool = _dtype.bool_  # noqa: A001  (PyTorch's name)
half, float, double = float16, float32, float64  # noqa: A001
long, int = int64, int32  # noqa: A001

__version__ = "0.1.0"

__all__ = sorted(set(_ops_all) - {"REGISTRY"} | {
    "Size", "Tensor", "tensor", "as_tensor", "from_numpy", "from_dlpack", "zeros", "ones", "empty",
    "full", "zeros_like", "ones_like", "full_like", "empty_like", "arange", "linspace", "eye",
    "rand", "randn", "manual_seed", "device", "dtype", "float16", "float32", "float64", "int32",
    "int64", "bool", "half", "float", "double", "long", "int", "get_default_dtype",
    "set_default_dtype", "get_default_device", "set_default_device", "autograd", "cuda",
    "distributed", "nn", "profiler", "compile", "memory_format", "contiguous_format",
    "preserve_format",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "vjp", "jvp", "jacobian",
    "hessian", "vhp", "hvp", "softmax", "log_softmax"})
del _ops_all
