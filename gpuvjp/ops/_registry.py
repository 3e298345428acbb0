"""defop / defvjp / fused: the one way an op is declared, and `apply`, the one way it runs."""

from __future__ import annotations

import numpy as np

from .. import _device, _dtype
from .. import _lazy, _log, _trace, profiler as _profiler
from .._lazy import Pending
from .._tensor import Tensor
from ..autograd import _mode
from ..autograd import _forward
from ..autograd._graph import Node

__all__ = ["Op", "defop", "defvjp", "fused", "REGISTRY"]

REGISTRY: dict[str, "Op"] = {}

# How an op chooses its computation dtype from its inputs.
SAME = "same"          # inputs promoted together (PyTorch's result_type), output the same
FLOAT = "float"        # like SAME, then integers and bool go to the default float dtype
KEEP = "keep"          # inputs used as they are (shape ops, casts, indexing)

# The category (as _dtype's: bool < int < float) of each Python scalar type NumPy and CuPy
# treat as weak. Other scalars (NumPy's) go through result_type.
_SCALAR_KIND = {bool: 0, int: 1, float: 2}


# ----- grad_fn names ---------------------------------------------------------------------
def default_torch_name(name):
    """PyTorch's spelling of an op's backward node: `log_softmax` -> `LogSoftmaxBackward0`,
    `log1p` -> `Log1PBackward0`; a backward primitive `tanh_bwd` -> `TanhBackwardBackward0`."""
    parts = ["backward" if part == "bwd" else part for part in name.split("_")]
    return "".join(part.title() for part in parts) + "Backward0"


def _full_or_dim(stem):
    """`SumBackward0` for a reduction over every dim, `SumBackward1` over some (dim given)."""
    def name(node):
        dims, out_ndim = node.params["dim"], len(node.out_meta[0])
        in_ndim = out_ndim if node.params.get("keepdim") else out_ndim + len(dims)
        return f"{stem}Backward{0 if len(dims) == in_ndim else 1}"
    return name


def _scalar_at(node, i):
    """Was positional input i a Python or NumPy scalar? (After a sweep released the inputs,
    an input that took no gradient counts as one.)"""
    if node.inputs is not None:
        return not hasattr(node.inputs[i], "_dtype")
    return node.edges[i] is None


def _drops_ones(longer, shorter):
    """Is `shorter` the shape `longer` with some size-1 dims removed?"""
    j = 0
    for size in longer:
        if j < len(shorter) and shorter[j] == size:
            j += 1
        elif size != 1:
            return False
    return j == len(shorter)


def _reshape_name(node):
    out = node.params["shape"]
    src = tuple(node.inputs[0].shape) if node.inputs is not None else out
    if len(out) == len(src) + 1 and _drops_ones(out, src):
        return "UnsqueezeBackward0"
    if len(out) < len(src) and _drops_ones(src, out):
        return "SqueezeBackward1" if len(src) - len(out) == 1 else "SqueezeBackward0"
    return "ViewBackward0"


def _getitem_name(node):
    """The last indexing step PyTorch applies: advanced indices gather (IndexBackward0),
    otherwise the last int (Select), slice (Slice) or None (Unsqueeze), left to right."""
    name = "AliasBackward0"
    for item in node.params["index"]:
        if isinstance(item, (bool, np.bool_)) or hasattr(item, "shape") or \
                isinstance(item, (list, tuple)):
            return "IndexBackward0"
        if item is None:
            name = "UnsqueezeBackward0"
        elif isinstance(item, slice):
            name = "SliceBackward0"
        elif item is not Ellipsis:
            name = "SelectBackward0"
    return name


def _permute_name(node):
    moved = sum(1 for i, d in enumerate(node.params["dims"]) if i != d)
    return "TransposeBackward0" if moved == 2 else "PermuteBackward0"


def _pow_name(node):
    if _scalar_at(node, 1):
        return "PowBackward0"
    return "PowBackward2" if _scalar_at(node, 0) else "PowBackward1"


# PyTorch's grad_fn name for each op whose name is not default_torch_name(op name): a str, or
# a function of the Node where PyTorch's name depends on the arguments. One op stands for
# several PyTorch functions in places (reshape for view, flatten, squeeze and unsqueeze;
# matmul for mm, mv, dot and bmm): those are named from shapes (docs/differences.md).
TORCH_NAMES = {
    "sum": _full_or_dim("Sum"),
    "prod": _full_or_dim("Prod"),
    "max": "MaxBackward1",
    "min": "MinBackward1",
    "select_along": lambda node: "MaxBackward0" if node.params.get("largest", True)
                                 else "MinBackward0",
    "matmul": lambda node: ("DotBackward0", "MvBackward0", "MmBackward0")[
        len(node.out_meta[0])] if len(node.out_meta[0]) < 3 else "BmmBackward0",
    "reshape": _reshape_name,
    "getitem": _getitem_name,
    "permute": _permute_name,
    "pow": _pow_name,
    "sub": lambda node: "RsubBackward1" if _scalar_at(node, 0) else "SubBackward0",
    "clamp": "ClampBackward1",
    "square": "PowBackward0",
    "to_dtype": "ToCopyBackward0",
    "to_device": "ToCopyBackward0",
    "norm": "LinalgVectorNormBackward0",
    "gelu_tanh": "GeluBackward0",
    "cross_entropy_nll": "NllLossBackward0",
    "floor_divide": "DivBackward2",         # torch's div(rounding_mode="floor")
    "fmod": lambda node: "FmodBackward0" if _scalar_at(node, 1) else "FmodBackward1",
    "remainder": lambda node: "RemainderBackward0" if _scalar_at(node, 1)
                              else "RemainderBackward1",
}


class Op:
    """A differentiable primitive: forward on arrays, one vjp rule per positional input."""

    __slots__ = ("name", "impl", "gpu", "vjps", "saves_ans", "saves_inputs", "promote", "twin",
                 "family", "kernel", "kernel_fn", "differentiable", "out_dtype", "moves_device",
                 "takes_pending", "elementwise", "batch_rule", "jvp", "fuse",
                 "bool_error", "torch_name", "np_fn", "np_params")

    def __init__(self, name, impl, *, promote=SAME, saves_ans=True, saves_inputs=True,
                 differentiable=True, out_dtype=None, elementwise=False):
        self.name = name
        self.impl = impl                      # impl(xp, *arrays, **params) -> array
        self.gpu = None                       # optional GPU override with the same signature
        self.vjps = None
        self.saves_ans = saves_ans
        self.saves_inputs = saves_inputs      # False: rules read only shape/dtype/device
        self.promote = promote
        self.twin = None
        self.family = None
        self.kernel = None
        self.kernel_fn = None                 # gv::<kernel_fn> in kernels/<family>.cuh
        self.differentiable = differentiable
        self.out_dtype = out_dtype            # e.g. bool for comparisons; None: from the array
        self.moves_device = False             # to_device: the output lives on params["device"]
        self.takes_pending = False            # a reduction whose map expression a DAG can be
        self.elementwise = elementwise        # broadcasting, shape-free: batches and jvps itself
        self.batch_rule = None                # how a leading batch dim passes through
        self.jvp = None                       # forward-mode rule, see defjvp
        self.fuse = None                      # _kernels.Expr: recorded in fused plans
        self.bool_error = None                # PyTorch's message for bool operands (neg, sub)
        # the grad_fn name: a str, or a function of the Node (see TORCH_NAMES)
        self.torch_name = TORCH_NAMES.get(name) or default_torch_name(name)
        self.np_fn = None                     # impl on NumPy arrays alone (a ufunc, a twin)
        self.np_params = False                # np_fn takes the op's params as keywords too

    def __repr__(self):
        return f"<op {self.name}>"

    def __call__(self, *args, **params):
        return apply(self, args, params)

    def unpack_ans(self, node):
        """The op's output as a tensor whose history is this node (for rules reading `ans`)."""
        if node.ans is None:
            return None
        shape, dt, dev = node.out_meta
        t = Tensor._make(node.ans, dev, dt, node)
        t._nb = node.ans.ndim - len(shape)          # the output of a batched op is batched
        t._tangent = node.ans_tangent
        return t


def _ufunc_impl(ufunc):
    name = ufunc.__name__

    def impl(xp, *arrays):
        return (ufunc if xp is np else getattr(xp, name))(*arrays)
    impl.__name__ = name
    return impl


def defop(name, impl, *, override=False, **kw):
    """Declare an op. `impl` is `impl(xp, *arrays, **params)`, or a NumPy ufunc that CuPy
    also has under the same name. A name already registered raises, so that no declaration
    silently replaces a built-in; `override=True` replaces it on purpose."""
    from . import _kernels
    if name in REGISTRY and not override:
        raise ValueError(f"an op named {name!r} is already registered; pass override=True "
                         "to replace it")
    ufunc = impl if isinstance(impl, np.ufunc) else None
    if ufunc is not None:
        impl = _ufunc_impl(impl)
        kw.setdefault("elementwise", True)
    op = Op(name, impl, **kw)
    op.np_fn = ufunc
    if op.elementwise:
        op.fuse = _kernels.expr_for(name, ufunc)
    REGISTRY[name] = op
    return op


def defvjp(op, *rules):
    """One rule per positional input: rule(g, ans, *inputs, **params) -> cotangent or None."""
    op.vjps = tuple(rules)
    return op


def fused(name, family, in_params, out_params, twin, public=None, **kw):
    """An elementwise op backed by `gv::<name>` in kernels/<family>.cuh on the GPU and by
    `twin` (NumPy) on the CPU. It is an op like any other and gets its own defvjp; `public`
    names a forward op whose public name differs from its kernel's (sigmoid: gv::sigmoid_fwd)."""
    from . import _kernels

    def impl(xp, *arrays):
        return twin(*arrays)

    op = defop(public or name, impl, elementwise=True, **kw)
    op.twin = twin
    op.np_fn = twin                         # what impl calls on the CPU
    op.family = family
    op.kernel = (in_params, out_params)
    op.kernel_fn = name
    op.gpu = _kernels.elementwise_caller(family, name, in_params, out_params, twin)
    op.fuse = _kernels.Expr(family=family, fn=name, in_params=in_params)
    return op


# ----- apply: the hot path every op call goes through ---------------------------------
def apply(op, args, params):
    # One pass over the arguments gathers everything later steps ask about, so that neither
    # promotion nor node building looks at them again unless something is unusual.
    dev = None
    nb = 0
    dual = False
    needs_grad = False
    mixed = False                 # tensors of several dtypes or devices, or unusual scalars
    dt0 = None                    # the first tensor's dtype
    kind = -1                     # highest category of the Python scalars (bool < int < float)
    arrays = []                   # the arguments with each tensor's backing array
    edges = []                    # where each argument's gradient goes (Node.edges)
    pending = False               # some array is still a Pending expression
    small = True                  # every array has at most _lazy.EAGER_SIZE elements
    eager_size = _lazy.EAGER_SIZE
    for a in args:
        if isinstance(a, Tensor):
            d = a._data
            arrays.append(d)
            if type(d) is Pending:
                pending = True
            elif d.size > eager_size:
                small = False
            if dev is None:
                dev, dt0 = a._dev, a._dtype
            elif a._dtype is not dt0 or a._dev is not dev:
                mixed = True
                if a._dev is not dev and a._dev != dev:
                    dev = _reconcile(op, [t for t in args if isinstance(t, Tensor)])
            if a._nb or a._tangent is not None:          # rare: one test for both
                if a._nb:
                    nb = a._nb
                if a._tangent is not None:
                    dual = True
            if a._requires_grad:
                needs_grad = True
                edges.append(a if a._node is None else a._node)
            else:
                edges.append(None)
        else:
            arrays.append(a)
            edges.append(None)
            k = _SCALAR_KIND.get(type(a))
            if k is None:
                mixed = mixed or a is not None
            elif k > kind:
                kind = k
    if dev is None:
        raise TypeError(f"{op.name}() expects at least one Tensor argument")

    # Weak Python scalars of a category no higher than the tensors' never change the dtype
    # (PyTorch's rule), so the common case needs no result_type.
    promote = op.promote
    if promote is not KEEP and (mixed or kind > dt0.category or
                                (promote is FLOAT and dt0.category != _dtype._FLOAT)):
        promoted = _promote(op, args, [a for a in args if isinstance(a, Tensor)], dev)
        if promoted is not args:
            args = promoted
            edges = [(a if a._node is None else a._node)
                     if isinstance(a, Tensor) and a._requires_grad else None for a in args]
            arrays = [a._data if isinstance(a, Tensor) else a for a in args]
            pending = any([type(d) is Pending for d in arrays])
    # ----- compute: record a fusible op in the pending DAG (_lazy.py), or run it now -----
    # On the CPU, outside a profile, an op on small arrays in memory runs now: the plan would
    # make the same NumPy call, and a tiny call (host-bound) does not pay for a DAG. A profile
    # records the DAG, so its records are the GPU's kernels; so does a gv.compile trace.
    try:
        if small and not (pending or nb or _profiler.ACTIVE or _trace.ON) and \
                op.np_fn is not None and _device._CURRENT.dev is dev and \
                dev.type == "cpu" and (not params or op.np_params) and \
                (op.fuse is not None or not (op.elementwise and _lazy.ENABLED)):
            # the common case: the CPU inside a functional's scope, what impl calls, at once
            # (an unfused elementwise op goes on, to _compute's fallback log)
            out = op.np_fn(*arrays, **params) if params else op.np_fn(*arrays)
            if type(out) is not np.ndarray:
                out = np.asarray(out)
        else:
            gpu = dev.type != "cpu"
            fusible = op.fuse is not None and not nb and not params and _lazy.ENABLED
            if fusible and (gpu or pending or not small or _profiler.ACTIVE or _trace.ON):
                out = _lazy.record(op, arrays, dev)
            else:
                out = _compute(op, args, arrays, params, dev, gpu, nb, pending, fusible)
    except (ValueError, TypeError) as exc:
        raise _explain(op, args, exc) from None
    dt = op.out_dtype or (dt0 if out.dtype is dt0.np else _dtype.from_numpy_dtype(out.dtype))
    if op.moves_device:
        dev = params["device"]

    node = None
    if needs_grad and op.differentiable and _mode._state.enabled:      # is_grad_enabled()
        if op.vjps is None:
            raise RuntimeError(f"the derivative for '{op.name}' is not implemented")
        node = Node(op, args if type(args) is tuple else tuple(args), params, tuple(edges),
                    out if op.saves_ans else None,
                    (out.shape[nb:] if nb else out.shape, dt, dev))
    result = Tensor._make(out, dev, dt, node)
    if nb:
        result._nb = nb
    if dual and op.differentiable and _forward.active():
        result._tangent = _forward.tangent(op, args, result, params)
        if node is not None and node.ans is not None:
            node.ans_tangent = result._tangent
    return result


def _compute(op, args, arrays, params, dev, gpu, nb, pending, fusible):
    """apply's compute step past its common case: a pending operand a reduction takes or
    materialises, a batch dim, the GPU, an op outside a scope, a profile or a trace."""
    out = None
    if pending and not op.takes_pending:
        arrays = [a._array() if isinstance(a, Tensor) else a for a in args]
    elif pending and type(arrays[0]) is Pending:
        if not nb:
            out = _lazy.reduce(op, arrays[0], params, dev)
        if out is not None:
            return out
        arrays[0] = arrays[0].materialize()
    token = _profiler.start(dev) if _profiler.ACTIVE else None
    if op.elementwise and not fusible and _lazy.ENABLED and not nb:
        _log.fallback(op, "params" if params else "no CUDA expression")
    if nb:
        out = _batched(op, args, arrays, params, dev)
    elif not gpu and op.np_fn is not None and not params and \
            _device._CURRENT.dev is dev:       # the CPU inside a functional's scope
        out = op.np_fn(*arrays)                 # what impl calls, one call fewer
    else:
        xp, impl = (_device.cupy_module(), op.gpu or op.impl) if gpu else (np, op.impl)
        if _device._CURRENT.dev is not dev:     # outside a functional's scope
            with _device.scope(dev):            # nan and inf propagate, as PyTorch
                out = impl(xp, *arrays, **params)
        else:
            out = impl(xp, *arrays, **params)
    if not (gpu or nb) and type(out) is not np.ndarray and not op.moves_device:
        out = np.asarray(out)
    if _trace.ON:
        _trace.op(op, args, arrays, params, dev, out)
    if token is not None:
        _profiler.op_launch(op, arrays, out, token)
    return out


# ----- batched arrays: a leading batch dim the logical shapes do not show ----------------
def _batched(op, args, arrays, params, dev):
    """Run `op` on arrays of which some carry one leading batch dim (Tensor._nb == 1)."""
    xp = _device.array_module(dev)
    impl = op.impl if dev.type == "cpu" else (op.gpu or op.impl)
    flags = [isinstance(a, Tensor) and a._nb > 0 for a in args]
    with _device.use(dev), np.errstate(all="ignore"):
        if op.batch_rule is not None:
            return op.batch_rule(xp, impl, args, arrays, flags, params)
        if op.elementwise:
            # align logical ranks so broadcasting never pairs the batch dim with a data dim
            rank = max(a.ndim for a in args if isinstance(a, Tensor))
            arrays = [_lift(arr, rank - a.ndim) if f else arr
                      for a, arr, f in zip(args, arrays, flags)]
            out = impl(xp, *arrays, **params)
            return xp.asarray(out)
        # Any other op: one call per batch element (correct for every op; ops that matter
        # for speed declare a batch_rule instead).
        size = next(arr.shape[0] for arr, f in zip(arrays, flags) if f)
        outs = [xp.asarray(impl(xp, *[arr[b] if f else arr for arr, f in zip(arrays, flags)],
                                **params)) for b in range(size)]
        return xp.stack(outs) if outs else xp.empty((0,))


def _lift(arr, extra):
    """(B, *s) -> (B, 1 x extra, *s)."""
    return arr if extra <= 0 else arr.reshape(arr.shape[:1] + (1,) * extra + arr.shape[1:])


def shift_dims_rule(xp, impl, args, arrays, flags, params):
    """batch_rule for single-input ops whose `dim` param is a normalised int or tuple."""
    p = dict(params)
    d = p.get("dim")
    if isinstance(d, tuple):
        p["dim"] = tuple(i + 1 for i in d)
    elif d is not None:
        p["dim"] = d + 1
    return xp.asarray(impl(xp, *arrays, **p))


def _explain(op, args, exc):
    """PyTorch's RuntimeError for operands that do not broadcast, or bool operands an op refuses
    (other TypeErrors are left as they are); other array-library ValueErrors become a
    RuntimeError that names the op."""
    from ._util import broadcast_shapes
    tensors = [a for a in args if isinstance(a, Tensor)]
    if isinstance(exc, TypeError):
        if op.bool_error is not None and any(t._dtype is _dtype.bool_ for t in tensors):
            return RuntimeError(op.bool_error(args))
        return exc
    if op.elementwise and len(tensors) > 1:
        shape = tensors[0].shape
        for t in tensors[1:]:
            try:
                shape = broadcast_shapes(shape, t.shape)
            except RuntimeError as err:
                return err
    return RuntimeError(f"{op.name}: {exc}")


def _reconcile(op, tensors):
    """PyTorch lets 0-d CPU tensors join a CUDA op; any other device mix is an error."""
    devs = []
    for t in tensors:
        if t._dev not in devs and not (t._dev.type == "cpu" and t.ndim == 0):
            devs.append(t._dev)
    if len(devs) == 1:
        return devs[0]
    if not devs:
        return tensors[0]._dev
    raise RuntimeError(
        "Expected all tensors to be on the same device, but found at least two devices, "
        f"{devs[0]} and {devs[1]}! (in op '{op.name}')")


def _promote(op, args, tensors, dev):
    """Cast tensor arguments to the op's computation dtype (recorded, so differentiable) and
    move 0-d CPU tensors onto the op's device. Python scalars stay as they are: NumPy and CuPy
    treat them as weak, so they never widen the result (PyTorch's rule)."""
    first = tensors[0]._dtype
    if op.bool_error is not None and any(t._dtype is _dtype.bool_ for t in tensors):
        raise RuntimeError(op.bool_error(args))
    if len(tensors) == len(args) and (op.promote is not FLOAT or first.is_floating_point) \
            and all(t._dtype is first and t._dev is dev for t in tensors):
        return args
    dt = _dtype.result_type(*args)
    if op.promote is FLOAT and not dt.is_floating_point:
        dt = _dtype.get_default_dtype()
    if all(t._dtype is dt and t._dev == dev for t in tensors):
        return args
    from . import shape as _shape
    out = []
    for a in args:
        if any(a is t for t in tensors):
            if a._dtype is not dt:
                a = _shape.to_dtype(a, dt)
            if a._dev != dev:
                a = _shape.to_device(a, dev)
        out.append(a)
    return out
