"""Every fused kernel in the registry and every declared reduction: NVRTC compiles it as CuPy will,
its math built by the host C++ compiler matches its NumPy twin, and (gpu) the CuPy kernel matches
the twin and cuda matches cpu. The cases are generated from `REGISTRY` and
`_kernels.REDUCTIONS`, so a new fused op or reduction is checked without edits here."""

from __future__ import annotations

import ctypes
import functools
import itertools
import pathlib
import re

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device
from gpuvjp.ops import REGISTRY, _kernels
from tests import _hostcc


# ----- the kernels under test -----------------------------------------------------------------
def _is_elementwise(op):
    k = op.kernel
    return isinstance(k, tuple) and len(k) == 2 and all(isinstance(p, str) for p in k)


# Keyed by the kernel's gv:: function name (an op's public name may differ: `sigmoid` is
# gv::sigmoid_fwd).
FUSED = {op.kernel_fn: op for op in REGISTRY.values() if op.kernel is not None}
ELEMENTWISE = sorted(key for key, op in FUSED.items() if _is_elementwise(op))
FAMILIES = sorted({FUSED[key].family for key in ELEMENTWISE})


def _params(params):
    """[(type, name)] of a CuPy parameter list such as "T g, T ans"."""
    return [tuple(p.split()[-2:]) for p in params.split(",")]


def _np_dtype(type_, dtype):
    """A parameter's NumPy dtype: a one-letter type stands for the kernel's dtype."""
    return np.dtype(dtype) if len(type_) == 1 else np.dtype(type_)


def _first_of(family):
    return next(key for key in ELEMENTWISE if FUSED[key].family == family)


def test_every_fused_kernel_is_checked():
    unknown = {key: op.kernel for key, op in FUSED.items() if not _is_elementwise(op)}
    assert not unknown, ("fused kernels of a kind tests/ops/test_kernels.py cannot build a "
                         f"wrapper for yet; add one there: {unknown}")


# ----- inputs and comparison ------------------------------------------------------------------
# Inputs are uniform over DEFAULT_RANGE; a row here only where that does not fit, keyed
# "<op>.<param>" (or "<param>" for every op).
DEFAULT_RANGE = (-2.0, 2.0)
RANGES = {
    "pow_bwd_x.x": (0.1, 3.0),     # x^(y-1) is real for x > 0
    "pow_bwd_y.x": (0.1, 3.0),     # log(x)
    "div_bwd_y.y": (0.5, 2.0),     # away from the pole at y = 0
    "rsqrt_fwd.x": (0.1, 4.0),     # real for x > 0
}
# Every input also takes these exactly, in each combination with the others' (where the inputs
# are large enough): the branches (relu at 0, pow at x == 0 or y == 0) and the poles, where
# kernel and twin must agree on inf and nan too.
EDGES = (0.0, 1.0, -1.0)

TOL = {"float16": dict(rtol=1e-2, atol=1e-2),
       "float32": dict(rtol=1e-5, atol=1e-6),
       "float64": dict(rtol=1e-12, atol=1e-13)}


def _inputs(key, dtype, shapes, rng):
    """One array per input of `key`'s kernel, each of its shape in `shapes`."""
    params = _params(FUSED[key].kernel[0])
    if dtype == "float16":      # as at run time: a placeholder other than T is float32 (see above)
        params = [("float32", n) if len(t) == 1 and t != "T" else (t, n) for t, n in params]
    arrays = []
    for (_, name), shape in zip(params, shapes):
        lo, hi = RANGES.get(f"{key}.{name}", RANGES.get(name, DEFAULT_RANGE))
        arrays.append(np.asarray(rng.uniform(lo, hi, size=shape)))
    grid = np.array(list(itertools.product(EDGES, repeat=len(params)))).T
    if len(set(shapes)) == 1 and grid.shape[1] <= arrays[0].size:
        for a, edge in zip(arrays, grid):
            a.reshape(-1)[:edge.size] = edge
    return [a.astype(_np_dtype(t, dtype)) for (t, _), a in zip(params, arrays)]


def _twin(op, arrays):
    with np.errstate(all="ignore"):
        return np.asarray(op.twin(*arrays))


def _assert_close(got, want, dtype, what):
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                               err_msg=what, **TOL[dtype])


def _marked(preamble, family):
    """`preamble` with #line markers, so diagnostics name kernels/<file>.cuh and its lines (when
    it is common.cuh + <family>.cuh, as `_kernels.source` builds it; else unchanged)."""
    kdir = _kernels.kernel_dir()
    common = (kdir / "common.cuh").read_text()
    body = (kdir / f"{family}.cuh").read_text()
    if preamble != common + "\n" + body:
        return preamble
    return f'#line 1 "kernels/common.cuh"\n{common}\n#line 1 "kernels/{family}.cuh"\n{body}'


# ----- 1. NVRTC: each kernel compiles as CuPy will compile it (no GPU needed) ------------------
ARCH = "-arch=compute_90"                      # the H100 / H200 the project runs on
DTYPES = ("float16", "float32", "float64")
CUPY_TYPENAME = {"float16": "float16", "float32": "float", "float64": "double"}


@pytest.fixture(scope="module")
def nvrtc():
    """CuPy's raw NVRTC binding (from the nvidia-cuda-nvrtc wheel): it needs no GPU."""
    if _device.emulated_device_count():
        pytest.skip("GPUVJP_EMULATE_CUDA builds emulated kernel objects: the NVRTC checks run "
                    "in the plain pass")
    mod = pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                              reason="CuPy is not installed (pip install -e .[test])")
    mod.getVersion()                           # a missing libnvrtc fails here, loudly
    return mod


@functools.cache
def _cupy_options(kernel_options=()):
    """The options CuPy compiles an ElementwiseKernel with: its include paths and C++ standard,
    -ftz=true (cupy/cuda/compiler.py), and the project's GPU architecture."""
    try:
        from cupy._core.core import assemble_cupy_compiler_options
        options = list(assemble_cupy_compiler_options(tuple(kernel_options)))
    except (ImportError, AttributeError, RuntimeError):   # a CuPy without it, or no CUDA root
        import cupy
        inc = pathlib.Path(cupy.__file__).parent / "_core" / "include"
        options = [f"-I{inc}/cupy/_cccl/{d}" for d in ("cub", "thrust", "libcudacxx")]
        options += [*kernel_options, "--std=c++17", f"-I{inc}"]
    return tuple(options) + ("-ftz=true", ARCH)


def _cupy_headers():
    try:
        from cupy._core.core import _cupy_header_list
        return tuple(_cupy_header_list)
    except (ImportError, AttributeError):
        return ("cupy/complex.cuh", "cupy/carray.cuh", "cupy/atomics.cuh", "cupy/math_constants.h")


def _gpu_kernel(key, dtype):
    """The cupy.ElementwiseKernel gpuvjp builds for `key` (building one compiles nothing)."""
    op = FUSED[key]
    return _kernels.elementwise(op.family, key, *op.kernel, dtype == "float16")


def _cupy_unit(kern, dtype, preamble):
    """The translation unit CuPy generates for `kern` on contiguous 1-d arrays of `dtype`
    (cupy/_core/_kernel.pyx, _get_elementwise_kernel_code), with `preamble` as its preamble."""
    typename = CUPY_TYPENAME[dtype]
    params, loads, placeholders = [], [], set()
    for p in kern.in_params + kern.out_params:
        const = "const " if p.is_const else ""
        if p.dtype is None:
            placeholders.add(p.ctype)
        ctype = typename if p.dtype is None else p.ctype
        var = p.name if p.raw else f"_raw_{p.name}"
        params.append(f"{const}CArray<{ctype}, 1, true, true> {var}")
        if not p.raw:
            loads.append(f"{const}{p.ctype} &{p.name} = _raw_{p.name}[_ind.get()];")
    head = "".join(f"#include <{h}>\n" for h in _cupy_headers())
    if dtype == "float16":
        head += '#include "cupy/float16.cuh"\n'
    # T is the kernel's dtype; any other placeholder carries float32 row statistics for float16
    # (softmax_stats(float_out=True)) and the dtype itself otherwise
    head += "".join(f"typedef {typename if t == 'T' or dtype != 'float16' else 'float'} {t};\n"
                    for t in sorted(placeholders))
    body = "\n    ".join([*loads, kern.operation])
    params.append("CIndexer<1, true> _ind")
    return (f"{head}{preamble}\n#line 1 \"{kern.name} (generated wrapper)\"\n"
            f'extern "C" __global__ void {kern.name}({", ".join(params)}) {{\n'
            f"  #pragma unroll 1\n"
            f"  CUPY_FOR(i, _ind.size()) {{\n    _ind.set(i);\n    {body};\n  }}\n}}\n")


def _nvrtc_compile(nvrtc, source, name, options):
    """(compiled, log) of NVRTC on `source`."""
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, list(options))
            ok = True
        except nvrtc.NVRTCError:
            ok = False
        return ok, nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)


def _has_fp16_header(options):
    return any(pathlib.Path(o[2:], "cuda_fp16.h").is_file() for o in options if o.startswith("-I"))


def _compile_case(nvrtc, key, dtype, preamble=None):
    kern = _gpu_kernel(key, dtype)
    options = _cupy_options(tuple(kern.kwargs.get("options", ())))
    if dtype == "float16" and not _has_fp16_header(options):
        pytest.skip("cuda_fp16.h is on none of CuPy's include paths: CuPy could not compile a "
                    "float16 kernel on this machine either")
    preamble = _marked(kern.preamble, FUSED[key].family) if preamble is None else preamble
    source = _cupy_unit(kern, dtype, preamble)
    return _nvrtc_compile(nvrtc, source, f"{kern.name}_{dtype}.cu", options)


@pytest.mark.parametrize("key,dtype", [pytest.param(k, d, id=f"{k}-{d}")
                                       for k in ELEMENTWISE for d in DTYPES])
def test_kernel_compiles_with_nvrtc(key, dtype, nvrtc):
    ok, log = _compile_case(nvrtc, key, dtype)
    assert ok, (f"NVRTC rejects gv_{key} ({dtype}) from kernels/{FUSED[key].family}.cuh:\n"
                f"{log}")


def _broken(preamble, key, how):
    if how == "renamed":       # gv::<key> gone, as a rename in the .cuh alone would leave it
        return re.sub(rf"\b{key}\b(?=\s*\()", f"{key}_renamed", preamble)
    return preamble + "\nnamespace gv { __device__ float oops(float x) { return x + ; } }\n"


@pytest.mark.parametrize("how", ["renamed", "syntax"])
@pytest.mark.parametrize("family", FAMILIES)
def test_nvrtc_check_fails_on_a_broken_kernel_file(family, how, nvrtc):
    key = _first_of(family)
    preamble = _gpu_kernel(key, "float32").preamble
    broken = _broken(preamble, key, how)
    assert broken != preamble
    ok, log = _compile_case(nvrtc, key, "float32", broken)
    assert not ok and "error" in log, log
    assert (key if how == "renamed" else "oops") in log, log


@pytest.mark.parametrize("family", FAMILIES)
def test_compile_failure_is_a_kernel_source_error_naming_the_file(family, nvrtc, monkeypatch, rng):
    """No GPU: CuPy's CompileException (carrying a real NVRTC log) from the kernel call becomes
    KernelSourceError naming kernels/<family>.cuh. The gpu test below runs it end to end."""
    from cupy.cuda.compiler import CompileException

    key = _first_of(family)
    broken = _broken(_gpu_kernel(key, "float32").preamble, key, "renamed")
    ok, log = _compile_case(nvrtc, key, "float32", broken)
    assert not ok

    def failing_kernel(*_):
        def call(*arrays):
            raise CompileException(log, broken, "kern.cu", (), "nvrtc")
        return call

    monkeypatch.setattr(_kernels, "elementwise", failing_kernel)
    arrays = _inputs(key, "float32", [(7,)] * len(_params(FUSED[key].kernel[0])), rng)
    with pytest.raises(_kernels.KernelSourceError, match=rf"gv_{key}\b.*kernels/{family}\.cuh"):
        FUSED[key].gpu(np, *arrays)


# ----- 2. host C++: the kernel math against the NumPy twin (no GPU needed) --------------------
HOST_TYPES = {"float32": "float", "float64": "double"}
HOST_C = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
          "bool": "bool"}
N_HOST = 600


def _host_c(type_, ctype):
    return ctype if len(type_) == 1 else HOST_C[np.dtype(type_).name]


def _host_wrapper(key, ctype):
    """`check_<key>_<ctype>(inputs..., out, n)`: the GPU body `out = (T)gv::key<T>((T)a, ...)`
    in a loop, T = ctype."""
    in_params, out_params = FUSED[key].kernel
    ins = _params(in_params)
    out_type = _params(out_params)[0][0]         # _kernels.elementwise writes the first output
    args = [f"const {_host_c(t, ctype)}* _p{j}" for j, (t, _) in enumerate(ins)]
    loads = " ".join(f"const {_host_c(t, 'T')} {n} = _p{j}[_i];" for j, (t, n) in enumerate(ins))
    out_c = _host_c(out_type, ctype)
    return (f'extern "C" void check_{key}_{ctype}({", ".join(args)}, {out_c}* _out, long _n) {{\n'
            f"  typedef {ctype} T;\n"
            f"  for (long _i = 0; _i < _n; ++_i) {{\n"
            f"    {loads}\n"
            f"    _out[_i] = ({out_c}){_kernels.call_expr(key, in_params, 'T')};\n"
            f"  }}\n}}\n")


def _host_build(families, wrappers, title, tmp_path_factory):
    """kernels/common.cuh + kernels/<family>.cuh (common.cuh defines __device__ away) and the
    generated `wrappers`, built by the host C++ compiler once per session and source."""
    cxx = _hostcc.find_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler found ($CXX, g++, c++ or clang++)")
    source = "".join(_marked(_kernels.source(f), f) + "\n" for f in families)
    source += f'#line 1 "{title} (generated)"\n' + wrappers
    try:
        return _hostcc.load(source, tmp_path_factory.getbasetemp() / "hostcc", cxx)
    except _hostcc.HostCompileError as exc:
        error = str(exc)
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    """A check_ wrapper per fused op and type."""
    wrappers = "".join(_host_wrapper(k, c) for k in ELEMENTWISE for c in HOST_TYPES.values())
    return _host_build(FAMILIES, wrappers, "check wrappers", tmp_path_factory)


@pytest.mark.parametrize("key,dtype", [pytest.param(k, d, id=f"{k}-{d}")
                                       for k in ELEMENTWISE for d in HOST_TYPES])
def test_kernel_math_matches_twin(key, dtype, host_lib, rng):
    op = FUSED[key]
    ctype = HOST_TYPES[dtype]
    nin = len(_params(op.kernel[0]))
    arrays = _inputs(key, dtype, [(N_HOST,)] * nin, rng)
    out = np.empty(N_HOST, _np_dtype(_params(op.kernel[1])[0][0], dtype))
    fn = getattr(host_lib, f"check_{key}_{ctype}")
    fn.argtypes = [ctypes.c_void_p] * (nin + 1) + [ctypes.c_long]
    fn.restype = None
    fn(*[a.ctypes.data_as(ctypes.c_void_p) for a in [*arrays, out]], N_HOST)

    want = _twin(op, arrays)
    assert want.dtype == out.dtype, f"the twin of {key} returns {want.dtype} for {dtype} inputs"
    _assert_close(out, want, dtype, f"gv::{key}<{ctype}> (host build) against its twin")


# ----- 3. gpu: the CuPy kernel against its twin, and cuda against cpu -------------------------
SHAPES = {"()": [()], "(7,)": [(7,)], "(33,65)": [(33, 65)], "(33,1)x(1,65)": [(33, 1), (1, 65)]}


def _gpu_cases():
    for key in ELEMENTWISE:
        nin = len(_params(FUSED[key].kernel[0]))
        for dtype in DTYPES:
            for name, shapes in SHAPES.items():
                if len(shapes) <= nin:         # a broadcast pair needs two inputs
                    yield pytest.param(key, dtype, [shapes[j % len(shapes)] for j in range(nin)],
                                       id=f"{key}-{dtype}-{name}")


GPU_CASES = list(_gpu_cases())


@pytest.mark.gpu
@pytest.mark.gpu_hardware
@pytest.mark.parametrize("key,dtype,shapes", GPU_CASES)
def test_kernel_on_cuda_matches_twin(key, dtype, shapes, rng):
    op = FUSED[key]
    arrays = _inputs(key, dtype, shapes, rng)
    got = op(*[gv.tensor(a, device="cuda") for a in arrays]).numpy()
    # float16 computes in float (`_kernels.call_expr`): so does the reference, rounded at the end
    up = [a.astype(np.float32) if a.dtype == np.float16 else a for a in arrays]
    want = _twin(op, up).astype(dtype)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    _assert_close(got, want, dtype, f"gv_{key} on cuda against its twin")


@pytest.mark.gpu
@pytest.mark.parametrize("key,dtype,shapes", GPU_CASES)
def test_kernel_cuda_matches_cpu(key, dtype, shapes, rng):
    op = FUSED[key]
    arrays = _inputs(key, dtype, shapes, rng)
    with np.errstate(all="ignore"):
        cpu = op(*[gv.tensor(a, device="cpu") for a in arrays])
    cuda = op(*[gv.tensor(a, device="cuda") for a in arrays])
    assert (cuda.dtype, cuda.shape) == (cpu.dtype, cpu.shape)
    _assert_close(cuda.numpy(), cpu.numpy(), dtype, f"{key} on cuda against cpu")


@pytest.fixture
def fresh_kernels():
    """No ElementwiseKernel built from a patched source outlives the test."""
    _kernels.elementwise.cache_clear()
    yield
    _kernels.elementwise.cache_clear()


@pytest.mark.gpu
@pytest.mark.gpu_hardware
@pytest.mark.parametrize("family", FAMILIES)
def test_broken_kernel_file_raises_kernel_source_error(family, monkeypatch, fresh_kernels, rng):
    key = _first_of(family)
    source = _kernels.source
    broken = _broken(source(family), key, "renamed")
    monkeypatch.setattr(_kernels, "source", lambda f: broken if f == family else source(f))
    arrays = _inputs(key, "float32", [(7,)] * len(_params(FUSED[key].kernel[0])), rng)
    with pytest.raises(_kernels.KernelSourceError, match=rf"kernels/{family}\.cuh"):
        FUSED[key](*[gv.tensor(a, device="cuda") for a in arrays])


# ----- 4. reductions (gpuvjp.ops._kernels.REDUCTIONS): the same three checks ------------------
REDUCTIONS = sorted(_kernels.REDUCTIONS)
# (dtype, float_out): float16 reduces in float and can return float or float16
RED_TYPES = [("float16", False), ("float16", True), ("float32", False), ("float64", False)]


def _reduction_code(kern, dtype, float_out, preamble):
    """The translation unit CuPy generates for ReductionKernel `kern` over a 2-d `dtype` array
    reduced to 1-d (CuPy's own generator, cupy/_core/_reduction.pyx)."""
    import cupy
    from cupy._core import _carray, _kernel, _reduction, _scalar

    ndarray, indexer, scalar = 1, 2, 3             # CuPy's _ArgKind values
    arg = _kernel._ArgInfo
    t = np.dtype(dtype).type
    outs = tuple(arg(ndarray, cupy.ndarray, np.float32 if float_out else t, 1, True, True)
                 for _ in range(kern.nout))
    arginfos = (arg(ndarray, cupy.ndarray, t, 2, True, True), *outs,
                arg(indexer, _carray.Indexer, None, 2, True, True),
                arg(indexer, _carray.Indexer, None, 1, True, True),
                arg(scalar, _scalar.CScalar, np.int32, 0, True, True))
    types = _kernel._TypeMap((("T", t), ("IndexT", "int32")))
    body = _reduction._ReductionKernel_get_cached_function_code(
        kern.nin, kern.nout, kern._params, arginfos, types, kern.name, 512, kern.reduce_type,
        kern.identity, kern.map_expr, kern.reduce_expr, kern.post_map_expr, preamble,
        kern.options)
    return "".join(f"#include <{h}>\n" for h in _cupy_headers()) + body


def _compile_reduction(nvrtc, name, dtype, float_out, preamble=None):
    red = _kernels.REDUCTIONS[name]
    kern = _kernels.reduction_kernel(name, dtype == "float16", float_out)
    options = _cupy_options(tuple(kern.options))
    if dtype == "float16" and not _has_fp16_header(options):
        pytest.skip("cuda_fp16.h is on none of CuPy's include paths: CuPy could not compile a "
                    "float16 kernel on this machine either")
    try:
        source = _reduction_code(kern, dtype, float_out,
                                 _marked(kern.preamble, red.family) if preamble is None
                                 else preamble)
    except (ImportError, AttributeError, TypeError, AssertionError) as exc:
        pytest.fail(f"this CuPy ({__import__('cupy').__version__}) no longer generates reduction "
                    f"code as tests/ops/test_kernels.py expects ({exc!r}); update "
                    "_reduction_code to its _reduction.pyx", pytrace=False)
    return _nvrtc_compile(nvrtc, source, f"{kern.name}_{dtype}.cu", options)


@pytest.mark.parametrize("name,dtype,float_out",
                         [pytest.param(n, d, f, id=f"{n}-{d}{'-float_out' if f else ''}")
                          for n in REDUCTIONS for d, f in RED_TYPES])
def test_reduction_compiles_with_nvrtc(name, dtype, float_out, nvrtc):
    ok, log = _compile_reduction(nvrtc, name, dtype, float_out)
    assert ok, (f"NVRTC rejects gv_{name} ({dtype}) from "
                f"kernels/{_kernels.REDUCTIONS[name].family}.cuh:\n{log}")


@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_names_survive_cupys_renaming(name):
    """CuPy's CUB path renames "src" and "dst" in the expressions by substring replacement."""
    red = _kernels.REDUCTIONS[name]
    names = [red.state, red.one, red.merge, red.empty, *red.values]
    assert not [n for n in names if "src" in n or "dst" in n]


@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_nvrtc_check_fails_on_a_broken_merge(name, nvrtc):
    red = _kernels.REDUCTIONS[name]
    preamble = _kernels.reduction_kernel(name, False, False).preamble
    broken = re.sub(rf"\b{red.merge}\b(?=\s*\()", f"{red.merge}_renamed", preamble)
    assert broken != preamble
    ok, log = _compile_reduction(nvrtc, name, "float32", False, broken)
    assert not ok and red.merge in log, log


def _red_rows(dtype, rng):
    """Rows of a (rows, n) matrix per n: random, and rows of edge values the kernel and twin
    must agree on (inf, -inf, nan, and magnitudes whose exp overflows)."""
    inf, nan = np.inf, np.nan
    for n in (0, 1, 2, 7, 600):
        rows = [rng.uniform(-3, 3, n), rng.uniform(-3, 3, n) * 300]
        if n:
            for edge in ([-inf], [inf], [nan], [-inf, 1.0], [inf, -inf], [inf, inf],
                         [1000.0, -1000.0], [-inf, nan]):
                row = rng.uniform(-3, 3, n)
                row[:min(n, len(edge))] = edge[:n]
                rows.append(rng.permutation(row))
            rows.append(np.full(n, -inf))
        yield n, np.array(rows, dtype=dtype).reshape(len(rows), n)


def _host_reduction_wrapper(name, ctype):
    """`rcheck_<name>_<ctype>(x, out0, ..., rows, n, split)`: each row of x reduced by the
    kernel's own gv:: functions on the host, in one of several orders: sequential over [0, split)
    and [split, n) with the arguments of merge in either order, or (split < 0) a balanced tree;
    then each of the reduction's values written to its output."""
    r = _kernels.REDUCTIONS[name]
    st = f"gv::{r.state}<T>"
    one, merge = f"gv::{r.one}<T>", f"gv::{r.merge}<T>"
    outs = "".join(f"{ctype}* out{i}, " for i in range(len(r.values)))
    writes = "".join(f"    out{i}[r] = (T)gv::{v}<T>(s);\n" for i, v in enumerate(r.values))
    return (f"namespace rtree_{name}_{ctype} {{\n"
            f"typedef {ctype} T;\n"
            f"static {st} tree(const T* x, long lo, long hi) {{\n"
            f"  if (hi - lo == 0) return gv::{r.empty}<T>();\n"
            f"  if (hi - lo == 1) return {one}(x[lo]);\n"
            f"  long mid = lo + (hi - lo) / 2;\n"
            f"  return {merge}(tree(x, lo, mid), tree(x, mid, hi));\n"
            f"}}\n}}\n"
            f'extern "C" void rcheck_{name}_{ctype}(const {ctype}* x, {outs}long rows, long n, '
            f"long split) {{\n"
            f"  using namespace rtree_{name}_{ctype};\n"
            f"  for (long r = 0; r < rows; ++r) {{\n"
            f"    const T* row = x + r * n;\n"
            f"    {st} s;\n"
            f"    if (split < 0) s = tree(row, 0, n);\n"
            f"    else {{\n"
            f"      {st} a = gv::{r.empty}<T>(), b = gv::{r.empty}<T>();\n"
            f"      for (long j = 0; j < split && j < n; ++j) a = {merge}(a, {one}(row[j]));\n"
            f"      for (long j = split; j < n; ++j) b = {merge}({one}(row[j]), b);\n"
            f"      s = {merge}(b, a);\n"
            f"    }}\n"
            f"{writes}"
            f"  }}\n}}\n")


def _values(red, out):
    return [out] if len(red.values) == 1 else list(out)


@pytest.fixture(scope="module")
def host_red_lib(tmp_path_factory):
    families = sorted({_kernels.REDUCTIONS[n].family for n in REDUCTIONS})
    wrappers = "".join(_host_reduction_wrapper(n, c) for n in REDUCTIONS
                       for c in HOST_TYPES.values())
    return _host_build(families, wrappers, "reduction check wrappers", tmp_path_factory)


@pytest.mark.parametrize("order", ["sequential", "split", "reversed-split", "tree"])
@pytest.mark.parametrize("name,dtype", [pytest.param(n, d, id=f"{n}-{d}")
                                        for n in REDUCTIONS for d in HOST_TYPES])
def test_reduction_math_matches_twin(name, dtype, order, host_red_lib, rng):
    red = _kernels.REDUCTIONS[name]
    ctype = HOST_TYPES[dtype]
    nout = len(red.values)
    fn = getattr(host_red_lib, f"rcheck_{name}_{ctype}")
    fn.argtypes = [ctypes.c_void_p] * (1 + nout) + [ctypes.c_long] * 3
    fn.restype = None
    for n, x in _red_rows(dtype, rng):
        split = {"sequential": n, "split": n // 3, "reversed-split": 0, "tree": -1}[order]
        x = np.ascontiguousarray(x)
        outs = [np.empty(x.shape[0], dtype) for _ in range(nout)]
        fn(*[a.ctypes.data_as(ctypes.c_void_p) for a in [x, *outs]], x.shape[0], n, split)
        with np.errstate(all="ignore"):
            wants = _values(red, red.twin(x, 1, False))
        for value, out, want in zip(red.values, outs, wants):
            want = np.asarray(want)
            assert want.dtype == out.dtype
            _assert_close(out, want, dtype, f"gv::{value} of gv_{name}<{ctype}> (host build, "
                                            f"{order}, n={n}) against its twin, row by row")


RED_SHAPES = [((7,), 0), ((33, 65), 1), ((33, 65), 0), ((33, 65), (0, 1)), ((4, 0), 1),
              ((0, 5), 1), ((3, 5, 7), (0, 2)), ((2, 3000), 1), ((3000, 2), 0)]


@pytest.fixture(params=["plain", "cub"])
def reduction_path(request):
    """CuPy runs a one-output ReductionKernel through CUB where it can (contiguous rows of 128
    or more, nvcc present) and through its own template otherwise: test both."""
    from cupy._core import _accelerator

    saved = _accelerator.get_reduction_accelerators()
    _accelerator.set_reduction_accelerators([] if request.param == "plain" else ["cub"])
    yield request.param
    _accelerator.set_reduction_accelerators(saved)


@pytest.mark.gpu
@pytest.mark.gpu_hardware
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axis", [pytest.param(s, a, id=f"{s}-axis{a}")
                                        for s, a in RED_SHAPES])
@pytest.mark.parametrize("name,dtype,float_out",
                         [pytest.param(n, d, f, id=f"{n}-{d}{'-float_out' if f else ''}")
                          for n in REDUCTIONS for d, f in RED_TYPES])
def test_reduction_on_cuda_matches_twin(name, dtype, float_out, shape, axis, keepdims, rng,
                                        reduction_path):
    import cupy

    red = _kernels.REDUCTIONS[name]
    x = rng.uniform(-3, 3, shape).astype(dtype)
    if x.size > 8:
        x.reshape(-1)[:4] = [np.inf, -np.inf, np.nan, 1000.0]
    gots = _values(red, red(cupy, cupy.asarray(x), axis, keepdims, float_out))
    with np.errstate(all="ignore"):
        wants = _values(red, red(np, x, axis, keepdims, float_out))
    for value, got, want in zip(red.values, gots, wants):
        got, want = got.get(), np.asarray(want)
        assert (got.dtype, got.shape) == (want.dtype, want.shape), value
        _assert_close(got, want, "float32" if float_out else dtype,
                      f"gv::{value} of gv_{name} on cuda against its twin")


# ----- 5. scatters (gpuvjp.ops._kernels.SCATTERS): compile, slot arithmetic, and on the GPU ------
SCATTERS = sorted(_kernels.SCATTERS)


def _compile_scatter(nvrtc, name, dtype, preamble=None):
    kern = _kernels.scatter_kernel(name)
    options = _cupy_options(tuple(kern.kwargs.get("options", ())))
    if dtype == "float16" and not _has_fp16_header(options):
        pytest.skip("cuda_fp16.h is on none of CuPy's include paths: CuPy could not compile a "
                    "float16 kernel on this machine either")
    family = _kernels.SCATTERS[name][0]
    preamble = _marked(kern.preamble, family) if preamble is None else preamble
    return _nvrtc_compile(nvrtc, _cupy_unit(kern, dtype, preamble), f"{kern.name}_{dtype}.cu",
                          options)


@pytest.mark.parametrize("name,dtype", [pytest.param(n, d, id=f"{n}-{d}")
                                        for n in SCATTERS for d in DTYPES])
def test_scatter_compiles_with_nvrtc(name, dtype, nvrtc):
    ok, log = _compile_scatter(nvrtc, name, dtype)
    assert ok, f"NVRTC rejects gv_{name} ({dtype}):\n{log}"


@pytest.mark.parametrize("name", SCATTERS)
def test_scatter_nvrtc_check_fails_on_a_broken_slot(name, nvrtc):
    preamble = _kernels.scatter_kernel(name).preamble
    broken = re.sub(r"\bgather_slot\b(?=\s*\()", "gather_slot_renamed", preamble)
    assert broken != preamble
    ok, log = _compile_scatter(nvrtc, name, "float32", broken)
    assert not ok and "gather_slot" in log, log


SLOT_WRAPPERS = '''
extern "C" void slot_check(const long long* idx, long long* out, long long size, long long n,
                           long long inner, long long d, int select) {
  for (long long i = 0; i < size; ++i) {
    long long k = select ? idx[gv::select_pos(i, n, inner)] : idx[i];
    out[i] = gv::gather_slot(i, k, n, inner, d);
  }
}
'''


@pytest.fixture(scope="module")
def host_slot_lib(tmp_path_factory):
    lib = _host_build(["shape"], SLOT_WRAPPERS, "slot check wrapper", tmp_path_factory)
    lib.slot_check.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_longlong] * 4 + [
        ctypes.c_int]
    lib.slot_check.restype = None
    return lib


@pytest.mark.parametrize("select", [False, True], ids=["gather", "index_select"])
@pytest.mark.parametrize("outer,n,inner,d", [(1, 1, 1, 1), (3, 4, 5, 6), (2, 7, 1, 3),
                                             (1, 5, 9, 2), (4, 2, 3, 2)])
def test_scatter_slots_match_numpy(outer, n, inner, d, select, host_slot_lib, rng):
    """The flat slot each gradient element adds into, from the kernel's gv:: functions built by
    the host compiler, against NumPy's own indexing of the (outer, d, inner) gradient."""
    shape = (outer, n, inner)
    idx = rng.integers(0, d, size=n if select else shape).astype(np.int64)
    got = np.empty(outer * n * inner, np.int64)
    host_slot_lib.slot_check(idx.ctypes.data, got.ctypes.data, got.size, n, inner, d, select)
    o, j, r = np.indices(shape)
    k = idx[j] if select else idx
    want = np.ravel_multi_index((o, k, r), (outer, d, inner)).reshape(-1)
    np.testing.assert_array_equal(got, want)


SCATTER_CASES = {
    # name -> (program on a tensor x of shape (5, 6), index values); many repeats on purpose
    "gather_dim0": lambda m, x: m.gather(x, 0, _idx(m, x, np.arange(24).reshape(4, 6) % 2)),
    "gather_dim1_small": lambda m, x: x.gather(1, _idx(m, x, (np.arange(12) % 3).reshape(3, 4))),
    "gather_3d": lambda m, x: m.gather(x.reshape(5, 2, 3), 2,
                                       _idx(m, x, np.zeros((5, 2, 7), np.int64))),
    "gather_expanded_g": lambda m, x: m.gather(x, 1, _idx(m, x, np.ones((5, 4), np.int64)))
    .sum(0, keepdim=True).expand(3, 4),
    "index_select_dim0": lambda m, x: m.index_select(x, 0, _idx(m, x, [4, 4, 0, 4, 2, 4])),
    "index_select_dim1": lambda m, x: x.index_select(-1, _idx(m, x, [5, 1, 1, 5, 5])),
    "index_select_int32": lambda m, x: x.index_select(0, _idx(m, x, [1, 1, 1]).int()),
    "getitem_rows": lambda m, x: x[_idx(m, x, [3, -1, 3, 0, 4, -2])],
    "getitem_cols_2d": lambda m, x: x[:, _idx(m, x, [[5, 5], [0, -6]])],
    "getitem_mask": lambda m, x: x[x > 0],
}


def _idx(m, x, values):
    return m.tensor(np.asarray(values, dtype=np.int64), device=x.device)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(SCATTER_CASES))
def test_scatter_on_cuda_matches_cpu(case, dtype, rng):
    """The backward scatters on the GPU (gv_gather_bwd, gv_index_select_bwd, which x[:, idx]
    uses too) against the CPU's np.add.at twin, with repeated indices accumulating."""
    f = SCATTER_CASES[case]
    x = rng.uniform(-2, 2, (5, 6)).astype(dtype)
    outs = {}
    for dev in ("cpu", "cuda"):
        xt = gv.tensor(x, device=dev)
        shape = f(gv, xt).shape
        v = gv.tensor(np.linspace(-1, 1, int(np.prod(shape))).reshape(shape).astype(dtype),
                      device=dev)
        outs[dev] = gv.vjp(lambda t: f(gv, t), xt, v)
    for got, want in zip(outs["cuda"], outs["cpu"]):
        assert (got.dtype, got.shape) == (want.dtype, want.shape)
        _assert_close(got.numpy(), want.numpy(), dtype, f"{case} on cuda against cpu")
