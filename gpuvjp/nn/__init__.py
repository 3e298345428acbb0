"""gpuvjp.nn: the functional neural-network ops (`gpuvjp.nn.functional`)."""

from . import functional as functional

__all__ = ["functional"]
