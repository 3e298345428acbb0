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

Workloads: W1 `x.exp().sum(dim=1)` (exp_reducer); W2 a float32 chain of 16 elementwise ops (tanh,
sin, mul and add by scalars, exp of a small value, square) then sum; W3 a 3-layer tanh MLP, the
vjp with respect to its three weights; W4 the adder (2,) and exp_reducer 4x4. On the CPU a
hand-written NumPy peer (`numpy`) runs W1 and W2, recomputing the forward chain in its backward
as gpuvjp's fused plan does. `first call` is gpuvjp's first call (kernel compiles included),
`kernels` the kernels one gpuvjp call runs (gv.profiler). `gv.compile` is the same vjp under
`gv.compile`, one compiled function per workload (timed calls replay its trace: the recorded
NumPy calls on the CPU, a CUDA graph or the launch list on the GPU).

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


def chain16(m, x):
    """W2: 16 elementwise ops, then sum."""
    u = x
    for _ in range(2):
        u = m.sin(m.tanh(u)) * 0.75 + 0.25
        u = m.square(m.exp(u * 0.1)) + 0.25
    return m.sum(u)


def mlp3(m, x, w1, w2, w3):
    """W3: a 3-layer tanh MLP on the constant batch x."""
    return m.tanh(m.tanh(m.tanh(x @ w1) @ w2) @ w3)


@dataclasses.dataclass
class Workload:
    name: str
    shape: tuple
    func: Callable
    make: Callable       # rng -> (inputs: list of float32 arrays, v: float32 array)
    ref: Callable        # (inputs, v) -> (out, grads), float64 NumPy
    nbytes: int          # fewest bytes one call moves
    numpy: Callable = None   # hand-written NumPy (inputs, v) -> (out, grads), or None
    consts: int = 0          # leading inputs that are constants (no gradient)
    normwise: bool = False   # matmul results: errors measured against the largest magnitude


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

    def by_hand(inputs, v):        # forward, then a backward that recomputes exp(x)
        x = inputs[0]
        out = np.exp(x).sum(axis=1)
        gx = np.exp(x)
        gx *= v[:, None]
        return out, (gx,)

    # read x and v, write out and the grad
    return Workload("exp_reducer", (n, n), exp_reducer, make, ref, (2 * n * n + 2 * n) * 4,
                    by_hand)


def _chain_by_hand(x, v):
    """W2 in NumPy: the forward into one buffer; the backward recomputes the chain, carrying
    the derivative alongside (every op is elementwise, so gx = v * prod f_i'(u_i))."""
    u = x.copy()
    for _ in range(2):
        np.tanh(u, out=u)
        np.sin(u, out=u)
        u *= 0.75
        u += 0.25
        u *= 0.1
        np.exp(u, out=u)
        np.square(u, out=u)
        u += 0.25
    out = u.sum()
    u = x.copy()
    d = np.full_like(x, v)
    t = np.empty_like(x)
    for _ in range(2):
        np.tanh(u, out=u)
        np.multiply(u, u, out=t)
        np.subtract(1, t, out=t)
        d *= t
        np.cos(u, out=t)
        d *= t
        np.sin(u, out=u)
        d *= 0.75 * 0.1
        u *= 0.75
        u += 0.25
        u *= 0.1
        np.exp(u, out=u)
        d *= u
        d *= u
        d *= 2
        np.square(u, out=u)
        u += 0.25
    return np.asarray(out), (d,)


def chain_workload(n):
    def make(rng):
        return [uniform(rng, (n,))], np.ones((), np.float32)

    def ref(inputs, v):
        x = inputs[0].astype(np.float64)
        out, (g,) = _chain_by_hand(x, float(v))
        return out, (g,)

    # read x twice (forward, backward), write the grad
    return Workload("chain16", (n,), chain16, make, ref, 3 * n * 4,
                    lambda inputs, v: _chain_by_hand(inputs[0], v))


def mlp_workload(width, batch):
    def make(rng):
        s = np.float32(1 / np.sqrt(width))
        return ([uniform(rng, (batch, width))] + [uniform(rng, (width, width)) * s
                                                  for _ in range(3)],
                np.ones((batch, width), np.float32))

    def ref(inputs, v):
        x, *ws = (a.astype(np.float64) for a in inputs)
        hs = [x]
        for w in ws:
            hs.append(np.tanh(hs[-1] @ w))
        g, grads = v.astype(np.float64), []
        for h_in, h, w in reversed(list(zip(hs[:-1], hs[1:], ws))):
            g = g * (1 - h * h)
            grads.append(h_in.T @ g)
            g = g @ w.T
        return hs[-1], tuple(reversed(grads))

    # read x, the weights and v, write out and three weight grads
    nbytes = (2 * batch * width + 6 * width * width + batch * width) * 4
    return Workload("mlp3", (batch, width), mlp3, make, ref, nbytes, consts=1, normwise=True)


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
    """W1 exp_reducer, W2 chain16, W3 mlp3, W4 adder (2,) and exp_reducer 4x4."""
    if quick:
        sizes, chains, mlp = [4, 256], [1000, 100_000], (64, 64)
    elif device == "cpu":
        sizes, chains, mlp = [4, 2048, 4096], [1000, 1_000_000, 10_000_000], (512, 512)
    else:
        sizes, chains, mlp = [4, 4096, 16384], [1000, 10_000_000, 100_000_000], (4096, 4096)
    return ([exp_reducer_workload(n) for n in sizes]
            + [chain_workload(n) for n in chains]
            + [mlp_workload(*mlp), adder_workload((2,))])


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
        consts, xs = xs[:wl.consts], xs[wl.consts:]
        args = xs if len(xs) > 1 else xs[0]
        return lambda: gv.vjp(lambda *t: wl.func(gv, *consts, *t), args, tv)

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


class GpuvjpCompiled(Gpuvjp):
    """gv.compile of the same vjp: one compiled function per workload, shared by its input
    sets (as JAX's jit), so timed calls replay the trace."""
    name = "gv.compile"

    def __init__(self, device):
        super().__init__(device)
        self.compiled = {}

    def prepare(self, wl, inputs, v):
        key = (wl.name, wl.shape)
        if key not in self.compiled:
            def run(*a):
                consts, xs, tv = a[:wl.consts], a[wl.consts:-1], a[-1]
                return gv.vjp(lambda *t: wl.func(gv, *consts, *t),
                              xs if len(xs) > 1 else xs[0], tv)
            self.compiled[key] = gv.compile(run)
        run = self.compiled[key]
        args = [gv.tensor(a, device=self.device) for a in inputs]
        args.append(gv.tensor(v, device=self.device))
        return lambda: run(*args)

    def free(self):
        for c in self.compiled.values():
            c.cache_clear()
        self.compiled.clear()
        super().free()


class Torch:
    name = "torch"

    def __init__(self, device):
        self.device = device

    def prepare(self, wl, inputs, v):
        xs = tuple(torch.from_numpy(a).to(self.device) for a in inputs)
        tv = torch.from_numpy(v).to(self.device)
        consts, xs = xs[:wl.consts], xs[wl.consts:]
        args = xs if len(xs) > 1 else xs[0]
        return lambda: torch.autograd.functional.vjp(lambda *t: wl.func(torch, *consts, *t),
                                                     args, tv)

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
        self.m = types.SimpleNamespace(exp=jnp.exp, sum=lambda x, dim=None: jnp.sum(x, axis=dim),
                                       tanh=jnp.tanh, sin=jnp.sin, square=jnp.square)
        self.jitted = {}    # one compiled function per workload, shared by its input sets

    def prepare(self, wl, inputs, v):
        jax = self.jax
        xs = [jax.device_put(a, self.dev) for a in inputs]
        jv = jax.device_put(v, self.dev)
        key = (wl.name, wl.shape)
        if key not in self.jitted:
            def run(v, *xs):
                consts, xs = xs[:wl.consts], xs[wl.consts:]
                out, pullback = jax.vjp(lambda *t: wl.func(self.m, *consts, *t), *xs)
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


class Numpy:
    """Hand-written NumPy (the workload's `numpy`), on the CPU only."""
    name = "numpy"

    def prepare(self, wl, inputs, v):
        if wl.numpy is None:
            return None
        return lambda: wl.numpy(inputs, v)

    def sync(self):
        pass

    def to_numpy(self, res):
        return res

    def free(self):
        pass


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
    libs = ([Gpuvjp(device), GpuvjpCompiled(device)] if device == "cpu" or gv.cuda.is_available()
            else [])
    if torch is not None and (device == "cpu" or torch.cuda.is_available()):
        libs.append(Torch(device))
    if device == "cpu":
        libs.append(Numpy())
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


def allclose(a, b, normwise=False, chunk=1 << 24):
    """np.allclose over float32 results, chunked so 1 GiB results need little memory. With
    `normwise` the absolute tolerance is RTOL times b's largest magnitude: a float32 matmul's
    rounding error scales with its operands, not with each (possibly cancelled) result."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    a, b = a.reshape(-1), b.reshape(-1)
    atol = ATOL
    if normwise and b.size:
        atol = max(ATOL, RTOL * float(np.max(np.abs(b))))
    return all(np.allclose(a[i:i + chunk], b[i:i + chunk], rtol=RTOL, atol=atol)
               for i in range(0, a.size, chunk))


def mismatch(got, want, normwise=False):
    """'' if (out, grads) agree, else which part does not."""
    (out, grads), (want_out, want_grads) = got, want
    if not allclose(out, want_out, normwise):
        return "out"
    if len(grads) != len(want_grads):
        return "vjp arity"
    bad = [i for i, (g, w) in enumerate(zip(grads, want_grads))
           if not allclose(g, w, normwise)]
    return f"vjp[{','.join(map(str, bad))}]" if bad else ""


# ----- one workload -----------------------------------------------------------

def run_workload(wl, device, libs, quick, bandwidth):
    rng = np.random.default_rng(0)
    nsets = ROTATE if wl.nbytes < SMALL_INPUTS else 1
    data = [wl.make(rng) for _ in range(nsets)]
    row = {"times": {}, "fails": [], "floor": wl.nbytes / bandwidth, "first": {}}
    calls, results = {}, {}
    for lib in libs:
        def first_call():    # also compiles, and gives the result to check
            lib.sync()
            t0 = time.perf_counter()
            prepared = [lib.prepare(wl, inputs, v) for inputs, v in data]
            if prepared[0] is None:            # the library has no version of this workload
                return None
            calls[lib] = prepared
            results[lib.name] = lib.to_numpy(calls[lib][0]())
            row["first"][lib.name] = time.perf_counter() - t0
            return True
        if attempt(row, lib, first_call) in (False, None):
            calls.pop(lib, None)
    for lib, times in time_interleaved(calls, row, quick).items():
        row["times"][lib.name] = statistics.median(times)
        print(f"#   {lib.name:7s} median {fmt(statistics.median(times))}  "
              f"min {fmt(min(times))}  max {fmt(max(times))}  reps {len(times)}",
              file=sys.stderr)
    for lib, cs in calls.items():
        if lib.name == "gpuvjp":
            with gv.profiler.profile() as prof:
                cs[0]()
                lib.sync()
            row["kernels"] = prof.launches
    calls = None
    gc.collect()
    for lib in libs:
        lib.free()
    want = results.get("torch") or wl.ref(*data[0])
    row["checked"] = [name for name in results if name != "torch"]
    for name in row["checked"]:
        if bad := mismatch(results[name], want, wl.normwise):
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
    g, tt, tn = t.get("gpuvjp"), t.get("torch"), t.get("numpy")

    def ratio(other):
        return f"{other / g:.2f}" if isinstance(g, float) and isinstance(other, float) else "-"
    check = "; ".join(row["fails"]) or ("ok" if row["checked"] else "-")
    shape = "x".join(map(str, wl.shape))
    tc = t.get("gv.compile")
    cells = [wl.name, device, shape, fmt(g), fmt(tc), ratio(tc), fmt(tt), ratio(tt),
             fmt(t.get("jax")), fmt(tn),
             ratio(tn), fmt(row["floor"]), fmt(row.get("first", {}).get("gpuvjp")),
             str(row.get("kernels", "-")), check]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = ("| workload | device | shape | gpuvjp median | gv.compile median "
              "| gv.compile/gpuvjp | torch median | torch/gpuvjp "
              "| jax median | numpy median | numpy/gpuvjp | floor | first call | kernels "
              "| check |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


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
