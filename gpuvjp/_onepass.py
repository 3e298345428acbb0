"""The vjp in one pass: a row reduction of a pending DAG and the elementwise results of its
input's shape computed by ONE kernel, behind the switch GPUVJP_ROW_KERNELS=1.

With the switch on, `_lazy.reduce` of a sum or mean over trailing dims of a pending float DAG
returns a *deferred* reduction (`defer`): a `Pending` whose op is a `RowReduce` and whose one
argument is the DAG (the reduction's map). It is marked by its depth, DEPTH = MAX_DEPTH + 1,
which no elementwise node reaches, so `_lazy` tells it apart by one comparison:
- a read of it (`Tensor._array()`), a reduction of it, or its use as an argument of an
  elementwise op (`_lazy.record`) computes it alone, by the path the reduction would have
  taken without the switch (`_lazy.reduce_now`): nothing else changes;
- `_lazy.force_pending` hands the deferred reductions it meets to `run`. A vjp's final force
  holds (outputs, gradients): when a group of pending results has the shape and device of a
  deferred reduction's map, both are ONE plan (`build`): the map's DAG and the group's, the
  leaves read once, the group's results written and the map reduced per row, never written.
  The backward of a sum does not read the sum, so W1 (`exp(x).sum(1)`) is one kernel; a
  backward that reads the reduction (logsumexp, softmax) has computed it alone already.

On the CPU the plan is evaluated with NumPy block by block of rows (the same calls, in the same
order, as the two kernels it replaces: the values are equal bit for bit) and recorded in
`gv.profiler` as one kernel. On cuda `ops/_rows.onepass` runs it as one generated RawKernel, or
declines (float16, leaves it cannot index simply), and the two kernels run as without the switch.

What it owns: when a reduction is deferred, which group joins it, the one-pass plan and its CPU
evaluation and profiler record. What it may import: numpy, `_lazy`, `_plan`, `_device`,
`profiler`; `ops._rows` (the CUDA launch) and `ops.REGISTRY` (the sum a mean falls back to)
only inside the functions that need them. It never touches the
graph, the Tensor or CuPy, and nothing here runs with the switch off (`_lazy` calls it only for
a Pending of depth DEPTH, which only `defer` makes, or after its own switch check).
"""

from __future__ import annotations

import math

import numpy as np

from . import _device, _lazy, _plan
from . import profiler as _profiler

__all__ = ["RowReduce", "DEPTH", "defer", "run", "build", "evaluate"]

DEPTH = _lazy.MAX_DEPTH + 1
FLOATS = ("float16", "float32", "float64")
KINDS = ("sum", "mean")


class RowReduce:
    """The op of a deferred reduction: `op` (the registry's sum or mean) with its `params`,
    over the last `k` dims of its map."""

    __slots__ = ("op", "params", "k", "name")
    fuse = None                 # never an elementwise node of a plan

    def __init__(self, op, params, k):
        self.op, self.params, self.k = op, params, k
        self.name = op.name

    def __repr__(self):
        return f"<deferred {self.name} over the last {self.k} dims>"


def defer(op, x, params, dev):
    """A deferred `op` (sum or mean) of the pending DAG `x`, or None where the one pass does
    not apply (another reduction, a non-float DAG, dims that are not the trailing ones)."""
    if op.name not in KINDS or x.value is not None or not x.ndim or x.dtype.name not in FLOATS:
        return None
    dims = params.get("dim")
    if type(dims) is not tuple or not dims:
        return None
    k = len(dims)
    if set(dims) != set(range(x.ndim - k, x.ndim)):
        return None
    lead = x.shape[:x.ndim - k]
    shape = lead + (1,) * k if params.get("keepdim") else lead
    return _lazy.Pending(RowReduce(op, params, k), [x], shape, x.dtype, x.compute, dev, DEPTH)


# ----- materialisation ------------------------------------------------------------------------
def run(deferred, groups):
    """Compute the deferred reductions `deferred` (under `_lazy`'s lock): each with the group
    of `groups` ({(shape, device): [Pending]}) of its map's shape and device, taken out of
    `groups`, as one kernel where it can, else alone by the path without the switch."""
    for d in deferred:
        if d.value is not None:
            continue
        x = d.args[0]
        group = None
        if x.value is None:
            group = groups.get((x.shape, x.dev))
        if group and any(p is x for p in group):   # the map itself is asked for: two kernels
            group = None
        out = None
        if group:
            out = _one_pass(d, x, group)
            if out is not None:
                del groups[(x.shape, x.dev)]
        if out is None:
            out = _alone(d, x)
        d.value = out
        d.args = None


def _alone(d, x):
    """The reduction by itself: one kernel named and recorded as without the switch, where
    the map is pending (on cuda the row kernel of the map, `ops/_rows.onepass` with nothing
    else to write, where it applies; a mean on the CPU in one record); otherwise as
    `_lazy.reduce` runs it without the switch (a mean: the sum, then / n)."""
    red = d.op
    if x.value is None and (d.dev.type != "cpu" or red.name == "mean"):
        plan = _plan.build([x])
        name = _plan.kernel_name(plan) + f"_{red.name}"
        token = _profiler.start(d.dev) if _profiler.ACTIVE else None
        if d.dev.type == "cpu":
            out = evaluate(plan, red)[0]
        else:
            from .ops import _rows
            got = _rows.onepass(plan, red.name, red.k, name, d.dev)
            out = None if got is None else got[0]
        if out is not None:
            out = out.reshape(d.shape)
            if token is not None:
                _plan.record(plan, name, [out], extra_ops=[red.name], token=token)
            return out
    if x.value is None and red.name == "mean":     # sum / n: the ops the mean is without it
        from .ops import REGISTRY
        s = _lazy.reduce_now(REGISTRY["sum"], x, red.params, d.dev)
        if s is not None:
            return _divide(s, math.prod(x.shape[x.ndim - red.k:]), d.dev)
    elif x.value is None:
        out = _lazy.reduce_now(red.op, x, red.params, d.dev)
        if out is not None:
            return out
    arr = x.value
    token = _profiler.start(d.dev) if _profiler.ACTIVE else None
    xp = _device.array_module(d.dev)
    impl = red.op.impl if d.dev.type == "cpu" else (red.op.gpu or red.op.impl)
    with _device.compute(d.dev):
        out = impl(xp, arr, **red.params)
    out = out if hasattr(out, "nbytes") else np.asarray(out)
    if token is not None:
        _profiler.op_launch(red.op, [arr], out, token)
    return out


def _divide(s, n, dev):
    token = _profiler.start(dev) if _profiler.ACTIVE else None
    with _device.compute(dev):
        out = s / n
    if token is not None:
        _profiler.add("gv_mean_div", ["div"], s.size, s.nbytes, out.nbytes, token)
    return out


def build(d, x, group):
    """The one-pass Plan: output 0 the map `x` (reduced, never written), then the group's
    Pendings (`x` is not one of them). The map's DAG comes first in the plan's nodes, so
    `plan.outputs[0] + 1` is the number of nodes the map alone has."""
    return _plan.build([x] + list(group))


def _one_pass(d, x, group):
    """The reduction `d` of `x` and the group's values in one kernel: the reduction's value (its
    Pendings of the group are set), or None where the device declines."""
    plan = build(d, x, group)
    red = d.op
    profiling = bool(_profiler.ACTIVE)
    name = kernel_name(plan, red) if profiling or d.dev.type != "cpu" else None
    token = _profiler.start(d.dev) if profiling else None
    if d.dev.type == "cpu":
        out, outs = evaluate(plan, red)
    else:
        from .ops import _rows
        got = _rows.onepass(plan, red.name, red.k, name, d.dev)
        if got is None:
            return None
        out, outs = got
    out = out.reshape(d.shape)
    if profiling:
        _plan.record(plan, name, [out] + outs, extra_ops=[red.name], token=token)
    for p, v in zip(group, outs):
        p.value = v
        p.args = None
    return out


def kernel_name(plan, red) -> str:
    """`gv_onepass_<hash>_<sum|mean>`: stable across runs, the same on both devices."""
    return _plan.kernel_name(plan).replace("gv_fuse_", "gv_onepass_") + f"_{red.name}"


def evaluate(plan, red, leaves=None):
    """(the reduction over the trailing dims, [the group's values]) of the one-pass `plan` on
    the CPU: block by block of rows when the leading dims allow it (the map is never in
    memory), with the very NumPy calls of the two kernels it replaces."""
    leaves = plan.leaves if leaves is None else leaves
    nd = len(plan.shape)
    lead = nd - red.k
    dims = tuple(range(lead, nd))
    fn = lambda v: red.op.impl(np, v, dim=dims, keepdim=False)    # noqa: E731
    # blocks of rows whenever the leading dims allow: the map and the group's temporaries stay
    # in cache (NumPy sums each row of a block as it sums it in the whole array)
    rows = _plan._rows_per_block(plan.shape) if lead else None
    with _device.compute(_device.CPU):   # nan and inf propagate silently
        if rows is None:
            vals = _plan._evaluate(plan, leaves, plan.shape)
            return np.asarray(fn(vals[0])), vals[1:]
        outs = [np.empty(plan.shape, plan.nodes[o][2]) for o in plan.outputs[1:]]
        scratch = np.empty((rows,) + plan.shape[1:], plan.nodes[plan.outputs[0]][2])
        out = np.empty(plan.shape[:lead], _out_dtype(plan, red))
        for sl, sub, shape in _plan._blocks(plan, leaves, rows):
            dest = [scratch[:shape[0]]] + [o[sl] for o in outs]
            vals = _plan._evaluate(plan, sub, shape, dest)
            for dst, v in zip(dest[1:], vals[1:]):
                if v is not dst:
                    dst[...] = v
            out[sl] = fn(vals[0])
    return out, outs


def _out_dtype(plan, red):
    dt = plan.nodes[plan.outputs[0]][2]
    return np.asarray(red.op.impl(np, np.ones((1, 1), dt), dim=(1,), keepdim=False)).dtype
