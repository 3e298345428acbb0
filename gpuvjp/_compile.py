"""gv.compile: trace a function of Tensors once per input signature, then replay its arrays.

What this layer owns: the signature of a call, the LRU cache of traces, the recorder, the
replay program, and on cuda the CUDA graph, its stream and its private memory pool. It reads
the Tensor, the fused plans, the Loader's kernel objects and the profiler; it never changes how
an op, a rule or a plan computes. The eager code reports to it through `_trace` (one call per
choke point); nothing here is on the eager path.

Recording. The first call of a signature runs `fn` eagerly with a recorder open on the calling
thread. Every array-producing primitive reports once: an op that runs unfused (its NumPy or
CuPy implementation, cuBLAS included), a fused plan (its NumPy evaluation on the CPU, its
generated kernel on the GPU), a plan consumed by a reduction, a view taken on an array
directly. While a trace is open, small CPU DAGs build their plan (as under the profiler), so
the trace sees the plan's NumPy calls; the values are the same. Buffers are identified by the
arrays' identity (every recorded array is held until the trace is finished, so no id is
reused): the inputs (each Tensor argument's array), the arrays a recorded call produced
(intermediates and outputs), and everything else a recorded call reads, which is a constant
of the trace: tensors reached through closures or globals, tensors `fn` creates from
constants. A constant's buffer is read at replay time, so a closure tensor whose array is
later rebound is not seen; gpuvjp's tensors are values, so nothing writes into one. A constant
that is a view of traced data would mean a primitive escaped the record: that signature runs
eagerly.

Replay. The record becomes one generated Python function: a flat list of the recorded array
calls (the plan's NumPy calls node by node, or its kernel), with no Tensor, Node, dtype or
shape logic. On the CPU every call returns fresh arrays, so outputs never alias another
call's. On cuda the second call captures that function into a CUDA graph (CuPy's stream
capture) on a non-default stream, with its allocations from a private `cupy.cuda.MemoryPool`
owned by the cache entry; later calls copy the inputs into the graph's input buffers, launch
it and copy the outputs out, with event waits ordering the replay after the caller's stream
and the caller's stream after the replay. Where capture fails (cuBLAS, cuSOLVER and cuRAND
refuse it in CuPy), the function itself is the replay, a launch list on the caller's stream.

Invalidation. A host read of traced data (`item`, `bool` and an `if` on a tensor, `numpy`,
`tolist`, `float`, a NumPy conversion, an internal data-dependent branch), random numbers, a
data-dependent shape (boolean-mask indexing), a custom `autograd.Function` (its own array
code), a write to a tensor from outside `fn` (`.grad` by `backward()`, `requires_grad_()` on an
argument, a `.grad` assigned to one), a dual (forward-mode) argument, a closure tensor that is
also an argument, and outputs that carry a `grad_fn` (`create_graph=True`) make that signature run
eagerly from then on, with one warning naming the cause and the line of `fn`; `strict=True`
raises instead.
"""

from __future__ import annotations

import builtins
import collections
import functools
import os
import re
import sys
import threading
import warnings

import numpy as np

from . import _device, _dtype, _lazy, _plan, _trace
from . import profiler as _profiler
from ._lazy import Pending
from ._tensor import Tensor
from .autograd import _mode

__all__ = ["compile", "Compiled"]

_PKG = os.path.dirname(os.path.abspath(__file__))


def _quiet_extobj():
    """(NumPy's error-state context variable, its value under errstate(all="ignore")): setting
    it is what `np.errstate` does, at a tenth of the cost; None where NumPy has no such
    variable (errstate is used then)."""
    try:
        from numpy._core import _ufunc_config
        var = _ufunc_config._extobj_contextvar
        with np.errstate(all="ignore"):
            return var, var.get()
    except (ImportError, AttributeError):
        return None


_EXTOBJ = _quiet_extobj()


_CLOSED = object()    # what a replay of an entry evicted meanwhile returns


class _Untraceable(Exception):
    """The record cannot be replayed; the message is the cause."""


# ----- the public entry ---------------------------------------------------------------------
def compile(fn=None, *, strict=False, cache_size=64):
    """Trace `fn` once per input signature and replay it: a CUDA graph where CuPy can capture
    one, the recorded launch list otherwise, the recorded NumPy calls on the CPU.

    Args:
        fn: a function of Tensors (it may call `gv.vjp`, `jvp`, `jacobian`, `hessian`, `hvp`,
            `vhp` or `autograd.grad`) returning Tensors, possibly in tuples, lists and dicts.
            Also usable as a decorator, with or without arguments.
        strict: raise a RuntimeError where a signature cannot be replayed (a host read of
            traced data, random numbers, ...) instead of warning and running it eagerly.
        cache_size: how many signatures are kept (least recently used first out); 0 turns
            caching off.

    The signature of a call is each Tensor argument's shape, dtype, device and requires_grad
    (found through tuples, lists and dicts), the other arguments by value (an unhashable one
    means no caching, with a warning), grad mode, the default dtype and device, and the fusion
    switch. The first call of a signature runs `fn` eagerly and records it; later calls replay
    the record and return fresh tensors equal, bit for bit, to what `fn` returns for the same
    inputs. An argument's `.grad` is an input too. Tensors and numbers that `fn` reaches
    through closures or globals are constants of the trace, and Python side effects of `fn`
    happen on the traced call only (docs/compile.md). Outputs are plain values: a signature
    whose outputs carry a `grad_fn` runs eagerly, with a warning.

    Returns:
        a callable with `.warmup(*args, **kwargs)` (trace and capture ahead of time) and
        `.cache_clear()`.

    Example:
        >>> f = gv.compile(lambda x, v: gv.vjp(lambda t: t.exp().sum(dim=1), x, v))
        >>> x = gv.ones(2, 2)
        >>> f(x, gv.ones(2))[1]
        tensor([[2.7183, 2.7183],
                [2.7183, 2.7183]])

    Beyond PyTorch (`torch.compile` compiles Python; this replays recorded arrays).
    """
    if fn is None:
        return lambda f: compile(f, strict=strict, cache_size=cache_size)
    if not callable(fn):
        raise TypeError(f"compile(): argument 'fn' must be callable, not {type(fn).__name__}")
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
        raise ValueError(f"compile(): cache_size must be a non-negative int, got {cache_size!r}")
    return Compiled(fn, bool(strict), cache_size)


class Compiled:
    """The callable `gv.compile` returns; see `gpuvjp.compile`."""

    def __init__(self, fn, strict, cache_size):
        self.fn = fn
        self.strict = strict
        self.cache_size = cache_size
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._warned_unhashable = False
        self._hits = self._misses = 0
        self._last = None                    # (key, entry) of the newest signature in the cache
        functools.update_wrapper(self, fn, updated=())

    def __repr__(self):
        return f"<gv.compile of {_name(self.fn)}, {len(self._cache)} signatures>"

    def __call__(self, *args, **kwargs):
        if self.cache_size == 0 or (_trace.ON and _trace.tracing()):
            return self.fn(*args, **kwargs)      # a trace open here records fn itself
        key, tensors, arrays = _signature(args, kwargs)
        last = self._last                    # the most recent signature: no hash, no reorder
        if last is not None and last[0] == key:
            entry = last[1]
        else:
            try:
                entry = self._cache[key]
                self._cache.move_to_end(key)
                self._last = (key, entry)
            except TypeError:
                if not self._warned_unhashable:
                    self._warned_unhashable = True
                    warnings.warn(f"gv.compile: {_name(self.fn)} got an unhashable non-tensor "
                                  "argument, so its calls are not cached and run eagerly",
                                  UserWarning, stacklevel=2)
                return self.fn(*args, **kwargs)
            except KeyError:
                entry = self._entry(key)
        if entry.program is not None:
            run = entry.run
            if run is not None and not _profiler.ACTIVE:
                self._hits += 1
                return run(tensors, *arrays)
            out = entry.replay(tensors, arrays)
            if out is not _CLOSED:
                self._hits += 1
                return out
            return self.fn(*args, **kwargs)      # evicted by another thread meanwhile
        if entry.claim():
            return self._trace(entry, args, kwargs, tensors)
        return self.fn(*args, **kwargs)    # being traced by another thread, or eager for good

    def warmup(self, *args, **kwargs):
        """Trace (and on cuda capture) the signature of these arguments ahead of time."""
        if self.cache_size == 0:
            return
        key, tensors, arrays = _signature(args, kwargs)
        try:
            entry = self._entry(key)
        except TypeError:
            return
        if entry.claim():
            self._trace(entry, args, kwargs, tensors)
        if entry.program is not None and entry.gpu and entry.graph_state == "new":
            entry.replay(tensors, arrays)

    def cache_info(self):
        """(hits, misses, maxsize, currsize) as `functools.lru_cache`: replayed calls, traces
        recorded, cache_size, signatures held."""
        return CacheInfo(self._hits, self._misses, self.cache_size, len(self._cache))

    def cache_clear(self):
        """Drop every trace (graphs and their pools are freed)."""
        with self._lock:
            entries = list(self._cache.values())
            self._cache.clear()
            self._last = None
        for e in entries:
            e.close()

    def _entry(self, key):
        evicted = []
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                entry = self._cache[key] = _Entry()
                while len(self._cache) > self.cache_size:
                    evicted.append(self._cache.popitem(last=False)[1])
            else:
                self._cache.move_to_end(key)
            self._last = (key, entry)
        for e in evicted:
            e.close()
        return entry

    def _trace(self, entry, args, kwargs, tensors):
        self._misses += 1
        rec = _Recorder(_signature(args, kwargs)[2], self.strict, self.fn)
        rec.arguments = {id(t) for t in tensors}
        grads = [t.grad for t in tensors]
        prev = _trace.start(rec)
        try:
            _check_arguments(rec, self.fn, tensors)
            out = self.fn(*args, **kwargs)
            _lazy.force(_flat_tensors(out))
            if any(t.grad is not g for t, g in zip(tensors, grads)):
                rec.invalidate("an in-place write to a tensor from outside fn (.grad of an "
                               "argument assigned)")
        except BaseException:
            _trace.stop(prev)
            entry.release_claim()
            raise
        _trace.stop(prev)
        try:
            if rec.invalid is not None:
                raise _Untraceable(rec.invalid)
            entry.build(rec, out, tensors)
        except _Untraceable as exc:
            cause = exc.args[0]
            msg = (f"gv.compile: {_name(self.fn)} cannot be replayed for this input signature: "
                   f"{cause[0]}" + (f" at {cause[1]}" if cause[1] else "") +
                   "; it runs eagerly")
            entry.eager()
            if self.strict:
                raise RuntimeError(msg) from None
            warnings.warn(msg, UserWarning, stacklevel=3)
        return out


CacheInfo = collections.namedtuple("CacheInfo", "hits misses maxsize currsize")


def _name(fn):
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


# ----- the signature ------------------------------------------------------------------------
def _signature(args, kwargs):
    """(key, the Tensor arguments in order, their arrays). The key may be unhashable (an
    unhashable argument): the cache lookup raises TypeError then."""
    key, tensors = [], []
    for a in args:          # the common case inline: Tensor arguments
        if type(a) is Tensor:
            key.append((a._data.shape, a._dtype, a._dev, a._requires_grad, a._nb))
            tensors.append(a)
        else:
            _walk((a,), key, tensors)
    if kwargs:
        for k in sorted(kwargs):
            key.append(k)
            _walk((kwargs[k],), key, tensors)
    arrays = [t._data for t in tensors]
    for d in arrays:
        if type(d) is Pending:                   # pending inputs are computed now, untraced
            arrays = [t._array() for t in tensors]
            break
    for t in tensors:
        # fn may read an argument's .grad (an optimiser step): it is an input of the trace
        # too; a forward-mode tangent sends the signature to eager (_check_arguments)
        g = t.grad
        if g is not None:
            key.append(("grad", g._data.shape, g._dtype, g._dev))
            arrays.append(g._array())
        elif t._tangent is not None:
            key.append("tangent")
    n = len(arrays)
    if n > 1 and (arrays[0] is arrays[1] if n == 2 else len(set(map(id, arrays))) < n):
        ids = [id(a) for a in arrays]            # one array twice: the trace knows it
        key.append(tuple(ids.index(i) for i in ids))
    key.append((_mode._state.enabled, _dtype._default_float[0], _device.get_default_device(),
                _lazy.ENABLED))
    return tuple(key), tensors, arrays


def _check_arguments(rec, fn, tensors):
    """Invalidate a trace that could not tell its inputs apart: a dual (forward-mode)
    argument, whose tangent the replay would not carry; a tensor that fn reads through a
    closure or a global and that shares its array with an argument, so that the record
    cannot say which of the two a call read."""
    if any(t._tangent is not None for t in tensors):
        rec.invalidate("a forward-mode dual tensor as an argument (its tangent is not "
                       "replayed)")
        return
    roots = {id(_root(a)) for a in rec.inputs}
    for t in _reached_tensors(fn):
        d = t._data
        if type(d) is not Pending and id(_root(d)) in roots:
            rec.invalidate("a tensor fn reads through a closure or a global is also an "
                           "argument (or shares its memory)")
            return


def _root(a):
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def _reached_tensors(fn, depth=0):
    """The Tensors in fn's closure cells and in the globals its code names (and its nested
    functions' code names), one container level deep."""
    fn = getattr(fn, "__func__", fn)
    if isinstance(fn, functools.partial):
        found = [a for a in (*fn.args, *fn.keywords.values()) if isinstance(a, Tensor)]
        return found + _reached_tensors(fn.func, depth)
    code = getattr(fn, "__code__", None)
    if code is None or depth > 2:
        return []
    values = [c.cell_contents for c in (fn.__closure__ or ()) if _filled(c)]
    names, stack = set(), [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    g = getattr(fn, "__globals__", {})
    values += [g[n] for n in names if n in g]
    found = []
    for v in values:
        if isinstance(v, Tensor):
            found.append(v)
        elif type(v) in (list, tuple):
            found += [x for x in v if isinstance(x, Tensor)]
        elif type(v) is dict:
            found += [x for x in v.values() if isinstance(x, Tensor)]
        elif callable(v) and getattr(v, "__code__", None) is not None and \
                not getattr(v, "__module__", "").startswith("gpuvjp"):
            found += _reached_tensors(v, depth + 1)
    return found


def _filled(cell):
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _walk(items, key, tensors):
    for a in items:
        if isinstance(a, Tensor):
            key.append((a._data.shape, a._dtype, a._dev, a._requires_grad, a._nb))
            tensors.append(a)
        elif type(a) is tuple or type(a) is list:
            key.append("(" if type(a) is tuple else "[")
            _walk(a, key, tensors)
            key.append(")")
        elif isinstance(a, dict):
            key.append("{")
            for k, v in a.items():
                key.append(k)
                _walk((v,), key, tensors)
            key.append("}")
        else:
            key.append((type(a), a))


def _flat_tensors(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat_tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat_tensors(o)]
    return []


# ----- recording ----------------------------------------------------------------------------
_READS = {"item": "item()", "__bool__": "bool() (an `if` on a tensor)", "tolist": "tolist()",
          "numpy": "numpy()", "__float__": "float()", "__int__": "int()",
          "__index__": "an index conversion", "__repr__": "repr()", "__array__":
          "a NumPy conversion", "__reduce_ex__": "pickling", "cpu": "cpu()"}


class _Recorder:
    """The calls one traced run made, with every array they touched held alive."""

    def __init__(self, inputs, strict, fn):
        self.inputs = inputs
        self.strict = strict
        self.fn = fn
        self.calls = []
        self.traced = {id(a) for a in inputs}
        self.arguments = set()         # ids of the Tensor arguments
        self.invalid = None

    def add(self, kind, payload, out):
        self.calls.append((kind, payload, out))
        for o in (out if isinstance(out, (list, tuple)) else (out,)):
            self.traced.add(id(o))

    def is_traced(self, a):
        while a is not None:
            if id(a) in self.traced:
                return True
            a = getattr(a, "base", None)
        return False

    def read(self, a, cause):
        if self.is_traced(a):
            self.invalidate(cause or "a host read: " + _read_cause())

    def write(self, tensor, what):
        if id(tensor) in self.arguments:
            self.invalidate(f"an in-place write to a tensor from outside fn ({what} on an "
                            "argument)")

    def invalidate(self, cause):
        if self.invalid is None:
            self.invalid = (cause, _user_line())
            if self.strict:
                where = f" at {self.invalid[1]}" if self.invalid[1] else ""
                raise RuntimeError(f"gv.compile(strict=True): {_name(self.fn)} cannot be "
                                   f"replayed: {cause}{where}")


def _read_cause():
    """Which Tensor method read data on the host: the outermost frame of `_tensor.py`."""
    f = sys._getframe(3)
    found = None
    while f is not None:
        if f.f_code.co_filename.endswith(os.path.join("gpuvjp", "_tensor.py")):
            found = f.f_code.co_name
        elif found is not None:
            break
        f = f.f_back
    return _READS.get(found, found or "a read of tensor data")


def _user_line():
    """file:line of the innermost frame outside gpuvjp: the line of fn (or of code it calls)."""
    f = sys._getframe(1)
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if not path.startswith(_PKG + os.sep):
            return f"{f.f_code.co_filename}:{f.f_lineno}"
        f = f.f_back
    return None


# ----- the replay program ---------------------------------------------------------------------
class _Codegen:
    """Turns a record into the source of `compute(a0, a1, ...)` returning the output arrays."""

    def __init__(self, rec, gpu):
        self.rec = rec
        self.gpu = gpu
        self.ns = {"np": np, "ndarray": np.ndarray, "asarray": np.asarray}
        self.var = {}
        self.lines = []
        self.n = 0
        self.records = []          # profiler records: (name, ops, elements, read, written)
        for k, a in enumerate(rec.inputs):
            self.var.setdefault(id(a), f"a{k}")

    def const(self, value):
        name = f"c{len(self.ns)}"
        self.ns[name] = value
        return name

    def ref(self, a):
        """The expression reading `a`: a variable of the program, or a constant."""
        v = self.var.get(id(a))
        if v is not None:
            return v
        if getattr(a, "ndim", None) is not None and self.rec.is_traced(getattr(a, "base", None)):
            raise _Untraceable(("an array view made outside the recorded calls", None))
        return self.const(a)

    def new(self, a):
        self.n += 1
        name = f"s{self.n}"
        self.var[id(a)] = name
        return name

    def emit(self, line):
        self.lines.append("    " + line)

    def run(self):
        for kind, payload, out in self.rec.calls:
            getattr(self, "_" + kind)(payload, out)

    # ----- one recorded call each ----------------------------------------------------------
    def _op(self, payload, out):
        op, args, arrays, params, dev = payload
        refs = ", ".join(self.ref(a) for a in arrays)
        if any(isinstance(a, Tensor) and a._nb for a in args):
            from .ops import _registry
            call = (f"{self.const(_registry._batched)}({self.const(op)}, {self.const(args)}, "
                    f"[{refs}], {self.const(params)}, {self.const(dev)})")
        elif dev.type == "cpu" and arrays and (op.np_fn is not None and not params or
                                               hasattr(op.impl, "exact")):
            call = self._np_call(op, arrays, params, refs)
        else:
            fn = op.impl if dev.type == "cpu" else (op.gpu or op.impl)
            xp = "np" if dev.type == "cpu" else self.const(_device.cupy_module())
            kw = f", **{self.const(params)}" if params else ""
            call = f"{self.const(fn)}({xp}, {refs}{kw})" if refs else \
                f"{self.const(fn)}({xp}{kw})"
        s = self.new(out)
        self.emit(f"{s} = {call}")
        if dev.type == "cpu" and not op.moves_device and getattr(out, "ndim", 1) == 0:
            self.emit(f"if type({s}) is not ndarray: {s} = asarray({s})")
        ins = [a for a in arrays if hasattr(a, "nbytes") and hasattr(a, "strides")]
        if not _profiler._is_view(out, ins):
            elements = max([a.size for a in [out] + ins] or [0])
            self.records.append((f"gv_{op.name}", (op.name,), elements,
                                 sum(_plan.footprint(a) for a in ins), out.nbytes))

    def _np_call(self, op, arrays, params, refs):
        """The cheapest exact NumPy call of a CPU op on arrays like the recorded ones: the
        `exact` specialisation of its impl or twin where it has one (a ufunc with fixed
        arguments, an in-place twin), else its NumPy function (`np_fn`, no `xp`)."""
        fn = op.np_fn if op.np_fn is not None and not params else None
        spec = getattr(fn if fn is not None else op.impl, "exact", None)
        if spec is not None:
            spec = spec(*arrays, **params) if fn is not None else spec(np, *arrays, **params)
        if spec is not None:
            fn, extra = spec
            extra = "".join(", " + self.const(e) for e in extra)
            return f"{self.const(fn)}({refs}{extra})"
        if fn is not None:
            return f"{self.const(fn)}({refs})"
        kw = f", **{self.const(params)}" if params else ""
        return f"{self.const(op.impl)}(np, {refs}{kw})"

    def _call(self, payload, out):
        fn, args, kwargs = payload
        if fn is _spread_array() and not self.gpu and not kwargs:
            return self._spread(args, out)
        refs = ", ".join(self.ref(a) for a in args)
        kw = f", **{self.const(kwargs)}" if kwargs else ""
        self.emit(f"{self.new(out)} = {self.const(fn)}({refs}{kw})")

    def _spread(self, args, out):
        """The sum's cotangent view (`ops.reduce._spread_array`): one `ndarray` constructor
        with the recorded strides, where the source is C-contiguous at replay time."""
        a, dims, keepdim, shape = args
        src = self.ref(a)
        s = self.new(out)
        if type(out) is np.ndarray and out.base is a and a.flags.c_contiguous and a.size:
            view = (f"ndarray({self.const(tuple(out.shape))}, {self.const(out.dtype)}, {src}, 0, "
                    f"{self.const(tuple(out.strides))})")
            slow = f"{self.const(_spread_array())}({src}, {self.const(dims)}, " \
                f"{self.const(keepdim)}, {self.const(shape)})"
            self.emit(f"{s} = {view} if {src}.flags.c_contiguous else {slow}")
            self.emit(f"{s}.flags.writeable = False  # view")
        else:
            self.emit(f"{s} = {self.const(_spread_array())}({src}, {self.const(dims)}, "
                      f"{self.const(keepdim)}, {self.const(shape)})")

    def _leaves(self, plan, device_scalars=False):
        from .ops import _kernels
        refs = []
        for a, d, s in zip(plan.leaves, plan.leaf_dtypes, plan.leaf_scalar):
            if s and self.gpu:
                a = np.dtype(d).type(a)
                if device_scalars:
                    a = _kernels._device_scalar(a)
                refs.append(self.const(a))
            elif s:
                refs.append(self.const(a))
            else:
                refs.append(self.ref(a))
        return refs

    def _plan_record(self, plan, outs, name, extra=()):
        read = sum(_plan.footprint(a) for a, s in zip(plan.leaves, plan.leaf_scalar) if not s)
        self.records.append((name, tuple(plan.ops()) + tuple(extra), _size(plan.shape), read,
                             sum(o.nbytes for o in outs)))

    def _nodes(self, plan, leaves):
        """The plan's NumPy calls node by node (what `_plan.evaluate` computes without blocks);
        returns the variables of its outputs."""
        vals = []
        examples = []              # arrays like the node's values, for `exact` (CPU)
        zero_d = plan.shape == ()
        for op, refs, dt, _ in plan.nodes:
            ufunc = op.fuse.ufunc
            if ufunc is not None and not self.gpu:
                args = ", ".join(self._scalar(plan, refs, k, ufunc)
                                 if r < 0 and plan.leaf_scalar[-1 - r]
                                 else leaves[-1 - r] if r < 0 else vals[r]
                                 for k, r in enumerate(refs))
            else:
                args = ", ".join(leaves[-1 - r] if r < 0 else vals[r] for r in refs)
            self.n += 1
            v = f"t{self.n}"
            if ufunc is not None:
                self.emit(f"{v} = {self.const(ufunc)}({args})")
            elif op.np_fn is not None and not self.gpu:
                ex = [plan.leaves[-1 - r] if r < 0 else examples[r] for r in refs]
                spec = getattr(op.np_fn, "exact", None)
                spec = spec(*ex) if spec is not None else None
                if spec is None:
                    self.emit(f"{v} = {self.const(op.np_fn)}({args})")
                else:
                    extra = "".join(", " + self.const(e) for e in spec[1])
                    self.emit(f"{v} = {self.const(spec[0])}({args}{extra})")
            else:
                self.emit(f"{v} = {self.const(op.impl)}(np, {args})")
            if not self.gpu:
                shape = np.broadcast_shapes(*[np.shape(a) for a in
                                              (plan.leaves[-1 - r] if r < 0 else examples[r]
                                               for r in refs)])
                examples.append(np.broadcast_to(np.empty((), dt), shape))
            if zero_d:
                self.emit(f"if type({v}) is not ndarray: {v} = asarray({v})")
            vals.append(v)
        return [vals[o] for o in plan.outputs]

    def _scalar(self, plan, refs, k, ufunc):
        """Scalar argument k of a ufunc node: a 0-d array of the dtype NumPy casts the Python
        scalar to (every array argument's, when they share one, the ufunc has a loop on it
        alone and the value converts exactly), which skips the ufunc's scalar conversion; else
        the scalar itself."""
        li = -1 - refs[k]
        value = plan.leaves[li]
        dts = {plan.leaf_dtypes[-1 - r] if r < 0 else plan.nodes[r][2]
               for r in refs if r >= 0 or not plan.leaf_scalar[-1 - r]}
        if type(value) in (bool, int, float) and len(dts) == 1:
            dt = np.dtype(dts.pop())
            category = {"b": 0, "i": 1, "u": 1, "f": 2}.get(dt.kind, -1)
            loop = dt.char * getattr(ufunc, "nin", 0)
            if category >= (bool, int, float).index(type(value)) and loop and \
                    any(t.startswith(loop) for t in getattr(ufunc, "types", ())):
                try:
                    with np.errstate(all="raise"):
                        zero_d = np.asarray(value, dtype=dt)
                        exact = zero_d.item() == value
                except (OverflowError, FloatingPointError, ValueError):
                    exact = False
                if exact:
                    zero_d.flags.writeable = False
                    return self.const(zero_d)
        return self.const(value)

    def _plan(self, payload, outs):
        plan, dev = payload
        leaves = self._leaves(plan)
        name = _plan.kernel_name(plan)
        if dev.type == "cpu":
            if _unblocked(plan):                    # the node's variable is the array's
                for o, v in zip(outs, self._nodes(plan, leaves)):
                    self.var[id(o)] = v
            else:
                self.emit(f"r = {self.const(_plan.evaluate)}({self.const(_stripped(plan))}, "
                          f"[{', '.join(leaves)}])")
                for k, o in enumerate(outs):
                    self.emit(f"{self.new(o)} = r[{k}]")
        else:
            from .ops import _kernels
            kern = _kernels.plan_kernel(plan, name)
            self.emit(f"r = {self.const(kern)}({', '.join(leaves)})")
            self.emit("r = r if type(r) is tuple else (r,)")
            for k, o in enumerate(outs):
                self.emit(f"{self.new(o)} = r[{k}]")
        self._plan_record(plan, outs, name)

    def _reduce(self, payload, out):
        plan, op, params, dev = payload
        name = _plan.kernel_name(plan) + f"_{op.name}"
        if dev.type == "cpu":
            leaves = self._leaves(plan)
            dims = params.get("dim")
            s = self.new(out)
            rows = dims and 0 not in dims and plan.shape and type(dims) is tuple
            if rows and len(plan.nodes) > 1 and _plan._rows_per_block(plan.shape) is not None:
                fn = self.const(lambda v, _impl=op.impl, _p=params: _impl(np, v, **_p))
                self.emit(f"{s} = {self.const(_plan.reduce_rows)}("
                          f"{self.const(_stripped(plan))}, {fn}, [{', '.join(leaves)}])")
            elif rows or _unblocked(plan):
                v = self._nodes(plan, leaves)[0]
                spec = getattr(op.impl, "exact", None)
                if spec is not None:
                    like = np.broadcast_to(np.empty((), plan.nodes[plan.outputs[0]][2]),
                                           plan.shape)
                    spec = spec(np, like, **params)
                if spec is None:
                    self.emit(f"{s} = asarray({self.const(op.impl)}(np, {v}, "
                              f"**{self.const(params)}))")
                else:
                    extra = "".join(", " + self.const(e) for e in spec[1])
                    self.emit(f"{s} = {self.const(spec[0])}({v}{extra})")
                    if out.ndim == 0:
                        self.emit(f"if type({s}) is not ndarray: {s} = asarray({s})")
            else:
                self.emit(f"{s} = asarray({self.const(op.impl)}(np, {self.const(_plan.evaluate)}("
                          f"{self.const(_stripped(plan))}, [{', '.join(leaves)}])[0], "
                          f"**{self.const(params)}))")
        else:
            from .ops import _kernels
            leaves = self._leaves(plan, device_scalars=True)
            kern = _kernels.plan_reduction_kernel(plan, name, op)
            s = self.new(out)
            self.emit(f"{s} = {self.const(kern)}({', '.join(leaves)}, axis="
                      f"{self.const(params['dim'])}, keepdims={self.const(params['keepdim'])})")
        self._plan_record(plan, [out], name, (op.name,))

    # ----- the function ---------------------------------------------------------------------
    def outputs(self, arrays):
        """The expressions of the output arrays: constants are copied, so that no call's
        output is another call's."""
        exprs = []
        for a in arrays:
            v = self.var.get(id(a))
            if v is None:
                v = f"{self.ref(a)}.copy()"
            exprs.append(v)
        return exprs

    def function(self, arrays):
        exprs = self.outputs(arrays)
        params = ", ".join(f"a{k}" for k in range(len(self.rec.inputs)))
        # a view made read-only as eager's is: only where it leaves the program
        lines = [ln for ln in self.lines
                 if not ln.endswith("  # view") or ln.split(".")[0].strip() in exprs]
        body = _free_after_last_use(lines, exprs) + \
            [f"    return ({''.join(e + ', ' for e in exprs)})"]
        src = f"def compute({params}):\n" + "\n".join(body) + "\n"
        exec(compile_source(src), self.ns)          # noqa: S102  (source built above)
        fn = self.ns["compute"]
        fn.source = src
        self.body, self.exprs = body[:-1], exprs
        return fn

    def runner(self, spec):
        """run(T, a0, a1, ...) -> the output structure: the CPU replay in one function (the
        program under NumPy's quiet error state, then the output Tensors), for calls outside
        a profile; T holds the Tensor arguments."""
        params = "".join(f", a{k}" for k in range(len(self.rec.inputs)))
        out = _pack_expr(spec, self.ns, lambda k: self.exprs[k])
        body = ["    " + ln for ln in self.body]
        if _EXTOBJ is None:
            self.ns["errstate"] = np.errstate
            src = (f"def run(T{params}):\n    with errstate(all='ignore'):\n" +
                   "\n".join(body) + f"\n        return {out}\n")
        else:
            self.ns["_quiet_set"], self.ns["_quiet"] = _EXTOBJ[0].set, _EXTOBJ[1]
            self.ns["_quiet_reset"] = _EXTOBJ[0].reset
            names = [f"o{k}" for k in range(len(self.exprs))]
            body += [f"        {n} = {e}" for n, e in zip(names, self.exprs)]
            out = _pack_expr(spec, self.ns, lambda k: names[k])
            src = (f"def run(T{params}):\n    q = _quiet_set(_quiet)\n    try:\n" +
                   "\n".join(body) + f"\n    finally:\n        _quiet_reset(q)\n"
                   f"    return {out}\n")
        exec(compile_source(src), self.ns)          # noqa: S102  (source built above)
        fn = self.ns["run"]
        fn.source = src
        return fn


_NAMES_RE = re.compile(r"\b([st]\d+|r)\b")


def _free_after_last_use(lines, outputs):
    """`lines` with a `del` after the last read of each intermediate, so that a replay holds no
    more memory at once than the eager call did."""
    keep = set(_NAMES_RE.findall(" ".join(outputs)))
    last = {}
    for i, line in enumerate(lines):
        for name in _NAMES_RE.findall(line):
            last[name] = i
    dead = collections.defaultdict(list)
    for name, i in last.items():
        if name not in keep:
            dead[i].append(name)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if dead[i]:
            out.append(f"    del {', '.join(sorted(dead[i]))}")
    return out


def compile_source(src):
    return builtins.compile(src, "<gv.compile replay>", "exec")


def _size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


@functools.cache
def _spread_array():
    from .ops import reduce
    return reduce._spread_array


def _unblocked(plan):
    """Whether `_plan.evaluate` runs this plan in one pass (no blocks of rows)."""
    return len(plan.nodes) <= len(plan.outputs) or _plan._rows_per_block(plan.shape) is None


def _stripped(plan):
    """A copy of `plan` without its arrays (the replay passes its own leaves)."""
    p = _plan.Plan()
    p.nodes, p.leaf_dtypes, p.leaf_scalar = plan.nodes, plan.leaf_dtypes, plan.leaf_scalar
    p.outputs, p.uses, p.shape, p._key = plan.outputs, plan.uses, plan.shape, plan._key
    p.leaves = [a if s else None for a, s in zip(plan.leaves, plan.leaf_scalar)]
    return p


# ----- outputs --------------------------------------------------------------------------------
def _out_spec(out, tensors, arrays):
    """How to rebuild `out` from the output arrays: ("t", k, dtype, device, requires_grad),
    ("arg", i) for an input Tensor returned as it is, containers, or a plain constant."""
    if isinstance(out, Tensor):
        if out._node is not None:
            raise _Untraceable(("an output carries a grad_fn (create_graph=True); replay "
                                "returns plain values only", None))
        if out._nb or out._tangent is not None:
            raise _Untraceable(("an output carries a batch dim or a forward-mode tangent",
                                None))
        for i, t in enumerate(tensors):
            if t is out:
                return ("arg", i)
        arrays.append(out._data)
        return ("t", len(arrays) - 1, out._dtype, out._dev, out._requires_grad)
    if type(out) in (tuple, list):
        return (type(out), [_out_spec(o, tensors, arrays) for o in out])
    if type(out) is dict:
        return (dict, [(k, _out_spec(v, tensors, arrays)) for k, v in out.items()])
    if out is None or isinstance(out, (bool, int, float, str, _dtype.dtype, _device.device)):
        return ("c", out)
    raise _Untraceable((f"fn returns a {type(out).__name__}", None))


def _packer(spec):
    """pack(outs, tensors) -> the output structure, generated once per signature."""
    ns = {}
    src = f"def pack(o, T):\n    return {_pack_expr(spec, ns, lambda k: f'o[{k}]')}\n"
    exec(compile_source(src), ns)                   # noqa: S102  (source built above)
    return ns["pack"]


def _rg(t):
    t._requires_grad = True
    return t


def _pack_expr(spec, ns, array):
    """The expression building the output structure `spec` from the output arrays
    (`array(k)` is the expression of array k) and the Tensor arguments `T`; the names it
    reads are put in `ns`."""
    ns["mk"], ns["rg"] = Tensor._make, _rg

    def expr(s):
        tag = s[0]
        if tag == "t":
            _, k, dt, dev, rg = s
            ns[f"d{k}"], ns[f"v{k}"] = dt, dev
            e = f"mk({array(k)}, v{k}, d{k}, None)"
            return f"rg({e})" if rg else e
        if tag == "arg":
            return f"T[{s[1]}]"
        if tag == "c":
            name = f"k{len(ns)}"
            ns[name] = s[1]
            return name
        if tag is dict:
            items = []
            for k, sub in s[1]:
                name = f"k{len(ns)}"
                ns[name] = k
                items.append(f"{name}: {expr(sub)}")
            return "{" + ", ".join(items) + "}"
        inner = "".join(expr(x) + ", " for x in s[1])
        return f"({inner})" if tag is tuple else f"[{inner}]"
    return expr(spec)


# ----- a cache entry: one signature ---------------------------------------------------------
class _Entry:
    """One signature: its replay program and, on cuda, its graph, stream and pool."""

    def __init__(self):
        self.state = "new"           # new, tracing, ready, eager
        self.program = None
        self.run = None              # cpu: run(T, *arrays), the replay outside a profile
        self.pack = None
        self.records = ()
        self.dev = _device.CPU
        self.gpu = False
        self.graph_state = "new"     # cuda: new, graph, list
        self.lock = threading.Lock()
        self.graph = self.stream = self.pool = None
        self.static_in = self.static_out = None
        self.events = None           # cuda: (after the caller, after the replay), reused

    def claim(self):
        """True for the one caller that traces this signature."""
        with self.lock:
            if self.state == "new":
                self.state = "tracing"
                return True
            return False

    def release_claim(self):
        with self.lock:
            if self.state == "tracing":
                self.state = "new"

    def eager(self):
        self.state = "eager"
        self.program = self.run = None

    def build(self, rec, out, tensors):
        devs = {p[-1] for k, p, _ in rec.calls if k != "call"} | {t._dev for t in tensors}
        if len(devs) > 1:
            raise _Untraceable(("fn uses several devices", None))
        dev = devs.pop() if devs else _device.CPU
        arrays = []
        spec = _out_spec(out, tensors, arrays)
        gen = _Codegen(rec, dev.type != "cpu")
        with _device.use(dev):
            gen.run()
            program = gen.function(arrays)
        self.records = tuple(gen.records)
        self.pack = _packer(spec)
        self.dev, self.gpu = dev, dev.type != "cpu"
        self.program = program
        if not self.gpu:
            self.run = gen.runner(spec)
        self.state = "ready"

    def close(self):
        with self.lock:
            self.program = self.run = None
            self.graph = self.static_in = self.static_out = self.events = None
            pool, self.pool = self.pool, None
            self.stream = None
            self.state = "eager"
        if pool is not None:
            with _device.cupy_module().cuda.Device(self.dev.index):
                pool.free_all_blocks()

    # ----- replay -------------------------------------------------------------------------
    def replay(self, tensors, arrays):
        profiling = bool(_profiler.ACTIVE)
        run = self.run
        if run is not None and not profiling:
            return run(tensors, *arrays)
        token = _profiler.start(self.dev) if profiling else None
        program = self.program
        if program is None:
            return _CLOSED
        if not self.gpu:
            if _EXTOBJ is None:
                with np.errstate(all="ignore"):
                    outs = program(*arrays)
            else:
                quiet = _EXTOBJ[0].set(_EXTOBJ[1])
                try:
                    outs = program(*arrays)
                finally:
                    _EXTOBJ[0].reset(quiet)
            if profiling:
                for r in self.records:
                    _profiler.add(*r, token)
            return self.pack(outs, tensors)
        cp = _device.cupy_module()
        with cp.cuda.Device(self.dev.index):
            if self.graph_state == "new":
                with self.lock:
                    if self.graph_state == "new" and self.program is not None:
                        self._capture(cp, arrays)
            if self.graph_state == "graph":
                outs = self._launch(cp, arrays)
                if outs is None:
                    return _CLOSED
                if profiling:
                    _profiler.add("graph", tuple(r[0] for r in self.records),
                                  sum(r[2] for r in self.records),
                                  sum(r[3] for r in self.records),
                                  sum(r[4] for r in self.records), token)
            else:
                outs = program(*arrays)
                if profiling:
                    for r in self.records:
                        _profiler.add(*r, token)
        return self.pack(outs, tensors)

    def _capture(self, cp, arrays):
        """Capture the program into a CUDA graph on a private stream and pool; where CuPy
        refuses (cuBLAS, cuSOLVER, cuRAND, a synchronisation) the launch list stays."""
        stream = cp.cuda.Stream(non_blocking=True)
        pool = cp.cuda.MemoryPool()
        caller = cp.cuda.get_current_stream()
        stream.wait_event(caller.record())
        mode = getattr(cp.cuda.runtime, "streamCaptureModeRelaxed", None)
        graph = None
        with stream, cp.cuda.using_allocator(pool.malloc):
            static_in = [a.copy() for a in arrays]
            if mode is None:
                stream.begin_capture()
            else:
                stream.begin_capture(mode)
            try:
                static_out = self.program(*static_in)
            except Exception:
                try:
                    stream.end_capture()
                except Exception:   # noqa: S110  (the capture is already invalidated)
                    pass
            else:
                graph = stream.end_capture()
        caller.wait_event(stream.record())
        if graph is None:
            del static_in
            pool.free_all_blocks()
            self.graph_state = "list"
            return
        self.graph, self.stream, self.pool = graph, stream, pool
        self.static_in, self.static_out = static_in, static_out
        self.events = (cp.cuda.Event(disable_timing=True), cp.cuda.Event(disable_timing=True))
        self.copyto = cp.copyto
        self.graph_state = "graph"

    def _launch(self, cp, arrays):
        """One replay of the graph: per call, two event records and two waits on events made
        at capture (a wait uses the event's latest record when it is enqueued, so reusing them
        is safe), one copy per input (`copyto`: a device-to-device memcpy for a contiguous
        input), the launch, and one copy per output, under the entry's lock."""
        copyto = self.copyto
        with self.lock:
            if self.graph is None:                  # closed by another thread meanwhile
                return None
            stream, (after_caller, after_replay) = self.stream, self.events
            caller = cp.cuda.get_current_stream()
            after_caller.record(caller)
            stream.wait_event(after_caller)
            with stream:
                for dst, src in zip(self.static_in, arrays):
                    copyto(dst, src)
                self.graph.launch(stream)
                outs = tuple([o.copy() for o in self.static_out])
            after_replay.record(stream)
            caller.wait_event(after_replay)
        return outs
