"""Size: a tensor's shape, a tuple of ints with `numel()` (PyTorch's torch.Size)."""

from __future__ import annotations

import math
import operator

__all__ = ["Size"]


class Size(tuple):
    """Same as `torch.Size`: an immutable tuple of ints, what `Tensor.shape` and
    `Tensor.size()` return.

    Example:
        >>> s = gv.zeros(3, 4).shape
        >>> s, s.numel(), s[1:], s + (5,)
        (gpuvjp.Size([3, 4]), 12, gpuvjp.Size([4]), gpuvjp.Size([3, 4, 5]))

    Matches `torch.Size`; it compares equal to the plain tuple of the same ints.
    """

    __slots__ = ()

    def __new__(cls, sizes=()):
        items = []
        for i, s in enumerate(sizes):
            try:
                items.append(operator.index(s))
            except TypeError:
                raise TypeError(f"gpuvjp.Size() takes an iterable of 'int' (item {i} is "
                                f"'{type(s).__name__}')") from None
        return tuple.__new__(cls, items)

    def numel(self):
        """The number of elements of a tensor of this shape (1 for `Size([])`)."""
        return math.prod(self)

    def __repr__(self):
        return f"gpuvjp.Size({list(self)})"

    __str__ = __repr__

    def __getitem__(self, key):
        item = tuple.__getitem__(self, key)
        return tuple.__new__(Size, item) if isinstance(key, slice) else item

    def __add__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return Size(tuple.__add__(self, other))

    def __radd__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return Size(tuple.__add__(other, self))

    def __mul__(self, n):
        out = tuple.__mul__(self, n)
        return out if out is NotImplemented else tuple.__new__(Size, out)

    __rmul__ = __mul__

    def __reduce__(self):
        return (Size, (tuple(self),))
