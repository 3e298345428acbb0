"""Fused elementwise plans: the pending DAG turned into one kernel, device-free.

Ownership (what decides what):
- `apply` (ops/_registry.py) decides WHAT an op is: its inputs after promotion, its dtype, its
  node in the autograd graph. For an op the plan can express (`op.fuse`, set at declaration when
  the Loader knows a CUDA expression for it) and that carries no params, apply's compute branch
  calls `_lazy.record` instead of running it: the result is a `Pending` node of a DAG.
- This module decides WHEN and HOW a DAG is computed. `build` turns the pending nodes that
  something needs (a `Tensor._array()` read, a reduction consuming the DAG, results handed back
  by vjp/grad/jvp, the size cap) into a `Plan`: leaves (arrays, values already computed, and
  scalars), nodes in topological order, each once (let-bound: a shared subexpression is one
  node), and the nodes wanted as outputs. One Plan is ONE kernel.
- `evaluate` runs a Plan on the CPU with the ops' own NumPy implementations, node by node,
  into `out=` buffers of temporaries that die at that node, so the values are exactly the
  unfused ones and no temporary outlives its last use.
- The Loader (`ops/_kernels.py`) is the only place that turns a Plan into CUDA source and a
  CuPy kernel (an ElementwiseKernel, or a ReductionKernel whose map expression is the plan).

What it may import: numpy, `_lazy` (the Pending node), `profiler`. It never imports CuPy, the
Tensor, the graph or the ops; the plan is data (op objects are only called through `op.impl`
on the CPU and named in keys).

Cache key (`Plan.key`): the nodes' op names, their argument references, the dtypes of every
node and leaf, and which leaves are scalars, never shapes or values: a loop that repeats the
same segment compiles once. CuPy's kernels index broadcast operands through their strides, so
the generated source does not depend on the broadcast pattern either.
"""

from __future__ import annotations

import hashlib

import numpy as np

from . import _device
from . import profiler as _profiler
from ._lazy import Pending

__all__ = ["Plan", "build", "evaluate", "kernel_name", "footprint"]

_SCALARS = (bool, int, float, complex, np.generic)


class Plan:
    """One kernel: `nodes[j] = (op, refs, out_dtype, compute_dtype)` where a ref r >= 0 is node
    r and r < 0 is leaf -1 - r; `leaves` the arrays and scalars the kernel reads, with
    `leaf_dtypes` (a scalar's is its consumer's computation dtype) and `leaf_scalar`;
    `outputs` the node indices written to memory; `uses[j]` how many refs read node j."""

    __slots__ = ("_key", "nodes", "leaves", "leaf_dtypes", "leaf_scalar", "outputs", "uses",
                 "shape")

    def ops(self):
        return [n[0].name for n in self.nodes]

    @property
    def key(self):
        """The cache key, built only where a kernel or a name is needed (never on the CPU's
        unprofiled path)."""
        k = self._key
        if k is None:
            k = self._key = (
                tuple((op.name, refs, dt.char, c.char) for op, refs, dt, c in self.nodes),
                tuple(d.char for d in self.leaf_dtypes), tuple(self.leaf_scalar),
                tuple(self.outputs))
        return k


def build(roots):
    """The Plan computing the pending nodes `roots` (all unmaterialised, of one shape)."""
    index = {}
    leaf_of = {}
    leaves, dtypes, scalar = [], [], []
    nodes = []
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        p, done = stack.pop()
        if id(p) in index:
            continue
        if not done:
            stack.append((p, True))
            for a in reversed(p.args):
                if type(a) is Pending and a.value is None and id(a) not in index:
                    stack.append((a, False))
            continue
        refs = []
        compute = p.compute
        for a in p.args:
            if type(a) is Pending:
                if a.value is None:
                    refs.append(index[id(a)])
                    continue
                a = a.value
            if isinstance(a, _SCALARS):
                # each scalar use is its own leaf: its type is its consumer's
                li = len(leaves)
                leaves.append(a)
                dtypes.append(a.dtype if isinstance(a, np.generic) else compute)
                scalar.append(True)
            else:
                li = leaf_of.get(id(a))
                if li is None:
                    li = leaf_of[id(a)] = len(leaves)
                    leaves.append(a)
                    dtypes.append(a.dtype)
                    scalar.append(False)
            refs.append(-1 - li)
        refs = tuple(refs)
        index[id(p)] = len(nodes)
        nodes.append((p.op, refs, p.dtype, compute))
    plan = Plan()
    plan.nodes = nodes
    plan.leaves = leaves
    plan.leaf_dtypes = dtypes
    plan.leaf_scalar = scalar
    plan.outputs = [index[id(r)] for r in roots]
    plan.shape = roots[0].shape
    uses = [0] * len(nodes)
    for _, refs, _, _ in nodes:
        for r in refs:
            if r >= 0:
                uses[r] += 1
    plan.uses = uses
    plan._key = None
    return plan


_NAMES: dict = {}


def kernel_name(plan) -> str:
    """`gv_fuse_<hash>`: the same name on both devices, stable across runs."""
    name = _NAMES.get(plan.key)
    if name is None:
        digest = hashlib.blake2b(repr(plan.key).encode(), digest_size=6).hexdigest()
        name = _NAMES[plan.key] = f"gv_fuse_{digest}"
    return name


# ----- the CPU evaluation -----------------------------------------------------------------
# A plan over more than 2 * CHUNK elements runs in blocks of rows of about CHUNK elements, so
# its temporaries stay in cache: only leaves and outputs cross memory, as on the GPU. The
# values are the same (elementwise ops, and reductions over dims other than the first).
CHUNK = 1 << 15


def evaluate(plan, leaves=None):
    """The plan's outputs (a list of NumPy arrays) from `leaves` (default: the plan's own).
    Each node runs its op's NumPy implementation, as the unfused op would; a ufunc op writes
    into the buffer of an argument that dies at this node, so the evaluation allocates only the
    temporaries the plan needs at once."""
    leaves = plan.leaves if leaves is None else leaves
    # blocks pay only where there are temporaries to keep in cache
    rows = _rows_per_block(plan.shape) if len(plan.nodes) > len(plan.outputs) else None
    with _device.compute(_device.CPU):   # nan and inf propagate silently
        if rows is None:
            return _evaluate(plan, leaves, plan.shape)
        outs = [np.empty(plan.shape, plan.nodes[o][2]) for o in plan.outputs]
        for sl, sub, shape in _blocks(plan, leaves, rows):
            dest = [o[sl] for o in outs]
            for d, v in zip(dest, _evaluate(plan, sub, shape, dest)):
                if v is not d:
                    d[...] = v
    return outs


def reduce_rows(plan, fn, leaves=None):
    """fn(value) for the plan's one output, where fn keeps the first dim (a reduction over the
    others), computed block by block of rows: the plan's output is never in memory."""
    leaves = plan.leaves if leaves is None else leaves
    rows = _rows_per_block(plan.shape) if len(plan.nodes) > 1 else None
    if rows is None:
        with _device.compute(_device.CPU):   # nan and inf propagate silently
            return np.asarray(fn(_evaluate(plan, leaves, plan.shape)[0]))
    out = None
    for sl, sub, shape in _blocks(plan, leaves, rows):
        part = np.asarray(fn(_evaluate(plan, sub, shape)[0]))
        if out is None:
            out = np.empty((plan.shape[0],) + part.shape[1:], part.dtype)
        out[sl] = part
    return out


def _rows_per_block(shape):
    n = 1
    for s in shape:
        n *= s
    if n <= 2 * CHUNK or not shape:
        return None
    row = n // shape[0] if shape[0] else 1
    rows = max(1, CHUNK // max(row, 1))
    return rows if rows < shape[0] else None


def _blocks(plan, leaves, rows):
    nd = len(plan.shape)
    n0 = plan.shape[0]
    for r in range(0, n0, rows):
        sl = slice(r, min(r + rows, n0))
        sub = [a if s or a.ndim < nd or a.shape[0] == 1 else a[sl]
               for a, s in zip(leaves, plan.leaf_scalar)]
        yield sl, sub, (sl.stop - sl.start,) + plan.shape[1:]


def _evaluate(plan, leaves, shape, dest=None):
    """The outputs of `plan` over `leaves` (of broadcast shape `shape`); a ufunc output node
    writes straight into its `dest` array when given."""
    nodes, uses = plan.nodes, list(plan.uses)
    is_out = [False] * len(nodes)
    for o in plan.outputs:
        is_out[o] = True
    outbuf = {} if dest is None else dict(zip(plan.outputs, dest))
    vals = [None] * len(nodes)
    for j, (op, refs, dt, _) in enumerate(nodes):
        args = [leaves[-1 - r] if r < 0 else vals[r] for r in refs]
        ufunc = op.fuse.ufunc
        out = None
        if ufunc is not None and j in outbuf:
            out = outbuf[j]
        elif ufunc is not None:
            for r in refs:
                if r >= 0 and uses[r] == 1 and not is_out[r]:
                    buf = vals[r]
                    if buf.dtype == dt and buf.shape == shape and \
                            buf.flags.writeable and buf.base is None:
                        out = buf
                        break
        if out is not None:
            v = ufunc(*args, out=out)
        else:
            v = op.impl(np, *args)
            if type(v) is not np.ndarray:
                v = np.asarray(v)
        vals[j] = v
        for r in refs:
            if r >= 0:
                uses[r] -= 1
                if uses[r] == 0 and not is_out[r]:
                    vals[r] = None
    return [vals[o] for o in plan.outputs]


def footprint(a) -> int:
    """Bytes of memory array `a` occupies (a broadcast view reads its base once)."""
    if getattr(a, "ndim", None) is None or isinstance(a, np.generic):
        return 0
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a.nbytes
    n = a.itemsize
    for s, st in zip(a.shape, a.strides):
        if st:
            n *= s
    return n


def record(plan, name, outs, extra_ops=(), elements=None, token=None):
    """One profiler record for a plan's kernel."""
    read = sum(footprint(a) for a, s in zip(plan.leaves, plan.leaf_scalar) if not s)
    written = sum(o.nbytes for o in outs)
    n = 1
    for s in plan.shape:
        n *= s
    _profiler.add(name, plan.ops() + list(extra_ops), n if elements is None else elements,
                  read, written, token)
