"""gv.distributed against the local functionals on a 2-worker LocalCluster: jacobian, hessian
and map_vjp equal gv.jacobian, gv.hessian and gv.vjp (values, dtypes, shapes, nesting) for
several shapes, both strategies, vectorize both ways, tuple inputs and outputs, chunk sizes
that tile the result and that do not, and both as_dask modes; closures over Tensors."""

import os

import numpy as np
import pytest

import gpuvjp as gv
from tests.distributed.conftest import DASK_REASON

pytest.importorskip("distributed", reason=DASK_REASON)
import dask.array as da          # noqa: E402

RTOL, ATOL = 1e-12, 1e-14


def _t(seed, *shape):
    return gv.tensor(np.random.default_rng(seed).uniform(-1, 1, shape), dtype=gv.float64)


W = _t(0, 5, 4)
A = _t(1, 4, 2)

# name: (function, inputs)
CASES = {
    "vector": (lambda x: (W @ x).tanh(), _t(2, 4)),
    "matrix": (lambda x: x.exp() @ A * x.sum(), _t(3, 3, 4)),
    "scalar": (lambda x: x.sin() * 3, _t(4)),
    "tuple": (lambda x, y: (x.sum() * y.tanh(), (x * 2).exp()), (_t(5, 3), _t(6, 2, 2))),
}
# (strategy, vectorize, chunk_size, as_dask)
MODES = [
    ("reverse-mode", False, "auto", False),
    ("reverse-mode", True, 1, True),              # 1 row: blocks cut across a leading slice
    ("reverse-mode", True, None, False),
    ("forward-mode", True, 3, True),              # 3 columns: a (3, 4) input's cut too
    ("forward-mode", True, "auto", False),
    ("auto", True, 2, True),
]


def _leaves(x):
    return [y for item in x for y in _leaves(item)] if isinstance(x, tuple) else [x]


def _nesting(x):
    return tuple(_nesting(y) for y in x) if isinstance(x, tuple) else None


def _check(got, want, client=None):
    """Same nesting, shapes, dtypes and values; dask arrays (with their client) hold NumPy
    blocks."""
    assert _nesting(got) == _nesting(want)
    for g, w in zip(_leaves(got), _leaves(want)):
        if client is not None:
            assert isinstance(g, da.Array)
            blocks = client.gather(client.compute(list(g.to_delayed().ravel())))
            assert blocks and all(type(b) is np.ndarray for b in blocks)
            g = client.compute(g).result()
        else:
            assert isinstance(g, gv.Tensor) and g.device == w.device
            assert g.dtype == w.dtype and not g.requires_grad
            g = g.numpy()
        assert g.shape == tuple(w.shape) and g.dtype == w.numpy().dtype
        np.testing.assert_allclose(g, w.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(map(str, m)))
@pytest.mark.parametrize("case", CASES)
def test_jacobian_equals_local(client, case, mode):
    strategy, vectorize, chunk_size, as_dask = mode
    func, inputs = CASES[case]
    want = gv.jacobian(func, inputs, vectorize=vectorize, strategy=strategy)
    got = gv.distributed.jacobian(func, inputs, vectorize=vectorize, strategy=strategy,
                                  client=client, chunk_size=chunk_size, as_dask=as_dask)
    _check(got, want, client if as_dask else None)


def test_jacobian_blocks_are_the_tasks_arrays(client):
    """Aligned chunks tile the result: one block per task, no reshape or rechunk after it."""
    func, x = CASES["matrix"]                     # (3, 2) outputs: 2 rows per leading slice
    got = gv.distributed.jacobian(func, x, vectorize=True, client=client, chunk_size=4,
                                  as_dask=True)
    assert got.chunks == ((2, 1), (2,), (3,), (4,))
    layers = [name.split("-")[0] for name in got.dask.layers]
    assert sorted(layers) == ["concatenate", "from", "from"]      # one block per task
    cut = gv.distributed.jacobian(func, x, vectorize=True, client=client, chunk_size=1,
                                  as_dask=True)               # 1 row: half a leading slice
    assert "reshape" in [name.split("-")[0] for name in cut.dask.layers]
    auto = gv.distributed.jacobian(func, x, vectorize=True, client=client, as_dask=True)
    assert auto.numblocks == (3, 1, 1, 1)         # 6 rows over 2 threads: 2 rows a task
    np.testing.assert_allclose(client.compute(auto).result(), client.compute(got).result(),
                               rtol=0, atol=0)


def test_auto_chunks_from_the_workers_memory(client, monkeypatch):
    """"auto": at least 2 tasks per worker, and fewer rows per task where the smallest free
    memory over the workers (client.run on each) is short."""
    from gpuvjp.distributed import _dask
    free = _dask.free_bytes(client, "cpu")
    assert 0 < free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    w, x = _t(20, 40, 8), _t(21, 8)

    def f(t):
        return (w @ t).tanh()
    want = gv.jacobian(f, x)
    got = gv.distributed.jacobian(f, x, client=client, as_dask=True)
    assert got.chunks[0] == (10,) * 4               # 40 rows, 2 workers: 2 tasks each
    monkeypatch.setattr(_dask, "free_bytes", lambda client, device_type: 4 * 3 * 2000)
    short = gv.distributed.jacobian(f, x, client=client, as_dask=True)
    assert len(short.chunks[0]) > 4                 # under 2000 bytes a row: fewer rows a task
    for arr in (got, short):
        np.testing.assert_allclose(client.compute(arr).result(), want.numpy(), rtol=RTOL,
                                   atol=ATOL)


HESSIAN_CASES = {
    "vector": (lambda x: (W @ x).tanh().sum(), _t(7, 4)),
    "tuple": (lambda x, y: (x.exp() * y.sum()).sum() + (y * y).sum(), (_t(8, 3), _t(9, 2, 2))),
}


@pytest.mark.parametrize("mode", [("reverse-mode", False, "auto", False),
                                  ("reverse-mode", True, 2, True),
                                  ("forward-mode", True, 3, False)],
                         ids=lambda m: "-".join(map(str, m)))
@pytest.mark.parametrize("case", HESSIAN_CASES)
def test_hessian_equals_local(client, case, mode):
    strategy, vectorize, chunk_size, as_dask = mode
    func, inputs = HESSIAN_CASES[case]
    want = gv.hessian(func, inputs, vectorize=vectorize, outer_jacobian_strategy=strategy)
    got = gv.distributed.hessian(func, inputs, vectorize=vectorize,
                                 outer_jacobian_strategy=strategy, client=client,
                                 chunk_size=chunk_size, as_dask=as_dask)
    _check(got, want, client if as_dask else None)


MAP_CASES = {
    "one": (lambda x: (W @ x).tanh(), _t(10, 7, 4), _t(11, 7, 5)),
    "scalar-v-none": (lambda x: (x * x).exp().sum(), _t(12, 5, 2, 3), None),
    "tuple": (lambda x, y: ((x * y.sum()).sin(), y.exp()), (_t(13, 6, 3), _t(14, 6, 2)),
              (_t(15, 6, 3), _t(16, 6, 2))),
}


@pytest.mark.parametrize("chunk_size, as_dask", [("auto", False), (4, True)])
@pytest.mark.parametrize("case", MAP_CASES)
def test_map_vjp_equals_local_vjps(client, case, chunk_size, as_dask):
    func, inputs, v = MAP_CASES[case]
    ins = inputs if isinstance(inputs, tuple) else (inputs,)
    outs, vjps = [], []
    for b in range(ins[0].shape[0]):
        vb = None if v is None else v[b] if isinstance(v, gv.Tensor) else tuple(t[b] for t in v)
        o, g = gv.vjp(func, tuple(t[b] for t in ins) if isinstance(inputs, tuple)
                      else inputs[b], vb)
        outs.append(o)
        vjps.append(g)

    def stacked(items):
        if isinstance(items[0], tuple):
            return tuple(gv.stack([it[j] for it in items]) for j in range(len(items[0])))
        return gv.stack(items)

    got = gv.distributed.map_vjp(func, inputs, v, client=client, chunk_size=chunk_size,
                                 as_dask=as_dask)
    _check(got, (stacked(outs), stacked(vjps)), client if as_dask else None)


# ----- serialisation ---------------------------------------------------------------------------
def _make_closure():
    """A locally defined function over Tensors: a leaf that requires grad, a non-leaf and a
    view, reached through two levels of closures."""
    scale = gv.tensor([0.5, -1.5, 2.0], dtype=gv.float64, requires_grad=True)
    shift = (scale * 3).exp()                     # a non-leaf: pickles as a fresh leaf
    view = W.t()[1:, :3]

    def inner(x):
        return (x * scale + shift).tanh()

    def outer(x):
        return view @ inner(x)
    return outer


def test_closures_over_tensors_serialise(client):
    func, x = _make_closure(), _t(17, 3)
    want = gv.jacobian(func, x)
    _check(gv.distributed.jacobian(func, x, client=client, chunk_size=1), want)
    xs = _t(18, 4, 3)
    outs, vjps = gv.distributed.map_vjp(lambda t: func(t).sum(), xs, client=client)
    for b in range(4):
        o, g = gv.vjp(lambda t: func(t).sum(), xs[b])
        np.testing.assert_allclose(outs[b].numpy(), o.numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(vjps[b].numpy(), g.numpy(), rtol=RTOL, atol=ATOL)


def test_default_client_is_used(client):
    func, x = CASES["vector"]
    with client.as_current():
        got = gv.distributed.jacobian(func, x)
    _check(got, gv.jacobian(func, x))
