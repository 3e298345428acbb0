"""The torch.autograd.functional family: vjp (and, built on it, its relatives)."""

from __future__ import annotations

from .._tensor import Tensor
from . import _mode

__all__ = ["vjp"]


# ----- argument handling shared by the family ---------------------------------------------------
def _as_tuple(x, arg_name, fn_name):
    """(was it a tuple, the tuple of Tensors), with PyTorch's TypeError naming the index."""
    is_tuple = isinstance(x, tuple)
    items = x if is_tuple else (x,)
    for i, el in enumerate(items):
        if not isinstance(el, Tensor):
            where = f"value at index {i}" if is_tuple else f"given {arg_name}"
            raise TypeError(
                f"The {arg_name} given to {fn_name} must be either a Tensor or a tuple of "
                f"Tensors but the {where} has type {type(el)}.")
    return is_tuple, items


def _check_func(func, fn_name):
    if not callable(func):
        raise TypeError(f"The func given to {fn_name} must be callable, got "
                        f"{type(func).__name__}")


def _grad_preprocess(inputs, create_graph, need_graph):
    """New Tensor objects for the inputs, so that gradients are taken with respect to exactly
    these (and never accumulate into the caller's tensors)."""
    from ..ops.shape import reshape_
    out = []
    for t in inputs:
        if create_graph and t.requires_grad:
            out.append(reshape_(t, shape=t.shape))          # a differentiable shallow copy
        else:
            d = t.detach()
            if need_graph and d._dtype.is_floating_point:
                d._requires_grad = True
            elif need_graph:
                raise RuntimeError("only Tensors of floating point dtype can "
                                   "require gradients")
            out.append(d)
    return tuple(out)


def _grad_postprocess(items, create_graph):
    if create_graph:
        return items
    return tuple(t.detach() if isinstance(t, Tensor) else _grad_postprocess(t, False)
                 for t in items)


def _validate_v(v, other, is_other_tuple):
    if len(other) != len(v):
        if is_other_tuple:
            raise RuntimeError(
                f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}.")
        raise RuntimeError("The given v should contain a single Tensor.")
    for idx, (el_v, el_o) in enumerate(zip(v, other)):
        prepend = f"Entry {idx} in " if is_other_tuple else ""
        if el_v.shape != el_o.shape:
            raise RuntimeError(f"{prepend}v has invalid size: should be "
                               f"{_size(el_o.shape)} but got {_size(el_v.shape)}.")
        if el_v.device != el_o.device:
            raise RuntimeError(f"{prepend}v is on device {el_v.device} but the output it "
                               f"pairs with is on {el_o.device}.")


def _size(shape):
    return f"torch.Size({list(shape)})"


def _check_requires_grad(items, strict):
    if not strict:
        return
    for i, t in enumerate(items):
        if not t.requires_grad:
            raise RuntimeError(
                f"Output {i} of the user-provided function does not require gradients. The "
                "outputs must be computed in a differentiable manner from the input when "
                "running in strict mode.")


def _autograd_grad(outputs, inputs, grad_outputs, create_graph, retain_graph=None):
    """autograd.grad over the outputs that require grad, None for unused inputs."""
    from . import grad
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs or (None,) * len(outputs))
             if o.requires_grad]
    if not pairs:
        return (None,) * len(inputs)
    outs, gs = zip(*pairs)
    return grad(outs, inputs, gs, retain_graph=retain_graph, create_graph=create_graph,
                allow_unused=True)


def _fill_in_zeros(grads, refs, strict, create_graph):
    from .._creation import zeros_like
    res = []
    for i, g in enumerate(grads):
        if g is None:
            if strict:
                raise RuntimeError("The output of the user-provided function is independent "
                                   f"of input {i}. This is not allowed in strict mode.")
            g = zeros_like(refs[i])
        elif strict and create_graph and not g.requires_grad:
            raise RuntimeError("The jacobian of the user-provided function is independent of "
                               f"input {i}. This is not allowed in strict mode when "
                               "create_graph=True.")
        res.append(g)
    return tuple(res)


def _unpack(res, is_tuple):
    return res if is_tuple else res[0]


# ----- vjp -------------------------------------------------------------------------------------
def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """Same as `torch.autograd.functional.vjp`."""
    _check_func(func, "vjp")
    with _mode.enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "vjp")
        inputs = _grad_preprocess(inputs, create_graph, need_graph=True)
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(
            outputs, "outputs of the user-provided function", "vjp")
        _check_requires_grad(outputs, strict)
        if v is not None:
            _, v = _as_tuple(v, "v", "vjp")
            v = _grad_preprocess(v, create_graph, need_graph=False)
            _validate_v(v, outputs, is_outputs_tuple)
        elif len(outputs) != 1 or outputs[0].numel() != 1:
            raise RuntimeError("The vector v can only be None if the user-provided function "
                               "returns a single Tensor with a single element.")
    with _mode.set_grad_enabled(True if create_graph else _mode.is_grad_enabled()):
        grads = _autograd_grad(outputs, inputs, v, create_graph)
        result = _fill_in_zeros(grads, inputs, strict, create_graph)
    return (_unpack(_grad_postprocess(outputs, create_graph), is_outputs_tuple),
            _unpack(_grad_postprocess(result, create_graph), is_inputs_tuple))
