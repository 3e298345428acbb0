"""Grad-mode context managers and decorators against torch: every spelling, generators,
exceptions and threads, and the mode each leaves behind."""

from __future__ import annotations

import threading

import pytest

import gpuvjp as gv

torch = pytest.importorskip("torch")

LIBS = {"gv": gv, "torch": torch}


def _observed(m, spelling):
    """Grad mode inside a function decorated by `spelling`, and the mode after decorating and
    after calling, starting from grad enabled."""
    assert m.is_grad_enabled()
    deco = {
        "no_grad()": lambda: m.no_grad(),
        "no_grad": lambda: m.no_grad,
        "enable_grad()": lambda: m.enable_grad(),
        "enable_grad": lambda: m.enable_grad,
        "set_grad_enabled(False)": lambda: m.set_grad_enabled(False),
        "set_grad_enabled(True)": lambda: m.set_grad_enabled(True),
    }[spelling]()

    def inner(a, b=1):
        return m.is_grad_enabled(), a + b
    f = deco(inner)
    after_decorating = m.is_grad_enabled()
    m.set_grad_enabled(False)
    inside_disabled = f(1, b=2)
    m.set_grad_enabled(True)
    inside_enabled = f(3)
    after = m.is_grad_enabled()
    return after_decorating, inside_disabled, inside_enabled, after, f.__name__


SPELLINGS = ["no_grad()", "no_grad", "enable_grad()", "enable_grad", "set_grad_enabled(False)",
             "set_grad_enabled(True)"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_decorators_match_torch(spelling):
    try:
        assert _observed(gv, spelling) == _observed(torch, spelling)
    finally:
        gv.set_grad_enabled(True)
        torch.set_grad_enabled(True)
    assert gv.is_grad_enabled()


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_decorated_function_records_as_torch(spelling):
    def program(m):
        deco = eval(f"m.{spelling}") if spelling.endswith(")") else getattr(m, spelling)

        @deco
        def f(x):
            return (x * 2).requires_grad
        x = m.ones(2, requires_grad=True)
        return f(x), m.is_grad_enabled()
    assert program(gv) == program(torch)


def _generator_trace(m, spelling):
    trace = []
    deco = eval(f"m.{spelling}") if spelling.endswith(")") else getattr(m, spelling)

    @deco
    def gen(n):
        for i in range(n):
            trace.append(("in", m.is_grad_enabled()))
            got = yield i
            trace.append(("sent", got, m.is_grad_enabled()))
        return "done"

    for mode in (True, False):
        m.set_grad_enabled(mode)
        g = gen(2)
        trace.append(("caller", next(g), m.is_grad_enabled()))
        trace.append(("caller", g.send("a"), m.is_grad_enabled()))
        with pytest.raises(StopIteration) as stop:
            g.send("b")
        trace.append(("return", stop.value.value, m.is_grad_enabled()))
    m.set_grad_enabled(True)
    return trace


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_generator_functions_match_torch(spelling):
    try:
        assert _generator_trace(gv, spelling) == _generator_trace(torch, spelling)
    finally:
        gv.set_grad_enabled(True)
        torch.set_grad_enabled(True)


def _throw_and_close(m):
    trace = []

    @m.no_grad()
    def gen():
        try:
            yield 1
        except KeyError:
            trace.append(("caught", m.is_grad_enabled()))
            yield 2
        finally:
            trace.append(("finally", m.is_grad_enabled()))

    g = gen()
    next(g)
    trace.append(("thrown", g.throw(KeyError("k")), m.is_grad_enabled()))
    g.close()
    trace.append(("closed", m.is_grad_enabled()))
    return trace


def test_generator_throw_and_close_match_torch():
    assert _throw_and_close(gv) == _throw_and_close(torch)
    assert gv.is_grad_enabled()


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("start", [True, False])
def test_exception_leaves_mode_unchanged(spelling, start):
    def program(m):
        m.set_grad_enabled(start)
        deco = eval(f"m.{spelling}") if spelling.endswith(")") else getattr(m, spelling)

        @deco
        def f():
            raise ValueError("inside")
        with pytest.raises(ValueError, match="inside"):
            f()
        after_call = m.is_grad_enabled()
        ctx = eval(f"m.{spelling}") if spelling.endswith(")") else getattr(m, spelling)()
        with pytest.raises(ValueError, match="inside"):
            with ctx:
                raise ValueError("inside")
        return after_call, m.is_grad_enabled()
    try:
        assert program(gv) == program(torch) == (start, start)
    finally:
        gv.set_grad_enabled(True)
        torch.set_grad_enabled(True)


def test_set_grad_enabled_as_a_call_and_nested():
    def program(m):
        seen = []
        m.set_grad_enabled(False)
        seen.append(m.is_grad_enabled())
        with m.enable_grad():
            seen.append(m.is_grad_enabled())
            with m.set_grad_enabled(False):
                seen.append(m.is_grad_enabled())
                with m.no_grad():
                    seen.append(m.is_grad_enabled())
            seen.append(m.is_grad_enabled())
        seen.append(m.is_grad_enabled())
        m.set_grad_enabled(True)
        return seen
    assert program(gv) == program(torch) == [False, True, False, False, True, False]


def test_decorating_a_class_warns_as_torch():
    def program(m):
        class C:
            def __init__(self):
                self.grad = m.is_grad_enabled()
        with pytest.warns(FutureWarning, match="Decorating classes is deprecated"):
            made = m.no_grad()(C)
        return made().grad, m.is_grad_enabled()
    assert program(gv) == program(torch) == (False, True)


def test_decorator_is_thread_local():
    seen = {}
    ready, release = threading.Event(), threading.Event()

    @gv.no_grad
    def hold():
        seen["worker"] = gv.is_grad_enabled()
        ready.set()
        release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    ready.wait(5)
    seen["main"] = gv.is_grad_enabled()
    release.set()
    worker.join()
    assert seen == {"worker": False, "main": True}


def test_set_grad_enabled_decorator_keeps_metadata():
    @gv.set_grad_enabled(False)
    def documented(x):
        """Doc."""
        return x
    assert documented.__name__ == "documented" and documented.__doc__ == "Doc."
    assert gv.is_grad_enabled()
