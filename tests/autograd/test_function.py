"""gv.autograd.Function against torch.autograd.Function: NumPy bodies on the CPU (vjp, grad, jvp
both ways, jacobian both ways, hessian, gradcheck, ctx, every error), user CuPy kernels on a GPU."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import gpuvjp as gv
from gpuvjp.autograd.function import once_differentiable
from tests.conftest import ORACLE_MESSAGES

torch = pytest.importorskip("torch")


def close(a, b, rtol=1e-7, atol=1e-10):
    a = a.numpy() if isinstance(a, gv.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def raises_like(want, fn):
    """fn() raises the exception type of `want` (and, under torch 2.13, its message)."""
    with pytest.raises(type(want)) as info:
        fn()
    if ORACLE_MESSAGES:
        assert str(info.value) == str(want)
    return info.value


def torch_error(fn):
    try:
        fn()
    except Exception as exc:                 # noqa: BLE001  (the oracle's error, whatever it is)
        return exc
    raise AssertionError("torch raised nothing")


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ----- Functions with NumPy bodies (forward returns NumPy arrays, wrapped) -----------------------
class NpExp(gv.autograd.Function):
    """y = exp(x) by NumPy; the output is saved, so backward reads it back."""
    calls = 0

    @staticmethod
    def forward(ctx, x):
        y = gv.from_numpy(np.exp(x.numpy()))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        NpExp.calls += 1
        (y,) = ctx.saved_tensors
        return y.numpy() * g.numpy()


class NpMulAdd(gv.autograd.Function):
    """z = x * y + k (k a Python number): two Tensor inputs and one that is not."""

    @staticmethod
    def forward(ctx, x, y, k):
        ctx.save_for_backward(x, y)
        return x.numpy() * y.numpy() + k

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g.numpy() * y.numpy(), g.numpy() * x.numpy(), None


class Cube(gv.autograd.Function):
    """y = x^3 with a NumPy forward and a backward of gpuvjp ops (differentiable again)."""
    backward_shapes = []

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.numpy() ** 3

    @staticmethod
    def backward(ctx, g):
        Cube.backward_shapes.append((tuple(g.shape), g._nb))
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


class CubeJvp(Cube):
    jvp_calls = 0

    @staticmethod
    def jvp(ctx, t):
        CubeJvp.jvp_calls += 1
        (x,) = ctx.saved_tensors
        return 3 * x.numpy() ** 2 * t.numpy()


class CubeBatched(Cube):
    generate_vmap_rule = True


class TorchCube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


def data(rng, *shape):
    return rng.uniform(0.5, 1.5, size=shape)


def test_vjp_and_grad_match_torch(rng):
    x, y, v = data(rng, 3, 4), data(rng, 3, 4), data(rng, 3, 4)
    got = gv.vjp(lambda a, b: NpMulAdd.apply(NpExp.apply(a), b, 2.0),
                 (gv.tensor(x), gv.tensor(y)), gv.tensor(v))
    want = torch.autograd.functional.vjp(lambda a, b: a.exp() * b + 2.0,
                                         (torch.tensor(x), torch.tensor(y)), torch.tensor(v))
    close(got[0], want[0])
    for g, w in zip(got[1], want[1]):
        close(g, w)
    tx = gv.tensor(x, requires_grad=True)
    out = NpExp.apply(tx)
    assert out.grad_fn.name() == "NpExpBackward" and out.requires_grad
    (gx,) = gv.autograd.grad(out.sum(), tx)
    close(gx, np.exp(x))


def test_backward_called_once_per_sweep_and_accumulates():
    NpMulAdd_calls = []

    class Counted(NpMulAdd):
        @staticmethod
        def backward(ctx, g):
            NpMulAdd_calls.append(1)
            return NpMulAdd.backward(ctx, g)
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    y = gv.tensor([3.0, 4.0], requires_grad=True)
    (Counted.apply(x, y, 0.0).sum() + Counted.apply(x, x, 1.0).sum()).backward()
    assert len(NpMulAdd_calls) == 2
    close(x.grad, [3.0 + 2.0, 4.0 + 4.0])
    close(y.grad, [1.0, 2.0])


def test_hessian_through_a_backward_of_gpuvjp_ops(rng):
    x = data(rng, 3)
    got = gv.hessian(lambda t: (Cube.apply(t) * t).sum(), gv.tensor(x))
    want = torch.autograd.functional.hessian(lambda t: (TorchCube.apply(t) * t).sum(),
                                             torch.tensor(x))
    close(got, want)
    got = gv.autograd.functional.hvp(lambda t: Cube.apply(t).sum(), gv.tensor(x),
                                     gv.tensor(x))[1]
    close(got, 6 * x * x)


def test_gradcheck_and_gradgradcheck():
    x = gv.tensor([0.7, 1.2, 0.9], dtype=gv.float64, requires_grad=True)
    assert gv.autograd.gradcheck(Cube.apply, (x,))
    assert gv.autograd.gradgradcheck(Cube.apply, (x,))
    assert gv.autograd.gradcheck(NpExp.apply, (x,))
    y = gv.tensor([0.3, 0.2, 1.1], dtype=gv.float64, requires_grad=True)
    assert gv.autograd.gradcheck(lambda a, b: NpMulAdd.apply(a, b, 1.5), (x, y))


def test_jvp_forward_mode_with_a_jvp_rule(rng):
    x, v = data(rng, 4), data(rng, 4)
    CubeJvp.jvp_calls = 0
    out, jv = gv.jvp(CubeJvp.apply, gv.tensor(x), gv.tensor(v))
    assert CubeJvp.jvp_calls == 1
    close(out, x ** 3)
    close(jv, 3 * x ** 2 * v)


def test_jvp_without_a_jvp_rule_differentiates_backward(rng):
    x, v = data(rng, 4), data(rng, 4)
    Cube.backward_shapes.clear()
    out, jv = gv.jvp(lambda t: Cube.apply(t) * 2, gv.tensor(x), gv.tensor(v))
    close(jv, 6 * x ** 2 * v)
    assert Cube.backward_shapes                      # the double-backward trick ran backward
    want = torch.autograd.functional.jvp(TorchCube.apply, torch.tensor(x), torch.tensor(v))[1]
    close(gv.jvp(Cube.apply, gv.tensor(x), gv.tensor(v))[1], want)
    class CubeAsked(Cube):                           # a backward that honours needs_input_grad
        @staticmethod
        def backward(ctx, g):
            return Cube.backward(ctx, g) if ctx.needs_input_grad[0] else None
    close(gv.jacobian(CubeAsked.apply, gv.tensor(x), vectorize=True, strategy="forward-mode"),
          np.diag(3 * x ** 2))
    # strict mode takes PyTorch's double-backward route for the whole function
    close(gv.jvp(Cube.apply, gv.tensor(x), gv.tensor(v), strict=True)[1], want)


def test_jvp_without_a_rule_and_a_numpy_backward_raises():
    with pytest.raises(RuntimeError, match="NpExp.*no jvp staticmethod.*Define NpExp.jvp"):
        gv.jvp(NpExp.apply, gv.tensor([1.0, 2.0]), gv.ones(2))


def test_forward_ad_dual_tensors_and_save_for_forward():
    from gpuvjp.autograd import forward_ad as fwAD

    class Square(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_forward(x)
            ctx.save_for_backward(x)
            return x.numpy() ** 2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

        @staticmethod
        def jvp(ctx, t):
            (x,) = ctx.saved_tensors
            return 2 * x * t
    x = gv.tensor([1.0, 3.0])
    with fwAD.dual_level():
        y = Square.apply(fwAD.make_dual(x, gv.tensor([1.0, 0.5])))
        close(fwAD.unpack_dual(y).tangent, [2.0, 3.0])


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_jacobian_vectorized_loops_per_sample_without_a_batch_rule(rng, strategy):
    x = data(rng, 3)
    want = np.diag(3 * x ** 2)
    Cube.backward_shapes.clear()
    close(gv.jacobian(Cube.apply, gv.tensor(x), vectorize=True, strategy=strategy), want)
    assert Cube.backward_shapes and all(nb == 0 for _, nb in Cube.backward_shapes)
    if strategy == "reverse-mode":
        assert len(Cube.backward_shapes) == 3            # one call per basis vector
    else:
        # double backward: backward runs once, and its ops carry the batch of tangents
        assert len(Cube.backward_shapes) == 1
        CubeJvp.jvp_calls = 0
        close(gv.jacobian(CubeJvp.apply, gv.tensor(x), vectorize=True, strategy=strategy),
              want)
        assert CubeJvp.jvp_calls == 3                    # the jvp rule, once per basis vector
    close(gv.jacobian(Cube.apply, gv.tensor(x)), want)
    NpExp.calls = 0
    close(gv.jacobian(NpExp.apply, gv.tensor(x), vectorize=True), np.diag(np.exp(x)))
    assert NpExp.calls == 3


def test_jacobian_vectorized_with_generate_vmap_rule_runs_backward_once(rng):
    x = data(rng, 3)
    Cube.backward_shapes.clear()
    close(gv.jacobian(CubeBatched.apply, gv.tensor(x), vectorize=True), np.diag(3 * x ** 2))
    assert Cube.backward_shapes == [((3,), 1)]        # one batched call
    close(gv.hessian(lambda t: CubeBatched.apply(t).sum(), gv.tensor(x), vectorize=True),
          np.diag(6 * x))


def test_vmap_staticmethod_on_batched_inputs(rng):
    calls = []

    class NpSin(gv.autograd.Function):
        @staticmethod
        def forward(x):
            return np.sin(x.numpy())

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return NpCosMul.apply(x, g)                # batched g: NpCosMul's vmap rule

        @staticmethod
        def vmap(info, in_dims, x):
            return np.sin(x.numpy()), in_dims[0]

    class NpCosMul(gv.autograd.Function):
        @staticmethod
        def forward(x, g):
            return np.cos(x.numpy()) * g.numpy()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, gg):
            raise AssertionError("not differentiated twice here")

        @staticmethod
        def vmap(info, in_dims, x, g):
            calls.append((info.batch_size, in_dims))
            return np.cos(x.numpy()) * g.numpy(), 0     # x broadcasts against g's batch
    x = data(rng, 3)
    close(gv.jacobian(NpSin.apply, gv.tensor(x), vectorize=True), np.diag(np.cos(x)))
    assert calls == [(3, (None, 0))]
    # NpSin's own vmap rule: applied to a batch of inputs at once, and differentiable
    xs = data(rng, 4, 3)
    from gpuvjp.ops.batching import rebatch, unbatch
    t = gv.tensor(xs, requires_grad=True)
    out = unbatch(NpSin.apply(rebatch(t)))
    close(out, np.sin(xs))
    close(gv.autograd.grad(out.sum(), t)[0], np.cos(xs))
    assert calls[-1] == (4, (0, 0))


def test_setup_context_style_and_keyword_arguments():
    class Scale(gv.autograd.Function):
        @staticmethod
        def forward(x, k=2.0):
            return x * k

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.k = inputs[1]

        @staticmethod
        def backward(ctx, g):
            return g * ctx.k, None
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    close(gv.autograd.grad(Scale.apply(x, k=3.0).sum(), x)[0], [3.0, 3.0])
    close(gv.autograd.grad(Scale.apply(x, 2.0).sum(), x)[0], [2.0, 2.0])


def test_needs_input_grad_and_no_grad():
    seen = []

    class F(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x, k, y):
            seen.append(ctx.needs_input_grad)
            return x * y * k

        @staticmethod
        def backward(ctx, g):
            return g, None, None
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    out = F.apply(x, 2, gv.ones(2))
    with gv.no_grad():
        quiet = F.apply(x, 2, gv.ones(2))
    assert seen == [(True, False, False), (False, False, False)]
    assert out.requires_grad and not quiet.requires_grad and quiet.grad_fn is None


def test_several_outputs_non_differentiable_and_materialize():
    seen = []

    class MaxArg(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            a = x.numpy()
            i = gv.tensor(int(a.argmax()))
            ctx.mark_non_differentiable(i)
            ctx.save_for_backward(i)
            return a * 2, i, "tag"

        @staticmethod
        def backward(ctx, g, gi, gtag):
            seen.append((gi, gtag))
            return g * 2

    x = gv.tensor([1.0, 3.0, 2.0], requires_grad=True)
    y, i, tag = MaxArg.apply(x)
    assert tag == "tag" and not i.requires_grad and y.requires_grad
    assert y.grad_fn.name() == "MaxArgBackward"
    y.sum().backward()
    close(x.grad, [2.0, 2.0, 2.0])
    assert seen[0][0].tolist() == 0 and seen[0][1] is None    # zeros for the index, as torch

    class Two(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            return x.numpy() * 2, x.numpy() * 3

        @staticmethod
        def backward(ctx, ga, gb):
            seen.append((ga, gb))
            return (0 if ga is None else ga * 2) + (0 if gb is None else gb * 3)
    a, b = Two.apply(x)
    (gx,) = gv.autograd.grad(b.sum(), x)
    close(gx, [3.0, 3.0, 3.0])
    assert seen[-1][0] is None and seen[-1][1] is not None
    (gx,) = gv.autograd.grad(a.sum() + 2 * b.sum() + b.sum(), x)   # gradients summed per output
    close(gx, [11.0, 11.0, 11.0])


def test_returning_an_input_gives_a_new_tensor_with_the_functions_history():
    class Ident(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 3
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    y = Ident.apply(x)
    assert y is not x and y.grad_fn.name() == "IdentBackward" and x.is_leaf
    y.sum().backward()
    close(x.grad, [3.0, 3.0])


def test_mark_dirty_rebases_the_input():
    class Double_(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.numpy()[...] *= 2                 # in place, through the array
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 2
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    a = x * 1
    out = Double_.apply(a)
    assert out is a and a.grad_fn.name() == "Double_Backward"
    close(a, [2.0, 4.0])
    out.sum().backward()
    close(x.grad, [2.0, 2.0])


class TDouble_(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x.mul_(2)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, g):
        return g * 2


def test_mark_dirty_errors():
    class GDouble_(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.numpy()[...] *= 2
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 2
    want = torch_error(lambda: TDouble_.apply(torch.ones(2, requires_grad=True)))
    raises_like(want, lambda: GDouble_.apply(gv.ones(2, requires_grad=True)))

    class TLost(TDouble_):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            return x * 1

    class GLost(GDouble_):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            return x * 1
    want = torch_error(lambda: TLost.apply(torch.ones(2, requires_grad=True) * 1))
    raises_like(want, lambda: GLost.apply(gv.ones(2, requires_grad=True) * 1))


# ----- errors, each against torch's --------------------------------------------------------------
def _pair(forward, backward, name):
    """The same Function under torch and gpuvjp: (torch class, gpuvjp class)."""
    def make(base):
        return type(name, (base,), {"forward": staticmethod(forward),
                                    "backward": staticmethod(backward)})
    return make(torch.autograd.Function), make(gv.autograd.Function)


def _lib(t):
    return torch if isinstance(t, torch.Tensor) else gv


BACKWARD_ERRORS = {
    "fewer_gradients": (lambda ctx, x, y: x * y, lambda ctx, g: g),
    "more_gradients": (lambda ctx, x, y: x * y, lambda ctx, g: (g, g, g)),
    "wrong_shape": (lambda ctx, x, y: x * y, lambda ctx, g: (g[:2], g)),
    "reduced_shape": (lambda ctx, x, y: x * y, lambda ctx, g: (g.sum(), g)),
    "not_a_tensor": (lambda ctx, x, y: x * y, lambda ctx, g: (3.0, g)),
}


@pytest.mark.parametrize("case", sorted(BACKWARD_ERRORS))
def test_backward_errors_match_torch(case):
    fwd, bwd = BACKWARD_ERRORS[case]
    T, G = _pair(fwd, bwd, "Bad")

    def run(F, m):
        x = m.ones(3, requires_grad=True)
        y = m.ones(3, requires_grad=True)
        F.apply(x, y).sum().backward()
    raises_like(torch_error(lambda: run(T, torch)), lambda: run(G, gv))


def test_extra_none_gradients_expansion_and_dtype_are_accepted():
    def run(m, bwd):
        T = _pair(lambda ctx, x, k: x * k, bwd, "Ok")[m is gv]
        x = m.ones(3, dtype=m.float64, requires_grad=True)
        T.apply(x, 2.0).sum().backward()
        return x.grad
    for bwd in (lambda ctx, g: (g * 2, None, None), lambda ctx, g: (g.expand(2, 3), None),
                lambda ctx, g: (g.float(), None), lambda ctx, g: (g.long(), None)):
        got, want = run(gv, bwd), run(torch, bwd)
        assert got.dtype == gv.float64
        close(got, want)


def test_ctx_and_definition_errors_match_torch():
    T, G = _pair(lambda ctx, x: (ctx.save_for_backward(x, 3), x * 2)[1], lambda ctx, g: g,
                 "SaveInt")
    raises_like(torch_error(lambda: T.apply(torch.ones(2, requires_grad=True))),
                lambda: G.apply(gv.ones(2, requires_grad=True)))

    class TNoBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

    class GNoBackward(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2
    want = torch_error(lambda: TNoBackward.apply(torch.ones(2, requires_grad=True)).sum()
                       .backward())
    raises_like(want, lambda: GNoBackward.apply(gv.ones(2, requires_grad=True)).sum().backward())
    want = torch_error(lambda: type("N", (torch.autograd.Function,), {}).apply(torch.ones(2)))
    raises_like(want, lambda: type("N", (gv.autograd.Function,), {}).apply(gv.ones(2)))


def test_saved_intermediates_are_freed_after_a_sweep():
    def run(m):
        class Saved(m.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = x.exp()
                ctx.save_for_backward(y)
                return y * 2

            @staticmethod
            def backward(ctx, g):
                (y,) = ctx.saved_tensors
                return g * y * 2
        x = m.ones(2, requires_grad=True)
        out = Saved.apply(x).sum()
        out.backward(retain_graph=True)
        out.backward()                              # retained once: the second sweep works
        close(x.grad, 4 * np.e * np.ones(2), rtol=1e-5)
        out.backward()
    raises_like(torch_error(lambda: run(torch)), lambda: run(gv))


def test_jvp_rule_errors_match_torch():
    from gpuvjp.autograd import forward_ad as gfw
    from torch.autograd import forward_ad as tfw

    def run(m, fw, jvp, n_out=1):
        class J(m.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return (x * 2, x * 3)[:n_out] if n_out > 1 else x * 2

            @staticmethod
            def backward(ctx, *g):
                return g[0]
        J.jvp = staticmethod(jvp)
        with fw.dual_level():
            J.apply(fw.make_dual(m.ones(3), m.ones(3)))
    for jvp, n in ((lambda ctx, t: t[:2], 1), (lambda ctx, t: t, 2)):
        raises_like(torch_error(lambda: run(torch, tfw, jvp, n)), lambda: run(gv, gfw, jvp, n))


def test_once_differentiable():
    class Sq(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.numpy() ** 2

        @staticmethod
        @once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            assert not gv.is_grad_enabled()
            return 2 * x.numpy() * g.numpy()

    class TSq(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 2

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    def twice(m, F):
        x = m.ones(3, requires_grad=True)
        g0 = m.ones(3, requires_grad=True)
        (g,) = m.autograd.grad(F.apply(x), x, g0, create_graph=True)
        g.sum().backward()
    raises_like(torch_error(lambda: twice(torch, TSq)), lambda: twice(gv, Sq))
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    close(gv.autograd.grad(Sq.apply(x).sum(), x)[0], [2.0, 4.0])


def test_instantiating_warns_as_torch():
    with pytest.warns(DeprecationWarning, match="should not be instantiated"):
        Cube()


# ----- the registry stays private and does not replace ops silently ------------------------------
def test_defop_refuses_an_existing_name():
    from gpuvjp.ops._registry import REGISTRY, defop
    before = REGISTRY["exp"]
    with pytest.raises(ValueError, match="'exp' is already registered"):
        defop("exp", lambda xp, x: x)
    assert REGISTRY["exp"] is before
    try:
        op = defop("exp", before.impl, override=True)
        assert REGISTRY["exp"] is op
    finally:
        REGISTRY["exp"] = before
    assert "defop" not in gv.__all__ and "Function" in dir(gv.autograd)


# ----- interop on the host -----------------------------------------------------------------------
def test_cuda_array_interface_is_absent_on_cpu():
    t = gv.ones(2)
    assert not hasattr(t, "__cuda_array_interface__")
    with pytest.raises(AttributeError) as info:
        t.__cuda_array_interface__
    want = torch_error(lambda: torch.ones(2).__cuda_array_interface__)
    assert type(want) is AttributeError
    if ORACLE_MESSAGES:
        assert str(info.value) == str(want)
    with pytest.raises(AttributeError, match="torch.DoubleTensor"):
        gv.ones(2, dtype=gv.float64).__cuda_array_interface__


def test_dlpack_with_numpy_is_zero_copy():
    a = np.arange(4.0)
    t = gv.from_dlpack(a)
    a[1] = 10.0
    assert t.tolist() == [0.0, 10.0, 2.0, 3.0]
    b = np.from_dlpack(gv.tensor([1.0, 2.0]))
    t = gv.tensor([1.0, 2.0])
    b = np.from_dlpack(t)
    b[0] = 5.0
    assert t.tolist() == [5.0, 2.0]
    assert t.__dlpack_device__() == (1, 0)
    t.__dlpack__(stream=None)                       # the host takes no stream but None
    with pytest.raises(ValueError, match="stream should be None on cpu"):
        t.__dlpack__(stream=1)


# ----- users' kernels: compiled through NVRTC here, run on a GPU ---------------------------------
DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "custom_kernels.md"


def _doc_python():
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)


def _user_kernel_sources():
    doc = re.search(r'SOURCE = r"""(.*?)"""', _doc_python(), re.S).group(1)
    return [(doc, "softclip"), (SQUARE_SRC, "user_square")]


def test_user_kernels_compile_with_nvrtc():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                                reason="CuPy is not installed (pip install -e .[test])")
    for src, name in _user_kernel_sources():
        prog = nvrtc.createProgram(src, f"{name}.cu", [], [])
        try:
            try:
                nvrtc.compileProgram(prog, ["--std=c++17"])
            except nvrtc.NVRTCError:
                pytest.fail(f"{name} does not compile:\n{nvrtc.getProgramLog(prog)}")
        finally:
            nvrtc.destroyProgram(prog)


def _user_twins():
    """NumPy twins of the user kernels below, for an emulated CuPy (which computes every kernel
    through the twin registered under its name)."""
    from gpuvjp.ops import _kernels
    register = getattr(_kernels, "register_twin", None)
    if register is None:
        return

    def softclip(grid, block, args, shared_mem=0):
        x, y, dy, n = args
        d = 1.0 + np.abs(x)
        y[...], dy[...] = x / d, 1.0 / (d * d)

    def square(grid, block, args, shared_mem=0):
        x, y, n = args
        y[...] = x * x
    register("softclip", softclip)
    register("user_square", square)
    register("user_twice_mul", lambda x, g: 2 * x * g)


@pytest.fixture
def cupy():
    # `import cupy` in a user's code is the real CuPy: these tests need a real GPU, and the
    # emulated CuPy (GPUVJP_EMULATE_CUDA) is not what that import gives.
    import os
    if os.environ.get("GPUVJP_EMULATE_CUDA", "0") not in ("", "0"):
        pytest.skip("users' CuPy kernels need a real GPU (the emulated CuPy is on)")
    cp = pytest.importorskip("cupy")
    _user_twins()
    return cp


@pytest.mark.gpu
def test_the_worked_example_runs(cupy):
    ns = {}
    exec(compile(_doc_python(), str(DOC), "exec"), ns)        # noqa: S102  (our own docs)
    x = ns["x"].numpy()
    close(ns["y"], x / (1 + np.abs(x)))
    close(ns["gx"], 1 / (1 + np.abs(x)) ** 2)
    close(ns["g"], 1 / (1 + np.abs(x)) ** 2)
    close(ns["jac"], np.diag(1 / (1 + np.abs(x[:8])) ** 2))


SQUARE_SRC = r"""
extern "C" __global__ void user_square(const double* x, double* y, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * x[i];
}
"""


@pytest.mark.gpu
def test_user_rawkernel_and_elementwisekernel_in_a_function(cupy):
    square = cupy.RawKernel(SQUARE_SRC, "user_square")
    twice_mul = cupy.ElementwiseKernel("float64 x, float64 g", "float64 gx", "gx = 2 * x * g",
                                       "user_twice_mul")

    class Square(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            xa = cupy.ascontiguousarray(cupy.asarray(x))
            y = cupy.empty_like(xa)
            n = xa.size
            square(((n + 127) // 128,), (128,), (xa, y, cupy.int64(n)))
            return y

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return twice_mul(cupy.asarray(x), cupy.asarray(g))
    x = np.linspace(-1.0, 2.0, 300)
    t = gv.tensor(x, device="cuda", requires_grad=True)
    y = Square.apply(t)
    assert y.device == t.device
    close(y, x ** 2)
    (g,) = gv.autograd.grad(y.sum(), t)
    close(g, 2 * x)
    close(gv.jacobian(Square.apply, t[:5].detach(), vectorize=True), np.diag(2 * x[:5]))


@pytest.mark.gpu
def test_cuda_zero_copy_with_cupy(cupy):
    t = gv.tensor([1.0, 2.0, 3.0], device="cuda")
    a = cupy.asarray(t)                            # through __cuda_array_interface__
    a[0] = 7.0
    assert t.tolist()[0] == 7.0
    iface = t.__cuda_array_interface__
    assert iface["shape"] == (3,) and iface["data"][0] == a.data.ptr
    c = cupy.arange(4, dtype=cupy.float32)
    for make in (gv.as_tensor, gv.from_dlpack):
        u = make(c)
        c[1] = 9.0
        assert u.tolist()[1] == 9.0 and u.device.type == "cuda"
        cupy.asarray(u)[2] = 8.0
        assert float(c[2]) == 8.0
        c[1] = 1.0
        c[2] = 2.0
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        d = cupy.from_dlpack(gv.tensor([1.0, 2.0], device="cuda"))
    assert d.tolist() == [1.0, 2.0]
    cap = t.__dlpack__(stream=stream.ptr)              # honoured: CuPy orders the streams
    assert cap is not None


@pytest.mark.gpu
def test_jax_zero_copy(cupy):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    cp = pytest.importorskip("cupy")
    try:
        j = jax.device_put(jnp.arange(4.0), jax.devices("gpu")[0])
    except RuntimeError:
        pytest.skip("jax sees no GPU")
    t = gv.from_dlpack(j)
    assert t.device.type == "cuda" and t.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert cp.asarray(t).data.ptr == j.unsafe_buffer_pointer()
    u = gv.tensor([1.0, 2.0], device="cuda")
    k = jax.dlpack.from_dlpack(u)
    assert k.unsafe_buffer_pointer() == cp.asarray(u).data.ptr


def test_a_function_graph_is_freed_by_reference_counting():
    import gc
    import weakref
    gc.disable()
    try:
        x = gv.tensor([1.0, 2.0], requires_grad=True)
        y = NpExp.apply(x)
        node = weakref.ref(y.grad_fn)
        close(gv.autograd.grad(y.sum(), x, create_graph=True)[0], np.exp([1.0, 2.0]))
        del y
        assert node() is None                       # no cycle through ctx or saved outputs
    finally:
        gc.enable()


class SavedExp(gv.autograd.Function):
    """y = exp(x), saving its output; a backward of gpuvjp ops differentiates through it."""

    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y, x * 2

    @staticmethod
    def backward(ctx, gy, g2):
        (y,) = ctx.saved_tensors
        return gy * y + g2 * 2


class TSavedExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y, x * 2

    @staticmethod
    def backward(ctx, gy, g2):
        (y,) = ctx.saved_tensors
        return gy * y + g2 * 2


def test_hessian_through_a_saved_output(rng):
    x = data(rng, 3)
    got = gv.hessian(lambda t: (SavedExp.apply(t)[0] ** 2).sum() + SavedExp.apply(t)[1].sum(),
                     gv.tensor(x))
    want = torch.autograd.functional.hessian(
        lambda t: (TSavedExp.apply(t)[0] ** 2).sum() + TSavedExp.apply(t)[1].sum(),
        torch.tensor(x))
    close(got, want)


def test_writing_into_a_view_output_in_place_is_refused():
    from gpuvjp.autograd.function import check_inplace

    def run(m, forward):
        class Sel(m.autograd.Function):
            @staticmethod
            def backward(ctx, *g):
                return g[0]
        Sel.forward = staticmethod(forward)
        out = Sel.apply(m.ones(3, requires_grad=True))
        return out if isinstance(out, tuple) else (out,)
    cases = [(0, lambda ctx, x: x[:2], lambda ctx, x: x.numpy()[:2]),
             (0, lambda ctx, x: x, lambda ctx, x: x),
             (0, lambda ctx, x: (x[:2], x * 2), lambda ctx, x: (x.numpy()[:2], x * 2)),
             (1, lambda ctx, x: (x * 2, x), lambda ctx, x: (x * 2, x))]
    for k, tf, gf in cases:
        want = torch_error(lambda: run(torch, tf)[k].mul_(2))
        outs = run(gv, gf)
        raises_like(want, lambda: check_inplace(outs[k]))
        if len(outs) > 1:
            check_inplace(outs[1 - k])               # the other output is not a view
    check_inplace(NpExp.apply(gv.ones(2, requires_grad=True)))   # a new array: no view


def test_batched_inputs_without_a_batch_rule_run_per_element(rng):
    from gpuvjp.ops.batching import rebatch, unbatch
    xs = data(rng, 4, 3)
    t = gv.tensor(xs, requires_grad=True)
    Cube.backward_shapes.clear()
    out = unbatch(Cube.apply(rebatch(t)))
    close(out, xs ** 3)
    close(gv.autograd.grad(out.sum(), t)[0], 3 * xs ** 2)
    assert Cube.backward_shapes == [((3,), 0)] * 4           # one node per element
    close(gv.hessian(lambda a: Cube.apply(a).sum(), gv.tensor(xs[0]), vectorize=True),
          np.diag(6 * xs[0]))


@pytest.mark.parametrize("mode", ["rows", "reverse-mode", "forward-mode"])
def test_jacobian_of_several_outputs_matches_torch(rng, mode):
    x = data(rng, 3)
    kw = {} if mode == "rows" else {"vectorize": True, "strategy": mode}
    got = gv.jacobian(SavedExp.apply, gv.tensor(x), **kw)
    want = torch.autograd.functional.jacobian(TSavedExp.apply, torch.tensor(x))
    for g, w in zip(got, want):
        close(g, w)


def test_vjp_may_stand_for_backward():
    class Twice(gv.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def vjp(ctx, g):
            return g * 2
    x = gv.tensor([1.0, 2.0], requires_grad=True)
    close(gv.autograd.grad(Twice.apply(x).sum(), x)[0], [2.0, 2.0])
