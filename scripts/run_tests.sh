#!/usr/bin/env bash
# The whole test suite, as CI runs it:
# 1. every test on the CPU, with fusion on (the default);
# 2. the `cuda` parametrisations (the gpu-marked tests) on the emulated CUDA device with two
#    devices, so that the GPU-only Python runs on every commit (docs/emulated_cuda.md); on a
#    machine with a GPU the first pass already runs the gpu tests on the real device;
# 3. every test on the CPU again with fusion off (GPUVJP_FUSION=0): one kernel per op, the path
#    the fused plans must agree with.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q "$@"
GPUVJP_EMULATE_CUDA=2 python3 -m pytest -q -m gpu "$@"
GPUVJP_FUSION=0 python3 -m pytest -q "$@"
