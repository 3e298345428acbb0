"""Benchmark one full vjp call (forward, graph, backward) under gpuvjp and its peers.

For each workload and device the same NumPy data feeds `gpuvjp.vjp`,
`torch.autograd.functional.vjp` and, on a GPU when JAX has one, `jax.vjp` under `jax.jit`.
Before timing, each library's outputs and vjp are checked against torch's (against a float64
NumPy reference where torch is absent), rtol 1e-4. Times are medians of single calls after
warm-up, with the device synchronized before and after each call; the libraries take turns
call by call, and inputs under 64 MiB rotate among 4 copies so caches stay honest. The
repeat count is sized to ~0.5 s per workload (5 to 200 calls). `floor` is the fewest
bytes the call must move (each input read once, each output written once) over a copy
bandwidth measured in the same run (bytes read plus bytes written).

    python3 scripts/bench_vjp.py [--device cpu|cuda|all] [--out FILE] [--quick]
    python3 scripts/bench_vjp.py --per-call [--device ...] [--calls N]   (bench_percall.py)
"""

import argparse
import dataclasses
import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import types
from typing import Callable

import numpy as np

try:
    import gpuvjp as gv
except ImportError:     # run from a source tree without PYTHONPATH: use that tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import gpuvjp as gv

try:
    import torch
except ImportError:
    torch = None

RTOL, ATOL = 1e-4, 1e-6
WARMUP = 3
ESTIMATE = 3            # timed calls whose minimum sets the repeat count
SMALL_INPUTS = 64 << 20  # inputs under this many bytes rotate among ROTATE copies (caches)
ROTATE = 4


# ----- workloads --------------------------------------------------------------
# A function is written once as f(m, *inputs); m is the module (gv, torch, or a JAX shim).

def exp_reducer(m, x):
    return m.sum(m.exp(x), dim=1)        # the seed: x.exp().sum(dim=1)


def adder(m, x, y):
    return 2 * x + 3 * y


@dataclasses.dataclass
class Workload:
    name: str
    shape: tuple
    func: Callable
    make: Callable       # rng -> (inputs: list of float32 arrays, v: float32 array)
    ref: Callable        # (inputs, v) -> (out, grads), float64 NumPy
    nbytes: int          # fewest bytes one call moves


def uniform(rng, shape):
    """float32 uniform(-1, 1), drawn directly in float32 (fast for 1 GiB inputs)."""
    a = rng.random(shape, dtype=np.float32)
    a *= 2
    a -= 1
    return a


def exp_reducer_workload(n):
    def make(rng):
        return [uniform(rng, (n, n))], np.ones(n, np.float32)

    def ref(inputs, v):
        e = np.exp(inputs[0].astype(np.float64))
        return e.sum(axis=1), (e * v[:, None],)

    # read x and v, write out and the grad
    return Workload("exp_reducer", (n, n), exp_reducer, make, ref, (2 * n * n + 2 * n) * 4)


def adder_workload(shape):
    def make(rng):
        return [uniform(rng, shape), uniform(rng, shape)], np.ones(shape, np.float32)

    def ref(inputs, v):
        x, y = (a.astype(np.float64) for a in inputs)
        v = v.astype(np.float64)
        return 2 * x + 3 * y, (2 * v, 3 * v)

    # read x, y and v, write out and two grads
    return Workload("adder", shape, adder, make, ref, 6 * int(np.prod(shape)) * 4)


def workloads(device, quick):
    if quick:
        sizes, big_adder = ([4, 256], (256, 256)) if device == "cpu" else ([4, 1024], (1024, 1024))
    elif device == "cpu":
        sizes, big_adder = [4, 1024, 4096], (1024, 1024)
    else:
        sizes, big_adder = [4, 1024, 4096, 16384], (4096, 4096)
    return ([exp_reducer_workload(n) for n in sizes]
            + [adder_workload((2,)), adder_workload(big_adder)])


# ----- libraries --------------------------------------------------------------
# Each adapter turns NumPy data into one zero-argument call, and a result back into
# NumPy (out, grads).

def as_tuple(g):
    return g if isinstance(g, tuple) else (g,)


class Gpuvjp:
    name = "gpuvjp"

    def __init__(self, device):
        self.device = device

    def prepare(self, wl, inputs, v):
        xs = tuple(gv.tensor(a, device=self.device) for a in inputs)
        tv = gv.tensor(v, device=self.device)
        args = xs if len(xs) > 1 else xs[0]
        return lambda: gv.vjp(lambda *t: wl.func(gv, *t), args, tv)

    def sync(self):
        if self.device == "cuda":
            import cupy
            cupy.cuda.Device().synchronize()

    def to_numpy(self, res):
        out, g = res
        return out.numpy(), tuple(t.numpy() for t in as_tuple(g))

    def free(self):
        if self.device == "cuda":
            import cupy
            cupy.get_default_memory_pool().free_all_blocks()


class Torch:
    name = "torch"

    def __init__(self, device):
        self.device = device

    def prepare(self, wl, inputs, v):
        xs = tuple(torch.from_numpy(a).to(self.device) for a in inputs)
        tv = torch.from_numpy(v).to(self.device)
        args = xs if len(xs) > 1 else xs[0]
        return lambda: torch.autograd.functional.vjp(lambda *t: wl.func(torch, *t), args, tv)

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def to_numpy(self, res):
        out, g = res
        return out.detach().cpu().numpy(), tuple(t.detach().cpu().numpy() for t in as_tuple(g))

    def free(self):
        if self.device == "cuda":
            torch.cuda.empty_cache()


class Jax:
    name = "jax"

    def __init__(self, jax, dev):
        self.jax, self.dev = jax, dev
        jnp = jax.numpy
        self.m = types.SimpleNamespace(exp=jnp.exp, sum=lambda x, dim: jnp.sum(x, axis=dim))
        self.jitted = {}    # one compiled function per workload, shared by its input sets

    def prepare(self, wl, inputs, v):
        jax = self.jax
        xs = [jax.device_put(a, self.dev) for a in inputs]
        jv = jax.device_put(v, self.dev)
        key = (wl.name, wl.shape)
        if key not in self.jitted:
            def run(v, *xs):
                out, pullback = jax.vjp(lambda *t: wl.func(self.m, *t), *xs)
                return out, pullback(v)
            self.jitted[key] = jax.jit(run)
        run = self.jitted[key]
        return lambda: jax.block_until_ready(run(jv, *xs))

    def sync(self):
        pass    # the call blocks until its results are ready

    def to_numpy(self, res):
        out, g = res
        return np.asarray(out), tuple(np.asarray(t) for t in g)

    def free(self):
        self.jitted.clear()
        self.jax.clear_caches()


def load_jax():
    """JAX with a GPU backend, or None; it must not grab most of the GPU's memory."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
        # full float32 matmuls, as gpuvjp and torch compute them (JAX's default rounds
        # matmul inputs on the GPU)
        jax.config.update("jax_default_matmul_precision", "highest")
        return jax, jax.devices("gpu")[0]
    except Exception as e:      # absent, or no GPU backend
        print(f"# jax skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def libraries(device):
    libs = [Gpuvjp(device)] if device == "cpu" or gv.cuda.is_available() else []
    if torch is not None and (device == "cpu" or torch.cuda.is_available()):
        libs.append(Torch(device))
    if device == "cuda":
        jax_gpu = load_jax()
        if jax_gpu is not None:
            libs.append(Jax(*jax_gpu))
    return libs


# ----- bandwidth --------------------------------------------------------------

def copy_bandwidth(device):
    """Bytes read plus bytes written per second by a large copy on device, median of 10."""
    if device == "cpu":
        src = np.random.default_rng(1).random(32 << 20)   # 256 MiB of float64
        dst = np.empty_like(src)
        sync, copy = (lambda: None), (lambda: np.copyto(dst, src))
    elif gv.cuda.is_available():
        import cupy
        src = cupy.random.random(128 << 20)                # 1 GiB of float64
        dst = cupy.empty_like(src)
        sync, copy = cupy.cuda.Device().synchronize, (lambda: cupy.copyto(dst, src))
    else:
        src = torch.rand(128 << 20, dtype=torch.float64, device="cuda")
        dst = torch.empty_like(src)
        sync, copy = torch.cuda.synchronize, (lambda: dst.copy_(src))
    for _ in range(2):
        copy()
    seconds = statistics.median(timed(copy, sync) for _ in range(10))
    nbytes = src.nbytes
    del src, dst
    if device == "cuda" and gv.cuda.is_available():
        cupy.get_default_memory_pool().free_all_blocks()
    return 2 * nbytes / seconds


# ----- timing and checks ------------------------------------------------------

def timed(call, sync):
    sync()
    t0 = time.perf_counter()
    call()
    sync()
    return time.perf_counter() - t0


def attempt(row, lib, fn):
    """fn(), or False with the error recorded in the row (one library's failure spares
    the others)."""
    try:
        return fn()
    except Exception as e:
        row["times"][lib.name] = f"ERROR {type(e).__name__}"
        print(f"# {lib.name} failed:", file=sys.stderr)
        traceback.print_exc()
        return False


def time_interleaved(calls, row, quick):
    """Seconds of each library's calls, after warm-up. The libraries take turns, call by
    call, so drift in the machine's speed hits them alike; repeats fill ~0.5 s in all."""
    target, lo, hi = (0.05, 3, 20) if quick else (0.5, 5, 200)

    def warm_and_estimate(lib, cs):
        for i in range(max(WARMUP, len(cs))):     # every rotated input set at least once
            cs[i % len(cs)]()
        return min(timed(cs[i % len(cs)], lib.sync) for i in range(ESTIMATE))

    estimates = {lib: attempt(row, lib, lambda: warm_and_estimate(lib, cs))
                 for lib, cs in calls.items()}
    active = {lib: cs for lib, cs in calls.items() if estimates[lib] is not False}
    total = sum(estimates[lib] for lib in active)
    reps = max(lo, min(hi, int(target / max(total, 1e-9))))
    times = {lib: [] for lib in active}
    for i in range(reps):
        for lib, cs in list(active.items()):
            t = attempt(row, lib, lambda: timed(cs[i % len(cs)], lib.sync))
            if t is False:
                del active[lib], times[lib]
            else:
                times[lib].append(t)
    return times


def allclose(a, b, chunk=1 << 24):
    """np.allclose over float32 results, chunked so 1 GiB results need little memory."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    a, b = a.reshape(-1), b.reshape(-1)
    return all(np.allclose(a[i:i + chunk], b[i:i + chunk], rtol=RTOL, atol=ATOL)
               for i in range(0, a.size, chunk))


def mismatch(got, want):
    """'' if (out, grads) agree, else which part does not."""
    (out, grads), (want_out, want_grads) = got, want
    if not allclose(out, want_out):
        return "out"
    if len(grads) != len(want_grads):
        return "vjp arity"
    bad = [i for i, (g, w) in enumerate(zip(grads, want_grads)) if not allclose(g, w)]
    return f"vjp[{','.join(map(str, bad))}]" if bad else ""


# ----- one workload -----------------------------------------------------------

def run_workload(wl, device, libs, quick, bandwidth):
    rng = np.random.default_rng(0)
    nsets = ROTATE if wl.nbytes < SMALL_INPUTS else 1
    data = [wl.make(rng) for _ in range(nsets)]
    row = {"times": {}, "fails": [], "floor": wl.nbytes / bandwidth}
    calls, results = {}, {}
    for lib in libs:
        def first_call():    # also compiles, and gives the result to check
            calls[lib] = [lib.prepare(wl, inputs, v) for inputs, v in data]
            results[lib.name] = lib.to_numpy(calls[lib][0]())
        if attempt(row, lib, first_call) is False:
            calls.pop(lib, None)
    for lib, times in time_interleaved(calls, row, quick).items():
        row["times"][lib.name] = statistics.median(times)
        print(f"#   {lib.name:7s} median {fmt(statistics.median(times))}  "
              f"min {fmt(min(times))}  max {fmt(max(times))}  reps {len(times)}",
              file=sys.stderr)
    calls = None
    gc.collect()
    for lib in libs:
        lib.free()
    want = results.get("torch") or wl.ref(*data[0])
    row["checked"] = [name for name in results if name != "torch"]
    for name in row["checked"]:
        if bad := mismatch(results[name], want):
            row["fails"].append(f"FAIL {name} {bad}")
    return row


# ----- output -----------------------------------------------------------------

def fmt(seconds):
    if isinstance(seconds, str) or seconds is None:
        return seconds or "-"
    if seconds < 1e-6:
        return f"{seconds * 1e9:.1f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.3f} s"


def table_row(wl, device, row):
    t = row["times"]
    g, tt = t.get("gpuvjp"), t.get("torch")
    ratio = f"{tt / g:.2f}" if isinstance(g, float) and isinstance(tt, float) else "-"
    check = "; ".join(row["fails"]) or ("ok" if row["checked"] else "-")
    shape = "x".join(map(str, wl.shape))
    cells = [wl.name, device, shape, fmt(g), fmt(tt), ratio, fmt(t.get("jax")),
             fmt(row["floor"]), check]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = ("| workload | device | shape | gpuvjp median | torch median | torch/gpuvjp "
              "| jax median | floor | check |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---|")


def version(dists, module=None):
    """The first installed distribution's version, else the module's, else 'absent'."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return getattr(module, "__version__", "source tree") if module else "absent"


def device_name(device):
    if device == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            return platform.processor() or platform.machine()
    try:
        import pynvml
        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return name.decode() if isinstance(name, bytes) else name
    except Exception:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        return "unknown GPU"


def git_commit():
    """The commit measured: GPUVJP_COMMIT where the tree travelled without its .git."""
    if os.environ.get("GPUVJP_COMMIT"):
        return os.environ["GPUVJP_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or "none"
    except Exception:
        return "none"


def header(devices, bandwidths, title="vjp benchmark"):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{name} {version(dists, module)}" for name, dists, module in [
        ("gpuvjp", ["gpuvjp"], gv), ("numpy", ["numpy"], np),
        ("cupy", ["cupy-cuda13x", "cupy-cuda12x", "cupy"], None), ("torch", ["torch"], torch),
        ("jax", ["jax"], None)])
    lines = [f"# {title}: one full vjp call, median", "",
             f"- date: {now}; commit: {git_commit()}; python {platform.python_version()}",
             f"- versions: {versions}"]
    for d in devices:
        lines.append(f"- {d}: {device_name(d)}; copy bandwidth {bandwidths[d] / 1e9:.1f} GB/s "
                     "(read + write)")
    lines += ["- torch threads: 1; ratio > 1 means gpuvjp is faster; floor = bytes moved / "
              "copy bandwidth", ""]
    return "\n".join(lines)


# ----- main -------------------------------------------------------------------

def cuda_available():
    return gv.cuda.is_available() or (torch is not None and torch.cuda.is_available())


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="all: cpu, and cuda where available")
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--quick", action="store_true", help="small sizes and repeats (CI smoke)")
    return p.parse_args()


def main(workloads=workloads, libraries=libraries, title="vjp benchmark"):
    """Run `workloads(device, quick)` under `libraries(device)` and print (and with --out,
    write) the table; bench_rows.py reuses this with its own workloads."""
    args = parse_args()
    if torch is not None:
        torch.set_num_threads(1)
    if args.device == "cuda" and not cuda_available():
        sys.exit(f"{title}: --device cuda, but neither gpuvjp nor torch sees a GPU")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or cuda_available()]
    bandwidths = {d: copy_bandwidth(d) for d in devices}
    rows = []
    for device in devices:
        libs = libraries(device)
        for wl in workloads(device, args.quick):
            print(f"# {wl.name} {wl.shape} on {device}", file=sys.stderr)
            rows.append(table_row(wl, device, run_workload(wl, device, libs, args.quick,
                                                           bandwidths[device])))
    text = "\n".join([header(devices, bandwidths, title), TABLE_HEAD, *rows]) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if any("FAIL" in r or "ERROR" in r for r in rows) else 0


if __name__ == "__main__":
    if "--per-call" in sys.argv[1:]:          # W4's per-call host cost: bench_percall.py
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_percall
        sys.exit(bench_percall.main(sys.argv[1:]))
    sys.exit(main())
