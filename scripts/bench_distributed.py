"""gv.distributed.jacobian on 1 and 2 Dask workers against the local gv.jacobian: a markdown table.

The workload is the Jacobian of x -> tanh(W @ x) with W n x n float64 (n = 4096 by default),
reverse mode with vectorize=True, chunk_size="auto" (at least 2 tasks per worker). On the CPU
each worker is one process with one thread, and BLAS is pinned to 1 thread everywhere (the
environment variables below are set before NumPy loads, and workers inherit them), so the local
baseline and each worker use one core. With --device cuda and dask-cuda installed, the workers
are one per GPU (LocalCUDACluster). Columns: median wall time over the repeats (after one
warm-up call, whose result is checked against the local one), the chunk count (tasks), the
overhead per task on that cluster (the wall time per task of a 64-task call whose tasks
compute next to nothing: scatter, probe, scheduling, transfers, assembly) and the speed-up
over 1 worker.

    python3 scripts/bench_distributed.py [--n 4096] [--repeat 3] [--workers 1,2]
        [--device cpu|cuda|all] [--out FILE]

Exits 0 with a note when dask or distributed is not installed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"          # before NumPy loads; Dask's workers inherit it

import argparse            # noqa: E402
import logging             # noqa: E402
import platform            # noqa: E402
import statistics          # noqa: E402
import sys                 # noqa: E402
import time                # noqa: E402

import numpy as np         # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gpuvjp as gv        # noqa: E402


def _median_time(fn, repeat):
    """Median wall time of `repeat` calls; the caller has made one warm-up call (imports,
    caches, first transfers), which also gave the values that are checked."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cluster(workers, device):
    import distributed
    if device == "cuda":
        from dask_cuda import LocalCUDACluster
        return LocalCUDACluster(n_workers=workers, dashboard_address=None,
                                silence_logs=logging.ERROR)
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=None,
                                    silence_logs=logging.ERROR)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2",
                        help="worker counts on the cpu (cuda: 1 and one per GPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"],
                        help="all: cpu, and cuda where CuPy sees a GPU")
    parser.add_argument("--out", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if args.device == "all" and not gv.cuda.is_available():
        devices = ["cpu"]
    lines = []
    for device in devices:
        lines += _table(device, args) + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


def _table(device, args):
    """The markdown lines of one device's table, or of a note when a package is missing."""
    try:
        import distributed
        if device == "cuda":
            import dask_cuda  # noqa: F401
    except ImportError as e:
        return [f"bench_distributed ({device}): skipped, {e.name} is not installed (pip install "
                "'gpuvjp[distributed]'; dask-cuda for cuda workers)"]
    rng = np.random.default_rng(0)
    n = args.n
    W = gv.tensor(rng.standard_normal((n, n)) / np.sqrt(n), dtype=gv.float64, device=device)
    x = gv.tensor(rng.standard_normal(n), dtype=gv.float64, device=device)

    def f(t):
        return (W @ t).tanh()

    load0 = os.getloadavg()[0]
    want = gv.jacobian(f, x, vectorize=True)
    local = _median_time(lambda: gv.jacobian(f, x, vectorize=True), args.repeat)
    rows = [(f"local gv.jacobian{', 1 thread' if device == 'cpu' else ''}", local, 1, "", "",
             _load(load0))]
    counts = [int(w) for w in args.workers.split(",")]
    if device == "cuda":
        counts = sorted({1, gv.cuda.device_count()})
    base = None
    plans = []
    logger = logging.getLogger("gpuvjp")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Plans(plans))
    for k in counts:
        load0 = os.getloadavg()[0]
        with _cluster(k, device) as cluster, distributed.Client(cluster) as client:
            def run():
                return gv.distributed.jacobian(f, x, vectorize=True, client=client)

            got = run()                          # the warm-up, checked
            np.testing.assert_allclose(got.cpu().numpy(), want.cpu().numpy(), rtol=1e-12,
                                       atol=1e-14)
            chunks = plans[-1]
            t = _median_time(run, args.repeat)
            overhead = _overhead_per_task(client, device, args.repeat)
        base = base or t
        rows.append((f"gv.distributed.jacobian, {k} worker{'s' if k > 1 else ''}", t, chunks,
                     f"{overhead * 1e3:.1f}", f"{base / t:.2f}x", _load(load0)))
    load = os.getloadavg()
    lines = [
        f"### gv.distributed.jacobian of tanh(W @ x), W {n}x{n} float64, reverse mode, "
        f"vectorize=True, chunk_size=\"auto\"",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {_commit()}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}; "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min); "
        f"BLAS 1 thread per process{_coretype()}; numpy {np.__version__}, "
        f"dask {distributed.__version__}; median of {args.repeat} after a warm-up",
        "",
        "| run | median time (s) | chunks (tasks) | overhead per task (ms) | speed-up vs 1 "
        "worker | load average (1 min) before, after |",
        "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {t:.2f} | {chunks} | {overhead} | {speedup} | {load} |"
              for name, t, chunks, overhead, speedup, load in rows]
    return lines


def _overhead_per_task(client, device, repeat, tasks=64):
    """Wall time per task of a call whose tasks compute next to nothing: the Jacobian of
    x -> 2x over `tasks` elements, one row per task (scatter, probe, scheduling, transfers and
    assembly, shared out over the tasks)."""
    x = gv.ones(tasks, dtype=gv.float64, device=device)

    def run():
        return gv.distributed.jacobian(lambda t: t * 2, x, client=client, chunk_size=1)
    run()
    return _median_time(run, repeat) / tasks


def _load(before):
    """The machine's 1-minute load average before and after a row: other processes share the
    cores (the figure after a row counts this benchmark's own processes too)."""
    return f"{before:.1f}, {os.getloadavg()[0]:.1f}"


def _commit():
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _coretype():
    core = os.environ.get("OPENBLAS_CORETYPE")
    return f" (OPENBLAS_CORETYPE={core})" if core else ""


class _Plans(logging.Handler):
    """Collects the task count of each gv.distributed call from its plan record."""

    def __init__(self, plans):
        super().__init__(logging.INFO)
        self.plans = plans

    def emit(self, record):
        if record.getMessage().split(": ")[0].startswith("gpuvjp-"):
            self.plans.append(int(record.args[1]))


if __name__ == "__main__":
    sys.exit(main())
