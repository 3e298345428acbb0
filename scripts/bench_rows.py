"""Benchmark the row-wise ops (softmax, log_softmax, logsumexp, cross_entropy): one full vjp.

The same method as bench_vjp.py, whose machinery this reuses: the same NumPy data feeds
`gpuvjp.vjp`, `torch.autograd.functional.vjp` and, on a GPU when JAX has one, `jax.vjp` under
`jax.jit`; results are checked against torch's before timing; times are medians of single
synchronized calls with the libraries taking turns. `floor` is the fewest bytes the call must
move (the logits read once, each output and gradient written once, the cotangent read once) over
the copy bandwidth measured in the same run. gpuvjp runs these as one (max, sum) reduction pass
and one elementwise launch forward, and one fused launch backward.

    python3 scripts/bench_rows.py [--device cpu|cuda|all] [--out FILE] [--quick]
"""

import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_vjp as bv  # noqa: E402  (the shared machinery: adapters, timing, checks, table)

gv, torch = bv.gv, bv.torch


# ----- workloads: f(m, x) with m the module (gv, torch, or the JAX shim below) ------------------
def softmax(m, x):
    return m.nn.functional.softmax(x, dim=-1)


def log_softmax(m, x):
    return m.nn.functional.log_softmax(x, dim=-1)


def logsumexp(m, x):
    return m.logsumexp(x, 1)


_TARGETS = {}


def targets(m, x):
    """The class targets of a (N, C) batch on x's device, made once per library and shape."""
    key = (m.__name__, tuple(x.shape))
    if key not in _TARGETS:
        n, c = x.shape
        t = (np.arange(n, dtype=np.int64) * 7919) % c
        _TARGETS[key] = m.tensor(t, device=x.device) if hasattr(m, "tensor") else m.asarray(t)
    return _TARGETS[key]


def cross_entropy(m, x):
    return m.nn.functional.cross_entropy(x, targets(m, x))


def _ref_softmax(inputs, v, log):
    x = inputs[0].astype(np.float64)
    z = x - x.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1, keepdims=True))
    v = v.astype(np.float64)
    if log:
        return z - lse, (v - np.exp(z - lse) * v.sum(-1, keepdims=True),)
    y = np.exp(z - lse)
    return y, (y * (v - (v * y).sum(-1, keepdims=True)),)


def _ref_logsumexp(inputs, v):
    x = inputs[0].astype(np.float64)
    m = x.max(1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(1, keepdims=True)) + m
    return lse[:, 0], (v.astype(np.float64)[:, None] * np.exp(x - lse),)


def _ref_cross_entropy(inputs, v):
    x = inputs[0].astype(np.float64)
    n, c = x.shape
    t = (np.arange(n) * 7919) % c
    z = x - x.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    g = np.exp(logp)
    g[np.arange(n), t] -= 1
    return -logp[np.arange(n), t].mean(), (g * (float(v) / n),)


def workload(name, shape):
    n, c = shape
    elems = n * c * 4

    def make(rng):
        x = bv.uniform(rng, shape) * 4
        if name in ("softmax", "log_softmax"):
            return [x], bv.uniform(rng, shape)
        if name == "logsumexp":
            return [x], bv.uniform(rng, (n,))
        return [x], np.ones((), np.float32)

    func, ref, nbytes = {
        # read x and v, write y and gx
        "softmax": (softmax, lambda i, v: _ref_softmax(i, v, False), 4 * elems),
        "log_softmax": (log_softmax, lambda i, v: _ref_softmax(i, v, True), 4 * elems),
        # read x, write gx (the per-row output and cotangent are small)
        "logsumexp": (logsumexp, _ref_logsumexp, 2 * elems + 8 * n),
        "cross_entropy": (cross_entropy, _ref_cross_entropy, 2 * elems + 8 * n),
    }[name]
    return bv.Workload(name, shape, func, make, ref, nbytes)


def workloads(device, quick):
    if quick:
        shapes = [(64, 256)] if device == "cpu" else [(1024, 1024)]
    elif device == "cpu":
        shapes = [(256, 1024), (1024, 4096)]
    else:
        # short rows, model-sized rows, and vocabulary-sized rows
        shapes = [(65536, 128), (4096, 4096), (16384, 4096), (512, 131072)]
    return [workload(name, s) for s in shapes
            for name in ("softmax", "log_softmax", "logsumexp", "cross_entropy")]


# ----- the JAX shim -----------------------------------------------------------------------------
def jax_shim(jax):
    jnp, jnn = jax.numpy, jax.nn

    def jax_cross_entropy(x, t):
        logp = jnn.log_softmax(x, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))

    functional = types.SimpleNamespace(
        softmax=lambda x, dim: jnn.softmax(x, axis=dim),
        log_softmax=lambda x, dim: jnn.log_softmax(x, axis=dim),
        cross_entropy=jax_cross_entropy)
    return types.SimpleNamespace(__name__="jax", asarray=jnp.asarray,
                                 nn=types.SimpleNamespace(functional=functional),
                                 logsumexp=lambda x, dim: jax.scipy.special.logsumexp(x, axis=dim))


def libraries(device):
    libs = bv.libraries(device)
    for lib in libs:
        if isinstance(lib, bv.Jax):
            lib.m = jax_shim(lib.jax)
    return libs


if __name__ == "__main__":
    sys.exit(bv.main(workloads, libraries, "row-wise ops benchmark"))
