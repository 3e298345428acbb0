"""Per-call host cost of a tiny vjp (W4: adder (2,), exp_reducer 4x4) against PyTorch.

For each device, the same NumPy data feeds `gpuvjp.vjp` and `torch.autograd.functional.vjp`
(on cuda: torch eager on its GPU, when torch has one). Values and vjps are checked against
torch (rtol 1e-6, float64) before timing. The two libraries take turns call by call over
`--calls` (>= 1000) calls after warm-up, each call synchronized on a GPU, and the table gives
the ratio of the medians (gpuvjp / torch; <= 0.5 is the target). `gv.compile` is the same vjp
under `gv.compile`, replayed (target on the CPU: <= 0.2 of torch's time; on the GPU <= 25 us
including the output copy and one sync); `jax.jit` is `jax.vjp` under `jax.jit` where JAX is
installed, else `-`. Two more columns show where the time goes:
- host launch: the median host cost of launching an empty CuPy kernel plus a synchronize
  (cuda only), so that a slow host or driver is visible next to the figures it inflates;
- gpuvjp python: gpuvjp's own Python time per call: the median times the share of the self
  time spent in functions of the gpuvjp package under cProfile, so NumPy, CuPy and the CUDA
  runtime are left out (cProfile charges its overhead to Python calls, so the share leans
  high), and the number of gpuvjp function calls per vjp.
Two more put the ratio in context (CPU only):
- floor: the same vjp by a minimal tape (`floor_call`: a closure per op on NumPy arrays, no
  dtypes, devices, checks or errors), interleaved with the others, and its ratio to torch:
  about the least a pure-Python vjp can cost on this host;
- warm ratio: gpuvjp's median / torch's with each library's calls back to back instead of
  interleaved. Interleaving lets each library evict the other's code and data from the
  CPU caches, which costs the library that runs more Python the most.

    python3 scripts/bench_vjp.py --per-call [--device cpu|cuda|all] [--calls N] [--out FILE]
        [--neighbours]
"""

import argparse
import cProfile
import datetime
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import types

import numpy as np

try:
    import gpuvjp as gv
except ImportError:     # run from a source tree without PYTHONPATH: use that tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import gpuvjp as gv
from gpuvjp import _lazy

import torch

WARMUP = 200
PROFILED = 500          # calls under cProfile for the python column


# ----- W4: the two tiny workloads, written once for both modules --------------------------
def adder(m, x, y):
    return 2 * x + 3 * y


def exp_reducer(m, x):
    return x.exp().sum(dim=1)


def cases(rng):
    """name, shape, function, inputs, cotangent (NumPy, float64)."""
    return [("adder", "2", adder, [rng.standard_normal(2), rng.standard_normal(2)],
             rng.standard_normal(2)),
            ("exp_reducer", "4x4", exp_reducer, [rng.standard_normal((4, 4))],
             rng.standard_normal(4))]


# ----- the calls timed -----------------------------------------------------------------------
class _Floor:
    """A minimal reverse-mode tape on NumPy arrays for W4's ops: each op's result holds its
    inputs and a closure that maps the output's cotangent to theirs."""

    __slots__ = ("a", "parents", "back")

    def __init__(self, a, parents=(), back=None):
        self.a, self.parents, self.back = a, parents, back

    def __rmul__(self, k):
        return _Floor(k * self.a, (self,), lambda g: (k * g,))

    def __add__(self, o):
        return _Floor(self.a + o.a, (self, o), lambda g: (g, g))

    def exp(self):
        e = np.exp(self.a)
        return _Floor(e, (self,), lambda g: (g * e,))

    def sum(self, dim):
        a = self.a
        kshape = a.shape[:dim] + (1,) + a.shape[dim + 1:]
        return _Floor(np.add.reduce(a, dim), (self,), lambda g: (g.reshape(kshape),))


def floor_vjp(fn, xs, v):
    """(output, vjp) of fn at xs: a depth-first order of the tape, then one sweep."""
    leaves = [_Floor(x) for x in xs]
    out = fn(None, *leaves)
    order, seen, stack = [], set(), [(out, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node.parents)
    grads = {id(out): v}
    for node in reversed(order):
        g = grads.pop(id(node), None)
        if g is None or node.back is None:
            if g is not None:
                grads[id(node)] = g
            continue
        for p, gp in zip(node.parents, node.back(g)):
            grads[id(p)] = gp if id(p) not in grads else grads[id(p)] + gp
    result = []
    for x in leaves:
        g = grads.get(id(x))
        result.append(np.zeros_like(x.a) if g is None else
                      g if g.shape == x.a.shape else np.broadcast_to(g, x.a.shape))
    return out.a, tuple(result)


def floor_call(fn, xs, v):
    xs = [np.asarray(a) for a in xs]
    return lambda: floor_vjp(fn, xs, v)

def gv_call(fn, xs, v):
    f = lambda *a: fn(gv, *a)                                   # noqa: E731
    inputs = tuple(xs)
    return lambda: gv.autograd.functional.vjp(f, inputs, v)


def compiled_call(fn, xs, v):
    run = gv.compile(lambda *a: gv.autograd.functional.vjp(lambda *t: fn(gv, *t), a[:-1], a[-1]))
    args = (*xs, v)
    return lambda: run(*args)


def jax_call(fn, xs, v, device):
    """jax.jit of jax.vjp on the same data, or None where JAX (or its device) is absent."""
    try:
        import jax
        dev = jax.devices("gpu" if device != "cpu" else "cpu")[0]
    except Exception:           # not installed, or no backend for the device
        return None
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    m = types.SimpleNamespace(exp=jnp.exp)
    jxs = [jax.device_put(np.asarray(a), dev) for a in xs]
    jv = jax.device_put(np.asarray(v), dev)

    class T:                    # x.exp().sum(dim=1) written once for every module
        def __init__(self, a):
            self.a = a

        def exp(self):
            return T(jnp.exp(self.a))

        def sum(self, dim=None):
            return T(jnp.sum(self.a, axis=dim))

        def __add__(self, o):
            return T(self.a + o.a)

        def __rmul__(self, k):
            return T(k * self.a)

    @jax.jit
    def run(v, *xs):
        out, pull = jax.vjp(lambda *t: fn(m, *[T(a) for a in t]).a, *xs)
        return out, pull(v)
    call = lambda: jax.block_until_ready(run(jv, *jxs))         # noqa: E731
    try:
        call()
    except Exception as exc:    # a peer that fails leaves the others their figures
        print(f"# jax.jit skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return call


def torch_call(fn, xs, v):
    f = lambda *a: fn(torch, *a)                                # noqa: E731
    inputs = tuple(xs)
    return lambda: torch.autograd.functional.vjp(f, inputs, v)


def check(got, want):
    """gpuvjp's (outputs, vjp) against torch's."""
    flat_g = [got[0], *got[1]]
    flat_w = [want[0], *want[1]]
    for g, w in zip(flat_g, flat_w):
        np.testing.assert_allclose(g.cpu().numpy(), w.detach().cpu().numpy(), rtol=1e-6)


def back_to_back(call, n, sync):
    """Median seconds of n calls of one library in a row."""
    ts = []
    clock = time.perf_counter
    for _ in range(n):
        sync()
        t0 = clock()
        call()
        sync()
        ts.append(clock() - t0)
    return statistics.median(ts)


def interleaved(calls, n, sync):
    """Median seconds of each call over n turns, the calls alternating."""
    times = [[] for _ in calls]
    clock = time.perf_counter
    for _ in range(n):
        for c, ts in zip(calls, times):
            sync()
            t0 = clock()
            c()
            sync()
            ts.append(clock() - t0)
    return [statistics.median(ts) for ts in times]


def own_python(call):
    """(share of gpuvjp's own Python in a call's time, gpuvjp function calls per call).

    The share is the self time of the functions defined in the gpuvjp package over the self
    time of everything, under cProfile: NumPy, CuPy, the CUDA runtime and the interpreter's
    builtins are the rest."""
    root = os.path.dirname(os.path.abspath(gv.__file__))
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(PROFILED):
        call()
    prof.disable()
    own = total = 0.0
    ncalls = 0
    for (filename, _, _), (_, nc, tt, _, _) in pstats.Stats(prof).stats.items():
        total += tt
        if os.path.abspath(filename).startswith(root):
            own += tt
            ncalls += nc
    return own / total, ncalls / PROFILED


def empty_launch(n):
    """Median host seconds of an empty CuPy kernel launch plus a device synchronize."""
    import cupy
    kernel = cupy.RawKernel('extern "C" __global__ void gv_empty() {}', "gv_empty")
    stream = cupy.cuda.get_current_stream()
    for _ in range(10):
        kernel((1,), (1,), ())
    stream.synchronize()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        kernel((1,), (1,), ())
        stream.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ----- one device ----------------------------------------------------------------------------
def run_device(device, n):
    rng = np.random.default_rng(0)
    tdev = device if device == "cpu" or torch.cuda.is_available() else None
    if device == "cpu":
        sync = lambda: None                                     # noqa: E731
        launch = None
    else:
        import cupy

        def sync():
            cupy.cuda.get_current_stream().synchronize()
            if tdev is not None:
                torch.cuda.synchronize()
        launch = empty_launch(n)
    rows = []
    for name, shape, fn, xs, v in cases(rng):
        gxs = [gv.tensor(a, device=device) for a in xs]
        gvv = gv.tensor(v, device=device)
        txs = [torch.tensor(a, device=tdev or "cpu") for a in xs]
        tv = torch.tensor(v, device=tdev or "cpu")
        gcall, tcall = gv_call(fn, gxs, gvv), torch_call(fn, txs, tv)
        ccall = compiled_call(fn, gxs, gvv)
        jcall = jax_call(fn, xs, v, device)
        fcall = floor_call(fn, xs, v) if device == "cpu" else None
        check(gcall(), tcall())
        check(ccall(), tcall())
        if fcall is not None:
            out, grads = fcall()
            check((gv.tensor(out), [gv.tensor(np.array(g)) for g in grads]), tcall())
        calls = [gcall, ccall, tcall] + [c for c in (jcall, fcall) if c is not None]
        for _ in range(WARMUP):
            for c in calls:
                c()
        meds = interleaved(calls, n, sync)
        gmed, cmed, tmed = meds[:3]
        rest = meds[3:]
        jmed = rest.pop(0) if jcall is not None else None
        fmed = rest.pop(0) if fcall is not None else None
        warm = back_to_back(gcall, n, sync) / back_to_back(tcall, n, sync) \
            if device == "cpu" else None
        share, ncalls = own_python(gcall)
        rows.append((name, device, shape, gmed, tmed, launch, share * gmed, ncalls,
                     "cpu" if tdev is None else tdev, cmed, jmed, fmed, warm))
    return rows


def neighbours(n):
    """gpuvjp's exp_reducer vjp (CPU) timed alone and alternating with one other call each:
    how much the call before it slows it (the interleaving in the ratio above)."""
    rng = np.random.default_rng(0)
    x, v = rng.standard_normal((4, 4)), rng.standard_normal(4)
    gcall = gv_call(exp_reducer, [gv.tensor(x)], gv.tensor(v))
    xt, vt = torch.tensor(x), torch.tensor(v)
    xr = xt.clone().requires_grad_()
    big = np.zeros(2 ** 18)                                      # 2 MB
    others = [
        ("nothing", None),
        ("torch.exp (no grad)", lambda: xt.exp()),
        ("torch forward with grad", lambda: exp_reducer(torch, xr)),
        ("torch.autograd.grad of the same graph",
         lambda: torch.autograd.grad(exp_reducer(torch, xr), xr, vt)),
        ("torch.autograd.functional.vjp", torch_call(exp_reducer, [xt], vt)),
        ("a NumPy pass over 2 MB", lambda: np.add(big, 1.0, out=big)),
    ]
    none = lambda: None                                         # noqa: E731
    lines = ["| call between two gpuvjp calls | gpuvjp's median | added |", "|---|---:|---:|"]
    alone = None
    for name, other in others:
        calls = [gcall] if other is None else [gcall, other]
        for _ in range(WARMUP):
            for c in calls:
                c()
        med = interleaved(calls, n, none)[0]
        alone = med if other is None else alone
        lines.append(f"| {name} | {us(med)} | "
                     f"{'-' if other is None else f'+{(med - alone) * 1e6:.1f} us'} |")
    return "\n".join(lines)


def git_commit():
    commit = os.environ.get("GPUVJP_COMMIT")
    if commit:
        return commit[:7]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(gv.__file__)),
                              timeout=10).stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        return "none"


def us(seconds):
    return "-" if seconds is None else f"{seconds * 1e6:.1f} us"


def gpu_name():
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else name


def table(rows, n, devices, load):
    lines = [
        "# Per-call host cost: W4, one vjp call, median of interleaved calls",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit "
        f"{git_commit()}; python {platform.python_version()}; {n} interleaved calls per "
        "library",
        f"- versions: gpuvjp {getattr(gv, '__version__', '?')}, numpy {np.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} thread)",
        f"- host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        + (f"; cuda: {gpu_name()}" if "cuda" in devices else "")
        + f"; load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after",
        f"- fusion: {'on' if _lazy.ENABLED else 'off (GPUVJP_FUSION=0)'}",
        "- ratio = gpuvjp median / torch median (target <= 0.5); gv.compile ratio = replayed "
        "gv.compile median / torch median (target <= 0.2 on the CPU); host launch = empty CuPy "
        "kernel + sync; gpuvjp python = median x gpuvjp's share of self time under cProfile; "
        "floor = a minimal NumPy tape, interleaved too, and its ratio to torch; warm ratio = "
        "the ratio with each library's calls back to back",
        "",
        "| workload | device | shape | gpuvjp | gv.compile | jax.jit | torch | torch device "
        "| ratio | gv.compile ratio | host launch | gpuvjp python | gpuvjp calls | floor "
        "| floor ratio | warm ratio |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, device, shape, g, t, launch, own, ncalls, tdev, c, j, f, warm in rows:
        lines.append(f"| {name} | {device} | {shape} | {us(g)} | {us(c)} | {us(j)} | {us(t)} | "
                     f"{tdev} | {g / t:.2f} | {c / t:.2f} | {us(launch)} | {us(own)} | "
                     f"{ncalls:.0f} | {us(f)} | {'-' if f is None else f'{f / t:.2f}'} | "
                     f"{'-' if warm is None else f'{warm:.2f}'} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-call", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--calls", type=int, default=2000, help="interleaved calls (>= 1000)")
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--neighbours", action="store_true",
                   help="also time gpuvjp's exp_reducer vjp after each of a few other calls")
    args = p.parse_args(argv)
    if args.calls < 1000:
        p.error("--calls must be at least 1000")
    torch.set_num_threads(1)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not gv.cuda.is_available():
        if args.device == "cuda":
            sys.exit("no CUDA GPU visible to CuPy")
        devices.remove("cuda")
    load = os.getloadavg()              # other jobs on the host inflate both libraries' times
    rows = [r for d in devices for r in run_device(d, args.calls)]
    text = table(rows, args.calls, devices, load)
    if args.neighbours:
        text += "\n\n" + neighbours(args.calls)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
