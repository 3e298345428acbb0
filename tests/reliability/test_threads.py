"""Threads: grad mode is per thread, as in PyTorch, and eight threads running different vjps at
once (on the CPU; on the GPU with one CUDA stream per thread) all get the single-threaded
answers."""

from __future__ import annotations

import threading
import zlib

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device

from ._common import LONG, functional, host

TIMEOUT = 60


def _run_threads(targets):
    """Run each target in its own thread, started together; re-raise the first failure."""
    errors = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn):
        def run():
            try:
                barrier.wait(TIMEOUT)
                fn()
            except BaseException as exc:  # noqa: BLE001  (reported in the main thread)
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


# ----- grad mode is per thread --------------------------------------------------------------------
def test_no_grad_in_one_thread_does_not_affect_another():
    inside = threading.Event()
    checked = threading.Event()
    seen = {}

    def worker():
        with gv.no_grad():
            inside.set()
            assert checked.wait(TIMEOUT)
            x = gv.ones(3, requires_grad=True)
            seen["worker"] = (gv.is_grad_enabled(), (x * 2).requires_grad)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    assert inside.wait(TIMEOUT)
    x = gv.ones(3, requires_grad=True)
    seen["main"] = (gv.is_grad_enabled(), (x * 2).requires_grad)
    out, g = gv.vjp(lambda a: a * a, x, gv.ones(3))           # still works while the other
    checked.set()                                               # thread is in no_grad
    t.join(TIMEOUT)
    assert seen == {"main": (True, True), "worker": (False, False)}
    np.testing.assert_array_equal(g.numpy(), np.full(3, 2.0))


def test_new_thread_starts_with_grad_enabled():
    """As in PyTorch: the mode is thread-local and a new thread starts enabled."""
    seen = []
    with gv.no_grad():
        t = threading.Thread(target=lambda: seen.append(gv.is_grad_enabled()), daemon=True)
        t.start()
        t.join(TIMEOUT)
        assert not gv.is_grad_enabled()
    assert seen == [True]


def test_set_grad_enabled_in_threads_interleaved():
    """Each thread flips its own mode many times while the others do the same."""
    def worker(mode):
        def run():
            for _ in range(200):
                with gv.set_grad_enabled(mode):
                    x = gv.ones(2, requires_grad=True)
                    assert gv.is_grad_enabled() is mode
                    assert (x * 3).requires_grad is mode
                assert gv.is_grad_enabled()
        return run

    _run_threads([worker(i % 2 == 0) for i in range(8)])


# ----- eight different vjps at once ---------------------------------------------------------------
def _nnf():
    return gv.nn.functional


PROGRAMS = {
    # name -> (func, input shapes, v shape, options)
    "exp-reducer": (lambda x: x.exp().sum(dim=1), [(6, 5)], (6,), {}),
    "softmax": (lambda x: _nnf().softmax(x, dim=-1), [(4, 7)], (4, 7), {}),
    "matmul-chain": (lambda a, b: (a @ b).tanh() @ b.t(), [(5, 4), (4, 6)], (5, 4), {}),
    "logsumexp-var": (lambda x: x.logsumexp(dim=0) * x.var(dim=0), [(8, 3)], (3,), {}),
    "sigmoid-pow": (lambda x, y: x.sigmoid() ** 2 / (1 + y * y), [(9,), (9,)], (9,), {}),
    "cumsum-flip": (lambda x: x.cumsum(0).flip(0) * x, [(12,)], (12,), {}),
    "norm-create-graph": (lambda x: x.norm(dim=1), [(3, 5)], (3,), {"create_graph": True}),
    "cross-entropy": (lambda x: _nnf().cross_entropy(x, gv.tensor([0, 2, 1, 1],
                                                                  device=x.device)),
                      [(4, 3)], (), {}),
}
REPEATS = 100 if LONG else 25


def _data(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    _, shapes, vshape, _ = PROGRAMS[name]
    return [rng.uniform(-1, 1, s) for s in shapes], rng.uniform(-1, 1, vshape)


def _program_vjp(name, device, grad_enabled=True):
    func, _, _, kw = PROGRAMS[name]
    xs, v = _data(name)
    inputs = tuple(gv.tensor(a, device=device) for a in xs)
    with gv.set_grad_enabled(grad_enabled):
        out, grads = gv.vjp(func, inputs, gv.tensor(v, device=device), **kw)
        assert gv.is_grad_enabled() is grad_enabled
    return [host(out)] + [host(g) for g in grads]


def _check(results, reference):
    for name, runs in results.items():
        for got in runs:
            for g, w in zip(got, reference[name]):
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15, err_msg=name)


def test_eight_threads_different_vjps_match_single_threaded():
    reference = {name: _program_vjp(name, "cpu") for name in PROGRAMS}
    results = {name: [] for name in PROGRAMS}

    def worker(i, name):
        def run():
            for k in range(REPEATS):
                # half the threads (and half the calls) run under no_grad: vjp works either way
                results[name].append(_program_vjp(name, "cpu", grad_enabled=(i + k) % 2 == 0))
        return run

    _run_threads([worker(i, name) for i, name in enumerate(PROGRAMS)])
    assert all(len(r) == REPEATS for r in results.values())
    _check(results, reference)


def test_eight_threads_same_inputs_shared():
    """Threads share the caller's input tensors: none sees another's graph or gradient."""
    x = gv.tensor(np.linspace(-1, 1, 20).reshape(4, 5))
    funcs = [lambda a, k=k: (a * (k + 1)).sin().sum(dim=1) for k in range(8)]
    want = [gv.vjp(f, x, gv.ones(4, dtype=gv.float64))[1].numpy() for f in funcs]
    results = [[] for _ in funcs]

    def worker(k):
        def run():
            for _ in range(REPEATS):
                results[k].append(gv.vjp(funcs[k], x, gv.ones(4, dtype=gv.float64))[1].numpy())
        return run

    _run_threads([worker(k) for k in range(8)])
    for k, runs in enumerate(results):
        for got in runs:
            np.testing.assert_allclose(got, want[k], rtol=1e-12)
    assert x.grad is None and not x.requires_grad


@pytest.mark.parametrize("name", ["jvp", "hessian", "hvp"])
def test_threads_family(name):
    fn = functional(name)
    x = gv.tensor(np.linspace(-1, 1, 6))

    def func(a):
        return (a.exp() * a).sum()

    def call():
        r = fn(func, x) if name == "hessian" else fn(func, x, gv.ones(6, dtype=gv.float64))
        return [host(t) for t in (r if isinstance(r, tuple) else (r,))]

    want = call()
    results = []

    def run():
        for _ in range(max(REPEATS // 5, 3)):
            results.append(call())

    _run_threads([run] * 8)
    for got in results:
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12)


@pytest.mark.gpu
def test_eight_threads_one_cuda_stream_each():
    cupy = _device.cupy_module()

    reference = {name: _program_vjp(name, "cpu") for name in PROGRAMS}
    for name in PROGRAMS:                                   # compile the kernels first
        _program_vjp(name, "cuda")
    results = {name: [] for name in PROGRAMS}
    streams = {}

    def worker(i, name):
        def run():
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                streams[name] = stream
                for k in range(REPEATS):
                    assert cupy.cuda.get_current_stream() == stream
                    results[name].append(_program_vjp(name, "cuda",
                                                      grad_enabled=(i + k) % 2 == 0))
                stream.synchronize()
        return run

    _run_threads([worker(i, name) for i, name in enumerate(PROGRAMS)])
    assert len({id(s) for s in streams.values()}) == len(PROGRAMS)
    for name, runs in results.items():
        assert len(runs) == REPEATS
        for got in runs:
            for g, w in zip(got, reference[name]):
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=name)
