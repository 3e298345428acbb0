"""The emulated CuPy (gpuvjp.testing) rejects what CuPy rejects, and keeps CuPy's bookkeeping:
these tests run with or without GPUVJP_EMULATE_CUDA, on the emulator module itself."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gpuvjp.ops import _kernels
from gpuvjp.testing import _fake_cupy as fc


@pytest.fixture
def twins(monkeypatch):
    """Register test kernels' twins for one test."""
    def register(name, fn):
        monkeypatch.setitem(_kernels.TWINS, name, fn)
    return register


@pytest.fixture
def two_devices():
    saved = fc._config["devices"]
    fc.set_device_count(2)
    yield
    fc.set_device_count(saved)


# ----- arrays ---------------------------------------------------------------------------------
def test_implicit_conversion_is_refused():
    x = fc.arange(3.0)
    for convert in (np.asarray, np.array, lambda a: a.__array__()):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
            convert(x)
    np.testing.assert_array_equal(x.get(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(fc.asnumpy(x), [0.0, 1.0, 2.0])


def test_mixed_numpy_operands_are_refused():
    x, h = fc.ones(3), np.ones(3)
    for op in (lambda: x + h, lambda: h + x, lambda: fc.add(x, h), lambda: np.add(h, x),
               lambda: fc.maximum(x, h), lambda: fc.add(x, [1.0, 2.0, 3.0]),
               lambda: fc.matmul(x, h), lambda: fc.stack([x, h])):
        with pytest.raises(TypeError, match="Unsupported type"):
            op()
    # host data may be copied in, and NumPy functions on device arrays stay on the device
    assert isinstance(fc.asarray(h) + x, fc.ndarray)
    assert isinstance(np.exp(x), fc.ndarray) and isinstance(np.sum(x), fc.ndarray)


def test_array_from_another_device_is_refused(two_devices):
    with fc.cuda.Device(1):
        y = fc.ones(3)
        assert y.device.id == 1 and fc.cuda.runtime.getDevice() == 1
    assert fc.cuda.runtime.getDevice() == 0
    with pytest.raises(ValueError, match=r"resides \(1\) is different from the current device"):
        y * 2
    with pytest.raises(ValueError, match="current device"):
        fc.exp(y)
    with pytest.raises(ValueError, match="current device"):
        y[0] = 5.0
    view = y[1:].reshape(2, 1)                      # views launch nothing: allowed, as on CuPy
    assert view.device.id == 1
    moved = fc.asarray(y)                           # CuPy's peer copy onto the current device
    assert moved.device.id == 0
    with pytest.raises(fc.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        fc.cuda.Device(2)


def test_host_reads_are_synchronisations():
    x = fc.arange(4.0)
    fc.clear_records()
    x.get(), fc.asnumpy(x), x[1].item(), bool(x[1]), float(x[2]), x.tolist()
    assert fc.launches("sync") == ["get", "get", "item", "bool", "float", "tolist"]


def test_views_share_their_allocation_and_launch_nothing():
    pool = fc.get_default_memory_pool()
    base = pool.used_bytes()
    x = fc.zeros((64, 64), dtype=np.float32)
    assert pool.used_bytes() == base + 64 * 64 * 4
    fc.clear_records()
    v = x.reshape(-1)[::2].T
    assert pool.used_bytes() == base + 64 * 64 * 4 and fc.launches() == []
    del x
    assert pool.used_bytes() == base + 64 * 64 * 4  # the view keeps the buffer
    del v
    assert pool.used_bytes() == base
    assert pool.high_water_bytes() >= base + 64 * 64 * 4


def test_allocation_past_the_budget_is_out_of_memory():
    saved = fc._config["budget"]
    fc.set_memory_budget(1 << 20)
    try:
        with pytest.raises(fc.cuda.OutOfMemoryError, match="1,048,580 bytes") as info:
            fc.empty(262145, dtype=np.float32)
        assert isinstance(info.value, MemoryError)
        x = fc.ones(1 << 17, dtype=np.float32)      # half the budget
        with pytest.raises(MemoryError):
            x + x + x                               # a third buffer does not fit
        free, total = fc.cuda.runtime.memGetInfo()
        assert total == 1 << 20 and free <= total - x.nbytes
    finally:
        fc.set_memory_budget(saved)


# ----- kernels --------------------------------------------------------------------------------
def test_elementwise_kernel_binds_one_dtype_per_placeholder(twins):
    twins("emu_axpy", lambda a, x, y: a * x + y)
    k = fc.ElementwiseKernel("T a, T x, T y", "T z", "z = a * x + y", "emu_axpy")
    x32, y64 = fc.ones(3, dtype=np.float32), fc.ones(3, dtype=np.float64)
    with pytest.raises(TypeError, match="placeholder T bound to float32 and float64"):
        k(2.0, x32, y64)
    z = k(2.0, x32, x32 * 3)                        # a scalar binds nothing: it takes T
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z.get(), [5.0, 5.0, 5.0])
    typed = fc.ElementwiseKernel("T x, int64 k", "T z", "z = x * k", "emu_axpy")
    with pytest.raises(TypeError, match="k is int64, got int32"):
        typed(x32, fc.ones(3, dtype=np.int32))
    with pytest.raises(TypeError, match="Unsupported type"):
        k(2.0, x32, np.ones(3, np.float32))


def test_elementwise_kernel_broadcasts_and_raw_outputs_are_mutated(twins):
    def scatter(g, idx, out):
        np.add.at(out, idx, g)
    twins("emu_scatter", scatter)
    k = fc.ElementwiseKernel("T g, int64 idx", "raw T out", "atomicAdd(&out[idx], g)",
                             "emu_scatter")
    out = fc.zeros(4)
    k(fc.ones((2, 3)), fc.asarray(np.array([0, 1, 1])), out)
    np.testing.assert_array_equal(out.get(), [2.0, 4.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="size is undecided"):
        k(fc.ones(3), fc.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("name", ["i", "n", "_tmp"])
def test_reserved_parameter_names(name):
    with pytest.raises(ValueError, match="reserved by CuPy"):
        fc.ElementwiseKernel(f"T {name}", "T z", "z = 1", "emu_reserved")
    with pytest.raises(ValueError, match="reserved by CuPy"):
        fc.ReductionKernel(f"T {name}", "T z", "a", "a + b", "z = a", "0", "emu_reserved")


def test_reduction_kernel_checks_output_shapes(twins):
    twins("emu_sum", lambda src, axis, keepdims: np.sum(src, axis=axis, keepdims=keepdims))
    k = fc.ReductionKernel("T src", "T dst", "src", "a + b", "dst = a", "0", "emu_sum")
    x = fc.asarray(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(k(x, axis=1).get(), [6.0, 22.0, 38.0])
    assert k(x, axis=(0, 1), keepdims=True).shape == (1, 1)
    with pytest.raises(ValueError, match=r"Out shape is mismatched.*\(3,\).*\(3, 1\)"):
        k(x, fc.empty((3,)), axis=1, keepdims=True)
    with pytest.raises(TypeError, match="Type is mismatched"):
        k(x, fc.empty((3,), dtype=np.float32), axis=1)


def test_reduction_parameter_name_inside_the_code_fails_to_compile(twins):
    """CuPy's CUB path renames parameters by plain substring replacement: "x" hits "exp"."""
    twins("emu_expsum", lambda x, axis, keepdims: np.exp(x).sum(axis=axis, keepdims=keepdims))
    bad = fc.ReductionKernel("T x", "T y", "exp(x)", "a + b", "y = a", "0", "emu_expsum")
    with pytest.raises(fc.cuda.compiler.CompileException, match="'x' occurs inside 'exp'"):
        bad(fc.ones((2, 3)), axis=1)
    good = fc.ReductionKernel("T src", "T dst", "exp(src)", "a + b", "dst = a", "0",
                              "emu_expsum")
    np.testing.assert_allclose(good(fc.zeros((2, 3)), axis=1).get(), [3.0, 3.0])


def test_kernel_without_a_twin_is_an_error():
    k = fc.ElementwiseKernel("T x", "T y", "y = x", "emu_no_twin_registered")
    with pytest.raises(RuntimeError, match="no NumPy twin for ElementwiseKernel"):
        k(fc.ones(2))


def test_raw_kernel_runs_its_twin(twins):
    def twin(grid, block, args, shared_mem=0):
        x, out, n = args
        out[:n] = x[:n] * 2
    twins("emu_double", twin)
    k = fc.RawKernel("extern \"C\" __global__ void emu_double() {}", "emu_double")
    x, out = fc.arange(4.0), fc.zeros(4)
    k((1,), (128,), (x, out, np.int64(3)))
    np.testing.assert_array_equal(out.get(), [0.0, 2.0, 4.0, 0.0])
    with pytest.raises(fc.cuda.runtime.CUDARuntimeError, match="InvalidConfiguration"):
        k((1,), (2048,), (x, out, np.int64(3)))


# ----- streams, capture, graphs ---------------------------------------------------------------
def test_capture_refuses_cublas_cusolver_and_curand():
    a = fc.ones((4, 4))
    s = fc.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        assert s.is_capturing()
        for call in (lambda: a @ a, lambda: fc.matmul(a, a), lambda: a.dot(a),
                     lambda: fc.einsum("ij,jk->ik", a, a), lambda: fc.linalg.svd(a),
                     lambda: fc.random.standard_normal((4,)), lambda: a.get()):
            with pytest.raises(fc.cuda.runtime.CUDARuntimeError,
                               match="cudaErrorStreamCaptureUnsupported"):
                call()
        s.end_capture()
    assert not s.is_capturing()
    with pytest.raises(fc.cuda.runtime.CUDARuntimeError):
        fc.cuda.Stream.null.begin_capture()


def test_graph_launch_replays_the_captured_launches(twins):
    twins("emu_twice", lambda x: 2 * x)
    k = fc.ElementwiseKernel("T x", "T y", "y = 2 * x", "emu_twice")
    x = fc.ones(3)
    s = fc.cuda.Stream()
    with s:
        assert fc.cuda.get_current_stream() is s
        s.begin_capture()
        y = k(x)
        z = fc.exp(y) + 1
        graph = s.end_capture()
    assert len(graph) == 3
    x[...] = 3.0                                     # new input, same buffers
    fc.clear_records()
    graph.launch()
    np.testing.assert_allclose(y.get(), [6.0] * 3)
    np.testing.assert_allclose(z.get(), np.exp(6.0) + 1)
    assert fc.launches()[:3] == ["emu_twice", "exp", "add"]
    assert fc.cuda.get_current_stream() is fc.cuda.Stream.null


def test_events_and_memory_hooks():
    start, end = fc.cuda.Event(), fc.cuda.Event()
    start.record()
    end.record()
    end.synchronize()
    assert fc.cuda.get_elapsed_time(start, end) >= 0

    class Peak(fc.cuda.MemoryHook):
        def __init__(self):
            self.now = self.peak = 0

        def malloc_postprocess(self, **kw):
            self.now += kw["mem_size"]
            self.peak = max(self.peak, self.now)

        def free_postprocess(self, **kw):
            self.now -= kw["mem_size"]

    with Peak() as hook:
        a = fc.ones(1000)
        b = a * 2
        del a, b
    assert hook.peak == 2 * 8192 and hook.now == 0


# ----- the switch -------------------------------------------------------------------------------
def _python(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "GPUVJP_EMULATE_CUDA"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))


def test_the_switch_runs_cuda_on_the_emulator_and_is_off_by_default():
    code = ("import sys, numpy as np, gpuvjp as gv\n"
            "from gpuvjp import _device\n"
            "print(gv.cuda.is_available(), gv.cuda.device_count(),"
            " 'gpuvjp.testing._fake_cupy' in sys.modules)\n"
            "if gv.cuda.is_available():\n"
            "    x = gv.tensor(np.ones((2, 3)), device='cuda:1')\n"
            "    _, g = gv.vjp(lambda t: t.exp().sum(dim=1), x, gv.ones(2, dtype=gv.float64,"
            " device='cuda:1'))\n"
            "    print(type(g._array()).__module__, g.device, round(g.numpy().sum(), 4))\n")
    on = _python(code, GPUVJP_EMULATE_CUDA="2")
    assert on.returncode == 0, on.stderr
    assert on.stdout.split() == ["True", "2", "True", "gpuvjp.testing._fake_cupy", "cuda:1",
                                 str(round(6 * np.e, 4))]
    off = _python("import sys, gpuvjp\nimport gpuvjp.cuda\n"
                  "print('gpuvjp.testing._fake_cupy' in sys.modules)")
    assert off.returncode == 0 and off.stdout.split() == ["False"], off.stderr
    bad = _python("import gpuvjp", GPUVJP_EMULATE_CUDA="yes")
    assert bad.returncode != 0 and "GPUVJP_EMULATE_CUDA" in bad.stderr


def test_every_cupy_import_goes_through_the_device_module():
    """The switch holds everywhere only if gpuvjp imports CuPy in one place."""
    import pathlib
    import re

    import gpuvjp
    root = pathlib.Path(gpuvjp.__file__).parent
    found = [f"{p.relative_to(root)}:{n}" for p in sorted(root.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.match(r"\s*(import cupy\b|from cupy\b)", line)]
    assert found and all(f.startswith("_device.py:") for f in found), found


def test_every_array_module_name_gpuvjp_uses_exists_in_cupy():
    """The emulator serves any NumPy name; CuPy has fewer. `xp.<name>` in gpuvjp's source must
    exist in the real CuPy (importing it needs no GPU)."""
    import pathlib
    import re
    import types

    import gpuvjp
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install -e .[test])")
    root = pathlib.Path(gpuvjp.__file__).parent
    missing, checked = [], 0
    for path in sorted(root.rglob("*.py")):
        if "testing" in path.parts:
            continue
        for m in re.finditer(r"\bxp\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?", path.read_text()):
            checked += 1
            top = getattr(cupy, m.group(1), None)
            sub = m.group(2)
            if top is None or (sub and isinstance(top, types.ModuleType)
                               and not hasattr(top, sub)):
                missing.append(f"{path.relative_to(root)}: {m.group(0)}")
    assert checked > 20 and not missing, missing
