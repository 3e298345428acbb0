"""gv.Size against torch.Size: construction, tuple behaviour, numel, repr, pickling; and the
top-level namespace holding the public API only."""

from __future__ import annotations

import copy
import pickle
import types

import numpy as np
import pytest

import gpuvjp as gv

torch = pytest.importorskip("torch")


def _pair(shape):
    return gv.zeros(shape).shape, torch.zeros(shape).shape


@pytest.mark.parametrize("shape", [(), (0,), (3,), (3, 4), (2, 1, 5)])
def test_shape_and_size_are_sizes(shape):
    got, want = _pair(shape)
    t = gv.zeros(shape)
    assert type(got) is gv.Size and type(t.size()) is gv.Size and isinstance(got, tuple)
    assert got == want == tuple(shape) and t.size() == got
    assert got.numel() == want.numel() == t.numel()
    assert repr(got) == repr(want).replace("torch.", "gpuvjp.")
    assert str(got) == str(want).replace("torch.", "gpuvjp.")
    assert hash(got) == hash(tuple(shape))


def test_tuple_operations_keep_the_type_as_torch():
    got, want = _pair((3, 4))
    for op in (lambda s: s[1:], lambda s: s + (5,), lambda s: (5,) + s, lambda s: s * 2,
               lambda s: 2 * s, lambda s: s[::-1]):
        g, w = op(got), op(want)
        assert type(g) is gv.Size and type(w) is torch.Size and tuple(g) == tuple(w)
    assert got[0] == 3 and type(got[-1]) is int
    assert got.index(4) == 1 and got.count(3) == 1


def test_construction_as_torch():
    assert gv.Size([3, np.int64(4), gv.tensor(2)]) == (3, 4, 2)
    assert gv.Size() == () and gv.Size().numel() == 1
    for bad in (["a"], [3.0]):
        with pytest.raises(TypeError) as want:
            torch.Size(bad)
        with pytest.raises(TypeError) as got:
            gv.Size(bad)
        assert str(got.value) == str(want.value).replace("torch.", "gpuvjp.")


def test_size_pickles_and_copies():
    s = gv.zeros(2, 3).shape
    for again in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s), copy.copy(s)):
        assert type(again) is gv.Size and again == s


def test_batched_tensor_shape_is_logical():
    """A vectorized jacobian's batched tensors show their own shape (no batch dim) as Size."""
    seen = []

    def f(x):
        seen.append(x.exp().shape)
        return x.exp()
    gv.autograd.functional.jacobian(f, gv.ones(3), vectorize=True)
    assert seen == [gv.Size([3])] and all(type(s) is gv.Size for s in seen)


def test_namespace_is_the_public_api():
    names = {n for n in dir(gv) if not n.startswith("_")}
    assert "REGISTRY" not in names and "annotations" not in names
    assert set(gv.__all__) <= names
    # beyond __all__ only subpackages, present once something imported them (gpuvjp.ops)
    assert all(isinstance(getattr(gv, n), types.ModuleType) for n in names - set(gv.__all__))
    assert "Size" in gv.__all__ and "REGISTRY" not in gv.__all__
    namespace = {}
    exec("from gpuvjp import *", namespace)
    assert "REGISTRY" not in namespace and "Tensor" in namespace
