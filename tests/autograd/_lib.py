"""One program, two libraries: run a test program under gpuvjp (on a device) and under torch
(the CPU oracle), and compare results, graph flags and errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpuvjp as gv
from tests.conftest import ORACLE_MESSAGES

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-6, 1e-12


class Lib:
    """gpuvjp on `device`, or torch on cpu, behind one face: `L.m` is the module."""

    def __init__(self, m, device="cpu"):
        self.m, self.device = m, device

    def t(self, a, dtype=None, requires_grad=False):
        a = np.asarray(a)
        dtype = dtype or getattr(self.m, str(a.dtype))
        if self.m is gv:
            return gv.tensor(a, dtype=dtype, device=self.device, requires_grad=requires_grad)
        return torch.tensor(a, dtype=dtype, requires_grad=requires_grad)

    def vjp(self, *args, **kwargs):
        return self.m.autograd.functional.vjp(*args, **kwargs)

    def grad(self, *args, **kwargs):
        return self.m.autograd.grad(*args, **kwargs)


def both(program, device):
    """(gpuvjp's result, torch's result) of `program(L)`."""
    return program(Lib(gv, device)), program(Lib(torch))


def error_of(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


def assert_same_error(program, device, additive=False):
    """Both raise: the same exception type and (against the pinned torch) the same message,
    or with `additive` torch's message followed by what gpuvjp adds (the index at fault)."""
    want = error_of(lambda: program(Lib(torch)))
    got = error_of(lambda: program(Lib(gv, device)))
    assert type(got) is type(want)
    if ORACLE_MESSAGES:
        assert str(got).startswith(str(want)) if additive else str(got) == str(want)


def outcome(program, L):
    """("ok", result) or ("error", type, message)."""
    try:
        return ("ok", program(L))
    except Exception as e:  # noqa: BLE001  (any exception is an outcome to compare)
        return ("error", type(e), str(e))


def assert_same_outcome(program, device):
    """Both raise the same error, or both succeed with matching results."""
    want = outcome(program, Lib(torch))
    got = outcome(program, Lib(gv, device))
    if want[0] == "error" or got[0] == "error":
        assert got[:2] == want[:2]
        if ORACLE_MESSAGES:
            assert got == want
    else:
        assert_matches(got[1], want[1])


def dtype_name(t):
    return str(t.dtype).split(".")[-1]


def assert_matches(got, want, rtol=RTOL, atol=ATOL):
    """Same structure (Tensor / tuple / list / None), shapes, dtypes and values."""
    if want is None:
        assert got is None
        return
    if isinstance(want, (tuple, list)):
        assert type(got) is type(want), f"expected a {type(want).__name__}, got " \
                                        f"{type(got).__name__}"
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_matches(g, w, rtol, atol)
        return
    if isinstance(want, bool):
        assert got is want
        return
    assert isinstance(got, gv.Tensor), f"expected a Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == tuple(want.shape)
    assert dtype_name(got) == dtype_name(want)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=rtol, atol=atol)
