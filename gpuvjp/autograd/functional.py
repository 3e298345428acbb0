"""The torch.autograd.functional family: vjp, jvp, jacobian, hessian, vhp, hvp."""

from __future__ import annotations

import functools
import math
import operator
import os

from .. import _device, _lazy
from .._dtype import _FLOAT
from .._tensor import Tensor
from . import _grad, _mode, _seed_grads, _shape_differs, forward_ad, grad
from ._graph import Node

__all__ = ["vjp", "jvp", "jacobian", "hessian", "vhp", "hvp"]


# ----- argument handling shared by the family ---------------------------------------------------
def _as_tuple(x, arg_name, fn_name):
    """(was it a tuple, the tuple of Tensors), with PyTorch's TypeError naming the index."""
    is_tuple = isinstance(x, tuple)
    items = x if is_tuple else (x,)
    for el in items:
        if type(el) is not Tensor:
            break
    else:
        return is_tuple, items                  # the common case: Tensors, no subclass
    for i, el in enumerate(items):
        if not isinstance(el, Tensor):
            where = f"value at index {i}" if is_tuple else f"given {arg_name}"
            raise TypeError(
                f"The {arg_name} given to {fn_name} must be either a Tensor or a tuple of "
                f"Tensors but the {where} has type {type(el)}.")
    return is_tuple, items


def _one_scope(fn):
    """Run a functional inside one compute scope of its inputs' device (_device.scope), so
    the ops of the call enter no error-state or device context of their own."""
    @functools.wraps(fn)
    def wrapper(func, inputs, *args, **kwargs):
        first = inputs
        if isinstance(inputs, tuple):
            first = inputs[0] if inputs else None
        if not isinstance(first, Tensor):      # bad inputs: the functional raises
            return fn(func, inputs, *args, **kwargs)
        state = _device.enter(first._dev)
        try:
            return fn(func, inputs, *args, **kwargs)
        finally:
            _device.leave(state)
    return wrapper


def _check_func(func, fn_name):
    if not callable(func):
        raise TypeError(f"The func given to {fn_name} must be callable, got "
                        f"{type(func).__name__}")


def _grad_preprocess(inputs, create_graph, need_graph, fn_name=None):
    """New Tensor objects for the inputs, so that gradients are taken with respect to exactly
    these (and never accumulate into the caller's tensors)."""
    out = []
    for i, t in enumerate(inputs):
        if create_graph and t._requires_grad:
            from ..ops.shape import reshape_
            out.append(reshape_(t, shape=t.shape))          # a differentiable shallow copy
        else:
            d = Tensor._make(t._data, t._dev, t._dtype, None)          # t.detach()
            d._nb = t._nb
            if need_graph and d._dtype.category == _FLOAT:
                d._requires_grad = True
            elif need_graph:
                where = f" (the value at index {i} of the inputs given to {fn_name} has " \
                        f"dtype {d._dtype.name})" if fn_name else ""
                raise RuntimeError(f"only Tensors of floating point dtype can require "
                                   f"gradients{where}")
            out.append(d)
    return tuple(out)


def _grad_postprocess(items, create_graph):
    _lazy.force(items)                  # results handed back are in memory (one kernel a shape)
    if create_graph:
        return items
    return tuple([t.detach() if isinstance(t, Tensor) else _grad_postprocess(t, False)
                  for t in items])


def _validate_v(v, other, is_other_tuple):
    if len(other) != len(v):
        if is_other_tuple:
            raise RuntimeError(
                f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}.")
        raise RuntimeError("The given v should contain a single Tensor.")
    for idx, (el_v, el_o) in enumerate(zip(v, other)):
        if (el_v._data.shape != el_o._data.shape or el_v._nb or el_o._nb) and \
                _shape_differs(el_v, el_o):
            raise RuntimeError(f"{_entry(idx, is_other_tuple)}v has invalid size: should be "
                               f"{_size(el_o.shape)} but got {_size(el_v.shape)}.")
        if el_v._dev is not el_o._dev and el_v._dev != el_o._dev:
            raise RuntimeError(f"{_entry(idx, is_other_tuple)}v is on device {el_v.device} "
                               f"but the output it pairs with is on {el_o.device}.")


def _entry(idx, is_tuple):
    return f"Entry {idx} in " if is_tuple else ""


def _size(shape):
    return f"torch.Size({list(shape)})"


_REQUIRES_GRAD_MSG = {
    "outputs": "Output {i} of the user-provided function does not require gradients. The "
               "outputs must be computed in a differentiable manner from the input when "
               "running in strict mode.",
    "grad_inputs": "The gradient with respect to input {i} is independent of the inputs of the "
                   "user-provided function. This is not allowed in strict mode.",
    "jacobian": "While computing the hessian, found that the jacobian of the user-provided "
                "function with respect to input {i} is independent of the input. This is not "
                "allowed in strict mode. You should ensure that your function is twice "
                "differentiable and that the jacobian depends on the inputs (this would be "
                "violated by a linear function for example).",
    "hessian": "The hessian of the user-provided function with respect to input {i} is "
               "independent of the input. This is not allowed in strict mode. You should "
               "ensure that your function is thrice differentiable and that the hessian "
               "depends on the inputs.",
}


def _check_requires_grad(items, strict, kind="outputs"):
    if not strict:
        return
    for i, t in enumerate(items):
        if t is None:                                   # only grad_inputs hold None
            raise RuntimeError("The output of the user-provided function is independent of "
                               f"input {i}. This is not allowed in strict mode.")
        if not t.requires_grad:
            raise RuntimeError(_REQUIRES_GRAD_MSG[kind].format(i=i))


def _autograd_grad(outputs, inputs, grad_outputs, create_graph, retain_graph=None,
                   v_checked=False):
    """autograd.grad over the outputs that exist and require grad, None for unused inputs.
    `v_checked`: grad_outputs were checked against the outputs already (_validate_v)."""
    outs, gs = outputs, grad_outputs
    some_not = not outputs              # some output missing or not requiring grad
    for o in outputs:
        if o is None or not o._requires_grad:
            some_not = True
            break
    if some_not:
        _lazy.force(outputs)            # as _grad does with its own: outputs are handed back
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs or (None,) * len(outputs))
                 if o is not None and o._requires_grad]
        if not pairs:
            return (None,) * len(inputs)
        outs, gs = zip(*pairs)
    # grad past its argument checks: the outputs require grad, the inputs are our own copies
    # that do (or tensors made to), and v was checked against the outputs
    if v_checked and gs is not None:
        seeds = gs
        for i, o in enumerate(outs):
            if gs[i]._dtype is not o._dtype:        # as _seed_grads: in the output's dtype
                if seeds is gs:
                    seeds = list(gs)
                seeds[i] = _to_dtype(gs[i], o._dtype)
    else:
        seeds = _seed_grads(outs, gs, create_graph)
    return _grad(outs, inputs, seeds, create_graph if retain_graph is None else retain_graph,
                 create_graph)


def _to_dtype(t, dtype):
    from ..ops.shape import to_dtype
    return to_dtype(t, dtype)


# Which backward pass produced a None, for the strict-mode message.
_INDEPENDENT_MSG = {
    "back": "The output of the user-provided function is independent of input {i}. This is "
            "not allowed in strict mode.",
    "back_trick": "The gradient with respect to the input is independent of entry {i} in the "
                  "grad_outputs when using the double backward trick to compute forward mode "
                  "gradients. This is not allowed in strict mode.",
    "double_back": "The jacobian of the user-provided function is independent of input {i}. "
                   "This is not allowed in strict mode.",
    "double_back_trick": "The hessian of the user-provided function is independent of entry "
                         "{i} in the grad_jacobian. This is not allowed in strict mode as it "
                         "prevents from using the double backward trick to replace forward "
                         "mode AD.",
}


def _fill_in_zeros(grads, refs, strict, create_graph, stage="back"):
    res = []
    for i, g in enumerate(grads):
        if g is None:
            if strict:
                raise RuntimeError(_INDEPENDENT_MSG[stage].format(i=i))
            from .._creation import zeros_like
            g = zeros_like(refs[i])
        elif strict and create_graph and not g.requires_grad:
            what = "hessian" if "double" in stage else "jacobian"
            raise RuntimeError(f"The {what} of the user-provided function is independent of "
                               f"input {i}. This is not allowed in strict mode when "
                               "create_graph=True.")
        res.append(g)
    return tuple(res)


def _unpack(res, is_tuple):
    return res if is_tuple else res[0]


def _unpack2(res, is_outer_tuple, is_inner_tuple):
    """Undo two _as_tuple calls on a tuple (outer) of tuples (inner)."""
    if not is_inner_tuple:
        res = tuple(r[0] for r in res)
    return res if is_outer_tuple else res[0]


# ----- vjp -------------------------------------------------------------------------------------
@_one_scope
def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """Same as `torch.autograd.functional.vjp`."""
    # The common case (a Tensor or a tuple of Tensors, outputs that require grad, v of the
    # outputs' dtypes) is decided in line; anything else goes through the checks that raise
    # PyTorch's errors or take the general route.
    if not callable(func):
        _check_func(func, "vjp")
    grad_mode = _mode._state                # enable_grad(), as a plain switch
    prev = grad_mode.enabled
    grad_mode.enabled = True
    try:
        is_inputs_tuple, inputs = (False, (inputs,)) if type(inputs) is Tensor else \
            _as_tuple(inputs, "inputs", "vjp")
        inputs = _grad_preprocess(inputs, create_graph, need_graph=True, fn_name="vjp")
        outputs = func(*inputs)
        is_outputs_tuple, outputs = (False, (outputs,)) if type(outputs) is Tensor else \
            _as_tuple(outputs, "outputs of the user-provided function", "vjp")
        if strict:
            _check_requires_grad(outputs, strict)
        if v is not None:
            v = (v,) if type(v) is Tensor else _as_tuple(v, "v", "vjp")[1]
            if create_graph:          # without, the sweep records nothing: v is used as is
                v = _grad_preprocess(v, create_graph, need_graph=False)
            _validate_v(v, outputs, is_outputs_tuple)
        elif len(outputs) != 1 or outputs[0].numel() != 1:
            raise RuntimeError("The vector v can only be None if the user-provided function "
                               "returns a single Tensor with a single element.")
        # without create_graph the sweep runs in the caller's grad mode, as in PyTorch
        grad_mode.enabled = True if create_graph else prev
        # grad materialises the outputs with the gradients (one kernel a shape)
        grads = _autograd_grad(outputs, inputs, v, create_graph, v_checked=True)
        for g in grads:
            if g is None or strict:
                grads = _fill_in_zeros(grads, inputs, strict, create_graph)
                break
    finally:
        grad_mode.enabled = prev
    if not create_graph:
        outputs = (outputs[0].detach(),) if len(outputs) == 1 else \
            tuple([o.detach() for o in outputs])
    return (outputs if is_outputs_tuple else outputs[0],
            grads if is_inputs_tuple else grads[0])


# ----- jvp -------------------------------------------------------------------------------------
@_one_scope
def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """Same as `torch.autograd.functional.jvp`."""
    return _jvp_impl(func, inputs, v, create_graph, strict)


def _jvp_impl(func, inputs, v=None, create_graph=False, strict=False):
    # strict mode asks which outputs depend on which inputs: a question for the reverse graph,
    # so it keeps PyTorch's double-backward route (and its exact messages).
    if strict:
        return _jvp_double_backward(func, inputs, v, create_graph, strict)
    return _jvp_forward(func, inputs, v, create_graph)


def _jvp_forward(func, inputs, v=None, create_graph=False):
    """jvp in forward mode: each input carries its tangent through func, one pass."""
    from .._creation import ones_like, zeros_like
    _check_func(func, "jvp")
    # inputs are prepared and func runs with grad enabled, as PyTorch's jvp does (func may
    # differentiate inside; with create_graph the copies carry the caller's graph)
    with _mode.enable_grad():
        is_inputs_tuple, inputs, v = _inputs_and_v(inputs, v, create_graph, "jvp")
    if v is None:
        v = (ones_like(inputs[0]),)
    with _mode.enable_grad(), forward_ad.dual_level():
        for inp, t in zip(inputs, v):               # inputs are our own copies
            inp._tangent = _as_tangent(t, inp)
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(
            outputs, "outputs of the user-provided function", "jvp")
        result = tuple(zeros_like(o) if o._tangent is None else o._tangent for o in outputs)
    for t in inputs + outputs:
        t._tangent = None
    return (_unpack(_grad_postprocess(outputs, create_graph), is_outputs_tuple),
            _unpack(_grad_postprocess(result, create_graph), is_outputs_tuple))


def _inputs_and_v(inputs, v, create_graph, fn_name):
    """(was inputs a tuple, our copies of the inputs, v checked against them or None), for
    the functions whose v pairs with the inputs."""
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", fn_name)
    inputs = _grad_preprocess(inputs, create_graph, need_graph=True, fn_name=fn_name)
    if v is not None:
        _, v = _as_tuple(v, "v", fn_name)
        v = _grad_preprocess(v, create_graph, need_graph=False)
        _validate_v(v, inputs, is_inputs_tuple)
    elif len(inputs) != 1 or inputs[0].numel() != 1:
        raise RuntimeError("The vector v can only be None if the input to the user-provided "
                           "function is a single Tensor with a single element.")
    return is_inputs_tuple, inputs, v


def _as_tangent(t, like):
    from ..ops.shape import to_device, to_dtype
    return to_dtype(to_device(t, like.device), like.dtype)


def _jvp_double_backward(func, inputs, v=None, create_graph=False, strict=False):
    """jvp by the double-backward trick, as PyTorch computes it: g -> vjp(g) is linear in g,
    so the vjp of that map at any g (zeros here: never inf or nan) with cotangent v is J v."""
    from .._creation import zeros_like
    _check_func(func, "jvp")
    with _mode.enable_grad():
        is_inputs_tuple, inputs, v = _inputs_and_v(inputs, v, create_graph, "jvp")
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(
            outputs, "outputs of the user-provided function", "jvp")
        _check_requires_grad(outputs, strict)
        grad_outputs = tuple(zeros_like(o, requires_grad=True) for o in outputs)
        grad_inputs = _autograd_grad(outputs, inputs, grad_outputs, create_graph=True)
        _check_requires_grad(grad_inputs, strict, "grad_inputs")
    with _mode.set_grad_enabled(True if create_graph else _mode.is_grad_enabled()):
        grads = _autograd_grad(grad_inputs, grad_outputs, v, create_graph)
        result = _fill_in_zeros(grads, outputs, strict, create_graph, "back_trick")
    return (_unpack(_grad_postprocess(outputs, create_graph), is_outputs_tuple),
            _unpack(_grad_postprocess(result, create_graph), is_outputs_tuple))


# ----- batched sweeps ---------------------------------------------------------------------------
def _stack(tensors):
    from ..ops.shape import stack
    return stack(tensors, 0)


def _cat(tensors):
    if len(tensors) == 1:
        return tensors[0]
    from ..ops.shape import cat
    return cat(tensors, 0)


def _batched_vjp(outputs, inputs, grad_outputs_batched, create_graph):
    """vjps of `outputs` for a batch of cotangents (each with a leading batch dim), in ONE
    backward sweep whose tensors carry the batch dim: one (batch, *input.shape) tensor per
    input, or None for an input no output depends on."""
    from ..ops.batching import rebatch, unbatch
    seeds = tuple(rebatch(g) for g in grad_outputs_batched)
    vj = _autograd_grad(outputs, inputs, seeds, create_graph, retain_graph=True)
    return tuple(None if g is None else unbatch(g) for g in vj)


def _batched_jvp(func, inputs, tangents_batched):
    """jvps of `func` at `inputs` for a batch of tangents (each with a leading batch dim):
    (is the output a tuple, the outputs, one (batch, *output.shape) tensor per output)."""
    # One forward pass: each input's tangent carries the batch dim through every op.
    from .._creation import zeros
    from ..ops.batching import rebatch, unbatch
    batch = tangents_batched[0].shape[0] if tangents_batched else 0
    duals = tuple(t.detach() for t in inputs)
    with _mode.no_grad(), forward_ad.dual_level():
        if batch:
            for d, t in zip(duals, tangents_batched):
                d._tangent = rebatch(_as_tangent(t, d))
        outs = func(*duals)
        is_tuple, outs = _as_tuple(outs, "outputs of the user-provided function", "jvp")
        jv = tuple(zeros((batch, *o.shape), dtype=o.dtype, device=o.device)
                   if o._tangent is None else unbatch(o._tangent) for o in outs)
    for t in duals + outs:
        t._tangent = None
    return is_tuple, tuple(o.detach() for o in outs), jv


def _basis_chunk(refs, start, stop, flat=True):
    """Rows start:stop of the identity over the flattened `refs`, split into one block per ref,
    (stop - start, numel) or with `flat=False` (stop - start, *ref.shape), each in its ref's
    dtype and device."""
    blocks, offset = [], 0
    for t in refs:
        n = t.numel()
        xp = _device.array_module(t._dev)
        with _device.use(t._dev):
            arr = xp.eye(stop - start, n, k=start - offset, dtype=t._dtype.np)
            if not flat:
                arr = arr.reshape(stop - start, *t.shape)
        blocks.append(Tensor._make(arr, t._dev, t._dtype, None))
        offset += n
    return tuple(blocks)


# ----- chunk sizes ------------------------------------------------------------------------------
def _check_chunk_size(chunk_size, where="jacobian"):
    """chunk_size as _resolve_chunk takes it: None, "auto" or a positive int (a ValueError
    naming `where` otherwise)."""
    if chunk_size is None or (isinstance(chunk_size, str) and chunk_size == "auto"):
        return chunk_size
    try:
        n = None if isinstance(chunk_size, bool) else operator.index(chunk_size)
    except TypeError:
        n = None
    if n is None or n <= 0:
        raise ValueError(f'{where}: chunk_size must be None, "auto" or a positive int, but got '
                         f"{chunk_size!r}")
    return n


def _free_bytes(dev):
    """Memory that a chunk may use on `dev`: the driver's free bytes plus what CuPy's pool holds
    unused on cuda; the available physical pages on cpu."""
    if dev.type == "cuda":
        cp = _device.cupy_module()
        with cp.cuda.Device(dev.index):
            free, _ = cp.cuda.runtime.memGetInfo()
            return free + cp.get_default_memory_pool().free_bytes()
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):            # not a POSIX system
        return 1 << 30


def _graph_bytes(tensors):
    """Bytes of every array produced in the graph behind `tensors`: what one sweep's
    cotangents take."""
    total, seen = 0, set()
    todo = [t._node for t in tensors if t._node is not None]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        shape, dtype, _ = node.out_meta
        total += math.prod(shape) * dtype.itemsize
        todo.extend(e for e in node.edges if type(e) is Node)
    return total


def _nbytes(tensors):
    return sum(t.numel() * t._dtype.itemsize for t in tensors)


def _resolve_chunk(chunk_size, rows, per_row, dev):
    """Rows per batched sweep: all of them, the given int, or for "auto" the most that fit in
    a quarter of the free memory at three times the estimated bytes per row."""
    if chunk_size is None:
        return max(rows, 1)
    if isinstance(chunk_size, str):                     # "auto"
        fit = (_free_bytes(dev) // 4) // max(3 * per_row, 1)
        return int(min(max(fit, 1), max(rows, 1)))
    return chunk_size


def _device_of(*groups):
    for group in groups:
        for t in group:
            return t._dev
    return _device.CPU


# ----- jacobian ---------------------------------------------------------------------------------
_STRATEGIES = ("forward-mode", "reverse-mode", "auto")


@_one_scope
def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode", chunk_size=None):
    """Same as `torch.autograd.functional.jacobian`; also `strategy="auto"` (with vectorize=True,
    forward mode when the inputs have fewer elements than the outputs) and `chunk_size` (None,
    an int > 0 or "auto": rows, or columns in forward mode, per batched sweep with vectorize)."""
    _check_func(func, "jacobian")
    if strategy not in _STRATEGIES:
        raise ValueError('Expected strategy to be either "forward-mode", "reverse-mode" or '
                         f'"auto", but got {strategy!r}. Hint: If your function has more '
                         'outputs than inputs, "forward-mode" tends to be more performant. '
                         'Otherwise, prefer to use "reverse-mode".')
    chunk_size = _check_chunk_size(chunk_size)
    if strategy == "forward-mode":
        if create_graph:
            raise NotImplementedError(
                "torch.autograd.functional.jacobian: `create_graph=True` and "
                '`strategy="forward-mode"` are not supported together (yet). Please either '
                'set `create_graph=False` or `strategy="reverse-mode"`.')
        return _jacfwd(func, inputs, strict, vectorize, chunk_size)

    with _mode.enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
        inputs = _grad_preprocess(inputs, create_graph, need_graph=True, fn_name="jacobian")
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(
            outputs, "outputs of the user-provided function", "jacobian")
        _check_requires_grad(outputs, strict)
        if vectorize:
            if strict:
                raise RuntimeError(
                    "torch.autograd.functional.jacobian: `strict=True` and `vectorized=True` "
                    "are not supported together. Please either set `strict=False` or "
                    "`vectorize=False`.")
            if (strategy == "auto" and not create_graph
                    and sum(t.numel() for t in inputs) < sum(t.numel() for t in outputs)):
                jac = _jacfwd_vectorized(func, inputs, chunk_size)[1]
            else:
                jac = _jacrev_vectorized(outputs, inputs, create_graph, chunk_size)
        else:
            jac = _jacrev_rows(outputs, inputs, create_graph, strict)
        jac = _grad_postprocess(jac, create_graph)
    return _unpack2(jac, is_outputs_tuple, is_inputs_tuple)


def _jacrev_rows(outputs, inputs, create_graph, strict):
    """PyTorch's loop: one backward sweep per output element."""
    from .._creation import zeros
    jac = []
    for i, out in enumerate(outputs):
        rows = _jacrev_sweeps(i, out.reshape(-1), inputs, range(out.numel()), create_graph,
                              strict)
        # NOTE: an output with no elements gets an empty Jacobian (PyTorch fails to stack).
        jac.append(tuple(
            _stack(r).reshape(*out.shape, *inp.shape) if r else
            zeros((*out.shape, *inp.shape), dtype=inp.dtype, device=inp.device)
            for r, inp in zip(rows, inputs)))
    return tuple(jac)


def _jacrev_sweeps(i, flat, inputs, rows, create_graph, strict):
    """Rows `rows` of output i's Jacobian (`flat` is the output flattened), one backward sweep
    per row: for each input, the list of its rows (zeros where the row does not reach it)."""
    from .._creation import zeros_like
    out = [[] for _ in inputs]
    for j in rows:
        vj = _autograd_grad((flat[j],), inputs, None, create_graph, retain_graph=True)
        for k, (g, inp) in enumerate(zip(vj, inputs)):
            if g is None:
                if strict:
                    raise RuntimeError(
                        f"Output {i} of the user-provided function is independent of "
                        f"input {k}. This is not allowed in strict mode.")
                g = zeros_like(inp)
            elif strict and create_graph and not g.requires_grad:
                # NOTE: PyTorch names the output's index here, not the input's.
                raise RuntimeError(
                    "The jacobian of the user-provided function is independent of input "
                    f"{i}. This is not allowed in strict mode when create_graph=True.")
            out[k].append(g)
    return out


def _jacrev_vectorized(outputs, inputs, create_graph, chunk_size):
    """All rows through _batched_vjp, chunk_size rows per call, split back by output."""
    from .._creation import zeros
    numels = [o.numel() for o in outputs]
    total = sum(numels)
    flat = tuple(o.reshape(-1) for o in outputs)
    per_row = 0
    if isinstance(chunk_size, str):                     # "auto"
        per_row = _graph_bytes(outputs) + _nbytes(outputs) + _nbytes(inputs)
    step = _resolve_chunk(chunk_size, total, per_row, _device_of(inputs, outputs))
    pieces = [[] for _ in inputs]
    for start in range(0, total, step):
        stop = min(start + step, total)
        vj = _batched_vjp(flat, inputs, _basis_chunk(outputs, start, stop), create_graph)
        for p, g, inp in zip(pieces, vj, inputs):
            p.append(zeros((stop - start, *inp.shape), dtype=inp.dtype, device=inp.device)
                     if g is None else g)
    jac = [[] for _ in outputs]
    for p, inp in zip(pieces, inputs):
        full = _cat(p) if p else zeros((0, *inp.shape), dtype=inp.dtype, device=inp.device)
        offset = 0
        for i, (out, n) in enumerate(zip(outputs, numels)):
            jac[i].append(full[offset:offset + n].reshape(*out.shape, *inp.shape))
            offset += n
    return tuple(tuple(row) for row in jac)


def _forward_mode_strict(strict):
    """jacobian's first refusal for strategy="forward-mode" (before the inputs are read)."""
    if strict:
        raise RuntimeError(
            "torch.autograd.functional.jacobian: `strict=True` and `strategy=\"forward-mode\"` "
            "are not supported together (yet). Please either set `strict=False` or "
            "`strategy=\"reverse-mode\"`.")


def _forward_mode_inputs(inputs, vectorize):
    """jacobian's refusals for strategy="forward-mode" of the tupled inputs, in PyTorch's order."""
    for t in inputs:
        if not t.dtype.is_floating_point:
            raise ValueError(f"Expected primal to be floating point or complex, but got: "
                             f"torch.{t.dtype.name}")
    if not vectorize:
        raise NotImplementedError(
            "Computing Jacobian using forward-AD or forward-over-reverse Hessian is"
            "only implemented for `vectorize=True`.")


def _jacfwd(func, inputs, strict, vectorize, chunk_size):
    _forward_mode_strict(strict)
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
    _forward_mode_inputs(inputs, vectorize)
    is_outputs_tuple, jac = _jacfwd_vectorized(func, inputs, chunk_size)
    return _unpack2(jac, is_outputs_tuple, is_inputs_tuple)


def _jacfwd_vectorized(func, inputs, chunk_size):
    """All columns through _batched_jvp, chunk_size columns per call, split back by input:
    (is the output a tuple, the Jacobian as a tuple over outputs of tuples over inputs)."""
    def checked(*args):
        out = func(*args)
        _as_tuple(out, "outputs", None)          # PyTorch's message, "given to None" included
        return out

    numels = [t.numel() for t in inputs]
    total = sum(numels)
    per_col = 0
    if isinstance(chunk_size, str):                     # "auto"
        with _mode.enable_grad():
            probe = _as_tuple(checked(*_grad_preprocess(inputs, False, True)), "outputs",
                              None)[1]
        per_col = 2 * (_graph_bytes(probe) + _nbytes(probe)) + _nbytes(inputs)
    step = _resolve_chunk(chunk_size, total, per_col, _device_of(inputs))
    pieces, is_outputs_tuple, outputs = None, False, ()
    for start in range(0, max(total, 1), step):
        stop = min(start + step, total)
        tangents = _basis_chunk(inputs, start, stop, flat=False)
        is_outputs_tuple, outputs, jv = _batched_jvp(checked, inputs, tangents)
        pieces = [[] for _ in outputs] if pieces is None else pieces
        for p, g in zip(pieces, jv):
            p.append(g)
    jac = []
    for p, out in zip(pieces, outputs):
        full = _cat(p)                                   # (total, *out.shape)
        row, offset = [], 0
        for inp, n in zip(inputs, numels):
            block = full[offset:offset + n]               # (n, *out.shape): columns first
            block = block.permute(*range(1, block.ndim), 0)
            row.append(block.reshape(*out.shape, *inp.shape))
            offset += n
        jac.append(tuple(row))
    return is_outputs_tuple, tuple(jac)


# ----- hessian, vhp, hvp ------------------------------------------------------------------------
@_one_scope
def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """Same as `torch.autograd.functional.hessian`."""
    _check_func(func, "hessian")
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise ValueError('Expected strategy to be either "forward-mode" or "reverse-mode", but '
                         f"got {outer_jacobian_strategy!r}.")

    res = jacobian(_GradientOf(func, strict, outer_jacobian_strategy), inputs,
                   create_graph=create_graph, strict=strict, vectorize=vectorize,
                   strategy=outer_jacobian_strategy)
    return _unpack2(res, is_inputs_tuple, is_inputs_tuple)


class _GradientOf:
    """The gradient of a single-output `func` (with a graph): the function whose Jacobian is
    hessian's result. A picklable object, so gv.distributed ships it to workers."""

    def __init__(self, func, strict, outer_jacobian_strategy):
        self.func, self.strict, self.strategy = func, strict, outer_jacobian_strategy

    def single_output(self, *inp):
        out = self.func(*inp)
        is_out_tuple, t_out = _as_tuple(out, "outputs of the user-provided function",
                                        "hessian")
        _check_requires_grad(t_out, self.strict)
        if is_out_tuple or not isinstance(out, Tensor):
            raise RuntimeError("The function given to hessian should return a single Tensor")
        if out.numel() != 1:
            raise RuntimeError("The Tensor returned by the function given to hessian should "
                               "contain a single element")
        return out.squeeze()

    def __call__(self, *inp):
        if self.strategy == "forward-mode":
            inp = tuple(t.requires_grad_(True) for t in inp)
        jac = jacobian(self.single_output, inp, create_graph=True)
        _check_requires_grad(jac, self.strict, "jacobian")
        return jac


def _scalar_output(func, inputs, v, create_graph, strict, fn_name):
    """vhp's and hvp's common start, under enable_grad: (is the input a tuple, the inputs, v,
    the outputs, the gradient of the single output with a graph)."""
    is_inputs_tuple, inputs, v = _inputs_and_v(inputs, v, create_graph, fn_name)
    outputs = func(*inputs)
    is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function",
                                          fn_name)
    _check_requires_grad(outputs, strict)
    if is_outputs_tuple or not isinstance(outputs[0], Tensor):
        raise RuntimeError(f"The function given to {fn_name} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise RuntimeError(f"The Tensor returned by the function given to {fn_name} should "
                           "contain a single element")
    jac = _autograd_grad(outputs, inputs, None, create_graph=True)
    _check_requires_grad(jac, strict, "jacobian")
    return is_inputs_tuple, inputs, v, outputs, jac


@_one_scope
def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """Same as `torch.autograd.functional.vhp`."""
    _check_func(func, "vhp")
    with _mode.enable_grad():
        is_inputs_tuple, inputs, v, outputs, jac = _scalar_output(
            func, inputs, v, create_graph, strict, "vhp")
    with _mode.set_grad_enabled(True if create_graph else _mode.is_grad_enabled()):
        grads = _autograd_grad(jac, inputs, v, create_graph)
        result = _fill_in_zeros(grads, inputs, strict, create_graph, "double_back")
    return (_grad_postprocess(outputs, create_graph)[0],
            _unpack(_grad_postprocess(result, create_graph), is_inputs_tuple))


@_one_scope
def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """Same as `torch.autograd.functional.hvp` (by the double-backward trick, like PyTorch)."""
    from .._creation import zeros_like
    _check_func(func, "hvp")
    with _mode.enable_grad():
        is_inputs_tuple, inputs, v, outputs, jac = _scalar_output(
            func, inputs, v, create_graph, strict, "hvp")
        grad_jac = tuple(zeros_like(t, requires_grad=True) for t in inputs)
        double_back = _autograd_grad(jac, inputs, grad_jac, create_graph=True)
        _check_requires_grad(jac, strict, "hessian")       # NOTE: PyTorch checks jac here too
    with _mode.set_grad_enabled(True if create_graph else _mode.is_grad_enabled()):
        grads = _autograd_grad(double_back, grad_jac, v, create_graph)
        result = _fill_in_zeros(grads, inputs, strict, create_graph, "double_back_trick")
    return (_grad_postprocess(outputs, create_graph)[0],
            _unpack(_grad_postprocess(result, create_graph), is_inputs_tuple))
