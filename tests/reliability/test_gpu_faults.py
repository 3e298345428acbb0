"""GPU faults: an allocation too large for the card is a MemoryError-style error naming the size
asked for, and the next vjp still works; a kernel source that does not compile is an error naming
the kernel file (not a bare NVRTC dump), and once the source is good again kernels work."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp import _device
from gpuvjp.ops import _kernels

pytestmark = pytest.mark.gpu

HUGE = 1 << 45                      # float32 elements: 128 TiB, more than any card holds


def exp_reducer(x):
    return x.exp().sum(dim=1)


def _check_vjp_works():
    a = np.random.default_rng(0).uniform(0, 1, (64, 64)).astype(np.float32)
    out, g = gv.vjp(exp_reducer, gv.tensor(a, device="cuda"), gv.ones(64, device="cuda"))
    np.testing.assert_allclose(out.numpy(), np.exp(a).sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(g.numpy(), np.exp(a), rtol=1e-5)


def _names_size(msg, nbytes, numel):
    return any(s in msg for s in (str(nbytes), f"{nbytes:,}", str(numel), f"{numel:,}"))


def test_allocation_too_large_is_a_memory_error():
    with pytest.raises(MemoryError) as info:
        gv.zeros(HUGE, device="cuda")
    assert _names_size(str(info.value), HUGE * 4, HUGE), str(info.value)
    _check_vjp_works()


def test_allocation_too_large_inside_vjp():
    """The error leaves vjp, grad mode is restored, the pool holds nothing of the failed call,
    and the next vjp works."""
    import gc

    pool = _device.cupy_module().get_default_memory_pool()
    x = gv.ones(1 << 22, device="cuda")
    rows = 1 << 23
    gc.collect()                                      # earlier tests' garbage is not this call's
    base = pool.used_bytes()

    def func(a):
        # a matmul reads its operands from memory, so the product (2^45 floats) is allocated
        # even where a fused plan would have reduced it without writing it
        return ((a.expand(rows, 1 << 22) * 2) @ a).sum()

    with gv.no_grad():
        with pytest.raises(MemoryError) as info:
            gv.vjp(func, x)
        assert not gv.is_grad_enabled()
    msg = str(info.value)
    del info                                          # the traceback holds the call's frames
    gc.collect()
    sizes = [int(s.replace(",", "")) for s in re.findall(r"\d[\d,]*", msg)]
    assert any(s >= 1 << 44 for s in sizes), f"no size asked for in {msg!r}"
    assert pool.used_bytes() == base
    _check_vjp_works()


def test_allocation_too_large_for_ones_like_and_randn():
    for make in (lambda: gv.ones(HUGE, device="cuda"), lambda: gv.randn(HUGE, device="cuda"),
                 lambda: gv.full((HUGE,), 1.5, device="cuda")):
        with pytest.raises(MemoryError):
            make()
    _check_vjp_works()


def _clear_kernel_caches():
    for obj in vars(_kernels).values():
        if hasattr(obj, "cache_clear"):
            obj.cache_clear()


@pytest.fixture
def broken_kernels(monkeypatch):
    """kernels/*.cuh text that NVRTC rejects; afterwards the real text and fresh caches."""
    real = _kernels.source

    def broken(family):
        return real(family) + "\n#error corrupted kernel source (gpuvjp reliability test)\n" \
            "this is not C++ {\n"

    _clear_kernel_caches()
    monkeypatch.setattr(_kernels, "source", broken)
    yield
    monkeypatch.undo()
    _clear_kernel_caches()


# name -> (program on a cuda tensor, kernel file)
BROKEN = {
    "sigmoid": (lambda x: gv.sigmoid(x), "unary.cuh"),
    "exp-sum": (lambda x: x.exp().sum(dim=1), "unary.cuh"),
    "tanh-vjp": (lambda x: gv.vjp(lambda a: a.tanh(), x, gv.ones_like(x)), "unary.cuh"),
    "div-vjp": (lambda x: gv.vjp(lambda a: (1.0 + a) / (2.0 + a), x, gv.ones_like(x)),
                "binary.cuh"),
}


@pytest.mark.gpu_hardware                  # the emulated CuPy compiles nothing
@pytest.mark.parametrize("name", BROKEN)
def test_kernel_compile_error_names_the_file(name, broken_kernels):
    program, filename = BROKEN[name]
    x = gv.tensor(np.linspace(0.1, 1, 12).reshape(3, 4), dtype=gv.float32, device="cuda")
    with pytest.raises(RuntimeError) as info:
        program(x)
    msg = str(info.value)
    assert f"kernels/{filename}" in msg, msg
    assert len(msg.splitlines()) <= 5, f"a bare compiler dump, not a clear error:\n{msg}"


@pytest.mark.gpu_hardware
def test_kernels_work_after_a_compile_error(monkeypatch):
    x = gv.tensor(np.linspace(0.1, 1, 12).reshape(3, 4), dtype=gv.float32, device="cuda")
    real = _kernels.source
    _clear_kernel_caches()
    monkeypatch.setattr(_kernels, "source", lambda family: real(family) + "\n#error broken\n")
    with pytest.raises(RuntimeError):
        gv.sigmoid(x)
    monkeypatch.undo()
    _clear_kernel_caches()
    np.testing.assert_allclose(gv.sigmoid(x).numpy(), 1 / (1 + np.exp(-x.numpy())), rtol=1e-6)
    _check_vjp_works()
