"""The autograd graph: nodes, the backward sweep in reverse topological order, sum-to-shape."""

from __future__ import annotations

import weakref

from .. import _device
from .._tensor import Tensor
from . import _mode

__all__ = ["Node", "run_backward", "hold_leaves_weakly"]

_WeakRef = weakref.ReferenceType


_OPS = []


def _ops():
    """(ops.batching, ops.shape.sum_to), imported on first use: ops import this module."""
    if not _OPS:
        from ..ops import batching
        from ..ops.shape import sum_to
        _OPS.extend((batching, sum_to))
    return _OPS


def _sum_to(g, x, batched_sweep):
    """The cotangent `g` made to match input `x`: shape, dtype, and batch dim.

    In a batched sweep (seeds with a batch dim: vectorized jacobian) the batch belongs to the
    cotangents and stays. Otherwise a batched cotangent reaching an unbatched input sums over
    the batch, since x was broadcast over it by a batched op.
    """
    batching, sum_to = _ops()
    if g._nb != x._nb:
        if batched_sweep and x._nb:
            raise RuntimeError("a vectorized sweep over a graph that was itself built from "
                               "batched tensors is not supported: use vectorize=False for "
                               "one of the two levels")
        if g._nb and not batched_sweep:
            g = batching.sum_batch(g)
        elif not g._nb:
            g = batching.spread(g, x)
    if g.shape != x.shape or g._dtype is not x._dtype:
        g = sum_to(g, x.shape, x._dtype)
    return g


class Node:
    """One op application: the rule to run, the tensors it saved, and the edges to its inputs.

    `inputs` holds the op's inputs exactly as they were given (tensors with their own history,
    so rules recorded under create_graph=True differentiate through them). `edges[i]` is where
    input i's gradient goes: its producer Node, the leaf Tensor that asked for a gradient (or
    a weak reference to it, see hold_leaves_weakly), or None. The output array is kept only
    when the op's rule reads `ans`. Saved values are released after the sweep that used them
    unless the graph is retained.
    """

    # metadata: the user's dict (grad_fn.metadata), set only when first read; unset slots
    # cost nothing here, where every op builds a node
    __slots__ = ("op", "inputs", "params", "edges", "ans", "ans_tangent", "out_meta",
                 "released", "metadata", "__weakref__")

    def __init__(self, op, inputs, params, edges, ans, out_meta):
        self.op = op
        self.inputs = inputs
        self.params = params
        self.edges = edges
        self.ans = ans
        self.ans_tangent = None       # forward mode: the output's tangent, for rules reading ans
        self.out_meta = out_meta      # (shape, dtype, device) of the output
        self.released = False

    def name(self):
        """PyTorch's name of this backward node (`ExpBackward0`), from the op's declaration."""
        n = self.op.torch_name
        return n if type(n) is str else n(self)

    def __repr__(self):
        return f"<{self.name()} object at {id(self):#x}>"

    def release(self):
        """Drop the saved arrays. An op whose rules read only its inputs' shape, dtype and
        device keeps those, so its node can be swept again (as PyTorch allows)."""
        if self.op.saves_inputs or self.ans is not None:
            self.inputs = self.ans = self.ans_tangent = None
            self.released = True
        elif self.inputs is not None:
            # tensors become Meta; a Meta (a node swept before) and non-tensors stay
            kept = []
            for t in self.inputs:
                kept.append(Meta(t) if type(t) is Tensor or hasattr(t, "_data") else t)
            self.inputs = tuple(kept)


class Meta:
    """What remains of a released input: its shape, dtype and device, for sum_to and rules."""

    __slots__ = ("shape", "_dtype", "_dev", "_requires_grad", "_nb", "_batch")

    def __init__(self, t):
        full, nb = t._data.shape, t._nb
        self.shape = full[nb:] if nb else full
        self._dtype = t._dtype
        self._dev = t._dev
        self._requires_grad = t._requires_grad
        self._nb = nb
        self._batch = full[0] if nb else 0

    # read by rules (rarely), so not stored
    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._dev)
    ndim = property(lambda self: len(self.shape))
    requires_grad = property(lambda self: self._requires_grad)


_NEW = object()                 # _toposort: a node not reached yet


def _toposort(roots, targets):
    """Nodes reachable from `roots` that lie on a path to a wanted gradient, in reverse
    topological order (each node before every node it feeds), and for every node reached
    whether it lies on such a path (a dict keyed by the nodes themselves: a Node hashes and
    compares by identity).

    `targets` is None for Tensor.backward (every leaf that requires grad is wanted) or a set
    of ids of the leaves and nodes whose gradients autograd.grad asked for.
    """
    # Iterative post-order DFS: a node is finished (its `needed` entry a bool) once every node
    # it feeds from has been; `needed` marks nodes with a path to a wanted gradient, and holds
    # None for a node expanded but not finished.
    order, needed = [], {}
    stack = list(roots)
    while stack:
        node = stack[-1]
        state = needed.get(node, _NEW)
        if state is _NEW:
            needed[node] = None
            for e in node.edges:
                if type(e) is Node and e not in needed:
                    stack.append(e)
            continue
        stack.pop()
        if state is not None:              # reached twice: finished the first time
            continue
        want = targets is None or id(node) in targets
        if not want:
            for e in node.edges:
                if e is None:
                    continue
                if type(e) is Node:
                    if needed[e]:
                        want = True
                        break
                elif id(e() if type(e) is _WeakRef else e) in targets:
                    want = True
                    break
        needed[node] = want
        if want:
            order.append(node)
    order.reverse()                       # post-order reversed: consumers before producers
    return order, needed


_SECOND_SWEEP = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Saved intermediate values of the graph are freed "
    "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
    "backward through the graph a second time or if you need to access saved tensors after "
    "calling backward.")


def run_backward(roots, grads, targets=None, retain_graph=False, create_graph=False,
                 leaves=False):
    """Sweep gradients from `roots` (nodes or leaf tensors) seeded with `grads`.

    Returns a dict id(leaf or node) -> gradient Tensor for every leaf reached (targets None)
    or for every id in `targets`; with `leaves`, the values are (leaf or node, gradient).
    Fan-out gradients are summed; each rule's result is summed back to its input's shape and
    dtype.
    """
    batched = False                               # a vectorized sweep: the batch stays
    found = {}                                    # id -> [leaf or node, gradient]
    pending = {}                                  # node -> its accumulated gradient
    root_nodes = []
    for r, g in zip(roots, grads):
        if g._nb:
            batched = True
        if type(r) is Node:
            pending[r] = pending[r] + g if r in pending else g
            root_nodes.append(r)
        elif targets is None or id(r) in targets:  # a leaf tensor is its own root
            _accumulate(found, r, g)
    if root_nodes:
        order, needed = _toposort(root_nodes, targets)
        if order:
            # The grad mode and device of the sweep: a plain switch and _device.enter (a
            # context object per sweep costs more than the sweep of a tiny graph), restored
            # however the sweep ends.
            scope = _device.enter(grads[0]._dev)      # first: if it fails, nothing to undo
            grad_mode = _mode._state
            prev_mode = grad_mode.enabled
            grad_mode.enabled = bool(create_graph)
            try:
                _sweep(order, needed, pending, found, targets, batched, retain_graph)
            finally:
                grad_mode.enabled = prev_mode
                _device.leave(scope)
    if leaves:
        return found
    return {k: v[1] for k, v in found.items()}


def _sweep(order, needed, pending, found, targets, batched, retain_graph):
    """Run the rules of `order`'s nodes, each once its gradient is complete, summing each
    input's cotangent into `pending` (a node's) or `found` (a wanted leaf's or node's)."""
    for node in order:
        g = pending.pop(node, None)
        if g is None:
            continue
        if targets is not None and id(node) in targets:
            _accumulate(found, node, g)
        if node.released:
            raise RuntimeError(_SECOND_SWEEP)
        op, inputs, params = node.op, node.inputs, node.params
        ans = None if node.ans is None else op.unpack_ans(node)
        vjps = op.vjps
        i = -1
        for e in node.edges:
            i += 1
            if e is None:
                continue
            if type(e) is Node:
                if not needed[e]:
                    continue
            else:
                if type(e) is _WeakRef:          # a leaf held weakly (hold_leaves_weakly)
                    e = e()
                    if e is None:
                        continue
                if targets is not None and id(e) not in targets:
                    continue
            rule = vjps[i]
            if rule is None:
                continue
            gi = rule(g, ans, *inputs, **params) if params else rule(g, ans, *inputs)
            if gi is None:
                continue
            x = inputs[i]
            # shapes compared on the arrays (no Size built) where both are plain tensors
            if type(x) is Tensor and not (gi._nb or x._nb):
                if gi._data.shape != x._data.shape or gi._dtype is not x._dtype:
                    gi = _sum_to(gi, x, batched)
            elif gi._nb != x._nb and not (batched and not x._nb) or gi.shape != x.shape or \
                    gi._dtype is not x._dtype:        # a batch dim, a Meta, a Function's input
                gi = _sum_to(gi, x, batched)
            if type(e) is Node:
                acc = pending.get(e)
                pending[e] = gi if acc is None else acc + gi
            else:
                acc = found.get(id(e))            # _accumulate, inline: once per edge
                if acc is None:
                    found[id(e)] = [e, gi]
                else:
                    acc[1] = acc[1] + gi
        if not retain_graph:
            if op.saves_inputs or node.ans is not None:     # release(), its common case
                node.inputs = node.ans = node.ans_tangent = None
                node.released = True
            else:
                node.release()


def _accumulate(store, obj, g):
    entry = store.get(id(obj))
    if entry is None:
        store[id(obj)] = [obj, g]
    else:
        entry[1] = entry[1] + g


def hold_leaves_weakly(grads):
    """Break the cycle leaf -> leaf.grad -> graph -> leaf that Tensor.backward(create_graph=
    True) makes, by making every node reachable from the gradients reach those leaves weakly.

    `grads` maps id(leaf) -> (leaf, gradient). In each node, an input that is one of the leaves
    becomes a stand-in (the leaf's array, its own history: an identity node whose edge is a
    weak reference to the leaf), and an edge to the leaf becomes that identity node. Rules,
    later sweeps and graphs recorded from the stand-ins reach the leaf as before while it
    lives; once the caller drops it, its gradient has nowhere to go and is not computed.
    """
    from ..ops import clone_                        # the identity op
    stand_ins = {}
    for leaf, g in grads.values():
        if g._node is None:
            continue
        ident = Node(clone_, (Meta(leaf),), {}, (weakref.ref(leaf),), None,
                     (leaf.shape, leaf._dtype, leaf._dev))
        t = type(leaf)._make(leaf._data, leaf._dev, leaf._dtype, ident)
        t._nb = leaf._nb
        stand_ins[id(leaf)] = (leaf, t, ident)
    if not stand_ins:
        return
    def swap(items, k):
        """`items` with each leaf replaced by its stand-in's part k, or None if none is."""
        if not any(id(a) in stand_ins and a is stand_ins[id(a)][0] for a in items):
            return None
        return tuple([stand_ins[id(a)][k] if id(a) in stand_ins and a is stand_ins[id(a)][0]
                      else a for a in items])

    seen, todo = set(), [g._node for _, g in grads.values() if g._node is not None]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        edges = node.edges
        new = swap(edges, 2)
        if new is not None:
            node.edges = new
        for where, obj, attr in ((node, node.inputs, "inputs"), (node, node.ans, "ans")):
            if type(obj) is tuple:          # a Function's saved tensors live in node.ans
                new = swap(obj, 1)
                if new is not None:
                    setattr(where, attr, new)
        ctx = getattr(getattr(node.op, "app", None), "ctx", None)
        if ctx is not None and ctx._to_save:          # a Function that saved its inputs
            new = swap(ctx._to_save, 1)
            if new is not None:
                ctx._to_save = new
        todo.extend(e for e in edges if type(e) is Node)
