"""Benchmark whole Jacobians, Hessians, one jvp and one vjp under gpuvjp and its peers.

The function is a two-layer tanh network with a 256-wide input,
`f(x) = tanh(W2 @ tanh(W1 @ x + b1) + b2)` with W1 256x256 and W2 64x256, and for the
Hessians its scalar `g(x) = (f(x) ** 2).sum()`. Each workload is one call of
gpuvjp (`gv.jacobian`, `gv.hessian`, `gv.jvp`, `gv.vjp`), of
`torch.autograd.functional` with the same options, of its `torch.func` counterpart
(jacrev, jacfwd, hessian, jvp, vjp; none for the row loops) and, on a GPU when JAX has
one, of the JAX counterpart under `jax.jit`. The peers of each workload are listed under
the table.

Before timing, every library's result is checked against torch.autograd.functional's
(against a float64 NumPy reference where torch is absent), rtol 1e-4, atol 1e-5; a call
that raises shows ERROR and the run goes on. Times are medians of single calls after
warm-up, with the device synchronized before and after each call; the libraries take turns
call by call, and the weights and vectors rotate among 4 input sets so caches stay honest.
The repeat count is sized to ~0.5 s per workload (5 to 200 calls). Timing, warm-up and
the header's helpers come from bench_vjp.py.

    python3 scripts/bench_jacobian.py [--device cpu|cuda|all] [--out FILE] [--quick]

--device defaults to all (cpu, and cuda where available); --quick runs on the CPU only
(unless --device says otherwise) with a narrow network and few repeats.
"""

import argparse
import dataclasses
import datetime
import gc
import os
import platform
import statistics
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vjp import (attempt, cuda_available, device_name, fmt, git_commit,  # noqa: E402
                       gv, load_jax, np, time_interleaved, torch, uniform, version)

RTOL, ATOL = 1e-4, 1e-5
ROTATE = 4              # input sets; every one is small, so they all rotate


# ----- the function -----------------------------------------------------------
# Written once as f(m, p, x); m is the module (gv, torch or jax.numpy), p the weights.

def mlp(m, p, x):
    w1, b1, w2, b2 = p
    return m.tanh(w2 @ m.tanh(w1 @ x + b1) + b2)


def sq_sum(m, p, x):
    return (mlp(m, p, x) ** 2).sum()


@dataclasses.dataclass
class Sizes:
    n_in: int
    hidden: int
    n_out: int

    def __str__(self):
        return f"{self.n_in}->{self.hidden}->{self.n_out}"


def make_data(rng, s):
    """One input set, float32: weights p = (W1, b1, W2, b2), x, the jvp tangent v (like x)
    and the vjp cotangent u (like f(x)). Weights scaled so tanh stays off saturation."""
    p = (uniform(rng, (s.hidden, s.n_in)) * np.float32(np.sqrt(3 / s.n_in)),
         uniform(rng, (s.hidden,)) * np.float32(0.1),
         uniform(rng, (s.n_out, s.hidden)) * np.float32(np.sqrt(3 / s.hidden)),
         uniform(rng, (s.n_out,)) * np.float32(0.1))
    return types.SimpleNamespace(p=p, x=uniform(rng, (s.n_in,)), v=uniform(rng, (s.n_in,)),
                                 u=uniform(rng, (s.n_out,)))


def reference(d):
    """float64 NumPy results of every workload kind, from the closed forms."""
    w1, b1, w2, b2 = (a.astype(np.float64) for a in d.p)
    x, v, u = (a.astype(np.float64) for a in (d.x, d.v, d.u))
    h = np.tanh(w1 @ x + b1)
    y = np.tanh(w2 @ h + b2)
    d1, d2 = 1 - h * h, 1 - y * y
    jac = (d2[:, None] * w2 * d1[None, :]) @ w1
    # g = sum(y^2): dg/da2 = 2 y d2, d2g/da2^2 = diag(2 d2 (1 - 3 y^2)), d2h/da1^2 = -2 h d1
    dg_dh = w2.T @ (2 * y * d2)
    inner = (w2.T * (2 * d2 * (1 - 3 * y * y))[None, :]) @ w2
    m = d1[:, None] * inner * d1[None, :] + np.diag(dg_dh * (-2 * h * d1))
    hess = w1.T @ m @ w1
    return {"jacobian": (jac,), "hessian": (hess,), "jvp": (y, jac @ v), "vjp": (y, jac.T @ u)}


# ----- workloads --------------------------------------------------------------

@dataclasses.dataclass
class Workload:
    key: str
    label: str
    kind: str                               # which reference: jacobian, hessian, jvp, vjp
    peers: dict = dataclasses.field(default_factory=dict)   # library name -> call shown


WORKLOADS = [
    Workload("jac_rows", "jacobian, vectorize=False (row loop)", "jacobian",
             {"torch.func": None, "jax": None}),
    Workload("jac_rev", "jacobian, vectorize=True, reverse-mode", "jacobian",
             {"torch.func": "jacrev(f)(x)", "jax": "jit(jacrev(f))"}),
    Workload("jac_fwd", "jacobian, vectorize=True, forward-mode", "jacobian",
             {"torch.func": "jacfwd(f)(x)", "jax": "jit(jacfwd(f))"}),
    Workload("hess_rows", "hessian, vectorize=False (row loop)", "hessian",
             {"torch.func": None, "jax": None}),
    Workload("hess_rev", "hessian, vectorize=True (reverse-over-reverse)", "hessian",
             {"torch.func": "jacrev(jacrev(g))(x)", "jax": "jit(jacrev(jacrev(g)))"}),
    Workload("hess_fwd", "hessian, vectorize=True, outer_jacobian_strategy=forward-mode",
             "hessian", {"torch.func": "hessian(g)(x)", "jax": "jit(hessian(g))"}),
    Workload("jvp", "jvp (one)", "jvp",
             {"torch.func": "jvp(f, (x,), (v,))", "jax": "jit(jvp)"}),
    Workload("vjp", "vjp (one)", "vjp",
             {"torch.func": "vjp(f, x) then its pullback(u)", "jax": "jit(vjp + pullback)"}),
]

# the options of the torch.autograd.functional-shaped calls (gpuvjp and torch alike)
FUNCTIONAL = {
    "jac_rows": ("jacobian", "f", {}),
    "jac_rev": ("jacobian", "f", {"vectorize": True}),
    "jac_fwd": ("jacobian", "f", {"vectorize": True, "strategy": "forward-mode"}),
    "hess_rows": ("hessian", "g", {}),
    "hess_rev": ("hessian", "g", {"vectorize": True}),
    "hess_fwd": ("hessian", "g", {"vectorize": True, "outer_jacobian_strategy": "forward-mode"}),
    "jvp": ("jvp", "f", {}),
    "vjp": ("vjp", "f", {}),
}


# ----- libraries --------------------------------------------------------------
# Each adapter turns one input set into a zero-argument call (None where the library has no
# counterpart of the workload); results become a tuple of NumPy arrays through leaves().

def leaves(res):
    """A result (an array, or nested tuples of arrays) as a flat tuple of NumPy arrays."""
    if isinstance(res, (tuple, list)):
        return tuple(a for r in res for a in leaves(r))
    if isinstance(res, gv.Tensor):
        return (res.numpy(),)
    if torch is not None and isinstance(res, torch.Tensor):
        return (res.detach().cpu().numpy(),)
    return (np.asarray(res),)


def gv_function(name):
    """gv.<name>, or gpuvjp.autograd.functional.<name> while the top level lacks it."""
    fn = getattr(gv, name, None)
    if fn is None:
        import gpuvjp.autograd.functional as functional
        fn = getattr(functional, name)      # AttributeError: shows as ERROR in the table
    return fn


def functional_call(fn, wl_key, m, p, x, v, u):
    """fn(func, x[, v], **options) for one workload, the torch.autograd.functional way."""
    name, which, opts = FUNCTIONAL[wl_key]
    func = (lambda t: mlp(m, p, t)) if which == "f" else (lambda t: sq_sum(m, p, t))
    if name == "jvp":
        return lambda: fn(func, x, v)
    if name == "vjp":
        return lambda: fn(func, x, u)
    return lambda: fn(func, x, **opts)


class Gpuvjp:
    name = "gpuvjp"

    def __init__(self, device):
        self.device = device

    def prepare(self, wl, d):
        fn = gv_function(FUNCTIONAL[wl.key][0])
        t = lambda a: gv.tensor(a, device=self.device)     # noqa: E731
        return functional_call(fn, wl.key, gv, tuple(map(t, d.p)), t(d.x), t(d.v), t(d.u))

    def sync(self):
        if self.device == "cuda":
            gv.cuda.synchronize()

    def free(self):
        if self.device == "cuda":
            import cupy
            cupy.get_default_memory_pool().free_all_blocks()


class TorchBase:
    def __init__(self, device):
        self.device = device

    def t(self, a):
        return torch.from_numpy(a).to(self.device)

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def free(self):
        if self.device == "cuda":
            torch.cuda.empty_cache()


class TorchFunctional(TorchBase):
    name = "torch.autograd.functional"

    def prepare(self, wl, d):
        fn = getattr(torch.autograd.functional, FUNCTIONAL[wl.key][0])
        return functional_call(fn, wl.key, torch, tuple(map(self.t, d.p)), self.t(d.x),
                               self.t(d.v), self.t(d.u))


class TorchFunc(TorchBase):
    name = "torch.func"

    def prepare(self, wl, d):
        tf = torch.func
        p, x, v, u = tuple(map(self.t, d.p)), self.t(d.x), self.t(d.v), self.t(d.u)
        f = lambda t: mlp(torch, p, t)       # noqa: E731
        g = lambda t: sq_sum(torch, p, t)    # noqa: E731

        def vjp():
            out, pullback = tf.vjp(f, x)
            return out, pullback(u)

        return {
            "jac_rev": lambda: tf.jacrev(f)(x),
            "jac_fwd": lambda: tf.jacfwd(f)(x),
            "hess_rev": lambda: tf.jacrev(tf.jacrev(g))(x),
            "hess_fwd": lambda: tf.hessian(g)(x),
            "jvp": lambda: tf.jvp(f, (x,), (v,)),
            "vjp": vjp,
        }.get(wl.key)


class Jax:
    name = "jax"

    def __init__(self, jax, dev):
        self.jax, self.dev = jax, dev
        self.jitted = {}    # one compiled function per workload, shared by its input sets

    def program(self, key):
        """The jitted (p, x, v, u) -> result of one workload, or None."""
        jax, jnp = self.jax, self.jax.numpy

        def vjp(p, x, v, u):
            out, pullback = jax.vjp(lambda t: mlp(jnp, p, t), x)
            return out, pullback(u)

        body = {
            "jac_rev": lambda p, x, v, u: jax.jacrev(lambda t: mlp(jnp, p, t))(x),
            "jac_fwd": lambda p, x, v, u: jax.jacfwd(lambda t: mlp(jnp, p, t))(x),
            "hess_rev": lambda p, x, v, u: jax.jacrev(jax.jacrev(
                lambda t: sq_sum(jnp, p, t)))(x),
            "hess_fwd": lambda p, x, v, u: jax.hessian(lambda t: sq_sum(jnp, p, t))(x),
            "jvp": lambda p, x, v, u: jax.jvp(lambda t: mlp(jnp, p, t), (x,), (v,)),
            "vjp": vjp,
        }.get(key)
        return None if body is None else jax.jit(body)

    def prepare(self, wl, d):
        if wl.key not in self.jitted:
            self.jitted[wl.key] = self.program(wl.key)
        run = self.jitted[wl.key]
        if run is None:
            return None
        put = lambda a: self.jax.device_put(a, self.dev)     # noqa: E731
        args = (tuple(map(put, d.p)), put(d.x), put(d.v), put(d.u))
        return lambda: self.jax.block_until_ready(run(*args))

    def sync(self):
        pass    # the call blocks until its results are ready

    def free(self):
        self.jitted.clear()
        self.jax.clear_caches()


def libraries(device):
    libs = [Gpuvjp(device)] if device == "cpu" or gv.cuda.is_available() else []
    if torch is not None and (device == "cpu" or torch.cuda.is_available()):
        libs += [TorchFunctional(device), TorchFunc(device)]
    if device == "cuda":
        jax_gpu = load_jax()
        if jax_gpu is not None:
            libs.append(Jax(*jax_gpu))
    return libs


# ----- checks -----------------------------------------------------------------

def mismatch(got, want):
    """'' if every result array agrees with the wanted one, else which do not (and the
    largest error relative to the wanted array's largest magnitude)."""
    if len(got) != len(want):
        return f"{len(got)} results, want {len(want)}"
    bad = []
    for i, (a, b) in enumerate(zip(got, want)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            bad.append(f"[{i}] shape {a.shape} want {b.shape}")
        elif not np.allclose(a, b, rtol=RTOL, atol=ATOL):
            err = np.nanmax(np.abs(a.astype(np.float64) - b)) / max(np.abs(b).max(), 1e-30)
            bad.append(f"[{i}] max err {err:.1e}")
    return ", ".join(bad)


# ----- one workload -----------------------------------------------------------

def run_workload(wl, device, libs, sizes, quick):
    rng = np.random.default_rng(0)
    data = [make_data(rng, sizes) for _ in range(ROTATE)]
    row = {"times": {}, "fails": [], "errors": [], "checked": []}
    calls, results = {}, {}
    for lib in libs:
        def first_call():    # also compiles, and gives the result to check
            cs = [lib.prepare(wl, d) for d in data]
            if cs[0] is None:
                return None
            calls[lib] = cs
            results[lib.name] = leaves(cs[0]())
            return True
        if attempt(row, lib, first_call) is False:
            calls.pop(lib, None)
            row["errors"].append(f"ERROR {lib.name}")
    for lib, times in time_interleaved(calls, row, quick).items():
        row["times"][lib.name] = statistics.median(times)
        print(f"#   {lib.name:26s} median {fmt(statistics.median(times))}  "
              f"min {fmt(min(times))}  max {fmt(max(times))}  reps {len(times)}",
              file=sys.stderr)
    for lib in calls:
        t = row["times"].get(lib.name)
        if isinstance(t, str) and f"ERROR {lib.name}" not in row["errors"]:
            row["errors"].append(f"ERROR {lib.name}")      # raised while being timed
    calls = None
    gc.collect()
    for lib in libs:
        lib.free()
    want = results.get("torch.autograd.functional") or reference(data[0])[wl.kind]
    row["checked"] = [name for name in results if name != "torch.autograd.functional"]
    for name in row["checked"]:
        if bad := mismatch(results[name], want):
            row["fails"].append(f"FAIL {name} {bad}")
    return row


# ----- output -----------------------------------------------------------------

COLUMNS = [("gpuvjp", "gpuvjp"), ("torch.autograd.functional", "torch.autograd.functional"),
           ("torch.func", "torch.func"), ("jax", "jax")]


def ratio(t, num, den="gpuvjp"):
    a, b = t.get(num), t.get(den)
    return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "-"


def table_row(wl, device, sizes, row):
    t = row["times"]
    check = "; ".join(row["errors"] + row["fails"]) or ("ok" if row["checked"] else "-")
    cells = [wl.label, device, str(sizes), *(fmt(t.get(name)) for name, _ in COLUMNS),
             ratio(t, "torch.autograd.functional"), ratio(t, "torch.func"), ratio(t, "jax"),
             check]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = ("| workload | device | sizes | gpuvjp median | torch.autograd.functional median "
              "| torch.func median | jax median | autograd.functional/gpuvjp "
              "| func/gpuvjp | jax/gpuvjp | check |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")

DERIVED_HEAD = ("| figure | device | gpuvjp | torch.autograd.functional | torch.func | jax |\n"
                "|---|---|---:|---:|---:|---:|")


def derived_rows(device, rows):
    """Ratios of medians within one library: what vectorizing buys, and a jvp's cost in vjps.
    rows: workload key -> row."""
    def fig(name, num, den):
        a = rows.get(num, {}).get("times", {}).get(name)
        b = rows.get(den, {}).get("times", {}).get(name)
        return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "-"

    figures = [
        ("vectorized jacobian speed-up over the row loop, reverse-mode (loop / vectorized)",
         "jac_rows", "jac_rev"),
        ("vectorized jacobian speed-up over the row loop, forward-mode (loop / vectorized)",
         "jac_rows", "jac_fwd"),
        ("vectorized hessian speed-up over the row loop (loop / vectorized)",
         "hess_rows", "hess_rev"),
        ("jvp cost / vjp cost", "jvp", "vjp"),
    ]
    out = []
    for label, num, den in figures:
        cells = [fig(name, num, den) for name, _ in COLUMNS]
        if num in ("jac_rows", "hess_rows"):    # torch.func and jax have no row loop
            cells[2] = cells[3] = "-"
        out.append("| " + " | ".join([label, device, *cells]) + " |")
    return out


def legend():
    lines = ["", "Peers of each workload (gpuvjp and torch.autograd.functional take the same "
             "call and options; f is the network, g = (f(x) ** 2).sum()):", ""]
    for wl in WORKLOADS:
        name, which, opts = FUNCTIONAL[wl.key]
        args = {"jvp": f"{which}, x, v", "vjp": f"{which}, x, u"}.get(
            name, ", ".join([which, "x"] + [f"{k}={v!r}" for k, v in opts.items()]))
        peers = "; ".join(f"{lib}: {call or '-'}" for lib, call in wl.peers.items())
        lines.append(f"- {wl.label}: `{name}({args})`; {peers}")
    return lines


def header(devices, sizes):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{name} {version(dists, module)}" for name, dists, module in [
        ("gpuvjp", ["gpuvjp"], gv), ("numpy", ["numpy"], np),
        ("cupy", ["cupy-cuda13x", "cupy-cuda12x", "cupy"], None), ("torch", ["torch"], torch),
        ("jax", ["jax"], None)])
    lines = ["# jacobian benchmark: whole Jacobians and Hessians, one jvp, one vjp; median of "
             "single calls", "",
             f"- date: {now}; commit: {git_commit()}; python {platform.python_version()}",
             f"- versions: {versions}"]
    lines += [f"- {d}: {device_name(d)}" for d in devices]
    lines += [f"- f(x) = tanh(W2 @ tanh(W1 @ x + b1) + b2), float32, widths in->hidden->out "
              f"{sizes}; g(x) = (f(x) ** 2).sum()",
              f"- torch threads: 1; ratio > 1 means gpuvjp is faster; check: rtol {RTOL}, "
              f"atol {ATOL} against torch.autograd.functional", ""]
    return "\n".join(lines)


# ----- main -------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default=None,
                   help="all (the default): cpu, and cuda where available; "
                        "with --quick the default is cpu")
    p.add_argument("--out", help="also write the markdown tables to this file")
    p.add_argument("--quick", action="store_true",
                   help="CPU only, a narrow network and few repeats (CI smoke)")
    return p.parse_args()


def main():
    args = parse_args()
    if torch is not None:
        torch.set_num_threads(1)
    device = args.device or ("cpu" if args.quick else "all")
    if device == "cuda" and not cuda_available():
        sys.exit("bench_jacobian: --device cuda, but neither gpuvjp nor torch sees a GPU")
    devices = ["cpu", "cuda"] if device == "all" else [device]
    devices = [d for d in devices if d == "cpu" or cuda_available()]
    sizes = Sizes(32, 32, 8) if args.quick else Sizes(256, 256, 64)
    rows, derived = [], []
    for dev in devices:
        libs = libraries(dev)
        by_key = {}
        for wl in WORKLOADS:
            print(f"# {wl.key} ({sizes}) on {dev}", file=sys.stderr)
            by_key[wl.key] = run_workload(wl, dev, libs, sizes, args.quick)
            rows.append(table_row(wl, dev, sizes, by_key[wl.key]))
        derived += derived_rows(dev, by_key)
    text = "\n".join([header(devices, sizes), TABLE_HEAD, *rows, "", DERIVED_HEAD, *derived,
                      *legend()]) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if any("FAIL" in r or "ERROR" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
