"""Batched tensors: one leading batch dim carried under the logical shape (Tensor._nb).

A vectorized jacobian seeds ONE backward sweep with cotangents of shape (B, *out.shape)
marked batched; every rule then runs on batched tensors, and `apply` passes the batch dim
through each op (an op's `batch_rule`, broadcasting for elementwise ops, else a loop).
"""

from __future__ import annotations

from .._tensor import Tensor
from ._registry import KEEP, defop, defvjp


def _identity(xp, x):
    return x


# rebatch: (B, *s) -> a batched tensor of logical shape s; unbatch: the inverse.
rebatch_ = defop("rebatch", _identity, promote=KEEP, saves_ans=False, saves_inputs=False)
unbatch_ = defop("unbatch", _identity, promote=KEEP, saves_ans=False, saves_inputs=False)
unbatch_.batch_rule = lambda xp, impl, args, arrays, flags, params: arrays[0]
defvjp(rebatch_, lambda g, ans, x: unbatch(g))
defvjp(unbatch_, lambda g, ans, x: rebatch(g))


def rebatch(t: Tensor) -> Tensor:
    if t.ndim == 0:
        raise RuntimeError("a batched tensor needs a leading batch dim")
    out = rebatch_(t)
    out._nb = 1
    return out


def unbatch(t: Tensor) -> Tensor:
    out = unbatch_(t)
    out._nb = 0
    return out
