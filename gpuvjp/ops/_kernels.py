"""The only module that touches CuPy kernels: reads kernels/*.cuh, builds and memoizes them."""

from __future__ import annotations

import functools
import importlib.resources
import operator
import os
import pathlib

import numpy as np

__all__ = ["source", "elementwise_caller", "map_sum", "Reduction", "defreduction", "REDUCTIONS",
           "defscatter", "SCATTERS", "KernelSourceError", "kernel_dir", "TWINS", "register_twin"]

TWINS: dict[str, object] = {}


def register_twin(name, fn):
    """Record the NumPy twin of kernel `name`: the emulated CuPy (gpuvjp.testing) computes it."""
    TWINS[name] = fn


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
    import cupy

    out = _names(out_params)[0]
    ctype = "float" if half else "T"
    body = f"{out} = (T){call_expr(fn, in_params, ctype)};"
    return cupy.ElementwiseKernel(in_params, out_params, body, f"gv_{fn}",
                                  preamble=source(family))


def elementwise_caller(family, fn, in_params, out_params):
    def call(xp, *arrays):
        ref = next(a for a in arrays if hasattr(a, "dtype"))
        half = ref.dtype == "float16"
        if len(arrays) > 1:    # python scalars take the arrays' type, as NumPy's weak scalars
            arrays = [a if hasattr(a, "dtype") else ref.dtype.type(a) for a in arrays]
        if os.environ.get("GPUVJP_ROW_KERNELS") == "1":    # a row broadcast: gpuvjp/ops/_rows.py
            from . import _rows
            out = _rows.rowcast(xp, family, fn, in_params, out_params, arrays)
            if out is not None:
                return out
        kernel = elementwise(family, fn, in_params, out_params, half)
        return _launch(kernel, family, fn, *arrays)
    call.__name__ = f"gv_{fn}"
    return call


@functools.cache
def sum_of(family, fn, half):
    """ReductionKernel `gv_<fn>_sum`: sum(gv::fn(x)) in one pass, accumulated in float for
    float16 and in T otherwise."""
    import cupy

    # CuPy substitutes parameter names inside the expressions as plain substrings, so the
    # names must not occur in `gv::<fn>`: "x" would hit "exp".
    ctype = "float" if half else "T"
    return cupy.ReductionKernel(
        "T src", "T dst", call_expr(fn, "T src", ctype), "a + b", "dst = (T)a", "0",
        f"gv_{fn}_sum", reduce_type=ctype if half else None, preamble=source(family))


def map_sum(op, src, axis, keepdims):
    """sum(op(src), axis) without writing op(src): the op runs in the map expression."""
    kernel = sum_of(op.family, op.kernel_fn, src.dtype == "float16")
    return _launch(kernel, op.family, f"{op.kernel_fn}_sum", src, axis=axis, keepdims=keepdims)


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
    return red


@functools.cache
def reduction_kernel(name, half, float_out):
    """The ReductionKernel `gv_<name>`, built on first GPU use. Its parameters are named "src"
    and "dst": CuPy's CUB path renames them inside the expressions by plain substring
    replacement, so no gv:: name may contain them."""
    import cupy

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
    import cupy

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
