"""Generated fused kernels: random DAGs over every fusible op and every elementwise rule, and
random mixes of them. For each DAG's plan: the generated source compiles through NVRTC exactly as
CuPy builds it (CuPy's own code generator, no GPU needed); its math built by the host C++
compiler matches the NumPy evaluation of the plan; the plan's values equal the unfused path;
(gpu) the CuPy kernel matches the CPU.

NVRTC compiles: the per-op DAG, the per-rule DAG and the mixes are each one plan with many
outputs, so CI compiles 3 DAGs x 3 dtypes + 2 reduction kernels = 11 units.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import gpuvjp as gv
from gpuvjp import _lazy, _plan
from gpuvjp.autograd._graph import run_backward
from gpuvjp.ops import REGISTRY, _kernels
from tests import _hostcc
from tests.ops.test_kernels import _cupy_headers, _cupy_options, _has_fp16_header, \
    _nvrtc_compile, nvrtc  # noqa: F401  (nvrtc: a fixture)

pytestmark = pytest.mark.skipif(not _lazy.ENABLED, reason="GPUVJP_FUSION=0: fusion is off")

FUSIBLE = sorted(name for name, op in REGISTRY.items() if op.fuse is not None)
SHAPE = (6, 5)
TOL = {"float16": dict(rtol=1e-2, atol=1e-2), "float32": dict(rtol=2e-5, atol=1e-6),
       "float64": dict(rtol=1e-12, atol=1e-13)}


# ----- the DAGs ------------------------------------------------------------------------------
def _kinds(op):
    """The kind of each argument: "T" (the dtype), "F" (float32 for float16), "int64", "bool"."""
    if op.fuse.in_params is not None:
        return [p.split()[-2] for p in op.fuse.in_params.split(",")]
    if op.name == "where":
        return ["bool", "T", "T"]
    if op.fuse.ufunc is not None:
        return ["T"] * op.fuse.ufunc.nin
    return ["T"]


class Leaves:
    """The arrays of one DAG: floats in (0.5, 2) (inside every op's domain), derived
    temporaries (so DAGs share subexpressions), a bool mask and class indices."""

    def __init__(self, dtype, rng, device="cpu", grad=False):
        self.dtype = dtype
        f = lambda: rng.uniform(0.5, 2.0, SHAPE).astype(dtype)            # noqa: E731
        self.x = gv.tensor(f(), device=device)
        self.y = gv.tensor(f(), device=device)
        if grad:
            self.x.requires_grad_()
            self.y.requires_grad_()
        self.u = (self.x * 0.5).sin() + 1.25                  # in (1.25, 1.75): shared
        self.w = self.x * self.y
        fdt = "float32" if dtype == "float16" else dtype
        self.m = gv.tensor(rng.uniform(0.1, 0.5, SHAPE).astype(fdt), device=device)
        self.s = gv.tensor(rng.uniform(1.0, 2.0, SHAPE).astype(fdt), device=device)
        self.mask = gv.tensor(rng.random(SHAPE) < 0.5, device=device)
        self.k = gv.tensor(rng.integers(0, 3, SHAPE), device=device)
        self.floats = [self.x, self.u, self.w, self.y]

    def args(self, op, j):
        out = []
        for i, kind in enumerate(_kinds(op)):
            if kind == "bool":
                out.append(self.mask)
            elif kind == "int64":
                out.append(self.k)
            elif kind == "F":
                out.append(self.m if i % 2 else self.s)
            elif i == 1 and op.fuse.ufunc is not None and j % 3 == 0:
                out.append(0.75)                               # a scalar operand
            else:
                out.append(self.floats[(i + j) % len(self.floats)])
        return out


def _op_dag(dtype, rng, device="cpu"):
    """One output per fusible op, all in one DAG."""
    L = Leaves(dtype, rng, device)
    return [REGISTRY[name](*L.args(REGISTRY[name], j)) for j, name in enumerate(FUSIBLE)]


def _rule_dag(dtype, rng, device="cpu"):
    """The first-order backward (pending, not yet materialised) of every differentiable fusible
    op, with respect to x and y."""
    L = Leaves(dtype, rng, device, grad=True)
    outs = []
    for j, name in enumerate(FUSIBLE):
        op = REGISTRY[name]
        if not op.differentiable or op.vjps is None:
            continue
        y = op(*L.args(op, j))
        if y._node is None:
            continue
        g = (L.y * 0.25 + 0.5)
        found = run_backward([y._node], [g], targets={id(L.x), id(L.y)}, retain_graph=True)
        outs += [t for t in found.values() if t.shape == SHAPE]
    return outs


MIX_OPS = ["add", "sub", "mul", "div", "exp", "tanh", "sin", "cos", "sigmoid", "relu", "where",
           "maximum", "gt", "sqrt", "log1p", "square", "neg", "tanh_bwd", "silu", "erf"]


def _mix(dtype, rng, steps, device="cpu"):
    """A random DAG: each step applies a random op to earlier nodes."""
    L = Leaves(dtype, rng, device)
    pool = [L.x, L.u, L.w, L.y]
    for s in steps:
        op = REGISTRY[MIX_OPS[s[0] % len(MIX_OPS)]]
        args = []
        for i, kind in enumerate(_kinds(op)):
            if kind == "bool":
                args.append(pool[s[1] % len(pool)] > 1.0)
            else:
                a = pool[(s[1] + 7 * i) % len(pool)]
                args.append(a.abs() + 0.5 if op.name in ("sqrt", "log1p", "div") else a)
        pool.append(op(*args))
    return pool[4:] or pool


def _mix_dag(dtype, rng, device="cpu"):
    r = np.random.default_rng(7)
    outs = []
    for _ in range(6):
        outs += _mix(dtype, rng, [tuple(r.integers(0, 100, 2)) for _ in range(8)], device)[-2:]
    return outs


DAGS = {"ops": _op_dag, "rules": _rule_dag, "mixes": _mix_dag}


def _pending(outs):
    ps = [t._data for t in outs if type(t._data) is _lazy.Pending and t._data.value is None]
    assert ps, "the DAG has nothing pending"
    return ps


def _plan_of(which, dtype):
    with gv.profiler.profile():        # small CPU arrays record their DAG in a profile
        outs = DAGS[which](dtype, np.random.default_rng(11))
    plan = _plan.build(_pending(outs))
    return plan, _plan.kernel_name(plan)


# ----- 1. NVRTC: the generated ElementwiseKernel as CuPy builds it --------------------------------
def _cupy_unit(plan, name):
    """The translation unit CuPy generates for `plan`'s kernel on contiguous 2-d arrays (CuPy's
    own generator, cupy/_core/_kernel.pyx)."""
    import cupy
    from cupy._core import _carray, _kernel, _scalar

    kern = _kernels.plan_kernel(plan, name)
    ndarray, indexer, scalar = 1, 2, 3             # CuPy's _ArgKind values
    arg = _kernel._ArgInfo
    infos = [arg(scalar, _scalar.CScalar, d, 0, True, True) if s else
             arg(ndarray, cupy.ndarray, d, 2, True, True)
             for d, s in zip(plan.leaf_dtypes, plan.leaf_scalar)]
    infos += [arg(ndarray, cupy.ndarray, plan.nodes[o][2], 2, True, True) for o in plan.outputs]
    infos.append(arg(indexer, _carray.Indexer, None, 2, True, True))
    code = _kernel._get_elementwise_kernel_code(
        tuple(infos), _kernel._TypeMap(()), kern.params, kern.operation, kern.name,
        kern.preamble)
    head = "".join(f"#include <{h}>\n" for h in _cupy_headers())
    if any(d == np.float16 for d in plan.leaf_dtypes) or \
            any(n[2] == np.float16 for n in plan.nodes):
        head += '#include "cupy/float16.cuh"\n'
    return kern, head + code


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("which", sorted(DAGS))
def test_generated_kernel_compiles_with_nvrtc(which, dtype, nvrtc):
    plan, name = _plan_of(which, dtype)
    kern, unit = _cupy_unit(plan, name)
    options = _cupy_options(tuple(kern.kwargs.get("options", ())) if hasattr(kern, "kwargs")
                            else ())
    if dtype == "float16" and not _has_fp16_header(options):
        pytest.skip("cuda_fp16.h is on none of CuPy's include paths")
    ok, log = _nvrtc_compile(nvrtc, unit, f"{name}.cu", options)
    assert ok, f"NVRTC rejects {name} ({which}, {dtype}):\n{log}"
    assert name in _kernels.TWINS, "every generated kernel registers its NumPy twin"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_generated_sum_kernel_compiles_with_nvrtc(dtype, nvrtc):
    """The ReductionKernel of a DAG consumed by sum: its map expression calls the plan."""
    from tests.ops.test_kernels import _reduction_code
    x = gv.tensor(np.ones(SHAPE, dtype))
    with gv.profiler.profile():        # small CPU arrays record their DAG in a profile
        y = (x.tanh() * x).exp() + x.sin()
    plan = _plan.build([y._data])
    assert len(plan.leaves) == 1            # CuPy's generator is driven here for one input
    name = _plan.kernel_name(plan) + "_sum"
    kern = _kernels.plan_reduction_kernel(plan, name, REGISTRY["sum"])
    code = _reduction_code(kern, dtype, False, kern.preamble)
    ok, log = _nvrtc_compile(nvrtc, code, f"{name}.cu", _cupy_options(()))
    assert ok, log


# ----- 2. host C++: the plan's math against its NumPy evaluation ----------------------------------
HOST_C = {"float32": "float", "float64": "double", "bool": "bool", "int64": "long long",
          "float16": None}


def _host_wrapper(plan, fz):
    """`run(leaf pointers..., output pointers..., n)`: the device function over n elements (a
    scalar leaf is read from element 0)."""
    params, args = [], []
    for i, (d, s) in enumerate(zip(plan.leaf_dtypes, plan.leaf_scalar)):
        params.append(f"const {HOST_C[np.dtype(d).name]}* p{i}")
        args.append(f"p{i}[0]" if s else f"p{i}[j]")
    outs = [plan.nodes[o][2] for o in plan.outputs]
    params += [f"{HOST_C[np.dtype(d).name]}* q{k}" for k, d in enumerate(outs)]
    if len(outs) == 1:
        body = f"q0[j] = gv::{fz}({', '.join(args)});"
    else:
        body = f"gv::{fz}({', '.join(args + [f'q{k}[j]' for k in range(len(outs))])});"
    return (f'extern "C" void run({", ".join(params)}, long n) {{\n'
            f"  for (long j = 0; j < n; ++j) {{ {body} }}\n}}\n")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", sorted(DAGS))
def test_generated_math_matches_the_numpy_plan(which, dtype, tmp_path_factory):
    cxx = _hostcc.find_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler found ($CXX, g++, c++ or clang++)")
    plan, name = _plan_of(which, dtype)
    preamble, fz = _kernels.plan_preamble(plan, name)
    lib = _hostcc.load(preamble + _host_wrapper(plan, fz),
                       tmp_path_factory.getbasetemp() / "hostcc", cxx)
    leaves = [np.ascontiguousarray(np.broadcast_to(np.asarray(a, d), SHAPE)) if not s
              else np.asarray([a], d) for a, d, s in
              zip(plan.leaves, plan.leaf_dtypes, plan.leaf_scalar)]
    outs = [np.empty(SHAPE, plan.nodes[o][2]) for o in plan.outputs]
    lib.run.argtypes = [ctypes.c_void_p] * (len(leaves) + len(outs)) + [ctypes.c_long]
    lib.run.restype = None
    lib.run(*[a.ctypes.data for a in leaves + outs], int(np.prod(SHAPE)))
    want = _plan.evaluate(plan)
    for k, (got, ref) in enumerate(zip(outs, want)):
        op = plan.nodes[plan.outputs[k]][0].name
        np.testing.assert_allclose(got.astype(np.float64), np.asarray(ref, np.float64),
                                   err_msg=f"output {k} ({op})", equal_nan=True, **TOL[dtype])


# ----- 3. values: the plan equals the unfused path ---------------------------------------------
def _values(which, dtype, device="cpu"):
    with gv.profiler.profile():        # the plan's evaluation (small arrays skip it outside)
        outs = DAGS[which](dtype, np.random.default_rng(5), device)
        _lazy.force(outs)
    return [t.numpy() for t in outs]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("which", sorted(DAGS))
def test_fused_values_equal_unfused(which, dtype, monkeypatch):
    fused = _values(which, dtype)
    monkeypatch.setattr(_lazy, "ENABLED", False)
    plain = _values(which, dtype)
    assert len(fused) == len(plain)
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99)), min_size=1, max_size=12),
       st.sampled_from(["float32", "float64"]))
@example([(0, 0)] * 3 + [(12, 0)] + [(0, 0)] * 4 + [(98, 19)], "float32")   # silu of a bool
def test_random_mixes_equal_unfused(steps, dtype):
    def run():
        try:
            return [t.numpy() for t in _mix(dtype, np.random.default_rng(1), steps)]
        except RuntimeError as exc:        # a program PyTorch refuses (-bool): the same error
            return exc
    with gv.profiler.profile():        # the plan's evaluation (small arrays skip it outside)
        fused = run()
    _lazy.ENABLED = False
    try:
        plain = run()
    finally:
        _lazy.ENABLED = True
    if isinstance(plain, Exception):
        assert type(fused) is type(plain) and str(fused) == str(plain)
        return
    assert not isinstance(fused, Exception), fused
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


# ----- 4. gpu: the generated kernels against the CPU ---------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("which", sorted(DAGS))
def test_generated_kernel_on_cuda_matches_cpu(which, dtype):
    cpu = _values(which, dtype)
    cuda = _values(which, dtype, "cuda")
    for a, b in zip(cuda, cpu):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), equal_nan=True,
                                   **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_sum_on_cuda_matches_cpu(dtype, rng):
    x0 = rng.standard_normal((64, 33)).astype(dtype)
    got = [gv.vjp(lambda t: (t.tanh() * 0.5 + t.sin()).exp().sum(dim=1),
                  gv.tensor(x0, device=d), gv.ones(64, dtype=getattr(gv, dtype), device=d))
           for d in ("cuda", "cpu")]
    for a, b in zip(*got):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL[dtype])


@pytest.mark.gpu
def test_one_plan_structure_at_several_shapes_on_cuda_matches_cpu(rng):
    """A generated kernel is cached by structure and dtypes, never by shape: the same plan at a
    long-row shape, a many-row shape and the first again (elementwise plans and fused sums)."""
    for shape in [(2, 40000), (300, 256), (2, 40000), (7,)]:
        x0 = rng.standard_normal(shape)
        got = [((x - x.mean(-1, keepdim=True)) ** 2).mean(-1).numpy()
               for x in (gv.tensor(x0, device="cuda"), gv.tensor(x0))]
        np.testing.assert_allclose(got[0], got[1], rtol=1e-12, atol=1e-12)
        got = [(gv.tensor(x0, device=d) * 2 + 1).tanh().numpy() for d in ("cuda", "cpu")]
        np.testing.assert_allclose(got[0], got[1], rtol=1e-12, atol=1e-12)


def test_nvrtc_check_fails_on_a_broken_generated_kernel(nvrtc):
    plan, name = _plan_of("mixes", "float32")
    kern, unit = _cupy_unit(plan, name)
    fz = "fz" + name[len("gv_fuse"):]
    broken = unit.replace(f"gv::{fz}(in0_", f"gv::{fz}_missing(in0_")
    assert broken != unit
    ok, log = _nvrtc_compile(nvrtc, broken, f"{name}.cu", _cupy_options(()))
    assert not ok and f"{fz}_missing" in log
