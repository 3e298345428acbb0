"""gv.autograd.Function: users' own forward and backward (CuPy kernels, NumPy code) in the graph.

Design. A Function application is one graph Node, built here from the existing mechanism and
nothing else: `apply` runs the user's `forward` under no_grad on the Tensors it was given,
wraps what comes back (CuPy and NumPy arrays become Tensors), and records a Node whose Op is
made for this one application (`_FunctionOp`). The Op's vjp rule for input i calls the user's
`backward` once per incoming gradient (memoized across the inputs of the node) and returns
gradient i, so `run_backward` sweeps through a Function exactly as through a built-in op:
summing to shape and casting stay in the graph, a backward written with gpuvjp ops records
under create_graph=True (hessians through it), and the saved tensors live on the Node (its
`ans`), released with it after a sweep. A Function with several outputs gets one hidden node
per output that forwards its gradient, as a `_GradPack`, to the Function's node, so the user's
backward sees every output's gradient in one call. Forward mode calls the Function's `jvp`
staticmethod when it has one, otherwise differentiates its backward once more (the
double-backward trick, for this node only). Batched tensors (vectorized jacobian) reach the
user's code directly only when the Function declares a batch rule (`vmap` staticmethod or
`generate_vmap_rule = True`); otherwise each batch element runs on its own, through
differentiable gpuvjp ops that slice and stack.

This module owns the Function API, its ctx, and `check_inplace` (the refusal to write into an
output that is a view of an input, for in-place ops to call). It imports the Tensor, the graph
(Node, grad mode, forward-mode state), the registry's `Op` class and a few ops (batching,
shape, creation). It never reads a tensor's backing array except through `Tensor._array()`
(shapes aside), so a Function's forward and backward are points where a pending fused plan is
materialised; and it never registers an op (a Function's Op lives on its node only: the
public extension point is this class, not `defop`).
"""

from __future__ import annotations

import functools
import inspect
import types
import weakref

import numpy as np

from .. import _device, _dtype, _trace
from .._tensor import Tensor
from . import _forward, _mode
from ._graph import Node

__all__ = ["Function", "FunctionCtx", "once_differentiable", "check_inplace"]


# ----- ctx ------------------------------------------------------------------------------------
class FunctionCtx:
    """What `forward` (or `setup_context`) leaves for `backward` and `jvp`.

    Same as the ctx of `torch.autograd.Function`: `save_for_backward` / `saved_tensors`,
    `save_for_forward`, `needs_input_grad`, `mark_dirty`, `mark_non_differentiable`,
    `set_materialize_grads`; any other attribute may be set freely.
    """

    def __init__(self):
        self.needs_input_grad = ()
        self.materialize_grads = True
        self._to_save = None             # save_for_backward's tensors, before the node exists
        self._for_forward = None         # save_for_forward's tensors
        self._node = None                # weakref to the node once recorded: the saved
        #                                  tensors live there, freed with it
        self._in_jvp = False
        self._dirty = ()
        self._non_differentiable = ()

    def save_for_backward(self, *tensors):
        """Keep `tensors` (Tensors or None) for `backward`, read back as `saved_tensors`."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError("save_for_backward can only save variables, but argument "
                                f"{i} is of type {type(t).__name__}")
        self._to_save = tuple(tensors)

    def save_for_forward(self, *tensors):
        """Keep `tensors` (Tensors or None) for `jvp`, read back there as `saved_tensors`."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError("save_for_forward expects all arguments to be tensors; but "
                                f"got {type(t).__name__} at index {i}")
        self._for_forward = tuple(tensors)

    @property
    def saved_tensors(self):
        if self._in_jvp and self._for_forward is not None:
            return self._for_forward
        node = self._node() if self._node is not None else None
        if node is not None and node.op.holds_saved:
            if node.released:
                raise RuntimeError(_FREED)
            return tuple(t.unpack(node) if type(t) is _SavedOutput else t for t in node.ans)
        return self._to_save or ()

    def mark_dirty(self, *args):
        """Declare inputs that forward modified in place (and returns): they take the
        Function's history."""
        self._dirty = tuple(args)

    def mark_non_differentiable(self, *args):
        """Declare outputs that get no gradient (indices, masks): they do not require grad,
        and backward receives zeros (or None) for them."""
        self._non_differentiable = tuple(args)

    def set_materialize_grads(self, value):
        """Whether backward and jvp receive zeros (True, the default) or None for outputs
        without a gradient."""
        self.materialize_grads = bool(value)


_FREED = ("Trying to backward through the graph a second time (or directly access saved "
          "tensors after they have already been freed). Saved intermediate values of the graph "
          "are freed when you call .backward() or autograd.grad(). Specify retain_graph=True if "
          "you need to backward through the graph a second time or if you need to access saved "
          "tensors after calling backward.")


class _SavedOutput:
    """A saved output, held without its history (the node holds it: no reference cycle) and
    given it back when read, so a backward that uses it differentiates through the node."""

    __slots__ = ("value", "select")

    def __init__(self, value):
        self.value = value
        self.select = None               # weakref to the output's own node (several outputs)

    def unpack(self, node):
        t = self.value.detach()
        owner = node if self.select is None else self.select()
        if owner is not None:
            t._node, t._requires_grad = owner, True
        return t


# ----- wrapping what user code returns ----------------------------------------------------------
def _is_array(a):
    return isinstance(a, np.ndarray) or _device.is_cupy_array(a)


def _wrap(a):
    """A Tensor for a NumPy or CuPy array (sharing its memory); anything else unchanged."""
    if isinstance(a, np.ndarray):
        return Tensor._make(a, _device.CPU, _dtype.from_numpy_dtype(a.dtype, strict=True), None)
    if _device.is_cupy_array(a):
        return Tensor._make(a, _device.device_of_array(a),
                            _dtype.from_numpy_dtype(a.dtype, strict=True), None)
    return a


# ----- multiple outputs -------------------------------------------------------------------------
class _Pack:
    """The hidden value between a Function's node and its outputs' nodes: only the metadata
    the sweep reads (a scalar of the first output's dtype, never batched)."""

    __slots__ = ("shape", "ndim", "dtype", "_dtype", "device", "_nb", "requires_grad")

    def __init__(self, dt, dev):
        self.shape, self.ndim, self._nb, self.requires_grad = (), 0, 0, True
        self.dtype = self._dtype = dt
        self.device = dev


class _GradPack:
    """Gradients of some of a Function's outputs, by output index: what the sweep carries to
    the Function's node. Adding two merges them (summing an output reached twice)."""

    __slots__ = ("grads", "shape", "ndim", "_dtype", "_nb")

    def __init__(self, grads, pack):
        self.grads = grads
        self.shape, self.ndim, self._dtype, self._nb = (), 0, pack._dtype, 0

    def __add__(self, other):
        out = dict(self.grads)
        for k, g in other.grads.items():
            out[k] = g if k not in out else out[k] + g
        return _GradPack(out, self)


class _Name(str):
    """An op name kept as given (a Function's class name is CamelCase)."""


# ----- the per-application op -------------------------------------------------------------------
def _op_base():
    from ..ops._registry import KEEP, Op
    return KEEP, Op


class _Application:
    """One call of a Function: its class, ctx, inputs' and outputs' metadata, and the memo of
    the last backward call (the node's rules share it)."""

    __slots__ = ("cls", "ctx", "name", "n_inputs", "outputs", "memo", "last_edge", "views")

    def __init__(self, cls, ctx, n_inputs, outputs):
        self.cls = cls
        self.ctx = ctx
        self.name = cls.__name__
        self.n_inputs = n_inputs
        self.outputs = outputs          # per output: (shape, dtype, device) or None (not a Tensor)
        self.memo = None
        self.last_edge = -1
        self.views = ()                 # outputs that are views of an input

    # The user's backward, once per gradient object: the node's rules all ask for it.
    def grad_for(self, g, i, inputs):
        memo = self.memo
        if memo is None or memo[0] is not g:
            memo = self.memo = (g, self._backward(g, inputs))
        if i >= self.last_edge:
            self.memo = None                      # the last rule of this sweep: drop it
        return memo[1][i]

    def _output_grads(self, g):
        grads = g.grads if isinstance(g, _GradPack) else {0: g}
        out = []
        for k, meta in enumerate(self.outputs):
            gk = grads.get(k)
            if gk is None and meta is not None and self.ctx.materialize_grads:
                from .._creation import zeros
                gk = zeros(meta[0], dtype=meta[1], device=meta[2])
            out.append(gk)
        return out

    def _backward(self, g, inputs, wanted=None):
        """The user's backward for the gradient `g`: one gradient per input, None where
        `wanted` (default: the inputs that require grad) is False."""
        if wanted is None:
            wanted = [hasattr(x, "_dev") and x.requires_grad for x in inputs]   # or Meta
        grads = self._output_grads(g)
        batched = any(isinstance(t, Tensor) and t._nb for t in grads)
        if batched and not _has_batch_rule(self.cls):
            return _per_sample(lambda *gs: self._call_backward(gs, inputs, wanted), grads,
                               self.n_inputs)
        return self._call_backward(grads, inputs, wanted)

    def _call_backward(self, grads, inputs, wanted):
        cls = self.cls
        # PyTorch's alias: a Function may define `vjp` instead of `backward`
        fn = cls.vjp if _overrides(cls, "vjp") and not _overrides(cls, "backward") \
            else cls.backward
        res = fn(self.ctx, *grads)
        res = res if isinstance(res, tuple) else (res,)
        n = self.n_inputs
        if len(res) != n:
            if len(res) < n or any(r is not None for r in res[n:]):
                raise RuntimeError(f"function {self.name}Backward returned an incorrect number "
                                   f"of gradients (expected {n}, got {len(res)})")
            res = res[:n]
        out = []
        for i, (r, x, w) in enumerate(zip(res, inputs, wanted)):
            r = _wrap(r)
            if r is not None and not isinstance(r, Tensor):
                raise RuntimeError(f"expected Variable or None (got {type(r).__name__})")
            if r is not None and w:
                _check_grad(self.name, i, r, x)
            out.append(r if w else None)
        return tuple(out)


def _check_grad(name, i, g, x):
    """PyTorch's checks of a gradient a Function's backward returned for input i."""
    gs, xs = tuple(g.shape), tuple(x.shape)
    if not _expandable(xs, gs):
        raise RuntimeError(f"Function {name}Backward returned an invalid gradient at index {i} "
                           f"- got {list(gs)} but expected shape compatible with {list(xs)}")
    if g._dev != x._dev:
        raise RuntimeError(f"Function {name}Backward returned an invalid gradient at index {i} "
                           f"- expected device {x._dev} but got {g._dev}")


def _expandable(shape, to):
    """Whether `shape` broadcasts to `to` (then the gradient is summed back to `shape`)."""
    if len(shape) > len(to):
        return False
    return all(s == t or s == 1 for s, t in zip(shape[::-1], to[::-1]))


@functools.cache
def _function_op_class():
    KEEP, Op = _op_base()

    class _FunctionOp(Op):
        __slots__ = ("app", "holds_saved")

        def unpack_ans(self, node):
            return None                        # the rules read ctx.saved_tensors instead
    return _FunctionOp


def _make_op(app, n_args, holds_saved):
    KEEP, _ = _op_base()
    op = _function_op_class()(_Name(app.name), None, promote=KEEP, saves_ans=False,
                              saves_inputs=holds_saved)
    op.app = app
    op.holds_saved = holds_saved
    op.torch_name = f"{app.name}Backward"            # PyTorch's: the class name, no suffix
    op.vjps = tuple(_rule(app, i) for i in range(n_args))
    return op


def _rule(app, i):
    def rule(g, ans, *inputs):
        return app.grad_for(g, i, inputs)
    return rule


@functools.cache
def _select_op(name):
    """The op of output k's node: forwards the gradient, as a _GradPack, to the Function."""
    KEEP, Op = _op_base()

    class _SelectOp(Op):
        __slots__ = ()
        selects_output = True        # grad_fn shows the Function's node and output k instead

        def unpack_ans(self, node):
            return None

    op = _SelectOp(_Name(name), None, promote=KEEP, saves_ans=False, saves_inputs=False)
    op.torch_name = f"{name}Backward"
    op.vjps = (lambda g, ans, pack, k: _GradPack({k: g}, pack),)
    return op


# ----- batching -----------------------------------------------------------------------------
def _has_batch_rule(cls):
    return bool(getattr(cls, "generate_vmap_rule", False)) or _overrides(cls, "vmap")


def _overrides(cls, name):
    return inspect.getattr_static(cls, name) is not inspect.getattr_static(Function, name)


def _batch_size(values):
    for v in values:
        if isinstance(v, Tensor) and v._nb:
            return v._data.shape[0]            # metadata only, as Tensor.shape reads it
    return 0


def _per_sample(fn, args, n_results=None):
    """fn on each batch element of the batched Tensors in `args` (others passed whole), its
    Tensor results stacked back into batched Tensors, through differentiable ops."""
    from ..ops.batching import rebatch, unbatch
    from ..ops.shape import stack
    size = _batch_size(args)
    phys = [unbatch(a) if isinstance(a, Tensor) and a._nb else None for a in args]
    results = []
    for b in range(size):
        one = [p[b] if p is not None else a for a, p in zip(args, phys)]
        r = fn(*one)
        results.append(r if isinstance(r, tuple) else (r,))
    if n_results is None:
        n_results = len(results[0]) if results else 0
    out = []
    for k in range(n_results):
        col = [r[k] for r in results]
        if all(c is None for c in col):
            out.append(None)
        elif all(isinstance(c, Tensor) for c in col):
            out.append(rebatch(stack(col, 0)))
        elif any(isinstance(c, Tensor) for c in col):
            from .._creation import zeros_like
            like = next(c for c in col if isinstance(c, Tensor))
            out.append(rebatch(stack([zeros_like(like) if c is None else c for c in col], 0)))
        else:
            out.append(col[0])
    return tuple(out)


# ----- the Function class -----------------------------------------------------------------------
class Function:
    """Base class for a differentiable operation with a user-written forward and backward.

    Subclass it with static methods, then call `MyFn.apply(*args)`:
    - `forward(ctx, *args)` computes the outputs. It runs without recording a graph and
      receives the Tensors it was given; its raw arrays come from `t.numpy()` (CPU) or
      `cupy.asarray(t)` (CUDA), so NumPy routines and CuPy kernels (ElementwiseKernel,
      RawKernel) may run inside. NumPy and CuPy arrays it returns are wrapped as Tensors
      (sharing memory). It may return one value or a tuple; non-Tensor values pass through.
    - Or `forward(*args)` without ctx plus `setup_context(ctx, inputs, output)`.
    - `backward(ctx, *grad_outputs)` returns one gradient per forward argument (None where
      there is none): Tensors or NumPy/CuPy arrays. Written with gpuvjp ops it is itself
      differentiable (hessian, hvp, create_graph=True); `@once_differentiable` states that
      it is not.
    - `jvp(ctx, *tangents)` (optional) returns one tangent per output: forward mode uses it;
      without it forward mode differentiates `backward` once more (it must then be written
      with gpuvjp ops).
    - `vmap(info, in_dims, *args)` (optional) or `generate_vmap_rule = True`: batched
      Tensors (vectorized jacobian) reach forward/backward/jvp directly; without either,
      each batch element runs on its own.

    Example:
        >>> class Cube(gv.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         ctx.save_for_backward(x)
        ...         return x.numpy() ** 3              # a NumPy array, wrapped as a Tensor
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         (x,) = ctx.saved_tensors
        ...         return 3 * x * x * g              # gpuvjp ops: differentiable again
        >>> x = gv.tensor([1.0, 2.0], requires_grad=True)
        >>> gv.autograd.grad(Cube.apply(x).sum(), x)
        (tensor([ 3., 12.]),)

    Matches `torch.autograd.Function`. Differences: forward may return NumPy/CuPy arrays; the
    mutation of an input (mark_dirty) is of its array, since gpuvjp has no in-place ops; a
    Function's grad_fn is a gpuvjp Node named `<ClassName>Backward`.
    """

    generate_vmap_rule = False

    def __init__(self, *args, **kwargs):
        import warnings
        warnings.warn(f"{type(self)} should not be instantiated. Methods on autograd functions "
                      "are all static, so you should invoke them on the class itself. "
                      "Instantiating an autograd function will raise an error in a future "
                      "version of PyTorch.", DeprecationWarning, stacklevel=2)

    def __call__(self, *args, **kwargs):
        raise RuntimeError("Legacy autograd function with non-static forward method is "
                           "deprecated. Please use new-style autograd function with static "
                           "forward method. (Example: https://pytorch.org/docs/stable/"
                           "autograd.html#torch.autograd.Function)")

    @staticmethod
    def forward(*args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom "
                                  "autograd.Function.")

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement either the backward or vjp method for "
                                  "your custom autograd.Function to use it with backward "
                                  "mode AD.")

    vjp = backward

    @staticmethod
    def jvp(ctx, *grad_inputs):
        raise NotImplementedError("You must implement the jvp function for custom "
                                  "autograd.Function to use it with forward mode AD.")

    @staticmethod
    def vmap(info, in_dims, *args):
        raise NotImplementedError("To use autograd.Function with vmap, you must either "
                                  "override the vmap staticmethod or set generate_vmap_rule="
                                  "True.")

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run the Function on `args`: returns forward's outputs, recorded in the graph."""
        if kwargs:
            args = _bind(cls, args, kwargs)
        if not _overrides(cls, "forward"):
            raise NotImplementedError("You must implement the forward function for custom "
                                      "autograd.Function.")
        if _batch_size(args):
            return _apply_batched(cls, args)
        return _apply(cls, args)


def _setup_context_style(cls):
    return _overrides(cls, "setup_context")


def _bind(cls, args, kwargs):
    """Keyword arguments of apply, made positional by forward's signature (as PyTorch)."""
    sig = inspect.signature(cls.forward)
    params = list(sig.parameters.values())
    if not _setup_context_style(cls):
        params = params[1:]                       # forward's ctx
    bound = inspect.Signature(params).bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(bound.arguments[p.name] for p in params
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _run_forward(cls, ctx, args):
    # forward sees primal values only: its tangents come from jvp (or double backward)
    with _mode.no_grad(), _suspended():
        if _setup_context_style(cls):
            out = cls.forward(*args)
            cls.setup_context(ctx, args, out)
        else:
            out = cls.forward(ctx, *args)
    return out


def _apply(cls, args, out=None, ctx=None):
    if _trace.ON:
        _trace.invalidate(f"autograd.Function {cls.__name__} (its own array code)")
    grad_on = _mode.is_grad_enabled()
    if ctx is None:
        ctx = FunctionCtx()
        ctx.needs_input_grad = tuple(grad_on and isinstance(a, Tensor) and a.requires_grad
                                     for a in args)
        out = _run_forward(cls, ctx, args)
    is_tuple = isinstance(out, tuple)
    raw = out if is_tuple else (out,)
    outs = [_wrap(o) for o in raw]
    clean = [a for a in args if not any(a is d for d in ctx._dirty)]
    views = _views_of_inputs(raw, outs, clean)

    dirty = {id(t) for t in ctx._dirty}
    non_diff = {id(t) for t in ctx._non_differentiable}
    for t in ctx._dirty:
        if not any(o is t for o in outs):
            raise RuntimeError("Some elements marked as dirty during the forward method were "
                               "not returned as output. The inputs that are modified inplace "
                               "must all be outputs of the Function.")
        if t.is_leaf and t.requires_grad and grad_on:
            raise RuntimeError("a leaf Variable that requires grad has been used in an "
                               "in-place operation.")
    # Outputs become (or, for an input returned unmarked, are copied into) Tensors of this
    # node: the same objects forward made, so tensors it saved carry the node's history.
    for k, o in enumerate(outs):
        if isinstance(o, Tensor) and id(o) not in dirty and \
                (o._node is not None or o._requires_grad or o._tangent is not None
                 or any(o is a for a in args)):
            outs[k] = o = o.detach()
        if isinstance(o, Tensor) and id(o) in dirty:
            o._tangent = None

    tensor_args = [a for a in args if isinstance(a, Tensor)]
    needs = grad_on and any(a._requires_grad for a in tensor_args)
    diff = [isinstance(o, Tensor) and o._dtype.is_floating_point
            and id(o) not in non_diff for o in outs]
    if needs and any(diff):
        _record(cls, ctx, args, outs, diff).views = views

    dual = _forward.active() and any(a._tangent is not None for a in tensor_args)
    if dual and any(diff):
        _forward_tangents(cls, ctx, args, outs, diff)
    outs = tuple(outs)
    return outs if is_tuple else outs[0]


def _record(cls, ctx, args, outs, diff):
    """The node of this application, and the nodes of its outputs when it has several."""
    saved = ctx._to_save or ()
    inputs = {id(a) for a in args if isinstance(a, Tensor)}
    holds = any(t is not None and id(t) not in inputs for t in saved)
    as_output = {id(o): k for k, (o, d) in enumerate(zip(outs, diff)) if d}
    saved_outputs = {}
    if holds:
        saved = tuple(_SavedOutput(t.detach()) if t is not None and id(t) in as_output else t
                      for t in saved)
        saved_outputs = {as_output[id(t)]: s for t, s in zip(ctx._to_save, saved)
                         if type(s) is _SavedOutput}
    metas = [(o.shape, o._dtype, o._dev) if isinstance(o, Tensor) else None for o in outs]
    app = _Application(cls, ctx, len(args), metas)
    op = _make_op(app, len(args), holds)
    edges = tuple((a._node if a._node is not None else a)
                  if isinstance(a, Tensor) and a._requires_grad else None for a in args)
    app.last_edge = max(i for i, e in enumerate(edges) if e is not None)
    single = len(outs) == 1
    first = next(o for o, d in zip(outs, diff) if d)
    meta = (first.shape, first._dtype, first._dev) if single else ((), first._dtype, first._dev)
    node = Node(op, tuple(args), {}, edges, saved if holds else None, meta)
    ctx._node = weakref.ref(node)
    if holds:
        ctx._to_save = None
    if single:
        outs[0]._node, outs[0]._requires_grad = node, True
        return app
    pack = _Pack(first._dtype, first._dev)
    sel = _select_op(cls.__name__)
    for k, (o, d) in enumerate(zip(outs, diff)):
        if d:
            o._node = Node(sel, (pack,), {"k": k}, (node,), None, (o.shape, o._dtype, o._dev))
            o._requires_grad = True
            if k in saved_outputs:
                saved_outputs[k].select = weakref.ref(o._node)
    return app


def _views_of_inputs(raw, outs, args):
    """Indices of outputs that are views of an input not marked dirty: an input returned as
    it is, or an array forward returned that shares an input's memory. Writing into one in
    place would bypass the Function's backward, so check_inplace refuses it (as PyTorch)."""
    inputs = [a for a in args if isinstance(a, Tensor)]
    views = []
    for k, (r, o) in enumerate(zip(raw, outs)):
        if not isinstance(o, Tensor):
            continue
        if any(r is a for a in inputs) or _is_array(r) and any(
                a._dev == o._dev and _may_share(r, a._array()) for a in inputs):
            views.append(k)
    return tuple(views)


def _may_share(x, y):
    xp = np if isinstance(x, np.ndarray) else _device.cupy_module()
    return bool(xp.may_share_memory(x, y))


def check_inplace(t):
    """Raise PyTorch's error if `t`, about to be written in place, is an output of a
    Function that is a view of one of its inputs (for in-place ops to call first)."""
    node = t._node
    if node is None:
        return
    k = 0
    if type(node.op).__name__ == "_SelectOp":
        k, node = node.params["k"], node.edges[0]
    app = getattr(node.op, "app", None)
    if app is None or k not in app.views:
        return
    if len(app.outputs) > 1:
        why = ("This view is the output of a function that returns multiple views. Such "
               "functions do not allow the output views to be modified inplace. You should "
               "replace the inplace operation by an out-of-place one.")
    else:
        why = ("This view was created inside a custom Function (or because an input was "
               "returned as-is) and the autograd logic to handle view+inplace would override "
               "the custom backward associated with the custom Function, leading to incorrect "
               "gradients. This behavior is forbidden. You can fix this by cloning the output "
               "of the custom Function.")
    raise RuntimeError(f"Output {k} of {app.name} is a view and is being modified inplace. "
                       + why)


def _apply_batched(cls, args):
    """apply on batched Tensors: the Function's batch rule, or one application per element."""
    if getattr(cls, "generate_vmap_rule", False):
        return _apply(cls, args)
    if not _overrides(cls, "vmap"):
        is_tuple = []

        def one(*a):
            r = _apply(cls, a)
            is_tuple.append(isinstance(r, tuple))
            return r
        res = _per_sample(one, args)
        return res if is_tuple and is_tuple[0] else res[0]
    if not _setup_context_style(cls):
        raise RuntimeError("In order to use an autograd.Function with functorch transforms "
                           "(vmap, grad, jvp, jacrev, ...), it must override the setup_context "
                           "staticmethod. For more details, please see https://pytorch.org/"
                           "docs/main/notes/extending.func.html")
    from ..ops.batching import rebatch, unbatch
    size = _batch_size(args)
    in_dims = tuple(0 if isinstance(a, Tensor) and a._nb else None for a in args)
    phys = tuple(unbatch(a).detach() if d == 0 else a for a, d in zip(args, in_dims))
    info = types.SimpleNamespace(batch_size=size, randomness="error")
    with _mode.no_grad():
        out, out_dims = cls.vmap(info, in_dims, *phys)
    is_tuple = isinstance(out, tuple)
    outs = out if is_tuple else (out,)
    dims = out_dims if isinstance(out_dims, tuple) else (out_dims,) * len(outs)
    res = []
    for o, d in zip(outs, dims):
        o = _wrap(o)
        if isinstance(o, Tensor) and d is not None:
            if d != 0:
                d = d % o.ndim
                o = o.permute(d, *[i for i in range(o.ndim) if i != d])
            o = rebatch(o).detach()
        res.append(o)
    ctx = FunctionCtx()
    grad_on = _mode.is_grad_enabled()
    ctx.needs_input_grad = tuple(grad_on and isinstance(a, Tensor) and a.requires_grad
                                 for a in args)
    res = tuple(res) if is_tuple else res[0]
    with _mode.no_grad():
        cls.setup_context(ctx, args, res)
    return _apply(cls, args, res, ctx)


# ----- forward mode ---------------------------------------------------------------------------
class _suspended:
    """Forward mode off while user code computes tangents (tangents carry no tangents)."""

    def __enter__(self):
        self.prev = getattr(_forward._state, "suspended", False)
        _forward._state.suspended = True

    def __exit__(self, *exc):
        _forward._state.suspended = self.prev


def _forward_tangents(cls, ctx, args, outs, diff):
    from .._creation import zeros_like
    tangents = []
    for a in args:
        t = a._tangent if isinstance(a, Tensor) else None
        if t is None and isinstance(a, Tensor) and ctx.materialize_grads \
                and a._dtype.is_floating_point:
            t = zeros_like(a)
        tangents.append(t)
    with _suspended():
        if _overrides(cls, "jvp"):
            res = _call_jvp(cls, ctx, tangents, len(outs))
        else:
            res = _jvp_by_double_backward(cls, ctx, args, outs, diff)
    for o, d, t in zip(outs, diff, res):
        if d and t is not None:
            o._tangent = _as_output_tangent(t, o)


def _call_jvp(cls, ctx, tangents, n_out):
    def call(*ts):
        ctx._in_jvp = True
        try:
            r = cls.jvp(ctx, *ts)
        finally:
            ctx._in_jvp = False
        r = r if isinstance(r, tuple) else (r,)
        if len(r) != n_out:
            raise RuntimeError("Function's jvp returned an invalid number of forward gradients "
                               f"(expected {n_out} but got {len(r)})")
        return tuple(_wrap(t) for t in r)
    if _batch_size(tangents) and not _has_batch_rule(cls):
        return _per_sample(call, tangents, n_out)
    return call(*tangents)


def _as_output_tangent(t, o):
    from ..ops.shape import to_dtype
    if not isinstance(t, Tensor):
        raise RuntimeError(f"expected Variable or None (got {type(t).__name__})")
    if tuple(t.shape) != tuple(o.shape):
        raise RuntimeError("Trying to set a forward gradient that has a different size than "
                           "that of the original Tensor, this is not supported. Tensor is of "
                           f"size {list(o.shape)} while the given forward gradient is of size "
                           f"{list(t.shape)}.")
    return to_dtype(t, o._dtype) if t._dtype is not o._dtype else t


def _jvp_by_double_backward(cls, ctx, args, outs, diff):
    """J t without a jvp rule: the backward is linear in the output gradients g, so the vjp of
    g -> backward(g) at g = 0 with cotangent t is J t (for this node only)."""
    from .._creation import zeros
    from . import grad
    from ..ops.shape import sum_to
    outer = _mode.is_grad_enabled()
    metas = [(o.shape, o._dtype, o._dev) if isinstance(o, Tensor) else None for o in outs]
    app = _Application(cls, ctx, len(args), metas)
    with _mode.enable_grad():
        gs = {k: zeros(o.shape, dtype=o._dtype, device=o._dev, requires_grad=True)
              for k, (o, d) in enumerate(zip(outs, diff)) if d}
        pack = _GradPack(gs, _Pack(outs[0]._dtype if isinstance(outs[0], Tensor)
                                   else _dtype.float32, None))
        wanted = [isinstance(a, Tensor) and a._tangent is not None for a in args]
        needs, ctx.needs_input_grad = ctx.needs_input_grad, tuple(wanted)   # what is asked now
        try:
            grads = app._backward(pack if len(outs) > 1 else gs[0], args, wanted)
        finally:
            ctx.needs_input_grad = needs
        cs, ts, probe = [], [], None
        for i, (a, c) in enumerate(zip(args, grads)):
            if c is None or not isinstance(a, Tensor) or a._tangent is None:
                continue
            c = sum_to(c, a.shape, a._dtype)
            if not c.requires_grad:
                # Not recorded: either a backward that ignores g (its derivative is 0), or
                # one the graph cannot see through. At g = 0 both give 0, so ask at g = 1.
                if probe is None:
                    with _mode.no_grad():
                        ones = {k: _ones_like(g) for k, g in gs.items()}
                        probe = app._backward(_GradPack(ones, pack) if len(outs) > 1
                                              else ones[0], args, wanted)
                if probe[i] is not None and bool(np.any(probe[i].numpy() != 0)):
                    raise RuntimeError(
                        f"forward-mode AD through {cls.__name__}: it has no jvp staticmethod "
                        "and its backward is not differentiable (marked once_differentiable or "
                        "not written with gpuvjp ops), so the double-backward trick cannot "
                        f"give its forward gradient. Define {cls.__name__}.jvp.")
                continue
            cs.append(c)
            ts.append(a._tangent)
        keys = list(gs)
        if not cs:
            return [None] * len(outs)
        jts = grad(cs, [gs[k] for k in keys], ts, retain_graph=True, create_graph=outer,
                   allow_unused=True)
    res = [None] * len(outs)
    for k, jt in zip(keys, jts):
        res[k] = jt
    return res


def _ones_like(t):
    from .._creation import ones
    return ones(t.shape, dtype=t._dtype, device=t._dev)


# ----- once_differentiable ----------------------------------------------------------------------
def once_differentiable(fn):
    """Decorator for a backward that is not differentiable (NumPy or a raw kernel inside):
    it runs without recording, and differentiating its result raises.

    Matches `torch.autograd.function.once_differentiable`.
    """
    @functools.wraps(fn)
    def wrapper(ctx, *args):
        with _mode.no_grad():
            outputs = fn(ctx, *args)
        if not _mode.is_grad_enabled():
            return outputs
        if not any(isinstance(a, Tensor) and a.requires_grad for a in args):
            return outputs
        is_tuple = isinstance(outputs, tuple)
        res = tuple(_delayed_error(_wrap(o), args) for o in (outputs if is_tuple else (outputs,)))
        return res if is_tuple else res[0]
    return wrapper


def _delayed_error(t, args):
    """`t` with a history whose backward raises: a gradient that must not be differentiated.
    Its edges are those of the gradients backward received, as PyTorch's DelayedError."""
    if not isinstance(t, Tensor) or not t._dtype.is_floating_point:
        return t
    KEEP, Op = _op_base()
    srcs = tuple(a for a in args if isinstance(a, Tensor) and a.requires_grad)
    op = Op(_Name("Error"), None, promote=KEEP, saves_ans=False, saves_inputs=False)
    op.torch_name = "ErrorBackward"

    def rule(g, ans, *inputs):
        raise RuntimeError("trying to differentiate twice a function that was marked with "
                           "@once_differentiable")
    op.vjps = (rule,) * len(srcs)
    out = t.detach()
    out._node = Node(op, srcs, {}, tuple(a._node if a._node is not None else a for a in srcs),
                     None, (t.shape, t._dtype, t._dev))
    out._requires_grad = True
    return out
