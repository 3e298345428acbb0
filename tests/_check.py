"""gradcheck for the tests: float64 central differences, eps 1e-6, atol 1e-5, rtol 1e-3."""

from __future__ import annotations

import numpy as np

import gpuvjp as gv

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3


def _outputs(f, xs):
    out = f(*xs)
    return out if isinstance(out, tuple) else (out,)


def gradcheck(f, arrays, device="cpu", rng=None, eps=EPS, atol=ATOL, rtol=RTOL, full=None):
    """Compare gpuvjp's vjp of `f` at float64 `arrays` with central differences.

    Checks <u, vjp(v)> against <(f(x + eps u) - f(x - eps u)) / 2 eps, v> for a random
    direction u and cotangent v, and on tiny inputs (or `full=True`) the full Jacobian.
    """
    rng = rng or np.random.default_rng(0)
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    xs = tuple(gv.tensor(a, device=device) for a in arrays)

    def f_np(*arrs):
        with gv.no_grad():
            outs = _outputs(f, [gv.tensor(a, device=device) for a in arrs])
        return [o.numpy().astype(np.float64) for o in outs]

    outs0 = f_np(*arrays)
    vs = [rng.standard_normal(o.shape) for o in outs0]
    v_t = tuple(gv.tensor(v, device=device) for v in vs)
    _, grads = gv.vjp(lambda *a: _outputs(f, a), xs, v_t)
    grads = [g.numpy() for g in grads]
    for g, a in zip(grads, arrays):
        assert g.shape == a.shape, f"vjp shape {g.shape} != input shape {a.shape}"

    if all(a.size == 0 for a in arrays):
        return                        # nothing to perturb: the shapes above are the check
    us = [rng.standard_normal(a.shape) for a in arrays]
    plus = f_np(*[a + eps * u for a, u in zip(arrays, us)])
    minus = f_np(*[a - eps * u for a, u in zip(arrays, us)])
    numeric = sum(float(np.sum((p - m) / (2 * eps) * v)) for p, m, v in zip(plus, minus, vs))
    analytic = sum(float(np.sum(g * u)) for g, u in zip(grads, us))
    assert abs(numeric - analytic) <= atol + rtol * abs(numeric), \
        f"directional derivative: numeric {numeric} vs vjp {analytic}"

    if full or (full is None and sum(a.size for a in arrays) <= 12):
        _full_jacobian(f_np, arrays, outs0, xs, f, eps, atol, rtol)


def _full_jacobian(f_np, arrays, outs0, xs, f, eps, atol, rtol):
    for oi, o in enumerate(outs0):
        for k in range(o.size):
            v = [np.zeros(q.shape) for q in outs0]
            v[oi].reshape(-1)[k] = 1.0
            _, grads = gv.vjp(lambda *a: _outputs(f, a), xs,
                              tuple(gv.tensor(q, device=xs[0].device) for q in v))
            for ai, a in enumerate(arrays):
                for j in range(a.size):
                    d = np.zeros(a.size)
                    d[j] = eps
                    ap = [b.copy() for b in arrays]
                    am = [b.copy() for b in arrays]
                    ap[ai] = (a.reshape(-1) + d).reshape(a.shape)
                    am[ai] = (a.reshape(-1) - d).reshape(a.shape)
                    num = (f_np(*ap)[oi].reshape(-1)[k] - f_np(*am)[oi].reshape(-1)[k]) / (2 * eps)
                    ana = grads[ai].numpy().reshape(-1)[j]
                    assert abs(num - ana) <= atol + rtol * abs(num), \
                        f"J[out {oi}][{k}, in {ai}][{j}]: numeric {num} vs vjp {ana}"
