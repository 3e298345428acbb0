"""gpuvjp.nn.functional: compositions of ops; a rule only where numerics need one."""

from __future__ import annotations

import math
import operator
import warnings

import numpy as np

from .. import _device, _dtype, _trace
from .._tensor import Tensor
from .._creation import arange
from ..ops import matmul, sigmoid, tanh
from ..ops._registry import KEEP, defop, defvjp, fused, shift_dims_rule
from ..ops._util import norm_dim
from ..ops.binary import ne, where
from ..ops.reduce import mean, softmax_stats, sum_
from ..ops.shape import (broadcast_tensors, gather, index_select, reshape, squeeze, to_dtype,
                         unsqueeze)
from ..ops.unary import _erf_twin, _in_float, exp
from ..ops.unary import relu as _relu

__all__ = ["relu", "gelu", "silu", "softplus", "sigmoid", "tanh", "softmax", "log_softmax",
           "linear", "mse_loss", "cross_entropy"]

def _name(dtype):
    return dtype.scalar_name


def _need_float(x, kernel):
    """PyTorch's error for a floating-point-only kernel given an integer or bool tensor."""
    if not x._dtype.is_floating_point:
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{_name(x._dtype)}'")


# ----- activations -------------------------------------------------------------------------------
def relu(input, inplace=False):
    """Same as `torch.nn.functional.relu`; `inplace=True` returns a new tensor (tensors are
    values)."""
    if input._dtype is _dtype.bool_:
        raise RuntimeError("Boolean inputs not supported for relu")
    return _relu(input)


# ----- gelu, silu, softplus: one fused launch forward and one backward ----------------------------
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_K = math.sqrt(2 / math.pi)
_C = 0.044715


def _twin_sigmoid(z):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


def _gelu_twin(x):
    return _in_float(x, lambda a: 0.5 * a * (1 + _erf_twin(a * _SQRT_HALF)))


def _gelu_bwd_twin(g, x):
    def f(g, a):
        cdf = 0.5 * (1 + _erf_twin(a * _SQRT_HALF))
        return g * (cdf + a * _INV_SQRT_2PI * np.exp(-0.5 * a * a))
    return _in_float(g, f, x)


def _gelu_tanh_twin(x):
    return _in_float(x, lambda a: 0.5 * a * (1 + np.tanh(_K * (a + _C * a * a * a))))


def _gelu_tanh_bwd_twin(g, x):
    def f(g, a):
        t = np.tanh(_K * (a + _C * a * a * a))
        return g * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * _K * (1 + 3 * _C * a * a))
    return _in_float(g, f, x)


def _silu_twin(x):
    return _in_float(x, lambda a: a * _twin_sigmoid(a))


def _silu_bwd_twin(g, x):
    def f(g, a):
        s = _twin_sigmoid(a)
        return g * s * (1 + a * (1 - s))
    return _in_float(g, f, x)


def _softplus_twin(x, beta, threshold):
    def f(a, beta, threshold):
        z = a * beta
        with np.errstate(over="ignore"):
            return np.where(z > threshold, a, np.log1p(np.exp(np.minimum(z, threshold))) / beta)
    return _in_float(x, f, beta, threshold)


def _softplus_bwd_twin(g, x, beta, threshold):
    def f(g, a, beta, threshold):
        z = a * beta
        return np.where(z > threshold, g, g * _twin_sigmoid(z))
    return _in_float(g, f, x, beta, threshold)


# y = x Phi(x), dy/dx = Phi(x) + x phi(x), d2y/dx2 = phi(x) (2 - x^2)
gelu_ = fused("gelu_fwd", "nn", "T x", "T y", twin=_gelu_twin, public="gelu", saves_ans=False)
gelu_bwd = fused("gelu_bwd", "nn", "T g, T x", "T gx", twin=_gelu_bwd_twin)
defvjp(gelu_, lambda g, ans, x: gelu_bwd(g, x))
defvjp(gelu_bwd, lambda gg, _, g, x: gelu_bwd(gg, x),
                 lambda gg, _, g, x: gg * g * (exp(-0.5 * x * x) * _INV_SQRT_2PI) * (2 - x * x))


def _gelu_tanh_second(x):
    # y' = 0.5 (1 + t) + 0.5 x (1 - t^2) u', so y'' = (1 - t^2) (u' + 0.5 x (u'' - 2 t u'^2))
    t = tanh(_K * (x + _C * x * x * x))
    du, ddu = _K * (1 + 3 * _C * x * x), 6 * _K * _C * x
    return (1 - t * t) * (du + 0.5 * x * (ddu - 2 * t * du * du))


gelu_tanh_ = fused("gelu_tanh_fwd", "nn", "T x", "T y", twin=_gelu_tanh_twin,
                   public="gelu_tanh", saves_ans=False)
gelu_tanh_bwd = fused("gelu_tanh_bwd", "nn", "T g, T x", "T gx", twin=_gelu_tanh_bwd_twin)
defvjp(gelu_tanh_, lambda g, ans, x: gelu_tanh_bwd(g, x))
defvjp(gelu_tanh_bwd, lambda gg, _, g, x: gelu_tanh_bwd(gg, x),
                      lambda gg, _, g, x: gg * g * _gelu_tanh_second(x))


def gelu(input, approximate="none"):
    """Same as `torch.nn.functional.gelu`: x Phi(x) with erf, or the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError("approximate argument must be either none or tanh.")
    _need_float(input, "GeluKernelImpl")
    return (gelu_ if approximate == "none" else gelu_tanh_)(input)


# y = x s, s = sigmoid(x): dy/dx = s (1 + x (1 - s)), d2y/dx2 = s (1 - s) (2 + x (1 - 2 s))
silu_ = fused("silu_fwd", "nn", "T x", "T y", twin=_silu_twin, public="silu", saves_ans=False)
# the op itself (reached through the registry, not F.silu) refuses bool as PyTorch's kernel does,
# fused or not
silu_.bool_error = lambda args: "\"silu_cpu\" not implemented for 'Bool'"
silu_bwd = fused("silu_bwd", "nn", "T g, T x", "T gx", twin=_silu_bwd_twin)
defvjp(silu_, lambda g, ans, x: silu_bwd(g, x))


def _silu_second(x):
    s = sigmoid(x)
    return s * (1 - s) * (2 + x * (1 - 2 * s))


defvjp(silu_bwd, lambda gg, _, g, x: silu_bwd(gg, x),
                 lambda gg, _, g, x: gg * g * _silu_second(x))


def silu(input, inplace=False):
    """Same as `torch.nn.functional.silu`: x sigmoid(x)."""
    _need_float(input, "silu_cpu")
    return silu_(input)


# z = beta x; y = log(1 + exp(z)) / beta (x where z > threshold): dy/dx = sigmoid(z) (1 in the
# linear branch), d2y/dx2 = beta sigmoid(z) (1 - sigmoid(z)) (0 in the linear branch)
softplus_ = fused("softplus_fwd", "nn", "T x, T beta, T threshold", "T y", twin=_softplus_twin,
                  public="softplus", saves_ans=False)
softplus_bwd = fused("softplus_bwd", "nn", "T g, T x, T beta, T threshold", "T gx",
                     twin=_softplus_bwd_twin)
defvjp(softplus_, lambda g, ans, x, beta, threshold: softplus_bwd(g, x, beta, threshold),
       None, None)


def _softplus_second(x, beta, threshold):
    z = x * beta
    s = sigmoid(z)
    return where(z > threshold, 0.0, beta * s * (1 - s))


defvjp(softplus_bwd, lambda gg, _, g, x, beta, threshold: softplus_bwd(gg, x, beta, threshold),
                     lambda gg, _, g, x, beta, threshold: gg * g * _softplus_second(
                         x, beta, threshold), None, None)


def softplus(input, beta=1.0, threshold=20.0):
    """Same as `torch.nn.functional.softplus`: log(1 + exp(beta x)) / beta, and x where
    beta x > threshold."""
    _need_float(input, "softplus_cpu")
    return softplus_(input, beta, threshold)


# ----- softmax, log_softmax ----------------------------------------------------------------------
# y = softmax(x) = exp(x - m) / s with m = max(x, dim) and s = sum(exp(x - m)): exp never
# overflows. Forward: one reduction pass for (m, s) (gv_softmax_stats, float32 for float16) and one
# elementwise launch. Each gets a rule because the max is pure numerics: differentiating the
# composite would record the max and its tie-splitting rule for a gradient that cancels to zero,
# and keep exp's input alive. Rules: softmax dx = y (g - sum(g y)); log_softmax dx = g - exp(y)
# sum(g).
def _softmax_fwd_twin(x, m, s):
    return _in_float(x, lambda a, m, s: np.exp(a - m) / s, m, s)


def _log_softmax_fwd_twin(x, m, s):
    return _in_float(x, lambda a, m, s: (a - m) - np.log(s), m, s)


# F: the statistics' dtype, float32 for float16 x (KEEP: the kernels take the mix as it is)
softmax_fwd = fused("softmax_fwd", "nn", "T x, F m, F s", "T y", twin=_softmax_fwd_twin,
                    promote=KEEP, differentiable=False)
log_softmax_fwd = fused("log_softmax_fwd", "nn", "T x, F m, F s", "T y",
                        twin=_log_softmax_fwd_twin, promote=KEEP, differentiable=False)


def _softmax_impl(xp, x, dim, log):
    if x.size == 0:
        return x.copy()
    a = x.reshape(1) if x.ndim == 0 else x
    m, s = softmax_stats(xp, a, dim, keepdims=True, float_out=True)
    fwd = log_softmax_fwd if log else softmax_fwd
    out = fwd.twin(a, m, s) if xp is np else fwd.gpu(xp, a, m, s)
    return out.reshape(x.shape)


def _softmax_batch_rule(xp, impl, args, arrays, flags, params):
    """A batched input carries its batch dim first: shift `dim` past it (a batched 0-d input is
    a column of one-element rows)."""
    if args[0].ndim == 0:
        a = arrays[0]
        return xp.asarray(impl(xp, a.reshape(a.shape + (1,)), dim=1)).reshape(a.shape)
    return shift_dims_rule(xp, impl, args, arrays, flags, params)


softmax_ = defop("softmax", lambda xp, x, dim: _softmax_impl(xp, x, dim, False), promote=KEEP,
                 saves_inputs=False)
softmax_.batch_rule = _softmax_batch_rule
softmax_bwd = fused("softmax_bwd", "nn", "T g, T ans, T s", "T gx",
                    twin=lambda g, ans, s: ans * (g - s))
defvjp(softmax_, lambda g, ans, x, dim: softmax_bwd(g, ans, sum_(g * ans, dim, keepdim=True)))
defvjp(softmax_bwd, lambda gg, _, g, ans, s: gg * ans,
                    lambda gg, _, g, ans, s: gg * (g - s),
                    lambda gg, _, g, ans, s: -(gg * ans))

log_softmax_ = defop("log_softmax", lambda xp, x, dim: _softmax_impl(xp, x, dim, True),
                     promote=KEEP, saves_inputs=False)
log_softmax_.batch_rule = _softmax_batch_rule
log_softmax_bwd = fused("log_softmax_bwd", "nn", "T g, T ans, T s", "T gx",
                        twin=lambda g, ans, s: g - np.exp(ans) * s)
defvjp(log_softmax_, lambda g, ans, x, dim: log_softmax_bwd(g, ans, sum_(g, dim, keepdim=True)))
defvjp(log_softmax_bwd, lambda gg, _, g, ans, s: gg,
                        lambda gg, _, g, ans, s: -(gg * exp(ans) * s),
                        lambda gg, _, g, ans, s: -(gg * exp(ans)))


def _get_softmax_dim(name, ndim, stacklevel):
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  "to include dim=X as an argument.", stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def _softmax_args(name, input, dim, stacklevel, dtype):
    if dim is None:
        dim = _get_softmax_dim(name, input.ndim, stacklevel + 1)
    if dtype is not None:
        input = to_dtype(input, dtype)
    d = norm_dim(dim, input.ndim)
    _need_float(input, f"{name}_lastdim_kernel_impl" if d == input.ndim - 1
                else f"{name}_kernel_impl")
    return input, d


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Same as `torch.nn.functional.softmax` (no `dim`: PyTorch's deprecated implicit choice)."""
    input, d = _softmax_args("softmax", input, dim, _stacklevel, dtype)
    return softmax_(input, dim=d)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Same as `torch.nn.functional.log_softmax`."""
    input, d = _softmax_args("log_softmax", input, dim, _stacklevel, dtype)
    return log_softmax_(input, dim=d)


# torch.softmax / torch.log_softmax and the Tensor methods: `dim` is required there
def _dim_required(name, position):
    def fn(input, dim, dtype=None):
        if isinstance(dim, bool) or not hasattr(dim, "__index__"):
            raise TypeError(f"{name}(): argument 'dim' (position {position}) must be int, not "
                            f"{type(dim).__name__}")
        return (softmax if name == "softmax" else log_softmax)(input, operator.index(dim),
                                                               dtype=dtype)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Same as `torch.{name}` (`dim` required)."
    return fn


softmax_top, log_softmax_top = _dim_required("softmax", 2), _dim_required("log_softmax", 2)
Tensor.softmax = _dim_required("softmax", 1)
Tensor.log_softmax = _dim_required("log_softmax", 1)


# ----- linear ------------------------------------------------------------------------------------
def linear(input, weight, bias=None):
    """Same as `torch.nn.functional.linear`: input @ weight^T + bias."""
    out = matmul(input, weight.mT if weight.ndim > 1 else weight)
    return out if bias is None else out + bias


# ----- losses ------------------------------------------------------------------------------------
def _legacy_reduction(size_average, reduce):
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    out = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn("size_average and reduce args will be deprecated, please use "
                  f"reduction='{out}' instead.", stacklevel=3)
    return out


def _check_reduction(reduction):
    if reduction == "elementwise_mean":
        warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' "
                      "instead.", stacklevel=3)
        return "mean"
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def _size(t):
    return f"Size({list(t.shape)})"


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Same as `torch.nn.functional.mse_loss`: the mean, sum or elementwise (x - y)^2."""
    if target.shape != input.shape:
        warnings.warn(f"Using a target size ({_size(target)}) that is different to the input "
                      f"size ({_size(input)}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", stacklevel=2)
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    x, y = broadcast_tensors(input, target)
    if weight is not None:
        if weight.shape != input.shape:
            raise ValueError("Weights and input must have the same size.")
        d = x - y
        loss = d * d * weight
        if reduction == "none":
            return loss
        if reduction == "sum":
            return sum_(loss)
        if reduction == "mean":
            return sum_(loss) / sum_(weight)
        raise ValueError(f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', "
                         "'sum'.")
    reduction = _check_reduction(reduction)
    d = x - y
    _need_float(d, "mse_cpu")
    loss = d * d
    return loss if reduction == "none" else sum_(loss) if reduction == "sum" else mean(loss)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Same as `torch.nn.functional.cross_entropy`: class-index targets (int64, with `weight`,
    `ignore_index`, `label_smoothing`) or class-probability targets (same shape as input)."""
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    reduction = _check_reduction(reduction)
    if not hasattr(target, "_dev"):
        raise TypeError("cross_entropy_loss(): argument 'target' (position 2) must be Tensor, "
                        f"not {type(target).__name__}")
    if input.shape == target.shape:
        if not target._dtype.is_floating_point:
            raise RuntimeError("Expected floating point type for target with class "
                               f"probabilities, got {_name(target._dtype)}")
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        return _cross_entropy_probs(input, target, weight, reduction, label_smoothing)
    if label_smoothing > 1:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: "
                           f"{label_smoothing:g}")
    cd = 0 if input.ndim == 1 else 1
    if label_smoothing > 0:
        logp = log_softmax(input, cd)
    else:
        _need_float(input, "log_softmax_lastdim_kernel_impl" if cd == input.ndim - 1
                    else "log_softmax_kernel_impl")
    target = _class_target(input, target, weight, ignore_index)
    valid = ne(target, ignore_index)
    safe = where(valid, target, 0)                 # ignored targets may be out of range
    if input.shape[cd] == 0:                       # no classes: every target is ignored
        nll = sum_(input, cd)
    elif label_smoothing > 0:
        nll = -squeeze(gather(logp, cd, unsqueeze(safe, cd)), cd)
    else:                                          # one reduction pass, one launch backward
        st = softmax_stats_(input, dim=cd)
        nll = squeeze(cross_entropy_nll_(input, st, unsqueeze(safe, cd), dim=cd), cd)
    w = None
    if weight is not None:
        w = reshape(index_select(weight, 0, reshape(safe, -1)), safe.shape)
        nll = nll * w
    nll = where(valid, nll, 0.0)
    # mean: divided by the weight (or count) of the targets not ignored; 0/0 is nan, as PyTorch
    total = None if reduction != "mean" else sum_(valid) if w is None else \
        sum_(where(valid, w, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = _reduce_by(nll, reduction, total)
        if label_smoothing <= 0:
            return loss
        n_classes = logp.shape[cd]
        wb = None if weight is None else reshape(weight, _class_shape(logp.ndim, cd, n_classes))
        smooth = -sum_(logp if wb is None else logp * wb, cd)
        smooth = _reduce_by(where(valid, smooth, 0.0), reduction, total)
        share = label_smoothing / n_classes if n_classes else float("nan")   # 0/0, as PyTorch
        return (1 - label_smoothing) * loss + smooth * share


# nll per position of class-index cross_entropy, without writing log_softmax: the row's (max, sum)
# from one reduction pass (softmax_stats_, two numbers a row, kept for the backward) and the
# target's logit. The backward writes g (softmax(x) - onehot(t)) in one launch over the logits.
def _ce_nll_impl(xp, x, st, t, dim):
    xt = xp.take_along_axis(x, t, axis=dim)
    return ce_fwd.twin(xt, st[0], st[1]) if xp is np else ce_fwd.gpu(xp, xt, st[0], st[1])


def _ce_bwd_twin(g, x, m, s, t, k):
    return _in_float(g, lambda g, x, m, s: g * (np.exp(x - m) / s - (k == t)), x, m, s)


ce_fwd = fused("ce_fwd", "nn", "T xt, F m, F s", "T y",
               twin=lambda xt, m, s: _in_float(xt, lambda a, m, s: np.log(s) - (a - m), m, s),
               promote=KEEP, differentiable=False)
ce_bwd = fused("ce_bwd", "nn", "T g, T x, F m, F s, int64 t, int64 k", "T gx", twin=_ce_bwd_twin,
               promote=KEEP, saves_ans=False)
# (max, sum(exp(x - max))) of each row stacked in one array: constants of x
softmax_stats_ = defop("softmax_stats", lambda xp, x, dim: xp.stack(
    softmax_stats(xp, x, dim, keepdims=True, float_out=True)), promote=KEEP,
    differentiable=False)
cross_entropy_nll_ = defop("cross_entropy_nll", _ce_nll_impl, promote=KEEP, saves_ans=False)


def cross_entropy_nll_vjp(g, ans, x, st, t, dim):
    n = x.shape[dim]
    k = reshape(arange(n, dtype=_dtype.int64, device=x.device), (n,) + (1,) * (x.ndim - dim - 1))
    return ce_bwd(g, x, st[0], st[1], t, k)


# st is a function of x: the rule for x is the whole derivative
defvjp(cross_entropy_nll_, cross_entropy_nll_vjp, None, None)


def ce_bwd_vjp_x(gg, _, g, x, m, s, t, k):
    # gx = g (p - onehot) with p = softmax(x) over the class dim, which k's rank gives
    dim = x.ndim - k.ndim
    p = softmax_(x, dim=dim)
    return g * softmax_bwd(gg, p, sum_(gg * p, dim, keepdim=True))


defvjp(ce_bwd, lambda gg, _, g, x, m, s, t, k: ce_bwd(gg, x, m, s, t, k), ce_bwd_vjp_x,
       None, None, None, None)


def _reduce_by(loss, reduction, total):
    if reduction == "none":
        return loss
    return sum_(loss) if reduction == "sum" else sum_(loss) / total


def _class_shape(ndim, cd, n):
    return tuple(n if k == cd else 1 for k in range(ndim))


def _class_target(logp, target, weight, ignore_index):
    """PyTorch's (nll_loss) checks of a class-index target; the target, 0-d for 1-d input."""
    nd, shape, tshape = logp.ndim, list(logp.shape), list(target.shape)
    if nd != 1 and shape[0] != (tshape[0] if tshape else 0):
        raise ValueError(f"Expected input batch_size ({shape[0]}) to match target batch_size "
                         f"({tshape[0] if tshape else 0}).")
    if nd <= 2:
        if target.ndim > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        if nd == 1 and target.ndim == 1 and tshape[0] != 1:
            raise ValueError("For 1D input, 1D target must have size 1, but got target size: "
                             f"{tshape[0]}")
    elif nd == 4:
        if target.ndim != 3:
            raise RuntimeError("only batches of spatial targets supported (3D tensors) but got "
                               f"targets of dimension: {target.ndim}")
        if tshape[1:] != shape[2:]:
            raise RuntimeError(f"size mismatch (got input: {shape} , target: {tshape}")
    elif tshape[1:] != shape[2:]:
        raise RuntimeError(f"Expected target size {shape[:1] + shape[2:]}, got {tshape}")
    if target._dtype is not _dtype.int64:
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got "
                           f"{_name(target._dtype)}")
    n_classes = shape[1] if nd > 1 else shape[0]
    if weight is not None:
        if weight.ndim != 1 or weight.numel() != n_classes:
            raise RuntimeError(
                f"weight tensor should be defined either for all {n_classes} classes or no "
                f"classes but got weight tensor of shape: {list(weight.shape)}")
        if weight._dtype is not logp._dtype:
            raise RuntimeError(f"expected scalar type {_name(logp._dtype)} but found "
                               f"{_name(weight._dtype)}")
    t = target._array()
    with _device.use(target._dev):                 # the check runs where the target lives
        bad = ((t != ignore_index) & ((t < 0) | (t >= n_classes))).reshape(-1)
        if _trace.ON:                              # a gv.compile trace cannot replay this check
            _trace.read(t, "cross_entropy's check of targets computed from fn's inputs")
        if t.size and bool(bad.any()):             # one sync on the GPU
            raise IndexError(f"Target {int(t.reshape(-1)[int(bad.argmax())])} is out of bounds.")
    return reshape(target, ()) if nd == 1 else target


def _cross_entropy_probs(input, target, weight, reduction, label_smoothing):
    cd = 0 if input.ndim == 1 else 1
    n_classes = input.shape[norm_dim(cd, input.ndim)]
    if weight is not None and (weight.ndim != 1 or weight.numel() != n_classes):
        raise RuntimeError(
            f"cross_entropy: weight tensor should be defined either for all {n_classes} classes "
            f"or no classes but got weight tensor of shape: {list(weight.shape)}")
    logp = log_softmax(input, cd)
    if label_smoothing > 0:
        if label_smoothing > 1:
            raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: "
                               f"{label_smoothing:g}")
        target = target * (1 - label_smoothing) + label_smoothing / n_classes
    prod = logp * target
    if weight is not None:
        prod = prod * reshape(weight, _class_shape(logp.ndim, cd, n_classes))
    if reduction == "none":
        return -sum_(prod, cd)
    if reduction == "sum":
        return -sum_(prod)
    if input.numel() == 0:
        return sum_(prod) * float("nan")
    return -sum_(prod) / (input.numel() // n_classes)
