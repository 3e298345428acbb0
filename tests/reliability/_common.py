"""Shared by the reliability tests: one program run under gpuvjp and torch, the functional family
looked up by name (skipped with the reason while a member has not landed), and error capture."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import gpuvjp as gv
import gpuvjp.autograd.functional as GF

torch = pytest.importorskip("torch")
TF = torch.autograd.functional

FAMILY = ("vjp", "jvp", "jacobian", "hessian", "vhp", "hvp")
LONG = os.environ.get("GPUVJP_LONG") == "1"       # the long runs: more calls, more examples


def functional(name):
    """gpuvjp.autograd.functional.<name>, or a skip naming what is missing."""
    fn = getattr(GF, name, None)
    if fn is None:
        pytest.skip(f"gpuvjp.autograd.functional.{name} does not exist yet")
    return fn


class Lib:
    """gpuvjp on `device`, or torch on cpu, behind one face: `L.m` is the module, `L.F` its
    functional family, `L.t` makes a tensor from NumPy data."""

    def __init__(self, m, device="cpu"):
        self.m, self.device = m, device
        self.F = GF if m is gv else TF

    @property
    def is_gv(self):
        return self.m is gv

    def t(self, a, dtype=None, requires_grad=False):
        a = np.asarray(a)
        dtype = dtype or getattr(self.m, str(a.dtype))
        if self.is_gv:
            return gv.tensor(a, dtype=dtype, device=self.device, requires_grad=requires_grad)
        return torch.tensor(a, dtype=dtype, requires_grad=requires_grad)

    def fn(self, name):
        return functional(name) if self.is_gv else getattr(TF, name)

    def call(self, name, func, inputs, v=None, **kw):
        """One member of the family; jacobian and hessian take no v."""
        fn = self.fn(name)
        if name in ("jacobian", "hessian"):
            return fn(func, inputs, **kw)
        return fn(func, inputs, v, **kw)


def error_of(thunk):
    with pytest.raises(Exception) as info:
        thunk()
    return info.value


def both_errors(program, device="cpu"):
    """(gpuvjp's exception, torch's exception) of `program(L)`; both must raise."""
    want = error_of(lambda: program(Lib(torch)))
    got = error_of(lambda: program(Lib(gv, device)))
    return got, want


def assert_names(exc, *fragments):
    """The message names every fragment (the argument, the index, the sizes...)."""
    msg = str(exc)
    missing = [f for f in fragments
               if not (re.search(rf"\b{f}\b", msg) if f.isidentifier() else f in msg)]
    assert not missing, f"{type(exc).__name__}({msg!r}) does not name {missing}"


def host(t):
    """A tensor's values as a NumPy array (either library)."""
    if isinstance(t, gv.Tensor):
        return t.numpy()
    return t.detach().cpu().numpy()


def flat(res):
    """The tensors of a nested result, in order (None kept)."""
    if isinstance(res, (tuple, list)):
        return [x for r in res for x in flat(r)]
    return [res]
