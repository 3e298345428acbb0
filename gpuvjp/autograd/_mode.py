"""Grad mode, per thread as in PyTorch: no_grad, enable_grad, set_grad_enabled."""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import warnings

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled"]

class _State(threading.local):
    enabled = True                     # a new thread starts with grad enabled


_state = _State()


def is_grad_enabled() -> bool:
    """Same as `torch.is_grad_enabled`."""
    return _state.enabled


def _set(mode: bool) -> None:
    _state.enabled = bool(mode)


# ----- decorating: a fresh context per call, generators switched at every resumption ---------
def _wrap_generator(make_ctx, fn):
    """A generator function whose body runs under a fresh `make_ctx()` each time it resumes,
    while its caller runs in its own grad mode between yields (as PyTorch's decorators)."""
    @functools.wraps(fn)
    def generator_context(*args, **kwargs):
        gen = fn(*args, **kwargs)
        try:
            with make_ctx():
                response = gen.send(None)
            while True:
                try:
                    request = yield response
                except GeneratorExit:
                    with make_ctx():
                        gen.close()
                    raise
                except BaseException:
                    with make_ctx():
                        response = gen.throw(sys.exc_info()[1])
                else:
                    with make_ctx():
                        response = gen.send(request)
        except StopIteration as stop:
            return stop.value
    return generator_context


def _decorate(make_ctx, fn):
    if inspect.isclass(fn):
        warnings.warn("Decorating classes is deprecated and will be disabled in future "
                      "versions. You should only decorate functions or methods. To preserve "
                      "the current behavior of class decoration, you can directly decorate "
                      "the `__init__` method and nothing else.", FutureWarning, stacklevel=3)
        cls = fn
        fn = lambda *args, **kwargs: cls(*args, **kwargs)  # noqa: E731  (as PyTorch)
    if not callable(fn):
        raise TypeError(f"a grad-mode decorator expects a function, got {type(fn).__name__}")
    if inspect.isgeneratorfunction(fn):
        return _wrap_generator(make_ctx, fn)

    @functools.wraps(fn)
    def decorate_context(*args, **kwargs):
        with make_ctx():
            return fn(*args, **kwargs)
    return decorate_context


class _Mode:
    """no_grad / enable_grad: a context manager, or a decorator with or without parentheses."""
    _mode = True
    _prev = True                                    # set by __enter__

    def __new__(cls, orig_func=None):
        if orig_func is None:
            return object.__new__(cls)
        return cls()(orig_func)                     # bare @no_grad

    def __enter__(self):
        self._prev = _state.enabled
        _state.enabled = self._mode
        return None

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False

    def __call__(self, fn):
        return _decorate(self.clone, fn)

    def clone(self):
        return self.__class__()


class no_grad(_Mode):
    """Same as `torch.no_grad`: a context manager and a decorator (`@no_grad` or `@no_grad()`)
    under which ops record no graph. Thread-local; an exception leaves the mode as it was."""
    _mode = False


class enable_grad(_Mode):
    """Same as `torch.enable_grad`: a context manager and a decorator (`@enable_grad` or
    `@enable_grad()`) under which ops record a graph. Thread-local."""
    _mode = True


class set_grad_enabled:
    """Same as `torch.set_grad_enabled(mode)`: switches grad mode at once (a function call),
    and restores the previous mode on leaving a `with` block; as a decorator, the mode holds
    inside each call of the function and the caller's mode is left unchanged."""

    def __init__(self, mode: bool):
        self.prev = _state.enabled
        self.mode = bool(mode)
        _state.enabled = self.mode

    def __call__(self, fn):
        _state.enabled = self.prev                 # decorating does not switch the mode
        return _decorate(self.clone, fn)

    def __enter__(self):
        _state.enabled = self.mode
        return None

    def __exit__(self, *exc):
        _state.enabled = self.prev
        return False

    def __repr__(self):
        return f"gpuvjp.set_grad_enabled(mode={self.mode})"

    def clone(self):
        return self.__class__(self.mode)
