"""Kernel microbenchmarks: every custom kernel against the CuPy composition it replaces, in GB/s.

Each row times one kernel call (medians of CUDA-event timings on a GPU, of perf_counter timings on
the CPU) and reports the bytes it must move (each input read once, each output written once) over
that time, against the device's peak (2 x memory clock x bus width / 8, from pynvml) and against a
copy measured in the same run (device-to-device on a GPU, memcpy on the CPU; bytes read plus
written). `vs ref` is the reference's time over the kernel's, the reference being the CuPy
composition the kernel replaces (its NumPy twin run on CuPy arrays) or, for the row kernels, the
path they replace. Before timing, every kernel's result is checked against its reference.

Kernels: the fused elementwise kernels of the registry; the declared reductions (CuPy's
ReductionKernel with and without CUB, `cupy._core.set_reduction_accelerators`); the row
reductions of kernels/rows.cuh (GPUVJP_ROW_KERNELS=1) against CuPy's reductions with and without
CUB; the row broadcast against CuPy's ElementwiseKernel with a broadcast operand; sum(exp(x)) in
one ReductionKernel pass; the vjp in one pass (W1, W2, mean with the switch off and on, bytes the
one-pass floor). On the CPU the same rows run the NumPy twins and the row kernels' twins
(the emulated per-thread decomposition), which says what the plans cost there, not how a GPU runs.

    python3 scripts/bench_kernels.py [--device cpu|cuda|all] [--out FILE.md] [--budget SECONDS]

With --out, FILE.md gets the markdown table and FILE.csv the same rows as CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import os
import platform
import statistics
import sys
import time
import types

import numpy as np

try:
    import gpuvjp as gv
except ImportError:     # run from a source tree without PYTHONPATH: use that tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import gpuvjp as gv

from gpuvjp.ops import REGISTRY, _kernels, _rows  # noqa: E402
from gpuvjp.ops import reduce as R  # noqa: E402

FIELDS = ["group", "kernel", "shape", "dtype", "path", "time_us", "GB/s", "% copy", "% peak",
          "vs ref", "check"]


# ----- timing -------------------------------------------------------------------------------------
def _time_gpu(cp, fn, repeat):
    fn()
    cp.cuda.Device().synchronize()
    times = []
    start, end = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(repeat):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) * 1e3)
    return statistics.median(times)


def _time_cpu(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


class Bench:
    """The rows of one device's table, timed in one process."""

    def __init__(self, device, budget):
        self.device, self.budget, self.t0 = device, budget, time.perf_counter()
        self.rows, self.skipped = [], 0
        if device == "cuda":
            import cupy
            self.cp = cupy
            self.xp = cupy
        else:
            self.cp = None
            self.xp = np
        self.copy_gbs = self._copy()
        self.peak_gbs = _peak_gbs() if device == "cuda" else None

    def time(self, fn):
        repeat = 20 if self.device == "cuda" else 5
        return _time_gpu(self.cp, fn, repeat) if self.cp else _time_cpu(fn, repeat)

    def _copy(self):
        n = (256 << 20) // 4 if self.device == "cuda" else (64 << 20) // 4
        src = self.xp.ones(n, np.float32)
        dst = self.xp.empty_like(src)
        us = self.time(lambda: self.xp.copyto(dst, src))
        return 2 * src.nbytes / us / 1e3

    def over(self):
        return time.perf_counter() - self.t0 > self.budget

    def add(self, group, kernel, shape, dtype, path, fn, nbytes, ref=None, check=None):
        """Time `fn` (and `ref`, once per reference) and record a row; `check` compares fn's
        result with the reference's."""
        if self.over():
            self.skipped += 1
            return None
        status = ""
        try:
            if check is not None:
                status = "ok" if check() else "MISMATCH"
            us = self.time(fn)
        except Exception as exc:           # a kernel that fails is a row that says so
            self.rows.append(dict(group=group, kernel=kernel, shape=shape, dtype=dtype,
                                  path=path, check=f"error: {type(exc).__name__}: "
                                                   f"{str(exc).splitlines()[0][:80]}"))
            return None
        ref_us = ref if isinstance(ref, float) else None
        gbs = nbytes / us / 1e3
        self.rows.append({
            "group": group, "kernel": kernel, "shape": shape, "dtype": dtype, "path": path,
            "time_us": f"{us:.1f}", "GB/s": f"{gbs:.1f}",
            "% copy": f"{100 * gbs / self.copy_gbs:.0f}",
            "% peak": f"{100 * gbs / self.peak_gbs:.0f}" if self.peak_gbs else "",
            "vs ref": f"{ref_us / us:.2f}x" if ref_us else "", "check": status})
        return us


def _peak_gbs():
    """2 x the maximum memory clock x the bus width / 8, from pynvml; None without it."""
    try:
        import pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        clock = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)      # MHz
        width = pynvml.nvmlDeviceGetMemoryBusWidth(h)                           # bits
        return 2 * clock * 1e6 * width / 8 / 1e9
    except Exception:
        return None


@contextlib.contextmanager
def _accelerators(names):
    """CuPy's reduction accelerators set to `names` (["cub"] or []) for the block."""
    from cupy._core import _accelerator
    saved = _accelerator.get_reduction_accelerators()
    _accelerator.set_reduction_accelerators(names)
    try:
        yield
    finally:
        _accelerator.set_reduction_accelerators(saved)


@contextlib.contextmanager
def _row_switch(on):
    saved = os.environ.get("GPUVJP_ROW_KERNELS")
    os.environ["GPUVJP_ROW_KERNELS"] = "1" if on else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["GPUVJP_ROW_KERNELS"]
        else:
            os.environ["GPUVJP_ROW_KERNELS"] = saved


def _close(a, b, rtol=1e-3):
    a, b = [np.asarray(getattr(v, "get", lambda: v)(), np.float64) for v in (a, b)]
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=1e-3, equal_nan=True)


# ----- the CPU's stand-ins for CuPy's kernel objects ----------------------------------------------
class _TwinKernel:
    """A RawKernel that runs its twin (the CPU rows of the row kernels)."""

    def __init__(self, name, source):
        self.name = name

    def __call__(self, grid, block, args, shared_mem=0):
        _kernels.TWINS[self.name](grid, block, args, shared_mem)


def _numpy_as_cupy():
    mod = types.ModuleType("numpy_as_cupy")
    mod.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    return mod


# ----- the cases ----------------------------------------------------------------------------------
def _fused_ops():
    return sorted((op for op in REGISTRY.values() if isinstance(op.kernel, tuple)),
                  key=lambda op: op.kernel_fn)


def _inputs(op, n, xp, rng):
    """One float32 array of n elements per input of op's kernel (int64 parameters get indices)."""
    arrays = []
    for p in op.kernel[0].split(","):
        t, _ = p.split()[-2:]
        if len(t) > 1:
            arrays.append(xp.asarray(rng.integers(0, 4, n).astype(t)))
        else:
            arrays.append(xp.asarray(rng.uniform(0.5, 2.0, n).astype(np.float32)))
    return arrays


def elementwise(b, rng):
    n = (1 << 24) if b.device == "cuda" else (1 << 20)
    for op in _fused_ops():
        arrays = _inputs(op, n, b.xp, rng)
        nbytes = sum(a.nbytes for a in arrays) + n * 4
        comp = (lambda op=op, arrays=arrays: op.twin(*arrays))
        if b.device == "cuda":
            try:
                ref_us = b.time(comp)
            except Exception:          # a twin NumPy-only (CuPy lacks the function)
                ref_us = None
            b.add("elementwise", f"gv_{op.kernel_fn}", f"({n},)", "float32", "ElementwiseKernel",
                  lambda op=op, arrays=arrays: op.gpu(b.cp, *arrays), nbytes, ref_us,
                  lambda op=op, arrays=arrays: _close(op.gpu(b.cp, *arrays), op.twin(*arrays))
                  if ref_us else True)
            if ref_us:
                b.add("elementwise", f"gv_{op.kernel_fn}", f"({n},)", "float32",
                      "CuPy composition (ref)", comp, nbytes)
        else:
            b.add("elementwise", f"gv_{op.kernel_fn}", f"({n},)", "float32", "NumPy twin", comp,
                  nbytes)


def declared_reductions(b, rng):
    shape = (4096, 4096) if b.device == "cuda" else (1024, 1024)
    x = b.xp.asarray(rng.uniform(-3, 3, shape).astype(np.float32))
    for name, red in sorted(_kernels.REDUCTIONS.items()):
        nbytes = x.nbytes + shape[0] * 4 * len(red.values)
        first = lambda out: out[0] if isinstance(out, tuple) else out       # noqa: E731
        if b.device == "cuda":
            twin = (lambda red=red: red.twin(x, 1, False))    # on CuPy arrays: the composition
            ref_us = b.time(twin)
            b.add("reduction", f"gv_{name}", str(shape), "float32", "CuPy composition (ref)",
                  twin, nbytes)
            for acc in (["cub"], []):
                with _accelerators(acc):
                    b.add("reduction", f"gv_{name}", str(shape), "float32",
                          f"ReductionKernel, {'CUB' if acc else 'no CUB'}",
                          lambda red=red: red(b.cp, x, 1), nbytes, ref_us,
                          lambda red=red, twin=twin: _close(first(red(b.cp, x, 1)),
                                                            first(twin())))
        else:
            b.add("reduction", f"gv_{name}", str(shape), "float32", "NumPy twin",
                  lambda red=red: red.twin(x, 1, False), nbytes)


def _row_shapes(device):
    if device == "cuda":    # short rows, model rows, the seed's rows, few vocabulary-sized rows
        return [(65536, 128), (4096, 4096), (16384, 16384), (16, 1 << 21)]
    return [(4096, 128), (256, 4096), (4, 1 << 18)]


def _row_paths(kind, xp, x, float_out):
    """The path the row kernel replaces (switch off) for `kind`."""
    if kind == "sum":
        return lambda: R._sum_impl(xp, x, (1,), False)
    if kind == "mean":
        return lambda: xp.mean(x, axis=1)
    if kind in ("amax", "amin"):
        return lambda: getattr(xp, kind)(x, axis=1)
    red = _kernels.REDUCTIONS[kind]
    return lambda: red(xp, x, 1, False, float_out)


def row_reductions(b, rng):
    xp = b.cp or _numpy_as_cupy()
    saved = _rows._raw_kernel
    if b.device != "cuda":
        _rows._raw_kernel = _TwinKernel
    try:
        for shape in _row_shapes(b.device):
            host = rng.uniform(-3, 3, shape).astype(np.float32)
            x = b.cp.asarray(host) if b.cp else host
            for kind in sorted(_rows.ROW_OPS):
                nout = _rows.ROW_OPS[kind].nout
                nbytes = x.nbytes + shape[0] * 4 * nout
                launches = _rows.plan(kind, shape[0], shape[1], "float32")
                variant = "+".join(f"{l.variant}(v{l.vec},b{l.block[0]}x{l.block[1]})"
                                   for l in launches)

                def rows(kind=kind):
                    with _row_switch(True):
                        return _rows.reduce(kind, xp, x, 1, False)

                first = lambda out: out[0] if isinstance(out, tuple) else out    # noqa: E731
                old = _row_paths(kind, b.xp, x, False)
                if b.device == "cuda":
                    times = {}
                    for acc in (["cub"], []):
                        with _accelerators(acc):
                            label = f"CuPy, {'CUB' if acc else 'no CUB'}"
                            times[label] = b.add("rows", f"gv_rows_{kind}", str(shape),
                                                 "float32", label + " (switch off)", old, nbytes)
                    ref = times.get("CuPy, CUB")
                    b.add("rows", f"gv_rows_{kind}", str(shape), "float32",
                          f"RawKernel {variant}", rows, nbytes, ref,
                          lambda kind=kind, old=old: _close(first(rows(kind)), first(old())))
                else:
                    ref = b.add("rows", f"gv_rows_{kind}", str(shape), "float32",
                                "NumPy (switch off)", old, nbytes)
                    b.add("rows", f"gv_rows_{kind}", str(shape), "float32",
                          f"twin of RawKernel {variant}", rows, nbytes, ref,
                          lambda kind=kind, old=old: _close(first(rows(kind)), first(old())))
    finally:
        _rows._raw_kernel = saved


def row_broadcast(b, rng):
    """exp_bwd(g[:, None], x): the backward of sum(exp(x), dim=1)."""
    op = REGISTRY["exp_bwd"]
    xp = b.cp or _numpy_as_cupy()
    saved = _rows._raw_kernel
    if b.device != "cuda":
        _rows._raw_kernel = _TwinKernel
    try:
        for shape in _row_shapes(b.device)[:3]:
            x = b.xp.asarray(rng.uniform(-1, 1, shape).astype(np.float32))
            g = b.xp.asarray(rng.uniform(-1, 1, (shape[0], 1)).astype(np.float32))
            nbytes = 2 * x.nbytes + g.nbytes

            def rowcast():
                with _row_switch(True):
                    return _rows.rowcast(xp, op.family, "exp_bwd", *op.kernel, [g, x])

            comp = lambda: g * b.xp.exp(x)        # noqa: E731
            if b.device == "cuda":
                ref = b.add("row broadcast", "gv_rowcast_exp_bwd_rf", str(shape), "float32",
                            "CuPy composition", comp, nbytes)
                with _row_switch(False):
                    b.add("row broadcast", "gv_exp_bwd", str(shape), "float32",
                          "ElementwiseKernel, broadcast g (switch off)",
                          lambda: op.gpu(b.cp, g, x), nbytes, ref)
            else:
                ref = b.add("row broadcast", "gv_exp_bwd", str(shape), "float32", "NumPy twin",
                            lambda: op.twin(g, x), nbytes)
            b.add("row broadcast", "gv_rowcast_exp_bwd_rf", str(shape), "float32",
                  "RawKernel 2-D" if b.device == "cuda" else "twin of RawKernel 2-D", rowcast,
                  nbytes, ref, lambda: _close(rowcast(), comp()))
    finally:
        _rows._raw_kernel = saved


def map_sum(b, rng):
    """sum(exp(x), dim=1) in one ReductionKernel pass (the seed's forward) and its composition."""
    if b.device != "cuda":
        return
    op = REGISTRY["exp"]
    for shape in _row_shapes(b.device)[:3]:
        x = b.cp.asarray(rng.uniform(-1, 1, shape).astype(np.float32))
        nbytes = x.nbytes + shape[0] * 4
        comp = lambda: b.cp.exp(x).sum(axis=1)     # noqa: E731
        ref = b.add("map reduction", "gv_exp_fwd_sum", str(shape), "float32",
                    "CuPy composition", comp, nbytes)
        for acc in (["cub"], []):
            with _accelerators(acc):
                b.add("map reduction", "gv_exp_fwd_sum", str(shape), "float32",
                      f"ReductionKernel, {'CUB' if acc else 'no CUB'}",
                      lambda: _kernels.map_sum(op, x, 1, False), nbytes, ref,
                      lambda: _close(_kernels.map_sum(op, x, 1, False), comp()))
        t = gv.tensor(x.get(), device="cuda")
        for on in (False, True):       # through gpuvjp: the fused ReductionKernel, the row kernel
            with _row_switch(on):
                b.add("map reduction", "gv.exp(t).sum(dim=1)", str(shape), "float32",
                      "row kernel of the pending map (GPUVJP_ROW_KERNELS=1)" if on else
                      "fused plan's ReductionKernel", lambda: gv.exp(t).sum(dim=1)._array(),
                      nbytes, ref, lambda: _close(gv.exp(t).sum(dim=1)._array(), comp()))


VJPS = {
    "exp_reducer": lambda t: gv.exp(t).sum(dim=1),       # W1, the seed
    "logsumexp": lambda t: gv.logsumexp(t, 1),
    "softmax": lambda t: gv.nn.functional.softmax(t, dim=-1),
}


def vjps(b, rng):
    """Whole vjps on cuda with the switch off and on: the launches the row kernels replace, in
    place. Bytes: x read and gx written (plus the cotangent and output for softmax)."""
    if b.device != "cuda":
        return
    for name, f in VJPS.items():
        shape = (16384, 16384) if name == "exp_reducer" else (4096, 4096)
        x = gv.tensor(rng.uniform(-1, 1, shape).astype(np.float32), device="cuda")
        out_shape = f(x).shape
        v = gv.tensor(rng.uniform(-1, 1, out_shape).astype(np.float32), device="cuda")
        nbytes = 2 * x.numel() * 4 * (2 if name == "softmax" else 1)
        call = lambda f=f, x=x, v=v: gv.vjp(f, x, v)      # noqa: E731
        with _row_switch(False):
            ref = b.add("vjp", name, str(shape), "float32", "switch off", call, nbytes)
            want = call()[1].numpy()
        with _row_switch(True):
            b.add("vjp", name, str(shape), "float32", "GPUVJP_ROW_KERNELS=1", call, nbytes, ref,
                  lambda call=call, want=want: _close(call()[1].numpy(), want))


def _chain16(t):
    """W2 of scripts/bench_vjp.py: 16 elementwise ops (tanh, sin, scale, shift, exp, square)."""
    steps = (lambda u: u.tanh(), lambda u: u.sin(), lambda u: u * 0.75, lambda u: u + 0.25,
             lambda u: (u * 0.1).exp(), lambda u: u.square())
    n = 0
    while n < 16:
        t = steps[n % len(steps)](t)
        n += 2 if n % len(steps) == 4 else 1
    return t


ONEPASS = {   # name: (f, cuda shape, cpu shape)
    "W1 exp_reducer": (lambda t: gv.exp(t).sum(dim=1), (16384, 16384), (2048, 2048)),
    "W2 chain16": (lambda t: _chain16(t).sum(), (1 << 24,), (1 << 20,)),
    "mean": (lambda t: gv.exp(t).mean(dim=1), (4096, 4096), (1024, 1024)),
}


def onepass(b, rng):
    """The vjp in one pass (gpuvjp/_onepass.py): the whole vjp with GPUVJP_ROW_KERNELS off (the
    reduction, then the backward) and on (one kernel reads x once, writes out and gx). Bytes: the
    one-pass floor, x and v read once, out and gx written once; `kernel` names the launches the
    profiler records with the switch on."""
    for name, (f, cuda_shape, cpu_shape) in ONEPASS.items():
        shape = cuda_shape if b.device == "cuda" else cpu_shape
        x = gv.tensor(rng.uniform(-1, 1, shape).astype(np.float32), device=b.device)
        out_shape = f(x).shape
        v = None if not out_shape else \
            gv.tensor(rng.uniform(-1, 1, out_shape).astype(np.float32), device=b.device)
        nbytes = 2 * x.numel() * 4 + 2 * max(1, int(np.prod(out_shape))) * 4
        call = lambda f=f, x=x, v=v: gv.vjp(f, x, v)      # noqa: E731
        with _row_switch(False):
            ref = b.add("one-pass vjp", name, str(shape), "float32", "switch off",
                        call, nbytes)
            want = [t.numpy() for t in call()]
        with _row_switch(True):
            with gv.profiler.profile() as prof:
                call()
            launches = "+".join(k.name.split("_")[1] for k in prof.kernels)
            b.add("one-pass vjp", name, str(shape), "float32",
                  f"GPUVJP_ROW_KERNELS=1 ({prof.launches} kernel: {launches})", call, nbytes,
                  ref, lambda call=call, want=want: all(
                      _close(g.numpy(), w) for g, w in zip(call(), want)))


CASES = [onepass, row_reductions, row_broadcast, vjps, map_sum, declared_reductions,
         elementwise]


# ----- output -------------------------------------------------------------------------------------
def _markdown(b):
    head = [f"### bench_kernels on {b.device}: {_device_name(b)}", "",
            f"copy {b.copy_gbs:.0f} GB/s measured"
            + (f", peak {b.peak_gbs:.0f} GB/s (pynvml)" if b.peak_gbs else ", no peak (pynvml "
               "unavailable or CPU)"), ""]
    lines = ["| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(r.get(f, "")) for f in FIELDS) + " |" for r in b.rows]
    tail = [f"", f"{b.skipped} rows left out: over the {b.budget:.0f} s budget"] \
        if b.skipped else []
    return "\n".join(head + lines + tail) + "\n"


def _device_name(b):
    if b.device == "cuda":
        props = b.cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    return f"{platform.processor() or platform.machine()}, numpy {np.__version__}"


def _csv(benches):
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["device"] + FIELDS)
    w.writeheader()
    for b in benches:
        for r in b.rows:
            w.writerow({"device": b.device, **r})
    return buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description="kernel microbenchmarks (GB/s)")
    p.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    p.add_argument("--out", help="write the markdown table here and the CSV next to it")
    p.add_argument("--budget", type=float, default=40.0,
                   help="seconds per device; rows past it are left out (default 40)")
    args = p.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not gv.cuda.is_available():
        print("no CUDA GPU: the cuda rows are left out", file=sys.stderr)
        devices.remove("cuda")
    rng = np.random.default_rng(0)
    benches = []
    for device in devices:
        b = Bench(device, args.budget)
        for case in CASES:
            case(b, rng)
        benches.append(b)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"## Kernel microbenchmarks ({stamp})\n\n" + "\n".join(_markdown(b) for b in benches)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".csv", "w") as f:
            f.write(_csv(benches))
    bad = [r for b in benches for r in b.rows if r.get("check", "").startswith(("MISMATCH",
                                                                                "error"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
