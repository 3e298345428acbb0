"""Worker side of gv.distributed: the tasks a Dask worker runs, written with gpuvjp only.

Each task takes the call's shipped payload (func, the inputs and, for map_vjp, the cotangents,
scattered once per call) and a range of rows, columns or samples, runs gpuvjp's local
machinery on the worker's device, and returns plain backing arrays (NumPy on cpu workers, CuPy
on cuda workers) already in their final block layout. Tasks are pure and idempotent: a task
lost with its worker is simply run again elsewhere. Nothing here imports dask.
"""

from __future__ import annotations

import contextlib

from .. import _device, _dtype, _lazy
from .._tensor import Tensor
from ..autograd import _mode
from ..autograd import functional as F


def _scope(inputs):
    """The compute scope of the inputs' device on this worker (a cuda tensor lands on the
    worker's current device when its payload is unpickled)."""
    for t in inputs:
        return _device.scope(t._dev)
    return contextlib.nullcontext()


def _arrays(tensors, shapes, dtypes):
    """The backing arrays of `tensors`, each reshaped to its block shape and in its dtype."""
    _lazy.force(tensors)
    out = []
    for t, shape, dt in zip(tensors, shapes, dtypes):
        a = t._array().reshape(shape)
        out.append(a if a.dtype == _dtype.to_dtype(dt).np else a.astype(_dtype.to_dtype(dt).np))
    return tuple(out)


def _zeros(shape, like):
    from .._creation import zeros
    return zeros(shape, dtype=like.dtype, device=like.device)


# ----- probes: structure, shapes, dtypes and a memory estimate, before any chunk is planned -----
def probe(payload, fn_name, mode, strict):
    """Run `func` once at the inputs: (is the output a tuple, [(shape, dtype name)] per output,
    (bytes of the graph, of the outputs, of the inputs)), from which the client estimates the
    bytes per Jacobian row or column."""
    func, inputs = payload
    with _scope(inputs), _mode.enable_grad():
        ins = F._grad_preprocess(inputs, False, need_graph=True, fn_name=fn_name)
        out = func(*ins)
        if mode == "forward-mode":
            F._as_tuple(out, "outputs", None)               # local forward mode's check
        is_tuple, outs = F._as_tuple(out, "outputs of the user-provided function", fn_name)
        F._check_requires_grad(outs, strict)
        sizes = (F._graph_bytes(outs), F._nbytes(outs), F._nbytes(ins))
        meta = [(tuple(o.shape), o.dtype.name) for o in outs]
    return is_tuple, meta, sizes


def probe_samples(payload):
    """map_vjp's probe, on sample 0: (is the output a tuple, [(shape, dtype name)] per output of
    one sample, estimated bytes that one sample's results and graph take)."""
    func, inputs, _ = payload
    sample = tuple(t[0] for t in inputs)
    with _scope(inputs), _mode.enable_grad():
        ins = F._grad_preprocess(sample, False, need_graph=True, fn_name="vjp")
        is_tuple, outs = F._as_tuple(func(*ins), "outputs of the user-provided function", "vjp")
        per = F._graph_bytes(outs) + 2 * F._nbytes(outs) + 2 * F._nbytes(ins)
        meta = [(tuple(o.shape), o.dtype.name) for o in outs]
    return is_tuple, meta, per


# ----- jacobian rows (reverse mode) and columns (forward mode) ----------------------------------
def jacobian_rows(payload, i, start, stop, vectorize, strict, shapes, dtypes):
    """Rows start:stop of output i's Jacobian: one array per input, in shapes[k]."""
    func, inputs = payload
    with _scope(inputs), _mode.enable_grad():
        ins = F._grad_preprocess(inputs, False, need_graph=True, fn_name="jacobian")
        outs = F._as_tuple(func(*ins), "outputs of the user-provided function", "jacobian")[1]
        out = outs[i]
        flat = out.reshape(-1)
        if vectorize:
            basis = F._basis_chunk((out,), start, stop)
            vj = F._batched_vjp((flat,), ins, basis, False)
            blocks = [_zeros((stop - start, *x.shape), x) if g is None else g
                      for g, x in zip(vj, ins)]
        else:
            rows = F._jacrev_sweeps(i, flat, ins, range(start, stop), False, strict)
            blocks = [F._stack(r) for r in rows]
        return _arrays(blocks, shapes, dtypes)


def jacobian_columns(payload, k, offset, start, stop, shapes, dtypes):
    """Columns start:stop of input k's Jacobian (input k's elements begin at `offset` of the
    flattened inputs): one array per output, in shapes[i], columns along its last axes."""
    func, inputs = payload

    def checked(*args):
        out = func(*args)
        F._as_tuple(out, "outputs", None)
        return out

    with _scope(inputs):
        tangents = F._basis_chunk(inputs, offset + start, offset + stop, flat=False)
        jv = F._batched_jvp(checked, inputs, tangents)[2]
        # each g is (m, *out.shape), columns first: move them last
        blocks = [g.permute(*range(1, g.ndim), 0) for g in jv]
        return _arrays(blocks, shapes, dtypes)


def _sample(v, b):
    """Sample b of the cotangents, in the structure the caller gave them (None, a Tensor or a
    tuple of Tensors)."""
    if v is None or isinstance(v, Tensor):
        return v if v is None else v[b]
    return tuple(t[b] for t in v)


# ----- map_vjp: one vjp per sample ---------------------------------------------------------------
def vjp_samples(payload, start, stop, out_shapes, out_dtypes, in_shapes, in_dtypes):
    """Samples start:stop: one array per output, then one per input (the vjps), each stacked
    over the samples."""
    from ..ops.shape import stack
    func, inputs, v = payload
    outs, vjps = [], []
    with _scope(inputs):
        for b in range(start, stop):
            x = tuple(t[b] for t in inputs)
            vb = _sample(v, b)
            o, g = F.vjp(func, x, vb)
            outs.append(o if isinstance(o, tuple) else (o,))
            vjps.append(g)
        out_blocks = [stack([o[i] for o in outs], 0) for i in range(len(out_shapes))]
        vjp_blocks = [stack([g[k] for g in vjps], 0) for k in range(len(in_shapes))]
        return _arrays(out_blocks + vjp_blocks, out_shapes + in_shapes, out_dtypes + in_dtypes)


# ----- the workers' memory, for chunk_size="auto" ------------------------------------------------
def free_bytes(device_type):
    """Memory a task may use on this worker: its current CUDA device's free bytes (plus what
    CuPy's pool holds unused) for "cuda", the available physical memory for "cpu"."""
    if device_type == "cpu":
        return int(F._free_bytes(_device.CPU))
    index = _device.cupy_module().cuda.Device().id
    return int(F._free_bytes(_device.parse_device(f"cuda:{index}")))

