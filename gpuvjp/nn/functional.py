"""gpuvjp.nn.functional: compositions of ops; a rule only where numerics need one."""

from __future__ import annotations

from ..ops import matmul, relu, sigmoid, tanh

__all__ = ["relu", "sigmoid", "tanh", "linear"]


def linear(input, weight, bias=None):
    """Same as `torch.nn.functional.linear`: input @ weight^T + bias."""
    out = matmul(input, weight.mT if weight.ndim > 1 else weight)
    return out if bias is None else out + bias
