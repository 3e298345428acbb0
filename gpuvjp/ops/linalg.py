"""Linear algebra: matmul (1-D, 2-D, batched) through cuBLAS/BLAS, and its named forms."""

from __future__ import annotations

from . import shape as _shape
from ..autograd._forward import defjvp
from ._registry import defop, defvjp
from ._util import broadcast_shapes


def _shape_str(s):
    return "x".join(str(n) for n in s) if s else "scalar"


_TORCH_NAMES = {"float16": "Half", "float32": "float", "float64": "double", "int32": "int",
                "int64": "long int", "bool": "bool"}


def _check_matmul(x, y):
    if x._dtype is not y._dtype:
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: "
                           f"{_TORCH_NAMES[x._dtype.name]} != {_TORCH_NAMES[y._dtype.name]}")
    if x.ndim == 0 or y.ndim == 0:
        raise RuntimeError(
            f"both arguments to matmul need to be at least 1D, but they are {x.ndim}D and "
            f"{y.ndim}D")
    k1 = x.shape[-1]
    k2 = y.shape[0] if y.ndim == 1 else y.shape[-2]
    if k1 != k2:
        if x.ndim == 1 and y.ndim == 1:
            raise RuntimeError(
                f"inconsistent tensor size, expected tensor [{k1}] and src [{k2}] to have the "
                f"same number of elements, but got {k1} and {k2} elements respectively")
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied "
                           f"({_shape_str(x.shape)} and {_shape_str(y.shape)})")
    if x.ndim > 2 or y.ndim > 2:
        broadcast_shapes(x.shape[:-2] if x.ndim > 1 else (),
                         y.shape[:-2] if y.ndim > 1 else ())


def _mT(a):
    return _shape.transpose(a, -1, -2)


# ----- matmul ----------------------------------------------------------------------------------
# z = x @ y with 1-D operands promoted to matrices: gx = g @ y^T, gy = x^T @ g, each summed
# back over broadcast batch dims and squeezed back to the operand's own shape.
matmul_ = defop("matmul", lambda xp, x, y: xp.matmul(x, y), saves_ans=False)


def _as_mats(g, x, y):
    x2 = _shape.unsqueeze(x, 0) if x.ndim == 1 else x
    y2 = _shape.unsqueeze(y, -1) if y.ndim == 1 else y
    gshape = list(g.shape)
    if x.ndim == 1:
        gshape.insert(len(gshape) - (0 if y.ndim == 1 else 1), 1)
    if y.ndim == 1:
        gshape.append(1)
    return _shape.reshape(g, *gshape), x2, y2


def matmul_vjp_x(g, ans, x, y):
    g2, x2, y2 = _as_mats(g, x, y)
    return _shape.reshape(_shape.sum_to(matmul_(g2, _mT(y2)), x2.shape, x2.dtype), *x.shape)


def matmul_vjp_y(g, ans, x, y):
    g2, x2, y2 = _as_mats(g, x, y)
    return _shape.reshape(_shape.sum_to(matmul_(_mT(x2), g2), y2.shape, y2.dtype), *y.shape)


defvjp(matmul_, matmul_vjp_x, matmul_vjp_y)
defjvp(matmul_, lambda t, ans, x, y: matmul_(t, y), lambda t, ans, x, y: matmul_(x, t))


def matmul_batch_rule(xp, impl, args, arrays, flags, params):
    """x @ y where either carries a leading batch dim B: 1-D operands become matrices, the
    batched one gets singleton batch dims so B lines up with nothing else, and the matrix
    dims added for 1-D operands are dropped again."""
    x, y = args
    ax, ay = arrays
    if x.ndim == 1:
        ax = ax[..., None, :]
    if y.ndim == 1:
        ay = ay[..., :, None]
    rank = max(max(x.ndim, 2), max(y.ndim, 2))
    ax = _lift_batched(ax, flags[0], rank - max(x.ndim, 2))
    ay = _lift_batched(ay, flags[1], rank - max(y.ndim, 2))
    out = xp.matmul(ax, ay)
    if y.ndim == 1:
        out = out[..., 0]
    if x.ndim == 1:
        out = out[..., 0] if y.ndim == 1 else out[..., 0, :]
    return out


def _lift_batched(a, batched, extra):
    if not batched or extra <= 0:
        return a
    return a.reshape(a.shape[:1] + (1,) * extra + a.shape[1:])


matmul_.batch_rule = matmul_batch_rule


def matmul(input, other):
    """Same as `torch.matmul`."""
    for name, a in (("input", input), ("other", other)):
        if not hasattr(a, "_dev"):
            raise TypeError(f"matmul(): argument '{name}' must be Tensor, not "
                            f"{type(a).__name__}")
    _check_matmul(input, other)
    return matmul_(input, other)


def mm(input, mat2):
    """Same as `torch.mm` (2-D only)."""
    if input.ndim != 2 or mat2.ndim != 2:
        raise RuntimeError(f"mm: expected 2D tensors, got {input.ndim}D and {mat2.ndim}D")
    return matmul(input, mat2)


def bmm(input, mat2):
    """Same as `torch.bmm` (3-D, equal batch sizes)."""
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError("batch1 must be a 3D tensor" if input.ndim != 3
                           else "batch2 must be a 3D tensor")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: "
                           f"[{input.shape[0]}, {input.shape[2]}] but got: "
                           f"[{mat2.shape[0]}, {mat2.shape[1]}].")
    return matmul(input, mat2)


def mv(input, vec):
    """Same as `torch.mv`."""
    if input.ndim != 2 or vec.ndim != 1:
        raise RuntimeError(f"vector + matrix @ vector expected, got {input.ndim}, {vec.ndim}")
    return matmul(input, vec)


def dot(input, tensor):
    """Same as `torch.dot` (1-D only)."""
    if input.ndim != 1 or tensor.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input.ndim}D and {tensor.ndim}D "
                           f"tensors")
    return matmul(input, tensor)


def outer(input, vec2):
    """Same as `torch.outer`."""
    if input.ndim != 1 or vec2.ndim != 1:
        raise RuntimeError(f"outer: expected 1D tensors, got {input.ndim}D and {vec2.ndim}D")
    return _shape.unsqueeze(input, 1) * _shape.unsqueeze(vec2, 0)


# ----- addmm, baddbmm: compositions (no rule of their own) ------------------------------------
def _scaled_sum(input, prod, beta, alpha):
    """beta input + alpha prod, with input broadcast to prod's shape; beta = 0 ignores input
    (nan and inf in it included), as PyTorch."""
    from .shape import expand
    expand(input.detach(), *prod.shape)                 # PyTorch's error if it cannot broadcast
    out = prod if alpha == 1 else prod * alpha
    if beta == 0:
        return out
    return out + (input if beta == 1 else input * beta)


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """Same as `torch.addmm`: beta input + alpha (mat1 @ mat2) for matrices mat1, mat2."""
    for name, m in (("mat1", mat1), ("mat2", mat2)):
        if m.ndim != 2:
            raise RuntimeError(f"{name} must be a matrix, got {m.ndim}-D tensor")
    return _scaled_sum(input, mm(mat1, mat2), beta, alpha)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """Same as `torch.baddbmm`: beta input + alpha (batch1 @ batch2) for batches of matrices."""
    return _scaled_sum(input, bmm(batch1, batch2), beta, alpha)


# ----- einsum ----------------------------------------------------------------------------------
# z = einsum(eq, x1, ..., xn) is linear in each operand: the cotangent of operand i is the
# einsum of g with the other operands onto operand i's subscripts, expanded over any index
# that only operand i carries (it was summed away).
def _einsum_impl(xp, *arrays, equation):
    return xp.einsum(equation, *arrays)


einsum_ = defop("einsum", _einsum_impl, saves_ans=False)


def _einsum_rule(i):
    def rule(g, ans, *operands, equation):
        lhs, rhs = equation.split("->")
        subs = lhs.split(",")
        mine = subs[i]
        others = [(s, x) for j, (s, x) in enumerate(zip(subs, operands)) if j != i]
        avail = set(rhs) | {c for s, _ in others for c in s}
        kept = "".join(c for c in mine if c in avail)
        eq = ",".join([rhs] + [s for s, _ in others]) + "->" + kept
        gi = einsum_(g, *[x for _, x in others], equation=eq)
        if kept != mine:                      # indices only this operand had: broadcast back
            shape = operands[i].shape
            for pos, c in enumerate(mine):
                if c not in avail:
                    gi = _shape.unsqueeze(gi, pos)
            gi = _shape.expand(gi, *shape)
        return gi
    return rule


def _einsum_jvp(i):
    def rule(t, ans, *operands, equation):
        args = list(operands)
        args[i] = t
        return einsum_(*args, equation=equation)
    return rule


# One rule per operand position; an equation has at most 52 distinct letters, so at most as
# many operands carry an index of their own.
defvjp(einsum_, *[_einsum_rule(i) for i in range(52)])
defjvp(einsum_, *[_einsum_jvp(i) for i in range(52)])


def einsum(equation, *operands):
    """Same as `torch.einsum` (any number of operands, '...' allowed); an index repeated
    within one operand (a diagonal) is supported in the forward pass only."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str):
        raise TypeError(f"einsum(): equation must be a str, got {type(equation).__name__}")
    for k, x in enumerate(operands):
        if not hasattr(x, "_dev"):
            raise TypeError(f"einsum(): operand {k} must be a Tensor, got {type(x).__name__}")
    eq = _einsum_normalise(equation.replace(" ", ""), operands)
    subs = eq.split("->")[0].split(",")
    if any(len(set(s)) != len(s) for s in subs) and any(x.requires_grad for x in operands):
        raise NotImplementedError("einsum: gradients through an index repeated within one "
                                  "operand (a diagonal) are not supported")
    return einsum_(*operands, equation=eq)


def _einsum_normalise(equation, operands):
    """An explicit equation: '...' spelled out as letters, the output given."""
    lhs, arrow, rhs = equation.partition("->")
    subs = lhs.split(",")
    if len(subs) != len(operands):
        more = "more" if len(operands) > len(subs) else "fewer"
        raise RuntimeError(f"einsum(): {more} operands were provided than specified in the "
                           "equation")
    used = set(equation)
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used]
    n_ell = max((x.ndim - (len(s) - 3) for s, x in zip(subs, operands) if "..." in s),
                default=0)
    ell = "".join(spare[:n_ell])
    out = []
    for k, (s, x) in enumerate(zip(subs, operands)):
        if "..." in s:
            n = x.ndim - (len(s) - 3)
            s = s.replace("...", ell[n_ell - n:] if n else "")
        if not s.isalpha() and s:
            raise RuntimeError(f"einsum(): invalid subscript given at index {k} in the equation")
        if len(s) != x.ndim:
            raise RuntimeError(f"einsum(): the number of subscripts in the equation "
                               f"({len(s)}) does not match the number of dimensions "
                               f"({x.ndim}) for operand {k}"
                               + (" and no ellipsis was given" if "..." not in lhs else ""))
        out.append(s)
    if arrow:
        rhs = rhs.replace("...", ell)
    else:
        counts = {}
        for s in out:
            for c in s:
                counts[c] = counts.get(c, 0) + 1
        rhs = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return ",".join(out) + "->" + rhs
