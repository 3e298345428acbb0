"""Trace recording for gv.compile: the hooks the eager code calls while a trace is open.

Every array-producing primitive of gpuvjp reports here, once, while `ON` is true (one global
truth test otherwise):
- `op`: an op that ran unfused in `ops._registry.apply` (its NumPy or CuPy implementation,
  cuBLAS and cuSOLVER calls included, or a batched call);
- `plan`: a fused plan computed by `_lazy` (the NumPy evaluation on the CPU, one generated
  kernel on the GPU), and `reduce`: a plan consumed by a reduction;
- `call`: any other array call (a view taken on the array directly, `ops.shape`).
Causes that make a trace invalid report through `read` (a host read of traced data, where
the data came from the inputs), and `invalidate` (random numbers, a custom Function's own
array code, a data-dependent shape, a write to a tensor from outside the traced function).

A recorder belongs to one thread: ops run by other threads while a trace is open are not
recorded. This module imports nothing of gpuvjp; `_compile.py` owns the recorder's class.
"""

from __future__ import annotations

import threading

__all__ = ["ON", "op", "plan", "reduce", "call", "read", "write", "invalidate"]

ON = False                 # some thread is tracing: the hooks below are called
_ACTIVE: dict = {}         # thread id -> the recorder of that thread's open trace
_LOCK = threading.Lock()


def _recorder():
    return _ACTIVE.get(threading.get_ident())


def start(recorder):
    """Open a trace in this thread; returns the recorder it replaces (None), for `stop`."""
    global ON
    with _LOCK:
        prev = _ACTIVE.get(threading.get_ident())
        _ACTIVE[threading.get_ident()] = recorder
        ON = True
    return prev


def stop(prev=None):
    global ON
    with _LOCK:
        if prev is None:
            _ACTIVE.pop(threading.get_ident(), None)
        else:
            _ACTIVE[threading.get_ident()] = prev
        ON = bool(_ACTIVE)


def tracing():
    """Whether this thread has a trace open."""
    return ON and threading.get_ident() in _ACTIVE


def op(op_, args, arrays, params, dev, out):
    rec = _recorder()
    if rec is not None:
        rec.add("op", (op_, args, list(arrays), params, dev), out)


def plan(plan_, dev, outs):
    rec = _recorder()
    if rec is not None:
        rec.add("plan", (plan_, dev), outs)


def reduce(plan_, op_, params, dev, out):
    rec = _recorder()
    if rec is not None:
        rec.add("reduce", (plan_, op_, params, dev), out)


def call(fn, args, kwargs, out):
    rec = _recorder()
    if rec is not None:
        rec.add("call", (fn, list(args), kwargs), out)


def read(array, cause=None):
    """A host read of `array`: invalidates the trace when the array holds traced data."""
    rec = _recorder()
    if rec is not None:
        rec.read(array, cause)


def write(tensor, cause):
    """An in-place change of `tensor`: invalidates the trace when it is an argument of fn."""
    rec = _recorder()
    if rec is not None:
        rec.write(tensor, cause)


def invalidate(cause):
    rec = _recorder()
    if rec is not None:
        rec.invalidate(cause)
