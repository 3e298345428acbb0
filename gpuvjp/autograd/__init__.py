"""Reverse-mode autograd: Tensor.backward, autograd.grad, and the functional family."""

from __future__ import annotations

from .. import _lazy, _trace
from .._lazy import Pending
from .._tensor import Tensor
from ._graph import hold_leaves_weakly, run_backward
from ._mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled

__all__ = ["backward", "grad", "functional", "graph", "Function", "function", "no_grad",
           "enable_grad", "set_grad_enabled", "is_grad_enabled", "gradcheck", "gradgradcheck"]


def _tensors(x, what):
    if isinstance(x, Tensor):
        return (x,)
    if isinstance(x, (tuple, list)):
        for i, t in enumerate(x):
            if not isinstance(t, Tensor):
                raise TypeError(f"{what} must be a Tensor or a sequence of Tensors, but the "
                                f"value at index {i} has type {type(t).__name__}")
        return tuple(x)
    raise TypeError(f"{what} must be a Tensor or a sequence of Tensors, got "
                    f"{type(x).__name__}")


def _seed_grads(outputs, grad_outputs, create_graph):
    """PyTorch's _make_grads: implicit ones for one-element outputs, shape and device checks,
    and a cast to each output's dtype."""
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,)
    else:
        grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError("grad can be implicitly created only for scalar outputs"
                           if not grad_outputs else
                           f"Mismatch in number of grad_outputs: got {len(grad_outputs)} "
                           f"for {len(outputs)} outputs")
    grads = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if g is None:
            if out.numel() != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            from .._creation import ones
            g = ones(out.shape, dtype=out.dtype, device=out.device)
        elif not isinstance(g, Tensor):
            raise TypeError(f"grad_outputs[{i}] must be a Tensor or None, got "
                            f"{type(g).__name__}")
        else:
            if _shape_differs(g, out):
                raise RuntimeError(
                    f"Mismatch in shape: grad_output[{i}] has a shape of {_size(g.shape)} and "
                    f"output[{i}] has a shape of {_size(out.shape)}.")
            if g._dev is not out._dev and g._dev != out._dev:
                raise RuntimeError(
                    f"invalid gradient at index {i} - expected device {out.device} but got "
                    f"{g.device}")
            if g._dtype is not out._dtype:
                from ..ops.shape import to_dtype
                g = to_dtype(g, out._dtype)
            # Without create_graph the sweep records nothing, so g's own history is never
            # extended, and every gradient handed back is detached where it leaves.
        grads.append(g)
    return grads


def _size(shape):
    return f"torch.Size({list(shape)})"


def _shape_differs(a, b):
    """a.shape != b.shape, read from the arrays (no Size built) unless a batch dim is hidden."""
    if a._nb or b._nb:
        return a.shape != b.shape
    return a._data.shape != b._data.shape


def _key(t):
    """What the sweep knows a tensor by: its producer node, or itself for a leaf."""
    return t if t._node is None else t._node


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """Same as `torch.autograd.grad`."""
    outputs = _tensors(outputs, "outputs")
    inputs = _tensors(inputs, "inputs")
    if is_grads_batched:
        raise NotImplementedError("is_grads_batched=True is not supported yet")
    if allow_unused is None:
        allow_unused = materialize_grads
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when "
                         "materialize_grads=True, but got: allow_unused=False.")
    for i, out in enumerate(outputs):
        if not out._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not "
                               "have a grad_fn")
    for t in inputs:
        if not t._requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    grads = _seed_grads(outputs, grad_outputs, create_graph)
    if retain_graph is None:
        retain_graph = create_graph
    return _grad(outputs, inputs, grads, retain_graph, create_graph, allow_unused,
                 materialize_grads)


def _grad(outputs, inputs, grads, retain_graph, create_graph, allow_unused=True,
          materialize_grads=False):
    """autograd.grad past its argument checks: `outputs` require grad, `grads` are their
    seeds (_seed_grads), `inputs` require grad."""
    keys = []                                   # what the sweep knows each input by (_key)
    for t in inputs:
        keys.append(id(t if t._node is None else t._node))
    roots = []
    for o in outputs:
        roots.append(o if o._node is None else o._node)
    targets = set(keys)
    keep = None
    if graph.RETAINED.data:         # a non-leaf that retains its gradient gets it here too
        keep = graph.retained_below(roots)[1]
        targets |= set(keep)
    found = run_backward(roots, grads, targets, retain_graph, create_graph, leaves=True)
    if keep:
        _fill_retained(keep, found, create_graph)
    result = []
    pending = False
    for i, t in enumerate(inputs):
        g = found.get(keys[i])
        if g is None:
            if materialize_grads:
                from .._creation import zeros_like
                g = zeros_like(t)
            elif not allow_unused:
                raise RuntimeError(
                    f"The differentiated Tensor at index {i} appears to not have been used in "
                    "the graph. Set allow_unused=True if this is the desired behavior.")
            result.append(g)
            continue
        g = g[1] if create_graph else g[1].detach()
        pending = pending or type(g._data) is Pending
        result.append(g)
    for o in outputs:
        pending = pending or type(o._data) is Pending
    # gradients handed back are in memory; the outputs (vjp hands them back too) join them,
    # so results of one shape are written by one kernel
    if pending:
        _lazy.force((result, outputs))
    return tuple(result)


def _fill_retained(keep, found, create_graph):
    """Accumulate the gradients a sweep found at retained nodes into their tensors' `.grad`."""
    for k, t in keep.items():
        if k in found:
            g = found[k][1] if create_graph else found[k][1].detach()
            t.grad = g if t.grad is None else t.grad + g


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Same as `torch.autograd.backward`: accumulates into the leaves' `.grad`."""
    tensors = _tensors(tensors, "tensors")
    for i, out in enumerate(tensors):
        if not out.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not "
                               "have a grad_fn")
    grads = _seed_grads(tensors, grad_tensors, create_graph)
    if retain_graph is None:
        retain_graph = create_graph
    targets = None
    if inputs is not None:
        inputs = _tensors(inputs, "inputs")
        if not inputs:
            raise RuntimeError("'inputs' argument to backward() cannot be empty.")
        targets = {id(_key(t)) for t in inputs}
    roots = [_key(o) for o in tensors]
    keep = None
    if graph.RETAINED:              # some non-leaf retains its gradient (retain_grad)
        leaves, keep = graph.retained_below(roots)
        if keep:
            targets = (leaves if targets is None else targets) | set(keep)
    found = run_backward(roots, grads, targets, retain_graph, create_graph, leaves=True)
    if keep:
        found = {k: (keep[k] if k in keep else v[0], v[1]) for k, v in found.items()}
    if create_graph:
        # unlike PyTorch, leaf.grad's graph holds the leaf weakly: no reference cycle
        hold_leaves_weakly({k: v for k, v in found.items()
                            if isinstance(v[0], Tensor) and v[0]._node is None})
    for leaf, g in found.values():
        if not create_graph:
            g = g.detach()
        if _trace.ON:
            _trace.invalidate("an in-place write to a tensor from outside fn (the .grad "
                              "that backward() accumulates)")
        leaf.grad = g if leaf.grad is None else leaf.grad + g
    _lazy.force([leaf.grad for leaf, _ in found.values()])


from . import functional  # noqa: E402
from . import function  # noqa: E402
from . import graph  # noqa: E402
from .function import Function  # noqa: E402
from .gradcheck import gradcheck, gradgradcheck  # noqa: E402
