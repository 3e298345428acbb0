#!/usr/bin/env bash
# The whole test suite, as CI runs it: every test on the CPU, then the `cuda` parametrisations
# (the gpu-marked tests) on the emulated CUDA device with two devices, so that the GPU-only Python
# runs on every commit (docs/emulated_cuda.md). On a machine with a GPU the first pass already
# runs the gpu tests on the real device.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q "$@"
GPUVJP_EMULATE_CUDA=2 python3 -m pytest -q -m gpu "$@"
