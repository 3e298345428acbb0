"""gv.distributed: jacobians, hessians and batches of vjps as tasks on a Dask cluster.

Design. This package owns the split of one autograd call into pure, idempotent tasks (rows of
a reverse-mode Jacobian, columns of a forward-mode one, ranges of samples of a batch of vjps),
the choice of their size, and the assembly of their blocks into Tensors or dask arrays. Each
task runs gpuvjp's own local machinery (`gpuvjp.autograd.functional`) on its worker's device,
so the numbers are those of `gv.jacobian`, `gv.hessian` and `gv.vjp`. It imports gpuvjp, and
dask and distributed only inside `_dask` and only when a function is called:
`import gpuvjp` never imports dask, and without the `gpuvjp[distributed]` extra a call raises
an ImportError that names it. It never touches the graph, the ops or the kernels, never starts
or configures a cluster (the caller's client does), and never retries a task itself: a user's
error is deterministic, and a lost worker's tasks are rescheduled by Dask's scheduler
(`distributed.scheduler.allowed-failures`).

`__init__` is the client side's planning and assembly; `_tasks` is what a worker runs (gpuvjp
only); `_dask` is every call into dask and distributed.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _device, _dtype
from .._tensor import Tensor
from ..autograd import functional as F

__all__ = ["jacobian", "hessian", "map_vjp"]


# ----- arguments --------------------------------------------------------------------------------
def _check_chunk_size(chunk_size, fn_name):
    """None (one task), "auto" or a positive int, as a ValueError naming `fn_name` otherwise."""
    return F._check_chunk_size(chunk_size, f"gpuvjp.distributed.{fn_name}")


def _refuse_create_graph(create_graph, fn_name):
    if create_graph:
        raise NotImplementedError(
            f"gpuvjp.distributed.{fn_name}: create_graph=True is not supported: a graph cannot "
            f"cross workers. Use gpuvjp.{fn_name} for a differentiable result.")


def _check_forward_mode(inputs, strict, vectorize):
    """The local jacobian's forward-mode refusals, in its order."""
    F._forward_mode_strict(strict)
    F._forward_mode_inputs(inputs, vectorize)


# ----- planning ---------------------------------------------------------------------------------
def _step(chunk_size, total, per_row, client, dev):
    """Rows (columns, samples) per task: all of them for None, the given int, or for "auto" at
    least 2 tasks per worker thread and at most what fits a quarter of the smallest free
    memory over the workers at three times the estimated bytes per row."""
    from . import _dask
    if chunk_size is None:
        return max(total, 1)
    if isinstance(chunk_size, int):
        return chunk_size
    spread = -(-total // (2 * _dask.threads(client)))
    fit = (_dask.free_bytes(client, dev.type) // 4) // max(3 * per_row, 1)
    return int(max(1, min(fit, spread)))


def _chunks(shape, step):
    """[(start, stop, lead)] over the flattened elements of a tensor of `shape`, `step` at a
    time: `lead` is the block's shape along this tensor's axes. Chunks hold whole slices
    along the leading axis when `step` allows, so the blocks tile the result without a
    reshape; otherwise `lead` is flat and the result is reshaped once assembled."""
    n = math.prod(shape)
    if not shape:
        return [(0, 1, ())]
    if n == 0:
        return []
    r = math.prod(shape[1:])
    if step >= r:
        step -= step % r
        return [(a, min(a + step, n), ((min(a + step, n) - a) // r, *shape[1:]))
                for a in range(0, n, step)]
    return [(a, min(a + step, n), (min(a + step, n) - a,)) for a in range(0, n, step)]


class _Pair:
    """One block of the result (an output with an input, or one stacked result of map_vjp):
    its blocks (a future, the index in its task's tuple, the block's shape), the axis they are
    concatenated along, the final shape and dtype."""

    def __init__(self, axis, shape, dtype):
        self.axis, self.shape, self.dtype = axis, tuple(shape), dtype
        self.blocks = []


# ----- assembly ---------------------------------------------------------------------------------
def _to_device(a, dev):
    """Block `a` (NumPy or CuPy, from any worker) as an array of `dev`."""
    if dev.type == "cpu":
        return a if isinstance(a, np.ndarray) else a.get()
    if _device.is_cupy_array(a) and a.device.id == dev.index:
        return a
    # through the host: peer access between devices may be unavailable
    return _device.cupy_module().asarray(a if isinstance(a, np.ndarray) else a.get())


def _assemble(call, pairs, as_dask, dev):
    """Each pair's blocks as one Tensor on `dev`, or as one dask array of the workers' blocks."""
    from . import _dask
    futures = list(dict.fromkeys(f for p in pairs for f, _, _ in p.blocks))
    if as_dask:
        counts = {}
        for p in pairs:
            for f, j, _ in p.blocks:
                counts[f] = max(counts.get(f, 0), j + 1)
        split = dict(zip(futures, call.blocks(futures, [counts[f] for f in futures])))
        return [_dask.dask_concat([split[f][j] for f, j, _ in p.blocks],
                                  [s for _, _, s in p.blocks], p.axis, p.shape, p.dtype, dev)
                for p in pairs]
    results = dict(zip(futures, call.gather(futures)))
    out = []
    xp = _device.array_module(dev)
    with _device.use(dev):
        for p in pairs:
            parts = [_to_device(results[f][j], dev) for f, j, _ in p.blocks]
            if not parts:
                full = xp.zeros(p.shape, dtype=p.dtype)
            else:
                full = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=p.axis)
            out.append(Tensor._make(full.reshape(p.shape), dev, _dtype.to_dtype(p.dtype.name),
                                    None))
    return out


def _np_dtype(name):
    return _dtype.to_dtype(name).np


# ----- jacobian ---------------------------------------------------------------------------------
def _jacobian(fn_name, func, inputs, strict, vectorize, strategy, client, chunk_size, as_dask):
    """The Jacobian of `func` at the tuple `inputs` on `client`: (is the output a tuple, a
    tuple over outputs of tuples over inputs of Tensors or dask arrays)."""
    from . import _dask, _tasks
    dev = F._device_of(inputs)
    call = _dask.Call(client, fn_name, (func, inputs))
    probe_mode = "forward-mode" if strategy == "forward-mode" else "reverse-mode"
    is_out_tuple, out_meta, (graph, out_bytes, in_bytes) = call.result(
        call.submit(_tasks.probe, fn_name, probe_mode, strict, label="probe"))
    if vectorize and strict:
        raise RuntimeError(
            "torch.autograd.functional.jacobian: `strict=True` and `vectorized=True` are not "
            "supported together. Please either set `strict=False` or `vectorize=False`.")
    in_meta = [(tuple(t.shape), t.dtype.name) for t in inputs]
    out_numel = sum(math.prod(s) for s, _ in out_meta)
    in_numel = sum(math.prod(s) for s, _ in in_meta)
    forward = strategy == "forward-mode" or (strategy == "auto" and vectorize
                                             and in_numel < out_numel)
    pairs = [[None] * len(in_meta) for _ in out_meta]
    if forward:
        per_col = 2 * (graph + out_bytes) + in_bytes
        step = _step(chunk_size, in_numel, per_col, client, dev)
        for i, (oshape, odt) in enumerate(out_meta):
            for k, (ishape, _) in enumerate(in_meta):
                pairs[i][k] = _Pair(len(oshape), (*oshape, *ishape), _np_dtype(odt))
        offset = 0
        for k, (ishape, _) in enumerate(in_meta):
            for a, b, lead in _chunks(ishape, step):
                shapes = [(*oshape, *lead) for oshape, _ in out_meta]
                f = call.submit(_tasks.jacobian_columns, k, offset, a, b, shapes,
                                [odt for _, odt in out_meta], label="columns")
                for i in range(len(out_meta)):
                    pairs[i][k].blocks.append((f, i, shapes[i]))
            offset += math.prod(ishape)
    else:
        step = _step(chunk_size, out_numel, graph + out_bytes + in_bytes, client, dev)
        for i, (oshape, _) in enumerate(out_meta):
            for k, (ishape, idt) in enumerate(in_meta):
                pairs[i][k] = _Pair(0, (*oshape, *ishape), _np_dtype(idt))
            for a, b, lead in _chunks(oshape, step):
                shapes = [(*lead, *ishape) for ishape, _ in in_meta]
                f = call.submit(_tasks.jacobian_rows, i, a, b, vectorize, strict, shapes,
                                [idt for _, idt in in_meta], label="rows")
                for k in range(len(in_meta)):
                    pairs[i][k].blocks.append((f, k, shapes[k]))
    call.log_plan("columns" if forward else "rows", step)
    flat = _assemble(call, [p for row in pairs for p in row], as_dask, dev)
    n = len(in_meta)
    return is_out_tuple, tuple(tuple(flat[i * n:(i + 1) * n]) for i in range(len(out_meta)))


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode", *, client=None, chunk_size="auto", as_dask=False):
    """The Jacobian of `func` at `inputs`, computed as tasks on a Dask cluster.

    Computes what `gv.jacobian` computes, with the same arguments, defaults and result
    structure, but the rows (reverse mode) or columns (forward mode) of the Jacobian are split
    into chunks, and each chunk is one task that runs gpuvjp's local jacobian on its worker's
    device (the GPU of a dask-cuda worker, the CPU of a plain one).

    Args:
        func: a function of Tensors returning a Tensor or a tuple of Tensors. It is shipped
            to the workers with cloudpickle where pickle cannot ship it, so lambdas and
            closures over Tensors work.
        inputs: a Tensor or a tuple of Tensors. They (and func) go to every worker once per
            call; a cuda Tensor arrives on each worker's current device (so the tasks run on
            the workers' GPUs), a cpu Tensor on its cpu.
        create_graph: must be False: a graph cannot cross workers (NotImplementedError).
        strict, vectorize, strategy: as `gv.jacobian` (`strategy` "reverse-mode",
            "forward-mode" or "auto").
        client: the `distributed.Client` to run on; None uses the default client.
        chunk_size: rows (or columns) per task: "auto" (at least 2 tasks per worker thread,
            each fitting the smallest free device memory over the workers), an int > 0, or
            None (one task).
        as_dask: False gathers the result into Tensors on the device of `inputs`; True
            returns `dask.array`s whose blocks are the workers' arrays (CuPy on GPU workers,
            NumPy on CPU workers), computed and held on the workers, never gathered.

    Returns:
        The Jacobian in `gv.jacobian`'s nesting: a Tensor (or dask array) of shape
        (*output.shape, *input.shape), or tuples of them for tuple outputs and inputs.

    Raises:
        ImportError without dask and distributed (the `gpuvjp[distributed]` extra);
        RuntimeError when client is None and there is no default client; whatever
        `gv.jacobian` raises for bad arguments; an error raised by `func` on a worker, with its
        own type and message.

    Example:
        >>> from distributed import Client, LocalCluster
        >>> client = Client(LocalCluster(n_workers=2, processes=True))  # doctest: +SKIP
        >>> x = gv.tensor([1.0, 2.0], dtype=gv.float64)
        >>> gv.distributed.jacobian(lambda t: t.exp(), x, client=client)  # doctest: +SKIP
        tensor([[2.7183, 0.0000],
                [0.0000, 7.3891]], dtype=torch.float64)

    Matches `torch.autograd.functional.jacobian`, except that create_graph=True is refused.
    """
    F._check_func(func, "jacobian")
    if strategy not in F._STRATEGIES:
        raise ValueError('Expected strategy to be either "forward-mode", "reverse-mode" or '
                         f'"auto", but got {strategy!r}. Hint: If your function has more '
                         'outputs than inputs, "forward-mode" tends to be more performant. '
                         'Otherwise, prefer to use "reverse-mode".')
    chunk_size = _check_chunk_size(chunk_size, "jacobian")
    _refuse_create_graph(create_graph, "jacobian")
    is_inputs_tuple, inputs = F._as_tuple(inputs, "inputs", "jacobian")
    if strategy == "forward-mode":
        _check_forward_mode(inputs, strict, vectorize)
    from . import _dask
    client = _dask.get_client(client, "jacobian")
    is_out_tuple, jac = _jacobian("jacobian", func, inputs, strict, vectorize, strategy, client,
                                  chunk_size, as_dask)
    return F._unpack2(jac, is_out_tuple, is_inputs_tuple)


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode", *, client=None, chunk_size="auto",
            as_dask=False):
    """The Hessian of a single-output `func` at `inputs`, computed as tasks on a Dask cluster.

    The Jacobian of `func`'s gradient, split into tasks as `gv.distributed.jacobian` splits
    one (rows, or columns with outer_jacobian_strategy="forward-mode"); the arguments are
    `gv.hessian`'s, plus `client`, `chunk_size` and `as_dask` as in
    `gv.distributed.jacobian`. create_graph=True is refused (NotImplementedError).

    Returns:
        The Hessian in `gv.hessian`'s nesting: a Tensor (or dask array) of shape
        (*input.shape, *input.shape), or a tuple of tuples of them for tuple inputs.

    Example:
        >>> x = gv.tensor([1.0, 2.0], dtype=gv.float64)
        >>> gv.distributed.hessian(lambda t: t.pow(3).sum(), x)  # doctest: +SKIP
        tensor([[ 6.,  0.],
                [ 0., 12.]], dtype=torch.float64)

    Matches `torch.autograd.functional.hessian`, except that create_graph=True is refused.
    """
    F._check_func(func, "hessian")
    is_inputs_tuple, inputs = F._as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise ValueError('Expected strategy to be either "forward-mode" or "reverse-mode", but '
                         f"got {outer_jacobian_strategy!r}.")
    chunk_size = _check_chunk_size(chunk_size, "hessian")
    _refuse_create_graph(create_graph, "hessian")
    if outer_jacobian_strategy == "forward-mode":
        _check_forward_mode(inputs, strict, vectorize)
    from . import _dask
    client = _dask.get_client(client, "hessian")
    gradient = F._GradientOf(func, strict, outer_jacobian_strategy)
    _, hess = _jacobian("hessian", gradient, inputs, strict, vectorize, outer_jacobian_strategy,
                        client, chunk_size, as_dask)
    return F._unpack2(hess, is_inputs_tuple, is_inputs_tuple)


# ----- map_vjp ----------------------------------------------------------------------------------
def _batch(items, arg_name, batch=None):
    """The common leading size of `items`, checked against `batch` when given."""
    for i, t in enumerate(items):
        if t.ndim == 0:
            raise RuntimeError(f"gpuvjp.distributed.map_vjp: the {arg_name} are stacked along "
                               f"their leading axis, but the value at index {i} is 0-d")
        if batch is None:
            batch = t.shape[0]
        elif t.shape[0] != batch:
            raise RuntimeError(f"gpuvjp.distributed.map_vjp: the value at index {i} of {arg_name} "
                               f"has {t.shape[0]} samples along its leading axis, but the "
                               f"inputs have {batch}")
    return batch


def map_vjp(func, inputs, v=None, *, client=None, chunk_size="auto", as_dask=False):
    """Independent vjps of `func`, one per sample along the leading axis, as Dask tasks.

    For each b, computes `gv.vjp(func, inputs[b], v[b])` (each input and cotangent indexed
    along its leading axis), in tasks of chunk_size samples each, and stacks the results in
    order. func and the stacked inputs and cotangents go to every worker once per call.

    Args:
        func: a function of Tensors (one sample each) returning a Tensor or a tuple of them.
        inputs: a Tensor or a tuple of Tensors, each stacked along a leading axis of B
            samples.
        v: cotangents for func's outputs, stacked the same way (a Tensor or a tuple of them,
            in the structure of func's output); None when each sample's output is a single
            one-element Tensor.
        client, chunk_size, as_dask: as in `gv.distributed.jacobian` (chunk_size counts
            samples).

    Returns:
        (outputs, vjps): func's outputs stacked over the samples (a Tensor of shape
        (B, *output.shape), or a tuple in func's output structure) and the vjps stacked the
        same way in the structure of `inputs`; Tensors on the device of `inputs`, or dask
        arrays with as_dask=True.

    Raises:
        TypeError for inputs or v that are not Tensors or tuples of them; RuntimeError when
        their leading sizes differ or there are no samples; errors of `gv.vjp` and of `func`
        on a worker, with their own type and message.

    Example:
        >>> x = gv.rand(8, 3, dtype=gv.float64)
        >>> outs, vjps = gv.distributed.map_vjp(lambda t: t.exp().sum(), x)  # doctest: +SKIP
        >>> bool(gv.allclose(vjps, x.exp()))                                  # doctest: +SKIP
        True
    """
    from . import _dask, _tasks
    F._check_func(func, "map_vjp")
    is_inputs_tuple, ins = F._as_tuple(inputs, "inputs", "map_vjp")
    batch = _batch(ins, "inputs")
    if v is not None:
        _batch(F._as_tuple(v, "v", "map_vjp")[1], "v", batch)
    if not batch:
        raise RuntimeError("gpuvjp.distributed.map_vjp: the inputs hold no samples (their "
                           "leading axis has size 0)")
    chunk_size = _check_chunk_size(chunk_size, "map_vjp")
    client = _dask.get_client(client, "map_vjp")
    dev = F._device_of(ins)
    call = _dask.Call(client, "map_vjp", (func, ins, v))
    is_out_tuple, out_meta, per = call.result(
        call.submit(_tasks.probe_samples, label="probe"))
    in_meta = [(tuple(t.shape[1:]), t.dtype.name) for t in ins]
    metas = out_meta + in_meta
    pairs = [_Pair(0, (batch, *s), _np_dtype(dt)) for s, dt in metas]
    step = _step(chunk_size, batch, per, client, dev)
    for a in range(0, batch, step):
        b = min(a + step, batch)
        shapes = [(b - a, *s) for s, _ in metas]
        f = call.submit(_tasks.vjp_samples, a, b, shapes[:len(out_meta)],
                        [dt for _, dt in out_meta], shapes[len(out_meta):],
                        [dt for _, dt in in_meta], label="samples")
        for j, p in enumerate(pairs):
            p.blocks.append((f, j, shapes[j]))
    call.log_plan("samples", step)
    res = _assemble(call, pairs, as_dask, dev)
    outs, vjps = tuple(res[:len(out_meta)]), tuple(res[len(out_meta):])
    return F._unpack(outs, is_out_tuple), F._unpack(vjps, is_inputs_tuple)
