"""gradcheck and gradgradcheck: Jacobians from vjps against central differences."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from .._tensor import Tensor

__all__ = ["GradcheckError", "gradcheck", "gradgradcheck"]


class GradcheckError(RuntimeError):
    """Same as `torch.autograd.gradcheck.GradcheckError`."""


def _as_tuple(x):
    if isinstance(x, tuple):
        return x
    if isinstance(x, list):
        return tuple(x)
    return (x,)


def _differentiable(outputs):
    return tuple(o for o in _as_tuple(outputs) if o.requires_grad)


def _host_tensor(a):
    from .._creation import tensor
    return tensor(a)


# ----- gradcheck --------------------------------------------------------------------------------
def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              nondet_tol=0.0, check_undefined_grad=True, check_grad_dtypes=False,
              fast_mode=False):
    """Same as `torch.autograd.gradcheck` for real inputs (reverse mode only;
    `check_undefined_grad` has nothing to check: gpuvjp never passes undefined gradients)."""
    try:
        return _gradcheck(func, inputs, eps, atol, rtol, nondet_tol, check_grad_dtypes,
                          fast_mode)
    except GradcheckError:
        if raise_exception:
            raise
        return False


def _gradcheck(func, inputs, eps, atol, rtol, nondet_tol, check_grad_dtypes, fast_mode):
    inputs = _as_tuple(inputs)
    diff_idx = _check_inputs(inputs)
    func_out = _as_tuple(func(*inputs))
    outputs = _differentiable(func_out)
    if not outputs:
        for per_output in _numerical_jacobian(func, inputs, diff_idx, eps):
            if any(np.any(j != 0) for j in per_output):
                raise GradcheckError("Numerical gradient for function expected to be zero")
        return True
    if fast_mode:
        _fast_check(func, inputs, diff_idx, func_out, outputs, eps, atol, rtol)
    else:
        _slow_check(func, inputs, diff_idx, func_out, outputs, eps, atol, rtol, nondet_tol,
                    check_grad_dtypes)
    _check_backward_mul_by_grad_output(inputs, diff_idx, outputs)
    return True


def _check_inputs(inputs):
    diff_idx = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            if x.dtype.name != "float64":
                warnings.warn(
                    f"Input #{i} requires gradient and is not a double precision floating "
                    "point or complex. This check will likely fail if all the inputs are not of "
                    "double precision floating point or complex. ", stacklevel=4)
            diff_idx.append(i)
    if not diff_idx:
        raise ValueError("gradcheck expects at least one input tensor to require gradient, "
                         "but none of them have requires_grad=True.")
    return diff_idx


# ----- numerical side: central differences in the inputs' dtype -------------------------------
@contextlib.contextmanager
def _perturbed(inputs, i, arr):
    """The caller's input i holding the values `arr` while the block runs, then its own again:
    as PyTorch's gradcheck, which perturbs the inputs in place, so that a function reading an
    input through a closure sees the perturbation too. The tensor's array is swapped rather
    than written into, so no other tensor (nor a pending fused expression) ever sees it."""
    from .._creation import tensor
    x = inputs[i]
    saved = x._data
    x._data = tensor(arr, dtype=x.dtype, device=x.device)._data
    try:
        yield inputs
    finally:
        x._data = saved


def _eval(func, xs):
    """Host copies of every output of func at xs (differentiable or not)."""
    return [o.detach().numpy().copy() for o in _as_tuple(func(*xs))]


def _central(func, inputs, i, delta, eps):
    """(f(x_i + delta) - f(x_i - delta)) / 2 eps per output, flattened (|delta| = eps)."""
    x = inputs[i].detach().numpy().copy()
    with _perturbed(inputs, i, x - delta) as xs:
        lo = _eval(func, xs)
    with _perturbed(inputs, i, x + delta) as xs:
        hi = _eval(func, xs)
    return [((b - a) / (2 * eps)).reshape(-1) for a, b in zip(lo, hi)]


def _numerical_jacobian(func, inputs, diff_idx, eps):
    """For each differentiable input, one (input numel, output numel) array per output."""
    outs0 = _eval(func, inputs)
    result = []
    for i in diff_idx:
        x = inputs[i].detach().numpy()
        cols = []
        for k in range(x.size):
            delta = np.zeros(x.shape, dtype=x.dtype)
            delta.reshape(-1)[k] = eps
            cols.append(_central(func, inputs, i, delta, eps))
        result.append([np.stack([c[o] for c in cols]) if cols else
                       np.zeros((0, out.size), dtype=out.dtype)
                       for o, out in enumerate(outs0)])
    return result


# ----- analytical side: one vjp per output element ----------------------------------------------
def _vjp_rows(output, diff_inputs):
    """(input numel, output numel) arrays, one per differentiable input, from unit cotangents."""
    from . import grad
    from .._creation import zeros
    n = output.numel()
    cols = [[] for _ in diff_inputs]
    for k in range(n):
        e = np.zeros(n, dtype=output.dtype.np)
        e[k] = 1
        g_out = _on(e.reshape(output.shape), output)
        grads = grad(output, diff_inputs, g_out, retain_graph=True, allow_unused=True)
        for c, g, x in zip(cols, grads, diff_inputs):
            if g is None:
                g = zeros(x.shape, dtype=x.dtype, device=x.device)
            c.append(g)
    jacs, types_ok, sizes_ok = [], True, True
    for c, x in zip(cols, diff_inputs):
        types_ok = types_ok and all(g.dtype is x.dtype for g in c)
        sizes_ok = sizes_ok and all(g.numel() == x.numel() for g in c)
        if not c:
            jacs.append(np.zeros((x.numel(), 0), dtype=x.dtype.np))
        elif sizes_ok:
            jacs.append(np.stack([g.numpy().reshape(-1) for g in c], axis=1))
        else:
            jacs.append(None)
    return jacs, types_ok, sizes_ok


def _on(arr, like):
    from .._creation import tensor
    return tensor(arr, dtype=like.dtype, device=like.device)


def _analytical_jacobian(output, diff_inputs, nondet_tol, check_grad_dtypes):
    jac1, types_ok, sizes_ok = _vjp_rows(output, diff_inputs)
    if not types_ok and check_grad_dtypes:
        raise GradcheckError("Gradient has dtype mismatch")
    if not sizes_ok:
        raise GradcheckError("Analytical gradient has incorrect size")
    jac2, _, _ = _vjp_rows(output, diff_inputs)
    for a, b in zip(jac1, jac2):
        if a.size and float(np.max(np.abs(a - b))) > nondet_tol:
            raise GradcheckError(
                "Backward is not reentrant, i.e., running backward with same input and "
                "grad_output multiple times gives different values, although analytical "
                "gradient matches numerical gradient."
                f"The tolerance for nondeterminism was {nondet_tol}.")
    return jac1


def _allclose(a, n, rtol, atol):
    dt = np.promote_types(a.dtype, n.dtype)
    a, n = a.astype(dt), n.astype(dt)
    return bool(np.all(np.abs(a - n) <= atol + rtol * np.abs(n)))


def _mismatch(i, j, numerical, analytical, mode=""):
    return (f"Jacobian {mode}mismatch for output {i:d} with respect to input {j:d},\n"
            f"numerical:{_host_tensor(numerical)}\nanalytical:{_host_tensor(analytical)}\n")


def _slow_check(func, inputs, diff_idx, func_out, outputs, eps, atol, rtol, nondet_tol,
                check_grad_dtypes):
    numerical = _numerical_jacobian(func, inputs, diff_idx, eps)
    # numerical[j][o] covers every output; keep the differentiable ones, in order
    keep = [o for o, t in enumerate(func_out) if t.requires_grad]
    diff_inputs = [inputs[i] for i in diff_idx]
    for i, out in enumerate(outputs):
        analytical = _analytical_jacobian(out, diff_inputs, nondet_tol, check_grad_dtypes)
        for j, a in enumerate(analytical):
            n = numerical[j][keep[i]]
            if not _allclose(a, n, rtol, atol):
                raise GradcheckError(_mismatch(i, j, n, a))


def _fast_check(func, inputs, diff_idx, func_out, outputs, eps, atol, rtol):
    """v^T J u for random unit u per input and random v per output, as PyTorch's fast mode."""
    from . import grad
    rng = np.random.default_rng(0)
    keep = [o for o, t in enumerate(func_out) if t.requires_grad]
    diff_inputs = [inputs[i] for i in diff_idx]
    us = []
    for x in diff_inputs:
        u = rng.uniform(-1, 1, x.shape).astype(x.dtype.np)
        us.append(u / max(float(np.linalg.norm(u)), 1e-30))
    jus = [_central(func, inputs, i, (eps * u).astype(u.dtype), eps)
           for i, u in zip(diff_idx, us)]
    for i, out in enumerate(outputs):
        v = rng.uniform(-1, 1, out.shape).astype(out.dtype.np)
        grads = grad(out, diff_inputs, _on(v, out), retain_graph=True, allow_unused=True)
        for j, (g, u) in enumerate(zip(grads, us)):
            a = np.zeros((), u.dtype) if g is None else np.sum(g.numpy() * u)
            n = np.sum(jus[j][keep[i]] * v.reshape(-1))
            if not _allclose(np.asarray(a), np.asarray(n), rtol, atol):
                raise GradcheckError(_mismatch(i, j, np.asarray(n), np.asarray(a),
                                               "(v^T J u, fast mode) "))


def _check_backward_mul_by_grad_output(inputs, diff_idx, outputs):
    from . import grad
    from .._creation import zeros_like
    diff_inputs = [inputs[i] for i in diff_idx]
    grads = grad(outputs, diff_inputs, [zeros_like(o) for o in outputs], allow_unused=True)
    for g, x in zip(grads, diff_inputs):
        if g is None:
            continue
        if np.any(g.numpy() != 0):
            raise GradcheckError("backward not multiplied by grad_output")
        if g.dtype is not x.dtype:
            raise GradcheckError("grad is incorrect type")
        if g.device != x.device:
            raise GradcheckError("grad is incorrect device")
        if g.shape != x.shape:
            raise GradcheckError("grad is incorrect size")


# ----- gradgradcheck ----------------------------------------------------------------------------
def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, nondet_tol=0.0, check_undefined_grad=True,
                  check_grad_dtypes=False, fast_mode=False):
    """Same as `torch.autograd.gradgradcheck` for real inputs: gradcheck of the map
    (inputs, grad_outputs) -> vjp, with random grad_outputs in [-1, 1) when none are given."""
    from . import grad
    from .. import _dtype
    from .._creation import rand
    inputs = _as_tuple(inputs)
    if grad_outputs is None:
        outs = _differentiable(func(*inputs))
        grad_outputs = tuple(
            (rand(*o.shape, dtype=o.dtype if o.dtype.is_floating_point else _dtype.float64,
                  device=o.device) * 2 - 1).detach().requires_grad_()
            for o in outs)
    else:
        grad_outputs = _as_tuple(grad_outputs)
    n_out = len(grad_outputs)
    diff_inputs = {i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad}
    diff_grads = {i for i, g in enumerate(grad_outputs) if g.requires_grad}

    def new_func(*args):
        xs = tuple(x.requires_grad_() if i in diff_inputs else x
                   for i, x in enumerate(args[:-n_out] if n_out else args))
        outs = _differentiable(func(*xs))
        gs = tuple(g.requires_grad_() if i in diff_grads else g
                   for i, g in enumerate(args[len(args) - n_out:]))
        wrt = tuple(x for i, x in enumerate(xs) if i in diff_inputs)
        grads = grad(outs, wrt, gs, create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(new_func, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, nondet_tol=nondet_tol,
                     check_undefined_grad=check_undefined_grad,
                     check_grad_dtypes=check_grad_dtypes, fast_mode=fast_mode)
