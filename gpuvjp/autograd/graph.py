"""What `Tensor.grad_fn` returns: PyTorch-shaped views of the graph's nodes (a class per name,
`next_functions`, `metadata`, `AccumulateGrad` for leaves), made only when the user asks."""

from __future__ import annotations

import weakref

from . import _graph

__all__ = ["Node"]

_WeakRef = weakref.ReferenceType


class Node:
    """Same as `torch.autograd.graph.Node`: the base class of every `grad_fn`.

    `type(t.grad_fn)` is a subclass named as PyTorch names the node (`ExpBackward0`), or
    `AccumulateGrad` for the leaves in `next_functions`. The graph itself is made of light
    records (one per op, built on every op); the object `grad_fn` returns is a view of one,
    made when it is read and shared while it is held, so `t.grad_fn is t.grad_fn`.
    Node hooks (`register_hook`, `register_prehook`) are not supported (docs/differences.md).
    """

    __slots__ = ("_node", "__weakref__")

    def __init__(self, *args, **kwargs):
        raise TypeError(f"cannot create '{type(self).__name__}' instances")

    def name(self):
        """PyTorch's name of the node (`ExpBackward0`)."""
        return self._node.name()

    @property
    def next_functions(self):
        """One `(node, output_index)` pair per input of the op: the node that produced it, an
        `AccumulateGrad` for a leaf that requires grad, or `(None, 0)`."""
        from ..ops._registry import _scalar_at        # ops import autograd: import on use
        node = self._node
        op, vjps, edges = node.op, node.op.vjps, node.edges
        if type(vjps) is not tuple:                   # one rule for every input (cat, stack)
            vjps = ()
        dropped = _SCALAR_ARGS.get(op.name, ())
        pairs = [_edge(e) for i, e in enumerate(edges)
                 if not (i < len(vjps) and vjps[i] is None)        # condition, mask, index
                 and not (e is None and i in dropped and _scalar_at(node, i))]
        if op.name in _COMMUTES and edges[0] is None and _scalar_at(node, 0):
            pairs.reverse()                           # `2 * x` is PyTorch's mul(x, 2)
        return tuple(pairs)

    @property
    def metadata(self):
        """A dict kept with the node for the user's own annotations."""
        node = self._node
        try:
            return node.metadata
        except AttributeError:
            node.metadata = {}
            return node.metadata

    def register_hook(self, fn):
        raise NotImplementedError("gpuvjp does not support hooks on grad_fn nodes: hook the "
                                  "function instead (docs/differences.md)")

    def register_prehook(self, fn):
        raise NotImplementedError("gpuvjp does not support hooks on grad_fn nodes: hook the "
                                  "function instead (docs/differences.md)")

    def __repr__(self):
        return f"<{type(self).__name__} object at {id(self):#x}>"


class AccumulateGrad(Node):
    """Same as PyTorch's `AccumulateGrad`: where a leaf's gradient goes, in `next_functions`."""

    __slots__ = ("variable", "_metadata")

    def name(self):
        return "torch::autograd::AccumulateGrad"

    @property
    def next_functions(self):
        return ()

    @property
    def metadata(self):
        try:
            return self._metadata
        except AttributeError:
            self._metadata = {}
            return self._metadata


AccumulateGrad.__module__ = "builtins"            # as PyTorch's: `<class 'AccumulateGrad'>`


class _FunctionNode(Node):
    """A `gv.autograd.Function`'s node: reads through to its ctx (`saved_tensors`, attributes
    set in `forward`), as PyTorch's node of a Function is its ctx."""

    __slots__ = ()

    def __getattr__(self, name):
        ctx = getattr(getattr(self._node.op, "app", None), "ctx", None)
        if ctx is None or name.startswith("__"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        return getattr(ctx, name)


# Positions where PyTorch's overload takes a Python number as a Scalar argument, not as a
# tensor: its node has no edge there (`x ** 2`, `1 - x`), where `x * 2` has `(None, 0)`.
_SCALAR_ARGS = {"pow": (0, 1), "sub": (0,), "fmod": (1,), "remainder": (1,),
                "softplus": (1, 2)}

_COMMUTES = {"add", "mul"}

_CLASSES = {}                                     # (name, base) -> the subclass named so
_VIEWS = weakref.WeakValueDictionary()            # id(graph node) -> its view, while held
_ACCUMULATORS = weakref.WeakValueDictionary()     # id(leaf) -> its AccumulateGrad, while held


def _class(name, base):
    cls = _CLASSES.get((name, base))
    if cls is None:
        cls = type(name, (base,), {"__slots__": ()})
        cls.__module__ = "builtins" if base is Node else "gpuvjp.autograd.function"
        _CLASSES[name, base] = cls
    return cls


def _resolve(node):
    """(node, output index): an output of a several-output Function is a selecting node, which
    PyTorch shows as the Function's own node and the output's index."""
    if getattr(node.op, "selects_output", False):
        return node.edges[0], node.params["k"]
    return node, 0


def grad_fn(node):
    """The view of graph node `node`, shared with every other reader while one holds it."""
    node = _resolve(node)[0]
    view = _VIEWS.get(id(node))
    if view is not None and view._node is node:
        return view
    app = getattr(node.op, "app", None)
    view = object.__new__(_class(node.name(), Node if app is None else _FunctionNode))
    view._node = node
    _VIEWS[id(node)] = view
    return view


def _accumulator(leaf):
    acc = _ACCUMULATORS.get(id(leaf))
    if acc is None or acc.variable is not leaf:
        acc = object.__new__(AccumulateGrad)
        acc.variable = leaf
        _ACCUMULATORS[id(leaf)] = acc
    return acc


def _edge(e):
    if e is None:
        return None, 0
    if type(e) is _graph.Node:
        if len(e.edges) == 1 and type(e.edges[0]) is _WeakRef:
            e = e.edges[0]                # a leaf's stand-in (hold_leaves_weakly): the leaf
        else:
            node, k = _resolve(e)
            return grad_fn(node), k
    if type(e) is _WeakRef:                       # a leaf held weakly (hold_leaves_weakly)
        e = e()
        if e is None:
            return None, 0
    return _accumulator(e), 0


# ----- retain_grad ---------------------------------------------------------------------------
# graph node -> weak reference to the non-leaf tensor that retains its gradient. Both sides
# are weak: a retained tensor keeps nothing alive, and a sweep that never meets one pays one
# truth test of this dict.
RETAINED = weakref.WeakKeyDictionary()


def retain(t):
    RETAINED[t._node] = weakref.ref(t)


def retains(t):
    ref = RETAINED.get(t._node)
    return ref is not None and ref() is t


def retained_below(roots):
    """(ids of the leaves reachable from `roots` that take a gradient, {id(node): tensor} of
    the retaining tensors reachable from them): the targets of a sweep that also stops at
    the retained nodes."""
    leaves, keep, seen = set(), {}, set()
    todo = [r for r in roots if type(r) is _graph.Node]
    leaves.update(id(r) for r in roots if type(r) is not _graph.Node)
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        ref = RETAINED.get(node)
        t = None if ref is None else ref()
        if t is not None:
            keep[id(node)] = t
        for e in node.edges:
            if type(e) is _graph.Node:
                todo.append(e)
            elif e is not None:
                e = e() if type(e) is _WeakRef else e
                if e is not None:
                    leaves.add(id(e))
    return leaves, keep
