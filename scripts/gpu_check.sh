#!/usr/bin/env bash
# The one prepared run on a lent GPU machine: environment, `pytest -m gpu`, then every
# scripts/bench_*.py. Run from the repository root:  scripts/gpu_check.sh OUTDIR
# OUTDIR gets env.txt, pytest_gpu.log, bench_vjp.{md,log}, one <bench>.md per other
# benchmark and bench_others.log (no subfolders). Exits with pytest's exit code.
# Time limits (seconds) may be overridden: PYTEST_TIMEOUT (default 240), BENCH_TIMEOUT (240);
# PYTEST_ARGS replaces the test paths (default: tests).
set -u

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUTDIR=$1
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.." || exit 2

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX would otherwise take 75% of GPU memory
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}

# ----- environment ------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: ${GPUVJP_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo none)}"
    echo
    nvidia-smi 2>&1 || echo "nvidia-smi failed"
    echo
    python3 - <<'EOF' 2>&1
import platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("numpy", "cupy", "torch", "jax", "pynvml"):
    try:
        m = __import__(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:
        print(name, "unavailable:", type(e).__name__, e)
try:
    import cupy
    print("cupy runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "driver", cupy.cuda.runtime.driverGetVersion(),
          "devices", cupy.cuda.runtime.getDeviceCount())
except Exception as e:
    print("cupy cuda: unavailable:", type(e).__name__, e)
try:
    import torch
    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:
    print("torch cuda: unavailable:", type(e).__name__, e)
try:
    import jax
    print("jax devices", jax.devices())
except Exception as e:
    print("jax devices: unavailable:", type(e).__name__, e)
try:
    import gpuvjp
    print("gpuvjp cuda available", gpuvjp.cuda.is_available())
except Exception as e:
    print("gpuvjp: import failed:", type(e).__name__, e)
EOF
} > "$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"

# ----- tests ------------------------------------------------------------------
echo "=== pytest -m gpu (timeout ${PYTEST_TIMEOUT}s)"
timeout "$PYTEST_TIMEOUT" python3 -m pytest -m gpu -q --maxfail=60 -rfE -p no:cacheprovider ${PYTEST_ARGS:-tests} 2>&1 \
    | tee "$OUTDIR/pytest_gpu.log"
pytest_rc=${PIPESTATUS[0]}
echo "=== pytest exit code: $pytest_rc"

# ----- benchmarks -------------------------------------------------------------
bench_results=()    # "name: exit N" in run order
run_bench() {   # run_bench SCRIPT LOG
    local name
    name=$(basename "$1" .py)
    echo "=== $name (timeout ${BENCH_TIMEOUT}s)" | tee -a "$2"
    timeout "$BENCH_TIMEOUT" python3 "$1" --device all --out "$OUTDIR/$name.md" 2>&1 \
        | tee -a "$2"
    local rc=${PIPESTATUS[0]}
    bench_results+=("$name: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')")
}

: > "$OUTDIR/bench_vjp.log"
run_bench scripts/bench_vjp.py "$OUTDIR/bench_vjp.log"
for script in scripts/bench_*.py; do
    [ -e "$script" ] || continue
    [ "$(basename "$script")" = bench_vjp.py ] && continue
    run_bench "$script" "$OUTDIR/bench_others.log"
done

# ----- summary ----------------------------------------------------------------
echo
echo "=== summary"
echo "pytest -m gpu: exit $pytest_rc ($(grep -E 'passed|failed|error|no tests ran' \
    "$OUTDIR/pytest_gpu.log" | tail -n 1))"
printf '%s\n' "${bench_results[@]}"
show_table() { [ -e "$1" ] && echo && cat "$1"; }
show_table "$OUTDIR/bench_vjp.md"
for table in "$OUTDIR"/bench_*.md; do
    [ "$table" = "$OUTDIR/bench_vjp.md" ] || show_table "$table"
done
exit "$pytest_rc"
