"""gv.compile: replayed calls equal eager calls bit for bit (random programs, every functional),
each part of the signature retraces, each invalidating cause warns (or raises under strict)
naming the line of fn, replays do not leak, threads get their own results, and on cuda (the
emulated CuPy in CI) the graph is captured, matmul falls back to the launch list, streams are
ordered and outputs stay distinct."""

from __future__ import annotations

import gc
import os
import sys
import threading
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import gpuvjp as gv
from gpuvjp import _device, _lazy

from tests.conftest import CUDA, EMULATED
from tests.ops.test_random_programs import _run, programs

LONG = os.environ.get("GPUVJP_LONG") == "1"
HERE = os.path.basename(__file__)


def _flat(out):
    if isinstance(out, gv.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    return []


def _host(t):
    return t.cpu().numpy()


def assert_same(got, want):
    """Same structure, dtypes, devices and bits."""
    assert type(got) is type(want)
    g, w = _flat(got), _flat(want)
    assert len(g) == len(w)
    for a, b in zip(g, w):
        assert a.dtype == b.dtype and a.device == b.device and a.shape == b.shape
        assert a.requires_grad == b.requires_grad and a.grad_fn is None
        np.testing.assert_array_equal(_host(a), _host(b))


def fresh(arrays, device="cpu", seed=0):
    """New tensors of the shapes of `arrays` (new values: a stale buffer would show)."""
    rng = np.random.default_rng(seed)
    return [gv.tensor(rng.uniform(-2, 2, np.shape(a)), device=device) for a in arrays]


def run_three(f, arrays, device="cpu"):
    """Call 1 traces, call 2 (captures on cuda and) replays, call 3 replays: each equals eager
    on new values."""
    cf = gv.compile(f)
    for seed in range(3):
        args = fresh(arrays, device, seed)
        assert_same(cf(*args), f(*args))
    info = cf.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    return cf


# ----- equality -------------------------------------------------------------------------------
@settings(max_examples=200 if LONG else 25, deadline=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_programs_replay_bit_for_bit(prog):
    shape, yshape, steps, seed = prog
    rng = np.random.default_rng(seed)
    out_shape = _run(gv, steps, gv.tensor(rng.uniform(-2, 2, shape)),
                     gv.tensor(rng.uniform(-2, 2, yshape))).shape

    def f(x, y, v):
        return gv.vjp(lambda a, b: _run(gv, steps, a, b), (x, y), v)
    run_three(f, [np.zeros(shape), np.zeros(yshape), np.zeros(out_shape)])


def scalar_f(t):
    return (t.tanh() ** 2 * t.sin()).sum()


def vector_f(t):
    return (t.tanh() * t.exp()).sum(dim=-1)


FUNCTIONALS = {
    "vjp": lambda x, v: gv.vjp(vector_f, x, v),
    "vjp_scalar": lambda x, v: gv.vjp(scalar_f, x),
    "jvp": lambda x, v: gv.jvp(vector_f, x, gv.ones(x.shape, dtype=x.dtype, device=x.device)),
    "jacobian": lambda x, v: gv.jacobian(vector_f, x),
    "jacobian_vectorize": lambda x, v: gv.jacobian(vector_f, x, vectorize=True),
    "jacobian_forward": lambda x, v: gv.jacobian(vector_f, x, vectorize=True,
                                                 strategy="forward-mode"),
    "hessian": lambda x, v: gv.hessian(scalar_f, x),
    "hvp": lambda x, v: gv.hvp(scalar_f, x, x * 0.5),
    "vhp": lambda x, v: gv.vhp(scalar_f, x, x + 1),
    "grad": lambda x, v: _grad(x),
    "two_inputs_dict": lambda x, v: {"out": gv.vjp(lambda a, b: (a * b).sum(dim=-1),
                                                   (x, x.flip(0)), v)},
}


def _grad(x):
    x = x.detach().requires_grad_()
    return gv.autograd.grad(scalar_f(x), x)


@pytest.mark.parametrize("name", sorted(FUNCTIONALS))
def test_every_functional_replays_bit_for_bit(name, device):
    run_three(FUNCTIONALS[name], [np.zeros((3, 4)), np.zeros(3)], device)


def test_large_plans_replay_bit_for_bit():
    """Plans evaluated in blocks of rows (over 2 * CHUNK elements), a sum over rows of a
    blocked plan, a full sum, and matmul."""
    w = gv.tensor(np.random.default_rng(5).standard_normal((64, 8)))

    def f(x, v):
        a = gv.vjp(lambda t: (t.sin() * 0.5 + t.cos()).exp().sum(dim=1), x, v)
        b = gv.vjp(lambda t: (t.tanh() * 3).sum(), x)
        c = gv.vjp(lambda t: (t @ w).tanh(), x, gv.ones(300, 8, dtype=x.dtype))
        return a, b, c
    run_three(f, [np.zeros((300, 64)), np.zeros(300)])


def test_float32_and_closure_constants():
    """Closure tensors are constants of the trace; a float32 program replays exactly."""
    c = gv.tensor(np.linspace(-1, 1, 4), dtype=gv.float32)

    def f(x):
        return gv.vjp(lambda t: (t * c + 0.1).sigmoid().sum(), x.float())
    run_three(f, [np.zeros((2, 4))])


def test_outputs_never_alias_a_later_call():
    c = gv.tensor([1.0, 2.0])
    cf = gv.compile(lambda x: (x * 2, c, gv.zeros(2)))
    a = cf(gv.ones(2))
    b = cf(gv.ones(2) * 3)
    for p, q in zip(a, b):
        assert not np.shares_memory(p.numpy(), q.numpy())
    np.testing.assert_array_equal(a[0].numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(b[0].numpy(), [6.0, 6.0])


def test_an_input_returned_as_is_and_plain_values():
    cf = gv.compile(lambda x, n: (x, n, None, x * n))
    x = gv.ones(2)
    cf(x, 3)
    y = gv.ones(2)
    out = cf(y, 3)
    assert out[0] is y and out[1] == 3 and out[2] is None
    np.testing.assert_array_equal(out[3].numpy(), [3.0, 3.0])


# ----- the signature --------------------------------------------------------------------------
def _traces(cf):
    return cf.cache_info().misses


def test_each_part_of_the_signature_retraces(monkeypatch):
    cf = gv.compile(lambda x, k=1.0: gv.vjp(lambda t: (t * k).exp().sum(), x))
    x = gv.ones(3)
    cf(x)
    cf(gv.zeros(3))
    assert _traces(cf) == 1
    changes = [
        lambda: cf(gv.ones(4)),                                     # shape
        lambda: cf(gv.ones(3, dtype=gv.float64)),                   # dtype
        lambda: cf(gv.ones(3).requires_grad_()),                    # requires_grad
        lambda: cf(x, k=2.0),                                       # a value
        lambda: cf(x, 2.0),                                         # positional, not keyword
    ]
    for n, change in enumerate(changes, start=2):
        change()
        assert _traces(cf) == n
    with gv.no_grad():                                              # grad mode
        cf(x)
    assert _traces(cf) == 7
    gv.set_default_dtype(gv.float64)                                # default dtype
    try:
        cf(x)
    finally:
        gv.set_default_dtype(gv.float32)
    assert _traces(cf) == 8
    monkeypatch.setattr(_lazy, "ENABLED", not _lazy.ENABLED)       # fusion switch
    cf(x)
    assert _traces(cf) == 9
    monkeypatch.undo()
    cf(x)                                                           # nothing new
    assert _traces(cf) == 9


def test_structures_and_aliased_arguments():
    cf = gv.compile(lambda d, pair: d["a"] * pair[0] + pair[1])
    a, b, c = gv.ones(2), gv.full((2,), 2.0), gv.full((2,), 3.0)
    np.testing.assert_array_equal(cf({"a": a}, [b, c]).numpy(), [5.0, 5.0])
    np.testing.assert_array_equal(cf({"a": c}, [b, a]).numpy(), [7.0, 7.0])
    assert _traces(cf) == 1
    np.testing.assert_array_equal(cf({"a": a}, (b, c)).numpy(), [5.0, 5.0])   # tuple, not list
    assert _traces(cf) == 2
    g = gv.compile(lambda x, y: x * 2 + y)
    g(a, b)
    np.testing.assert_array_equal(g(b, b).numpy(), [6.0, 6.0])     # one tensor twice
    assert _traces(g) == 2


def test_unhashable_argument_warns_once_and_runs_eagerly():
    cf = gv.compile(lambda x, opts: x * opts["k"])
    with pytest.warns(UserWarning, match="unhashable"):
        out = cf(gv.ones(2), {"k": 2.0, "unused": np.zeros(1)})
    np.testing.assert_array_equal(out.numpy(), [2.0, 2.0])
    assert cf.cache_info().currsize == 0


def test_lru_eviction_warmup_and_cache_clear():
    cf = gv.compile(lambda x: x.exp() * 2, cache_size=2)
    for n in (1, 2, 3):
        cf(gv.ones(n))
    assert cf.cache_info().currsize == 2
    cf(gv.ones(1))                                  # evicted: traced again
    assert _traces(cf) == 4
    cf.warmup(gv.ones(5))
    assert _traces(cf) == 5
    np.testing.assert_array_equal(cf(gv.zeros(5)).numpy(), np.full(5, 2.0, np.float32))
    assert cf.cache_info().hits >= 1
    cf.cache_clear()
    assert cf.cache_info().currsize == 0


def test_bad_arguments():
    with pytest.raises(TypeError, match="fn"):
        gv.compile(3)
    with pytest.raises(ValueError, match="cache_size"):
        gv.compile(lambda x: x, cache_size=-1)

    @gv.compile(strict=True)
    def g(x):
        return x + 1
    np.testing.assert_array_equal(g(gv.zeros(1)).numpy(), [1.0])
    assert g.__name__ == "g"


def test_errors_in_fn_propagate_and_do_not_poison_the_signature():
    calls = []

    def f(x):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("first")
        return x * 2
    cf = gv.compile(f)
    with pytest.raises(KeyError):
        cf(gv.ones(2))
    cf(gv.ones(2))
    np.testing.assert_array_equal(cf(gv.ones(2) * 2).numpy(), [4.0, 4.0])
    assert cf.cache_info().hits == 1


# ----- what invalidates a trace ---------------------------------------------------------------
def _item(x):
    return x * x.sum().item()                       # LINE: item


def _if(x):
    return x * 2 if x.sum() > 0 else x              # LINE: if


def _numpy(x):
    return x * float(x.numpy()[0])                  # LINE: numpy


def _tolist(x):
    return x * x.tolist()[0]                        # LINE: tolist


def _rand(x):
    return x * gv.rand(x.shape)                     # LINE: rand


def _mask(x):
    return x[x > 0].sum()                           # LINE: mask


def _backward(x):
    y = x.detach().requires_grad_()
    (y * y).sum().backward()                        # LINE: backward
    return y.grad


def _requires_grad(x):
    x.requires_grad_()                              # LINE: requires_grad
    return gv.autograd.grad((x * x).sum(), x)


def _create_graph(x):
    y = x.detach().requires_grad_()
    return gv.vjp(lambda t: (t * t).sum(), y, create_graph=True)   # LINE: create_graph


def _index(x):
    return x[(x > 10).long()]                       # LINE: index


def _targets(x):
    return gv.nn.functional.cross_entropy(x[None], (x > 10).long()[:1])  # LINE: targets


def _grad_set(x):
    x.grad = x * 2
    return x + 1


class _Square(gv.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * g * x


def _function(x):
    return _Square.apply(x) + 1                     # LINE: function


CAUSES = {"item": (_item, "item()"), "if": (_if, "bool()"), "numpy": (_numpy, "numpy()"),
          "tolist": (_tolist, "tolist()"), "rand": (_rand, "random number"),
          "mask": (_mask, "boolean-mask"), "backward": (_backward, ".grad"),
          "requires_grad": (_requires_grad, "requires_grad_() on an argument"),
          "create_graph": (_create_graph, "grad_fn"), "function": (_function, "Function"),
          "index": (_index, "index tensor computed from fn's inputs"),
          "targets": (_targets, "targets computed from fn's inputs"),
          "grad_set": (_grad_set, ".grad of an argument assigned")}


def _line(tag):
    with open(__file__) as f:
        for n, text in enumerate(f, start=1):
            if text.rstrip().endswith(f"# LINE: {tag}"):
                return n
    raise AssertionError(tag)


@pytest.mark.parametrize("tag", sorted(CAUSES))
def test_each_cause_warns_once_naming_the_line_and_runs_eagerly(tag):
    fn, cause = CAUSES[tag]
    cf = gv.compile(fn)
    x = gv.tensor([0.5, -1.0, 2.0])
    with pytest.warns(UserWarning) as record:
        cf(x)
    msgs = [str(w.message) for w in record if "gv.compile" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert cause in msgs[0]
    if tag not in ("create_graph", "grad_set"):     # found when fn returns, not at a line
        assert f"{HERE}:{_line(tag)}" in msgs[0], msgs[0]
    y = gv.tensor([1.5, 2.0, -0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the signature is eager now
        again = cf(y)
    if tag not in ("rand", "create_graph"):
        assert_same(again, fn(y))
    assert cf.cache_info().hits == 0


@pytest.mark.parametrize("tag", sorted(CAUSES))
def test_each_cause_raises_under_strict(tag):
    fn, cause = CAUSES[tag]
    cf = gv.compile(fn, strict=True)
    with pytest.raises(RuntimeError, match="gv.compile") as info:
        cf(gv.tensor([0.5, -1.0, 2.0]))
    assert cause in str(info.value)


def test_host_reads_of_constants_do_not_invalidate():
    k = gv.tensor(3.0)
    idx = gv.tensor([0, 2])

    def f(x):
        return x[idx] * k.item()          # a bounds check and a read, of constants only
    run_three(f, [np.zeros(3)])


# ----- memory, threads, profiler ---------------------------------------------------------------
def test_no_growth_over_many_replays():
    cf = gv.compile(lambda x, v: gv.vjp(lambda t: t.exp().sum(dim=1), x, v))
    x, v = gv.ones(4, 4), gv.ones(4)
    n = 10_000 if LONG else 2_000
    for _ in range(n // 4):
        cf(x, v)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n - n // 4):
            cf(x, v)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 64 << 10, after - before
    assert cf.cache_info().misses == 1


def test_threads_each_get_the_eager_result():
    def f(x, v):
        return gv.vjp(lambda t: (t.tanh() * t).sum(dim=1), x, v)
    cf = gv.compile(f)
    errors = []

    def worker(seed):
        try:
            for k in range(30):
                x, v = fresh([np.zeros((3, 5)), np.zeros(3)], seed=seed * 100 + k)
                assert_same(cf(x, v), f(x, v))
        except BaseException as exc:          # noqa: BLE001  (reported below)
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert cf.cache_info().misses == 1


def test_profiler_records_the_replayed_kernels():
    def f(x, v):
        return gv.vjp(lambda t: (t.sin() * 2).exp().sum(dim=1), x, v)
    cf = gv.compile(f)
    x, v = gv.ones(4, 4), gv.ones(4)
    cf(x, v)
    with gv.profiler.profile() as eager:
        f(x, v)
    with gv.profiler.profile() as replay:
        cf(x, v)
    assert replay.launches == eager.launches > 0
    assert [(k.name, k.ops, k.bytes) for k in replay.kernels] == \
        [(k.name, k.ops, k.bytes) for k in eager.kernels]


def test_nested_compiled_functions():
    inner = gv.compile(lambda t: t.exp() * 2)
    outer = gv.compile(lambda x: gv.vjp(lambda t: inner(t).sum(), x))
    run = [outer(t) for t in fresh([np.zeros(3)] * 3)]
    want = [gv.vjp(lambda t: (t.exp() * 2).sum(), t) for t in fresh([np.zeros(3)] * 3)]
    for g, w in zip(run, want):
        assert_same(g, w)


# ----- cuda: the graph, the launch list, streams, the pool ---------------------------------
def _entry(cf):
    return next(iter(cf._cache.values()))


def _fake():
    from gpuvjp.testing import _fake_cupy
    return _fake_cupy


@pytest.mark.gpu
def test_cuda_capture_replays_a_graph():
    def f(x, v):
        return gv.vjp(lambda t: (t.tanh() * t.sin()).exp().sum(dim=1), x, v)
    cf = run_three(f, [np.zeros((4, 5)), np.zeros(4)], CUDA)
    assert _entry(cf).graph_state == "graph"
    if EMULATED:
        fc = _fake()
        fc.clear_records()
        cf(*fresh([np.zeros((4, 5)), np.zeros(4)], CUDA))
        names = fc.launches()
        assert "graph_launch" in names
        assert not any(n.startswith("gv_") and n not in _captured(cf) for n in names)


def _captured(cf):
    return {r[0] for r in _entry(cf).records}


@pytest.mark.gpu
def test_cuda_matmul_falls_back_to_the_launch_list():
    w = gv.tensor(np.random.default_rng(3).standard_normal((5, 3)), device=CUDA)

    def f(x, v):
        return gv.vjp(lambda t: (t @ w).tanh().sum(dim=1), x, v)
    cf = run_three(f, [np.zeros((4, 5)), np.zeros(4)], CUDA)
    assert _entry(cf).graph_state == "list"


@pytest.mark.gpu
def test_cuda_streams_are_ordered_and_outputs_distinct():
    cp = _device.cupy_module()
    cf = gv.compile(lambda x: gv.vjp(lambda t: t.exp().sum(), x))
    xs = fresh([np.zeros(6)] * 3, CUDA)
    outs = [cf(x) for x in xs]
    for x, out in zip(xs, outs):
        assert_same(out, gv.vjp(lambda t: t.exp().sum(), x))
    a, b = outs[1][1]._array(), outs[2][1]._array()
    assert not cp.may_share_memory(a, b)
    e = _entry(cf)
    assert e.graph_state == "graph"
    if EMULATED:
        with cp.cuda.Device(e.dev.index):
            caller = cp.cuda.get_current_stream()
            e.stream.waited.clear()
            caller.waited.clear()
            cf(xs[0])
            waited, back = list(e.stream.waited), list(caller.waited)
        assert waited and waited[0].stream is caller        # the replay after the caller
        assert back and back[-1].stream is e.stream         # the caller after the replay
        assert e.stream is not caller and e.stream.ptr != 0


@pytest.mark.gpu
def test_cuda_replays_do_not_grow_the_pools():
    cp = _device.cupy_module()
    cf = gv.compile(lambda x, v: gv.vjp(lambda t: t.exp().sum(dim=1), x, v))
    x, v = fresh([np.zeros((4, 4)), np.zeros(4)], CUDA)
    for _ in range(50):
        cf(x, v)
    e = _entry(cf)
    with cp.cuda.Device(e.dev.index):
        pool = cp.get_default_memory_pool()
        used, private = pool.used_bytes(), e.pool.total_bytes()
        for _ in range(500):
            cf(x, v)
        assert pool.used_bytes() <= used
        assert e.pool.total_bytes() == private
    cf.cache_clear()
    assert e.pool is None


@pytest.mark.gpu
def test_cuda_profiler_records_one_graph():
    cf = gv.compile(lambda x: gv.vjp(lambda t: t.sin().exp().sum(dim=1), x, gv.ones(3,
                                                                                    device=CUDA)))
    x = gv.ones(3, 4, device=CUDA)
    cf(x)
    cf(x)
    with gv.profiler.profile() as prof:
        cf(x)
    assert prof.launches == 1 and prof.kernels[0].name == "graph"
    assert set(prof.kernels[0].ops) == _captured(cf)


@pytest.mark.gpu
def test_cuda_default_device_retraces():
    cf = gv.compile(lambda x: x * 2)
    cf(gv.ones(2, device=CUDA))
    gv.set_default_device(CUDA)
    try:
        cf(gv.ones(2, device=CUDA))
    finally:
        gv.set_default_device(None)
    assert cf.cache_info().misses == 2
    cf(gv.ones(2, device="cpu"))                   # the device of an argument
    assert cf.cache_info().misses == 3


# ----- inputs the record could confuse ------------------------------------------------------
def test_an_arguments_grad_is_an_input_of_the_replay():
    """An optimiser step reads w.grad: each replay reads the .grad of the tensor passed."""
    @gv.no_grad()
    def sgd(w):
        return w - 0.1 * w.grad
    cf = gv.compile(sgd)
    for seed in range(3):
        (w,) = fresh([np.zeros(3)], seed=seed)
        w.requires_grad_()
        (w * w * w).sum().backward()
        assert_same(cf(w), sgd(w))
    assert (cf.cache_info().misses, cf.cache_info().hits) == (1, 2)
    (w,) = fresh([np.zeros(3)])              # no .grad: another signature (and eager's error)
    with pytest.raises(TypeError):
        cf(w)


def test_a_dual_argument_runs_eagerly_with_its_tangent():
    import gpuvjp.autograd.forward_ad as fwAD
    f = lambda d: d.sin() * 2                                   # noqa: E731
    cf = gv.compile(f)
    x = gv.tensor([0.5, -1.0, 2.0])
    cf(x)
    cf(x)
    for k, t in enumerate(([1.0, 0.0, 0.0], [0.0, 0.0, 1.0])):
        with fwAD.dual_level(), warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            got = fwAD.unpack_dual(cf(fwAD.make_dual(x, gv.tensor(t)))).tangent
            want = fwAD.unpack_dual(f(fwAD.make_dual(x, gv.tensor(t)))).tangent
        warned = [w for w in record if "forward-mode dual" in str(w.message)]
        assert len(warned) == (1 if k == 0 else 0)          # once, then eager for good
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("how", ["same", "detach", "view"])
def test_a_closure_tensor_passed_as_the_argument_runs_eagerly(how):
    w = gv.tensor([1.0, 2.0, 3.0])
    f = lambda x: gv.vjp(lambda t: (t * w).sum(), x)[1] + x * w  # noqa: E731
    cf = gv.compile(f)
    arg = {"same": w, "detach": w.detach(), "view": w.view(3)}[how]
    with pytest.warns(UserWarning, match="closure or a global is also an argument"):
        assert_same(cf(arg), f(arg))
    y = gv.tensor([5.0, 5.0, 5.0])
    assert_same(cf(y), f(y))


def test_an_entry_evicted_during_a_replay_runs_eagerly():
    """Threads on several signatures with room for one: evictions close entries that other
    threads are replaying; every call still gets the eager result."""
    f = lambda x: (x * 2).sin() + x                             # noqa: E731
    cf = gv.compile(f, cache_size=1)
    xs = [gv.tensor(np.linspace(0, 1, n)) for n in (1, 2, 3, 4)]
    errors = []

    def worker(i):
        try:
            for k in range(300):
                x = xs[(i + k) % 4]
                assert_same(cf(x), f(x))
        except BaseException as exc:          # noqa: BLE001  (reported below)
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)               # switch threads often: inside replays too
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


def test_a_replay_of_an_entry_closed_meanwhile_runs_eagerly(monkeypatch):
    """The window the threads above hit by chance: another thread evicts (closes) the entry
    between the lookup and the replay."""
    from gpuvjp import _compile
    f = lambda x: (x * 2).sin() + x                             # noqa: E731
    cf = gv.compile(f)
    cf(gv.tensor([1.0, 2.0]))
    replay = _compile._Entry.replay

    def closed_first(entry, tensors, arrays):
        entry.close()
        return replay(entry, tensors, arrays)
    monkeypatch.setattr(_compile._Entry, "replay", closed_first)
    x = gv.tensor([0.5, -1.0])
    with gv.profiler.profile():               # a profiled call replays through _Entry.replay
        got = cf(x)
    assert_same(got, f(x))


# ----- the replay's exact NumPy calls (CPU) ---------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int64", "bool"])
def test_scalar_arguments_replay_in_every_dtype(dtype):
    """Python scalars of a ufunc are replayed as 0-d arrays of the dtype NumPy casts them to,
    where that is exact, and as themselves otherwise (0.1 in float32, 2**40 in float16)."""
    dt = getattr(gv, dtype)

    def f(x):
        if dt is gv.bool:
            return x & True, x | False, x == True            # noqa: E712  (a scalar operand)
        if not dt.is_floating_point:
            return x * 3 + 2**40, x - True, x * 7 - 1, x > 2**62, x * -1
        return (x * 0.1 + 2, x - 2**40, 1e30 * x, x * True, (x + 0.5).exp().sum(dim=-1),
                x > 0.25, x * -0.0)
    cf = gv.compile(f)
    for seed in range(3):
        a = np.random.default_rng(seed).uniform(-4, 4, (3, 4))
        x = gv.tensor(a > 0 if dt is gv.bool else a).to(dt)
        with np.errstate(all="ignore"):
            assert_same(cf(x), f(x))
    assert cf.cache_info().hits == 2


def test_the_sums_cotangent_view_on_any_layout():
    """The sum's cotangent is one strided view of the cotangent: replayed for a contiguous
    one as recorded, and for a strided one (another layout, same signature) as eager makes
    it; returned, it is read-only as eager's is."""
    def f(x, v):
        return gv.vjp(lambda t: t.sum(dim=1), x, v), gv.vjp(lambda t: t.exp().sum(dim=0), x, v)
    cf = gv.compile(f)
    base = gv.tensor(np.arange(8.0))
    f64 = gv.float64
    for v in (gv.tensor([1.0, 2.0, 3.0, 4.0], dtype=f64), base[::2], base[1::2],
              gv.ones(4, dtype=f64)):
        x = gv.tensor(np.random.default_rng(0).standard_normal((4, 4)))
        got, want = cf(x, v), f(x, v)
        assert_same(got, want)
        g, w = got[0][1].numpy(), want[0][1].numpy()
        assert g.flags.writeable == w.flags.writeable
        assert np.shares_memory(g, v.numpy()) == np.shares_memory(w, v.numpy())
    assert cf.cache_info().hits == 3
