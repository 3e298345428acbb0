"""The only module that touches CuPy kernels: reads kernels/*.cuh, builds and memoizes them."""

from __future__ import annotations

import functools
import importlib.resources
import operator
import os
import pathlib
import time

import numpy as np

from .. import _device, _log

__all__ = ["source", "elementwise_caller", "Reduction", "defreduction", "REDUCTIONS",
           "defscatter", "SCATTERS", "KernelSourceError", "kernel_dir", "TWINS", "register_twin",
           "Expr", "expr_for", "plan_source", "run_plan", "reduce_plan"]


class KernelSourceError(RuntimeError):
    """A kernel file that does not compile; the message names the file."""


def kernel_dir() -> pathlib.Path:
    """kernels/ of a source checkout, or the copy shipped inside the installed wheel."""
    here = pathlib.Path(__file__).resolve().parents[2] / "kernels"
    if (here / "common.cuh").is_file():
        return here
    return pathlib.Path(str(importlib.resources.files("gpuvjp") / "kernels"))


def _read(name: str) -> str:
    return (kernel_dir() / name).read_text()


@functools.cache
def source(family: str) -> str:
    """Text of kernels/common.cuh + kernels/<family>.cuh, read once."""
    return _read("common.cuh") + "\n" + _read(f"{family}.cuh")


# ----- NumPy twins by kernel name ------------------------------------------------------------
# The emulated CuPy (gpuvjp.testing, GPUVJP_EMULATE_CUDA) computes every kernel through the twin
# registered under the kernel's CuPy name. ElementwiseKernel: fn(*args), the arguments in order
# (non-raw inputs broadcast), returning the non-raw output(s); raw outputs are mutated in place.
# ReductionKernel: fn(*inputs, axis=, keepdims=) returning the output(s). RawKernel:
# fn(grid, block, args, shared_mem=0) mutating its arrays.
TWINS: dict[str, object] = {}


def register_twin(name, fn):
    """Record the NumPy twin of kernel `name`: the emulated CuPy (gpuvjp.testing) computes it."""
    TWINS[name] = fn


def in_float(twin):
    """`twin` as a float16 kernel runs it: float16 operands computed in float32 (the caller
    rounds once, into the output)."""
    def fn(*args):
        if any(getattr(a, "dtype", None) == np.float16 for a in args):
            args = [a.astype(np.float32) if getattr(a, "dtype", None) == np.float16 else a
                    for a in args]
        return twin(*args)
    return fn


def _register_elementwise(fn, in_params, twin):
    register_twin(f"gv_{fn}", in_float(twin))
    if len(in_params.split(",")) == 1:           # map_sum's kernel, sum(gv::fn(src))
        register_twin(f"gv_{fn}_sum", lambda src, axis, keepdims: np.sum(
            in_float(twin)(src), axis=axis, keepdims=keepdims))


def _names(params: str) -> list[str]:
    return [p.split()[-1] for p in params.split(",")]


def call_expr(fn: str, in_params: str, ctype: str) -> str:
    """`gv::fn<C>((C)a, (C)b)`: the math runs in C (float for float16 inputs). Parameters of a
    named type (int64 t) pass as they are."""
    params = [p.split()[-2:] for p in in_params.split(",")]
    args = ", ".join(f"({ctype}){n}" if len(t) == 1 else n for t, n in params)
    return f"gv::{fn}<{ctype}>({args})"


@functools.cache
def elementwise(family, fn, in_params, out_params, half):
    """The ElementwiseKernel `gv_<fn>`, built on first GPU use (float16 computes in float)."""
    cupy = _device.cupy_library()

    out = _names(out_params)[0]
    ctype = "float" if half else "T"
    body = f"{out} = (T){call_expr(fn, in_params, ctype)};"
    return cupy.ElementwiseKernel(in_params, out_params, body, f"gv_{fn}",
                                  preamble=source(family))


def elementwise_caller(family, fn, in_params, out_params, twin=None):
    if twin is not None:
        _register_elementwise(fn, in_params, twin)

    kernels = {}               # float16 or not -> the kernel: no cache key hashed per call

    def call(xp, *arrays):
        ref = arrays[0] if hasattr(arrays[0], "dtype") else \
            next(a for a in arrays if hasattr(a, "dtype"))
        half = ref.dtype.char == "e"                     # float16 (no dtype parsed from text)
        if len(arrays) > 1:    # python scalars take the arrays' type, as NumPy's weak scalars
            arrays = [a if hasattr(a, "dtype") else ref.dtype.type(a) for a in arrays]
        if os.environ.get("GPUVJP_ROW_KERNELS") == "1":    # a row broadcast: gpuvjp/ops/_rows.py
            from . import _rows
            out = _rows.rowcast(xp, family, fn, in_params, out_params, arrays)
            if out is not None:
                return out
        kernel = kernels.get(half)
        if kernel is None:
            kernel = kernels[half] = elementwise(family, fn, in_params, out_params, half)
        return _launch(kernel, family, fn, *arrays)
    call.__name__ = f"gv_{fn}"
    return call


# ----- reductions declared by their gv:: functions -----------------------------------------------
REDUCTIONS: dict[str, "Reduction"] = {}


class Reduction:
    """A reduction that runs as ONE CuPy ReductionKernel, declared by gv:: functions of
    kernels/<family>.cuh over a state type `gv::<state><C>`: `one(x)` is the state of one element,
    `merge(a, b)` combines two states (in any order: CuPy reduces per thread, then as a tree),
    `empty()` is the state of no elements, and each of `values` reads one output from the final
    state. `twin(a, axis, keepdims)` is the NumPy twin (a tuple when there are several values);
    it computes in float32 for float16, as the kernel does."""

    __slots__ = ("name", "family", "state", "one", "merge", "values", "empty", "twin")

    def __init__(self, name, family, state, one, merge, values, empty, twin):
        self.name, self.family, self.state = name, family, state
        self.one, self.merge, self.values, self.empty = one, merge, tuple(values), empty
        self.twin = twin

    def __repr__(self):
        return f"<reduction gv_{self.name} of kernels/{self.family}.cuh>"

    def out_names(self):
        return ["dst"] if len(self.values) == 1 else [f"dst{i}" for i in range(len(self.values))]

    def exprs(self, ctype, out_ctype):
        """CuPy's ReductionKernel expressions over "T src" -> dst (dst0, dst1, ...), the math in
        `ctype`."""
        posts = [f"{o} = ({out_ctype})gv::{v}<{ctype}>(a)"
                 for o, v in zip(self.out_names(), self.values)]
        return dict(map_expr=f"gv::{self.one}<{ctype}>(({ctype})src)",
                    reduce_expr=f"gv::{self.merge}<{ctype}>(a, b)",
                    post_map_expr=posts[0] if len(posts) == 1 else f"({', '.join(posts)})",
                    identity=f"gv::{self.empty}<{ctype}>()",
                    reduce_type=f"gv::{self.state}<{ctype}>")

    def __call__(self, xp, a, axis, keepdims=False, float_out=False):
        """The reduction of array `a` over `axis` (an int or a tuple; `a` is at least 1-d): one
        array, or a tuple with several values. float16 computes in float32 and returns float16,
        or float32 with `float_out`."""
        half = a.dtype == "float16"
        if xp is np:
            out = self.twin(a, axis, keepdims)
            if half and not float_out:
                cast = lambda o: o.astype(a.dtype, copy=False)     # noqa: E731
                return cast(out) if len(self.values) == 1 else tuple(map(cast, out))
            return out
        kernel = reduction_kernel(self.name, half, half and float_out)
        if len(self.values) == 1:
            return _launch(kernel, self.family, self.name, a, axis=axis, keepdims=keepdims)
        # CuPy returns only the first output of a reduction: pass all of them in
        axes = {operator.index(d) % a.ndim
                for d in (axis if isinstance(axis, tuple) else (axis,))}
        shape = tuple(1 if d in axes else n for d, n in enumerate(a.shape)
                      if keepdims or d not in axes)
        outs = tuple(xp.empty(shape, np.float32 if half and float_out else a.dtype)
                     for _ in self.values)
        _launch(kernel, self.family, self.name, a, *outs, axis=axis, keepdims=keepdims)
        return outs


def defreduction(name, family, *, state, one, merge, values, empty, twin):
    """Declare a Reduction; tests/ops/test_kernels.py checks every one declared."""
    red = Reduction(name, family, state, one, merge, values, empty, twin)
    REDUCTIONS[name] = red
    register_twin(f"gv_{name}", lambda src, axis, keepdims: twin(src, axis, keepdims))
    return red


@functools.cache
def reduction_kernel(name, half, float_out):
    """The ReductionKernel `gv_<name>`, built on first GPU use. Its parameters are named "src"
    and "dst": CuPy's CUB path renames them inside the expressions by plain substring
    replacement, so no gv:: name may contain them."""
    cupy = _device.cupy_library()

    red = REDUCTIONS[name]
    ctype = "float" if half else "T"
    out = "float32" if float_out else "T"
    return cupy.ReductionKernel("T src", ", ".join(f"{out} {o}" for o in red.out_names()),
                                name=f"gv_{name}", preamble=source(red.family),
                                **red.exprs(ctype, "float" if float_out else "T"))


# ----- scatters: one atomicAdd per gradient element -------------------------------------------
SCATTERS: dict[str, tuple] = {}


def defscatter(name, family, in_params, body):
    """Declare the ElementwiseKernel `gv_<name>` that adds each element of its inputs into
    `raw T out` at a slot gv:: functions of kernels/<family>.cuh compute; `body` reads `i`, the
    element's flat index. Returns `launch(*inputs, out)`; tests/ops/test_kernels.py compiles
    every one declared."""
    SCATTERS[name] = (family, in_params, body)

    def launch(*args):
        return _launch(scatter_kernel(name), family, name, *args)
    return launch


@functools.cache
def scatter_kernel(name):
    cupy = _device.cupy_library()

    family, in_params, body = SCATTERS[name]
    return cupy.ElementwiseKernel(in_params, "raw T out", body, f"gv_{name}",
                                  preamble=source(family))


def _launch(kernel, family, fn, *args, **kwargs):
    """Call `kernel`, turning a compile failure into an error that names the kernel file."""
    try:
        return kernel(*args, **kwargs)
    except Exception as exc:
        if type(exc).__name__ in ("CompileException", "NVRTCError"):
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise KernelSourceError(
                f"kernel gv_{fn} in kernels/{family}.cuh failed to compile: {first}") from exc
        raise


# ----- fused plans: a Plan (gpuvjp/_plan.py) as one generated kernel ---------------------------
class Expr:
    """How a fusible op reads in CUDA: a NumPy `ufunc` (the CPU evaluation writes into `out=`)
    with the C expression `c` over its operands {0}, {1}, ... cast to the computation type {c};
    or `gv::fn` of kernels/<family>.cuh with CuPy parameters `in_params` (a fused op)."""

    __slots__ = ("ufunc", "c", "family", "fn", "in_params")

    def __init__(self, ufunc=None, c=None, family=None, fn=None, in_params=None):
        self.ufunc, self.c, self.family, self.fn, self.in_params = ufunc, c, family, fn, in_params

    def __repr__(self):
        return f"<expr {self.c or 'gv::' + self.fn}>"


# CuPy's ufuncs as plain CUDA math (kernels/fuse.cuh for those NumPy defines with care: nan
# in maximum, -0 in abs, logaddexp's infinities, remainder's sign, integer modulo by zero).
UFUNC_C = {
    "add": "({0} + {1})", "subtract": "({0} - {1})", "multiply": "({0} * {1})",
    "divide": "({0} / {1})", "negative": "(-{0})", "exp": "exp({0})", "log": "log({0})",
    "sqrt": "sqrt({0})", "sin": "sin({0})", "cos": "cos({0})", "tanh": "tanh({0})",
    "tan": "tan({0})", "exp2": "exp2({0})", "log2": "log2({0})", "log1p": "log1p({0})",
    "expm1": "expm1({0})", "reciprocal": "(({c})1 / {0})", "square": "({0} * {0})",
    "absolute": "gv::fz_abs({0})", "maximum": "gv::fz_max({0}, {1})",
    "minimum": "gv::fz_min({0}, {1})", "equal": "({0} == {1})", "not_equal": "({0} != {1})",
    "less": "({0} < {1})", "less_equal": "({0} <= {1})", "greater": "({0} > {1})",
    "greater_equal": "({0} >= {1})",
    "logical_and": "(({0} != ({c})0) && ({1} != ({c})0))",
    "logical_or": "(({0} != ({c})0) || ({1} != ({c})0))",
    "logical_xor": "(({0} != ({c})0) != ({1} != ({c})0))",
    "logical_not": "({0} == ({c})0)",
    "sinh": "sinh({0})", "cosh": "cosh({0})", "arcsinh": "asinh({0})", "arctanh": "atanh({0})",
    "arcsin": "asin({0})", "arccos": "acos({0})", "arctan": "atan({0})", "floor": "floor({0})",
    "ceil": "ceil({0})", "trunc": "trunc({0})", "rint": "rint({0})",
    "hypot": "hypot({0}, {1})", "logaddexp": "gv::fz_logaddexp({0}, {1})",
    "fmod": "gv::fz_fmod({0}, {1})", "remainder": "gv::fz_remainder({0}, {1})",
}
# Ops declared with their own NumPy implementation, by registry name.
NAMED_C = {"relu": "gv::fz_relu({0})", "sign": "gv::fz_sign({0})", "where": "({0} ? {1} : {2})",
           "zeros_like": "(({c})0)"}


def expr_for(name, ufunc=None):
    """The Expr of the op declared as `name` (with NumPy `ufunc`), or None: not fusible."""
    if ufunc is not None:
        c = UFUNC_C.get(ufunc.__name__)
        return None if c is None else Expr(ufunc=ufunc, c=c)
    c = NAMED_C.get(name)
    return None if c is None else Expr(c=c)


CTYPE = {"float16": "float16", "float32": "float", "float64": "double", "bool": "bool",
         "int8": "signed char", "uint8": "unsigned char", "int16": "short", "int32": "int",
         "int64": "long long", "uint16": "unsigned short", "uint32": "unsigned int",
         "uint64": "unsigned long long"}


def _ctype(dt):
    try:
        return CTYPE[np.dtype(dt).name]
    except KeyError:
        raise TypeError(f"fused kernels do not support dtype {np.dtype(dt).name}") from None


def _node_c(op, names, compute):
    """The C expression of one node over its operands `names`, computed in `compute` (float
    for float16)."""
    cc = "float" if compute == np.float16 else _ctype(compute)
    e = op.fuse
    if e.fn is not None:
        kinds = [p.split()[-2] for p in e.in_params.split(",")]
        args = ", ".join(f"({cc}){n}" if len(t) == 1 else n for t, n in zip(kinds, names))
        return f"gv::{e.fn}<{cc}>({args})"
    return e.c.format(*[f"(({cc}){n})" for n in names], c=cc)


def plan_source(plan, name):
    """(device-function source, families, function name) of `plan`: `gv::<fz>(leaves...)`
    returns the single output, or writes several through references. Temporaries are
    let-bound, one per node, each rounded to its op's output dtype (float16 as the unfused op
    rounds it)."""
    fz = "fz" + name[len("gv_fuse"):]
    params = [f"const {_ctype(d)} a{i}" for i, d in enumerate(plan.leaf_dtypes)]
    lines = []
    families = set()
    for j, (op, refs, dt, compute) in enumerate(plan.nodes):
        if op.fuse.family is not None:
            families.add(op.fuse.family)
        names = [f"a{-1 - r}" if r < 0 else f"t{r}" for r in refs]
        ct = _ctype(dt)
        lines.append(f"  const {ct} t{j} = ({ct})({_node_c(op, names, compute)});")
    if len(plan.outputs) == 1:
        out_t = _ctype(plan.nodes[plan.outputs[0]][2])
        head = f"__device__ {out_t} {fz}({', '.join(params)})"
        lines.append(f"  return t{plan.outputs[0]};")
    else:
        params += [f"{_ctype(plan.nodes[o][2])}& r{k}" for k, o in enumerate(plan.outputs)]
        head = f"__device__ void {fz}({', '.join(params)})"
        lines += [f"  r{k} = t{o};" for k, o in enumerate(plan.outputs)]
    src = "namespace gv {\n" + head + " {\n" + "\n".join(lines) + "\n}\n}  // namespace gv\n"
    return src, sorted(families), fz


def plan_preamble(plan, name):
    """kernels/common.cuh, kernels/fuse.cuh, the families the plan calls, then its function."""
    src, families, fz = plan_source(plan, name)
    text = _read("common.cuh") + "\n" + _read("fuse.cuh")
    for f in families:
        text += "\n" + _read(f"{f}.cuh")
    return text + "\n" + src, fz


def _param_list(dtypes, prefix):
    return ", ".join(f"{np.dtype(d).name} {prefix}{i}_" for i, d in enumerate(dtypes))


_PLAN_KERNELS: dict = {}


def _skeleton(plan):
    """The plan without its leaves (a twin must not keep arrays alive)."""
    from .._plan import Plan
    s = Plan()
    for k in Plan.__slots__:
        setattr(s, k, getattr(plan, k) if k != "leaves" else None)
    return s


def _at_shape(skel, args):
    """The skeleton at the shape of this call's array arguments: a kernel is cached by structure
    and dtypes, never by shape, so one twin serves plans of every shape."""
    shape = np.broadcast_shapes(*[getattr(a, "shape", ()) for a, s
                                  in zip(args, skel.leaf_scalar) if not s])
    if shape == skel.shape:
        return skel
    p = _skeleton(skel)
    p.shape = shape
    return p


def plan_kernel(plan, name):
    """The cupy.ElementwiseKernel of `plan`, built once per plan key (compiles on first call)."""
    kern = _PLAN_KERNELS.get(plan.key)
    if kern is None:
        cupy = _device.cupy_library()
        from .._plan import evaluate
        preamble, fz = plan_preamble(plan, name)
        ins = _param_list(plan.leaf_dtypes, "in")
        outs = _param_list([plan.nodes[o][2] for o in plan.outputs], "out")
        args = ", ".join(f"in{i}_" for i in range(len(plan.leaves)))
        if len(plan.outputs) == 1:
            body = f"out0_ = gv::{fz}({args});"
        else:
            outa = ", ".join(f"out{k}_" for k in range(len(plan.outputs)))
            body = f"gv::{fz}({args}, {outa});"
        kern = cupy.ElementwiseKernel(ins, outs, body, name, preamble=preamble)
        skel = _skeleton(plan)

        def twin(*args, _skel=skel):
            args = _typed_scalars(_skel, args)
            outs = evaluate(_at_shape(_skel, args), args)
            return outs[0] if len(outs) == 1 else tuple(outs)
        register_twin(name, twin)
        _PLAN_KERNELS[plan.key] = kern
        _UNCOMPILED.add(name)
    return kern


def _kernel_args(plan, device_scalars=False):
    """The kernel's arguments: arrays, and each scalar as a NumPy scalar of its leaf dtype (a
    kernel argument: its value is not in the source) or, for a ReductionKernel, a cached 0-d
    device array (gpuvjp never writes into an array, so one per value serves every call)."""
    out = []
    for a, d, s in zip(plan.leaves, plan.leaf_dtypes, plan.leaf_scalar):
        if s:
            a = np.dtype(d).type(a)
            if device_scalars:
                a = _device_scalar(a)
        out.append(a)
    return out


_DEVICE_SCALARS: dict = {}


def _device_scalar(v):
    cupy = _device.cupy_library()
    key = (v.dtype.char, v.tobytes(), cupy.cuda.Device().id)
    a = _DEVICE_SCALARS.get(key)
    if a is None:
        if len(_DEVICE_SCALARS) > 4096:
            _DEVICE_SCALARS.clear()
        a = _DEVICE_SCALARS[key] = cupy.asarray(v)
    return a


def _typed_scalars(plan, args):
    """A twin's arguments with each scalar leaf a NumPy scalar of its leaf dtype, as the kernel
    reads it (the emulator may pass them as 0-d arrays, or broadcast to the kernel's shape as a
    ReductionKernel broadcasts its inputs)."""
    return [np.dtype(d).type(_first(a)) if s else a
            for a, d, s in zip(args, plan.leaf_dtypes, plan.leaf_scalar)]


def _first(a):
    """The value of a scalar argument, however broadcast (an empty one is never read)."""
    a = np.asarray(a)
    return a.flat[0] if a.size else 0


_UNCOMPILED: set = set()          # kernels built but never launched (CuPy compiles on launch)


def _call_logged(kern, name, *args, **kwargs):
    if name not in _UNCOMPILED:
        return _launch(kern, "fuse", name, *args, **kwargs)
    t0 = time.perf_counter()
    out = _launch(kern, "fuse", name, *args, **kwargs)
    _UNCOMPILED.discard(name)
    _log.logger.debug("compiled %s in %.3f s", name, time.perf_counter() - t0)
    return out


def run_plan(plan, name, dev):
    """The plan's outputs on `dev` (a list of CuPy arrays), one launch."""
    if os.environ.get("GPUVJP_ROW_KERNELS") == "1":      # row operands: gpuvjp/ops/_rows.py
        from . import _rows
        outs = _rows.run_plan(plan, name, dev)
        if outs is not None:
            return outs
    with _device.use(dev):
        out = _call_logged(plan_kernel(plan, name), name, *_kernel_args(plan))
    return list(out) if isinstance(out, tuple) else [out]


def _sum_types(dt):
    """(accumulator, output) dtypes of gpuvjp's sum: float16 accumulates in float32, integers
    and bool sum to int64."""
    dt = np.dtype(dt)
    if dt == np.float16:
        return np.dtype(np.float32), dt
    if dt.kind in "bi":
        return np.dtype(np.int64), np.dtype(np.int64)
    return dt, dt


def plan_reduction_kernel(plan, name, op):
    """The cupy.ReductionKernel computing `op` (sum) of `plan`'s output, the plan as its map
    expression, built once per plan key."""
    kern = _PLAN_KERNELS.get((plan.key, op.name))
    if kern is None:
        cupy = _device.cupy_library()
        from .._plan import evaluate
        if op.name != "sum":
            raise NotImplementedError(f"no fused reduction for {op.name}")
        preamble, fz = plan_preamble(plan, name)
        acc, out = _sum_types(plan.nodes[plan.outputs[0]][2])
        args = ", ".join(f"in{i}_" for i in range(len(plan.leaves)))
        kern = cupy.ReductionKernel(
            _param_list(plan.leaf_dtypes, "in"), f"{out.name} dst_",
            f"({_ctype(acc)})gv::{fz}({args})", "a + b", f"dst_ = ({_ctype(out)})a", "0",
            name, reduce_type=_ctype(acc), preamble=preamble)
        skel = _skeleton(plan)

        def twin(*args, axis=None, keepdims=False, _skel=skel):
            args = _typed_scalars(_skel, args)
            val = evaluate(_at_shape(_skel, args), args)[0]
            return op.impl(np, val, dim=axis, keepdim=keepdims)
        register_twin(name, twin)
        _PLAN_KERNELS[(plan.key, op.name)] = kern
        _UNCOMPILED.add(name)
    return kern


def reduce_plan(plan, name, op, params, dev):
    """sum(plan's output, dim) in one launch: the plan is the reduction's map expression."""
    kern = plan_reduction_kernel(plan, name, op)
    with _device.use(dev):
        return _call_logged(kern, name, *_kernel_args(plan, True), axis=params["dim"],
                            keepdims=params["keepdim"])
