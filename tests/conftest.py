"""Shared fixtures: `device` runs a test on cpu and, marked gpu, on cuda (skipped with the
reason when CuPy sees no GPU). Under GPUVJP_EMULATE_CUDA the `cuda` tests run on the emulated
CuPy (gpuvjp.testing), except those marked gpu_hardware, which need a real GPU."""

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device

try:
    import torch
    torch.set_num_threads(1)
except ImportError:  # the oracle tests skip themselves
    torch = None

HAS_GPU = gv.cuda.is_available()
EMULATED = _device.emulated_device_count() > 0
# Error messages are PyTorch 2.13's (the pinned oracle); another torch (a GPU machine's CUDA
# build) is compared on exception types only.
ORACLE_MESSAGES = torch is not None and torch.__version__.startswith("2.13")
NO_GPU_REASON = "CuPy sees no CUDA GPU on this machine"
EMULATED_REASON = ("needs real GPU hardware (timings, NVRTC loading on a device, true "
                   "out-of-memory, a CUDA kernel against its twin): GPUVJP_EMULATE_CUDA runs "
                   "the twins")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=NO_GPU_REASON)
    skip_emulated = pytest.mark.skip(reason=EMULATED_REASON)
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip)
        elif "gpu_hardware" in item.keywords and EMULATED:
            item.add_marker(skip_emulated)


# Under emulation with two devices the `cuda` parametrisations run on cuda:1, so that code which
# forgets its device context (and works only because cuda:0 is current) fails there.
CUDA = "cuda:1" if EMULATED and gv.cuda.device_count() > 1 else "cuda"


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    return CUDA if request.param == "cuda" else request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
