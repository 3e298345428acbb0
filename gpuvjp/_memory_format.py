"""Memory formats (`gv.contiguous_format`, `gv.preserve_format`): gpuvjp keeps row-major order."""

from __future__ import annotations

__all__ = ["memory_format", "contiguous_format", "preserve_format", "check"]


class memory_format:  # noqa: N801  (PyTorch's name)
    """Same as `torch.memory_format`; gpuvjp has the row-major (contiguous) and preserve formats
    only, so both mean the tensor's own order."""

    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return f"gpuvjp.{self._name}"

    def __reduce__(self):
        return self._name


contiguous_format = memory_format("contiguous_format")
preserve_format = memory_format("preserve_format")


def check(fmt, fn):
    """Refuse a `memory_format` argument that is not a memory format, as PyTorch does."""
    if fmt is not None and type(fmt) is not memory_format:
        raise TypeError(f"{fn}(): argument 'memory_format' must be gpuvjp.memory_format, not "
                        f"{type(fmt).__name__}")
