"""Pending: an elementwise result recorded as a node of a DAG and computed only when needed.

With fusion on (the default; `GPUVJP_FUSION=0` turns it off), `apply` records every op the
plan can express as a Pending instead of running it, on both devices. A DAG is materialised
(see `_plan.py` for who owns what) where something needs memory:
- any read of `Tensor._array()`: linear algebra, a shape op that copies, a host read, an op
  the plan cannot express;
- a reduction that consumes it (`sum`): the DAG becomes its map expression and is never
  written;
- results handed back by vjp, grad, jvp, backward (`force`: several results of one shape are
  one kernel with several outputs);
- the size cap: a node whose DAG would be deeper than MAX_DEPTH materialises its pending
  inputs first, so one kernel never grows past MAX_DEPTH levels (compile time, registers).

With GPUVJP_ROW_KERNELS=1 a sum or mean over trailing dims of a DAG is deferred instead
(`_onepass.py`): a Pending of depth MAX_DEPTH + 1 that the final `force` of a vjp runs in one
kernel with the backward of its map's shape. Any other use computes it alone, as without the
switch; the hooks here are one depth comparison per Pending (`force_pending`, `reduce`) and the
cap's branch of `record`.

A value the forward computed but never wrote (a Pending consumed by a reduction, or still
pending) is recomputed inside the backward's kernel from the DAG's leaves: the backward rules
record Pendings that read the forward's Pendings. A forward value is in memory only when
something above materialised it; the backward then reads it instead.

Materialisation takes one lock, so a Pending read from several threads is computed once.

On the CPU, outside a profile, small arrays skip the DAG: `apply` runs an op at once when
each of its arrays is in memory and has at most EAGER_SIZE elements (the NumPy call the plan
would make, so the values are the plan's), and a pending DAG of at most EAGER_SIZE elements
(one recorded under a profile, or fed by a large one) is computed without building its Plan
(`_direct`): the same NumPy calls in the same dependency order. A tiny call (host-bound) pays
for no DAG and no plan. Under `gv.profiler` every fusible op is recorded and the Plan is always
built, so the records are the GPU's kernels.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from . import _device

__all__ = ["Pending", "ENABLED", "MAX_DEPTH", "record", "force", "reduce", "reduce_now"]

ENABLED = os.environ.get("GPUVJP_FUSION", "1").strip().lower() not in ("0", "false", "off", "no")

# Arrays of at most this many elements skip the DAG on the CPU outside a profile (2 * CHUNK:
# under it the plan's evaluation runs unblocked anyway, see _plan.py).
EAGER_SIZE = 1 << 16

# Deepest DAG one kernel computes. W2's fused backward (16 ops and their rules) is ~40 deep.
MAX_DEPTH = 64

# GPUVJP_ROW_KERNELS=1 (the one-pass switch), read at each reduction from the mapping behind
# os.environ (which os.environ's writes keep current) at the cost of one dict lookup
_ENV, _ROWS_KEY, _ROWS_ON = os.environ, "GPUVJP_ROW_KERNELS", "1"
if hasattr(os.environ, "_data") and hasattr(os.environ, "encodekey"):
    _ENV = os.environ._data
    _ROWS_KEY, _ROWS_ON = os.environ.encodekey(_ROWS_KEY), os.environ.encodevalue(_ROWS_ON)

_LOCK = threading.RLock()
_INFO: dict = {}          # (op, argument types) -> (out dtype, computation dtype)


class Pending:
    """A node of the pending DAG: `op` applied to `args` (arrays, scalars, Pendings)."""

    __slots__ = ("op", "args", "shape", "ndim", "dtype", "compute", "dev", "depth", "value")

    def __init__(self, op, args, shape, dtype, compute, dev, depth):
        self.op = op
        self.args = args
        self.shape = shape
        self.ndim = len(shape)
        self.dtype = dtype            # the output's NumPy dtype
        self.compute = compute        # the dtype the op computes in (its promoted inputs')
        self.dev = dev
        self.depth = depth
        self.value = None

    @property
    def size(self):
        return math.prod(self.shape)

    def __repr__(self):
        state = "computed" if self.value is not None else "pending"
        return f"<Pending {self.op.name} {self.shape} {self.dtype} {state}>"

    def materialize(self):
        v = self.value
        if v is None:
            force_pending([self])
            v = self.value
        return v


# ----- recording: the hot path of every fusible op ------------------------------------------
def record(op, arrays, dev):
    """A Pending for `op(*arrays)`; `arrays` is a list (Pendings already computed are
    replaced by their values). Raises ValueError where the shapes do not broadcast."""
    shape = None
    depth = 0
    sig = [op]
    for k, a in enumerate(arrays):
        if type(a) is Pending:
            if a.value is not None:
                a = arrays[k] = a.value
            elif a.depth > depth:
                depth = a.depth
        dt = getattr(a, "dtype", None)
        if dt is None:
            sig.append(type(a))
            continue
        sig.append(dt)
        s = a.shape
        if shape is None or s == shape:
            shape = s
        else:
            shape = np.broadcast_shapes(shape, s)
    info = _INFO.get(tuple(sig))
    if info is None:
        info = _probe(op, arrays, tuple(sig))
    if depth >= MAX_DEPTH:
        arrays, depth = _cap(arrays, depth)
    return Pending(op, arrays, shape, info[0], info[1], dev, depth + 1)


def _cap(arrays, depth):
    """(arrays, depth) for a node at the size cap: its pending inputs computed. A deferred
    reduction (`_onepass`, depth past MAX_DEPTH) is computed alone first; the other inputs
    then stay pending unless they are at the cap themselves."""
    if depth > MAX_DEPTH:
        force_pending([a for a in arrays if type(a) is Pending and a.depth > MAX_DEPTH])
        arrays = [a.value if type(a) is Pending and a.value is not None else a for a in arrays]
        depth = max([a.depth for a in arrays if type(a) is Pending] or [0])
        if depth < MAX_DEPTH:
            return arrays, depth
    force_pending([a for a in arrays if type(a) is Pending])
    return [a.value if type(a) is Pending else a for a in arrays], 0


def _probe(op, arrays, sig):
    """The dtypes of op(*arrays), found once per argument types by running the op's NumPy
    implementation on one element of each (values never change a dtype under NEP 50)."""
    probe = [np.ones(1, a.dtype) if hasattr(a, "dtype") else a for a in arrays]
    with _device.compute(_device.CPU):   # nan and inf propagate silently
        out = np.asarray(op.impl(np, *probe)).dtype
    compute = out
    if out == np.bool_ and op.fuse.ufunc is not None:      # comparisons: the inputs' type
        compute = np.result_type(*[a.dtype if hasattr(a, "dtype") else a for a in arrays])
    _INFO[sig] = info = (out, compute)
    return info


# ----- materialisation ----------------------------------------------------------------------
def force(tensors):
    """Materialise the pending data of `tensors` (Tensors, None, nested tuples and lists): one
    kernel per device and shape. Costs one pass over the items when nothing is pending."""
    held = None               # (tensor, its Pending)
    stack = [tensors]
    while stack:
        for t in stack.pop():
            d = getattr(t, "_data", None)
            if d is None:
                if isinstance(t, (tuple, list)):
                    stack.append(t)
            elif type(d) is Pending:
                held = held or []
                held.append((t, d))
    if held is None:
        return
    todo = [d for _, d in held if d.value is None]
    if todo:
        force_pending(todo)
    for t, d in held:
        t._data = d.value


def force_pending(pendings):
    """Compute the Pendings not yet computed, those of one shape and device in one kernel."""
    with _LOCK:
        groups, seen = {}, set()
        deferred = None
        for p in pendings:
            if p.value is None and id(p) not in seen:
                seen.add(id(p))
                if p.depth > MAX_DEPTH:        # a deferred reduction (_onepass)
                    deferred = (deferred or []) + [p]
                    continue
                groups.setdefault((p.shape, p.dev), []).append(p)
        if deferred:
            from . import _onepass
            _onepass.run(deferred, groups)
        for group in groups.values():
            if _small_on_cpu(group[0]):
                outs = _direct(group)
            else:
                outs = _run(_plan.build(group), group[0].dev)
            for p, v in zip(group, outs):
                p.value = v
                p.args = None


def _small_on_cpu(p):
    """A DAG the CPU computes without building its plan: under EAGER_SIZE elements the plan's
    evaluation runs unblocked anyway, and building it costs more than running it."""
    return (p.dev.type == "cpu" and not _profiler.ACTIVE and not _trace.ON
            and p.size <= EAGER_SIZE)


def _direct(group):
    """The values of the Pendings `group` on the CPU: each node's NumPy implementation over
    its arguments, each node once (the very calls `_plan.evaluate` makes, in the same order
    of dependencies), with no Plan built."""
    memo = {}
    with _device.compute(_device.CPU):   # nan and inf propagate silently
        for root in group:
            if root.depth == 1:          # reads no pending value: the common tiny case
                memo[id(root)] = _call(root, memo)
                continue
            stack = [root]
            while stack:
                q = stack[-1]
                if id(q) in memo:
                    stack.pop()
                    continue
                todo = [a for a in q.args
                        if type(a) is Pending and a.value is None and id(a) not in memo]
                if todo:
                    stack.extend(todo)
                    continue
                stack.pop()
                memo[id(q)] = _call(q, memo)
    return [memo[id(p)] for p in group]


def _call(q, memo):
    v = q.op.impl(np, *[a if type(a) is not Pending else
                        a.value if a.value is not None else memo[id(a)] for a in q.args])
    return v if type(v) is np.ndarray else np.asarray(v)


def _run(plan, dev):
    profiling = bool(_profiler.ACTIVE)
    token = _profiler.start(dev) if profiling else None
    if dev.type == "cpu":           # the CPU needs no kernel name (nor the key) unless profiled
        outs = _plan.evaluate(plan)
    else:
        from .ops import _kernels
        outs = _kernels.run_plan(plan, _plan.kernel_name(plan), dev)
    if profiling:
        _plan.record(plan, _plan.kernel_name(plan), outs, token=token)
    if _trace.ON:
        _trace.plan(plan, dev, outs)
    return outs


def reduce(op, x, params, dev):
    """`op` (a reduction declaring `takes_pending`: sum) of the pending DAG `x` in one kernel:
    the DAG is its map expression and is never written. With GPUVJP_ROW_KERNELS=1 a sum or
    mean over trailing dims is deferred instead (`_onepass`: a vjp's backward may join it)."""
    if x.depth > MAX_DEPTH:          # a deferred reduction: the caller materialises it
        return None
    # GPUVJP_ROW_KERNELS=1, read at each call. TODO(#10): a gv.compile trace records the
    # two-kernel path (the one-pass run has no _trace hook yet), so its replay launches one more.
    if _ENV.get(_ROWS_KEY) == _ROWS_ON and not _trace.ON:
        from . import _onepass
        d = _onepass.defer(op, x, params, dev)
        if d is not None:
            return d
    return reduce_now(op, x, params, dev)


def reduce_now(op, x, params, dev):
    """`reduce` without deferral: the reduction's kernel runs now (None: `x` is computed)."""
    if _small_on_cpu(x):
        with _LOCK:
            if x.value is not None:
                return None
            v = _direct([x])[0]
        with _device.compute(_device.CPU):   # nan and inf propagate silently
            return np.asarray(op.impl(np, v, **params))
    profiling = bool(_profiler.ACTIVE)
    with _LOCK:
        if x.value is not None:
            return None
        plan = _plan.build([x])
    name = _plan.kernel_name(plan) + f"_{op.name}" if profiling or dev.type != "cpu" else None
    token = _profiler.start(dev) if profiling else None
    if dev.type == "cpu":
        with _device.compute(_device.CPU):   # nan and inf propagate silently
            dims = params.get("dim")
            if dims and 0 not in dims and x.ndim and type(dims) is tuple:
                out = _plan.reduce_rows(plan, lambda v: op.impl(np, v, **params))
            else:
                out = np.asarray(op.impl(np, _plan.evaluate(plan)[0], **params))
    else:
        from .ops import _kernels
        out = _kernels.reduce_plan(plan, name, op, params, dev)
    if profiling:
        _plan.record(plan, name, [out], extra_ops=[op.name], token=token)
    if _trace.ON:
        _trace.reduce(plan, op, params, dev, out)
    return out


from . import _plan  # noqa: E402  (it reads Pending from this module)
from . import _trace  # noqa: E402
from . import profiler as _profiler  # noqa: E402
