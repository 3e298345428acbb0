"""Grad mode, per thread as in PyTorch: no_grad, enable_grad, set_grad_enabled."""

from __future__ import annotations

import functools
import threading

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled"]

class _State(threading.local):
    enabled = True                     # a new thread starts with grad enabled


_state = _State()


def is_grad_enabled() -> bool:
    """Same as `torch.is_grad_enabled`."""
    return _state.enabled


def _set(mode: bool) -> None:
    _state.enabled = bool(mode)


class _Mode:
    _mode = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _set(self._mode)
        return None

    def __exit__(self, *exc):
        _set(self._prev)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_Mode):
    """Same as `torch.no_grad`."""
    _mode = False


class enable_grad(_Mode):
    """Same as `torch.enable_grad`."""
    _mode = True


class set_grad_enabled(_Mode):
    """Same as `torch.set_grad_enabled` (a function-like context manager)."""

    def __init__(self, mode: bool):
        self._prev = is_grad_enabled()
        self._mode = bool(mode)
        _set(self._mode)

    def __enter__(self):
        return None

    def __call__(self, fn):
        raise TypeError("set_grad_enabled cannot decorate a function")
