"""Argument normalisation shared by the op families: dims, shapes, broadcasting."""

from __future__ import annotations

import operator

__all__ = ["norm_dim", "norm_dims", "norm_shape", "broadcast_shapes"]


def norm_dim(dim, ndim, arg="dim"):
    """A dim in [-ndim, ndim) as PyTorch accepts it (a 0-d tensor takes -1 and 0)."""
    try:
        d = operator.index(dim)
    except TypeError:
        raise TypeError(f"{arg} must be an int, got {type(dim).__name__}") from None
    n = max(ndim, 1)
    if not -n <= d < n:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
    return d % n if ndim > 0 else 0


def norm_dims(dim, ndim):
    """None -> every dim; an int or a sequence -> a sorted tuple of distinct dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (list, tuple)):
        dims = tuple(norm_dim(d, ndim) for d in dim)
        if len(set(dims)) != len(dims):
            dup = next(d for d in dims if dims.count(d) > 1)
            raise RuntimeError(f"dim {dup} appears multiple times in the list of dims")
        if ndim == 0:
            return ()
        return tuple(sorted(dims))
    d = norm_dim(dim, ndim)
    return () if ndim == 0 else (d,)


def norm_shape(size, arg="size"):
    """(*ints) or (sequence,) -> a tuple of ints."""
    if len(size) == 1 and isinstance(size[0], (list, tuple)):
        size = tuple(size[0])
    elif len(size) == 1 and hasattr(size[0], "__len__") and not hasattr(size[0], "_dev"):
        size = tuple(size[0])
    try:
        out = tuple(operator.index(s) for s in size)
    except TypeError:
        raise TypeError(
            f"{arg} must be a tuple of ints, but got {tuple(type(s).__name__ for s in size)}"
        ) from None
    return out


def broadcast_shapes(a, b, what="tensors"):
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for i in reversed(range(n)):             # from the trailing dim, as PyTorch reports it
        x, y = a[i], b[i]
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise RuntimeError(
                f"The size of tensor a ({x}) must match the size of tensor b ({y}) at "
                f"non-singleton dimension {i}")
    return tuple(reversed(out))
