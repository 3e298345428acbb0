"""gv.distributed's errors: the local functionals' argument errors (same type and message),
its own refusals (create_graph, chunk_size, client), and errors raised on a worker, which reach
the caller with their type and message and are never retried."""

import os

import numpy as np
import pytest

import gpuvjp as gv
from tests.distributed.conftest import DASK_REASON

pytest.importorskip("distributed", reason=DASK_REASON)

gvd = gv.distributed


def _x(*shape):
    return gv.tensor(np.linspace(-1, 1, int(np.prod(shape))).reshape(shape), dtype=gv.float64)


class UserError(Exception):
    """An error type of the user's own."""


def _raises(exc, message):
    def func(*args):
        raise exc(message)
    return func


# ----- argument errors: as the local functional ---------------------------------------------
def _error(call):
    try:
        call()
    except Exception as e:                        # noqa: BLE001  (compared below)
        return type(e), str(e)
    raise AssertionError("no error raised")


LIKE_LOCAL = {
    "not-callable": ("jacobian", (3, _x(2)), {}),
    "inputs-type": ("jacobian", (lambda t: t, [1.0]), {}),
    "tuple-inputs-type": ("jacobian", (lambda t, u: t, (_x(2), 3.0)), {}),
    "outputs-type": ("jacobian", (lambda t: [t], _x(2)), {}),
    "strategy": ("jacobian", (lambda t: t, _x(2)), {"strategy": "sideways"}),
    "strict-outputs": ("jacobian", (lambda t: _x(2), _x(2)), {"strict": True}),
    "strict-vectorize": ("jacobian", (lambda t: t.exp(), _x(2)),
                         {"strict": True, "vectorize": True}),
    "strict-independent": ("jacobian", (lambda t, u: t.exp(), (_x(2), _x(2))),
                           {"strict": True}),
    "forward-strict": ("jacobian", (lambda t: t.exp(), _x(2)),
                       {"strict": True, "strategy": "forward-mode", "vectorize": True}),
    "forward-not-vectorized": ("jacobian", (lambda t: t.exp(), _x(2)),
                               {"strategy": "forward-mode"}),
    "int-inputs": ("jacobian", (lambda t: t * 2, gv.tensor([1, 2])), {}),
    "hessian-not-scalar": ("hessian", (lambda t: t.exp(), _x(2)), {}),
    "hessian-strategy": ("hessian", (lambda t: t.sum(), _x(2)),
                         {"outer_jacobian_strategy": "auto"}),
    "hessian-strict-linear": ("hessian", (lambda t: (t * 2).sum(), _x(2)), {"strict": True}),
}


@pytest.mark.parametrize("case", LIKE_LOCAL)
def test_argument_errors_as_local(client, case):
    name, args, kwargs = LIKE_LOCAL[case]
    want = _error(lambda: getattr(gv, name)(*args, **kwargs))
    got = _error(lambda: getattr(gvd, name)(*args, client=client, **kwargs))
    assert got == want


@pytest.mark.parametrize("name", ["jacobian", "hessian"])
def test_create_graph_is_refused(client, name):
    with pytest.raises(NotImplementedError, match=r"create_graph=True is not supported: a graph "
                                                  "cannot cross workers"):
        getattr(gvd, name)(lambda t: t.exp().sum(), _x(2), create_graph=True, client=client)


@pytest.mark.parametrize("chunk_size", [0, -2, 1.5, True, "big"])
def test_bad_chunk_size(client, chunk_size):
    with pytest.raises(ValueError, match=r"gpuvjp.distributed.map_vjp: chunk_size must be None, "
                                         '"auto" or a positive int'):
        gvd.map_vjp(lambda t: t.sum(), _x(2, 2), chunk_size=chunk_size, client=client)


def test_no_default_client():
    with pytest.raises(RuntimeError, match="client=None uses the default Dask client, but there "
                                           "is none"):
        gvd.jacobian(lambda t: t.exp(), _x(2))
    with pytest.raises(TypeError, match="client must be a distributed.Client or None, but got "
                                        "str"):
        gvd.map_vjp(lambda t: t.exp(), _x(2, 2), client="tcp://127.0.0.1:8786")


def test_map_vjp_argument_errors(client):
    with pytest.raises(TypeError, match="The inputs given to map_vjp must be either a Tensor or "
                                        "a tuple of Tensors but the value at index 1"):
        gvd.map_vjp(lambda t, u: t, (_x(2, 2), np.ones((2, 2))), client=client)
    with pytest.raises(RuntimeError, match="the value at index 1 of inputs has 3 samples along "
                                           "its leading axis, but the inputs have 2"):
        gvd.map_vjp(lambda t, u: t, (_x(2, 2), _x(3, 2)), client=client)
    with pytest.raises(RuntimeError, match="the value at index 0 of v has 4 samples"):
        gvd.map_vjp(lambda t: t, _x(2, 2), _x(4, 2), client=client)
    with pytest.raises(RuntimeError, match="the value at index 0 is 0-d"):
        gvd.map_vjp(lambda t: t, _x(), client=client)
    with pytest.raises(RuntimeError, match="hold no samples"):
        gvd.map_vjp(lambda t: t, _x(0, 2), client=client)


# ----- errors raised on a worker -------------------------------------------------------------
@pytest.mark.parametrize("exc", [ValueError, UserError, ZeroDivisionError])
def test_worker_error_keeps_type_and_message(client, exc):
    message = f"{exc.__name__} from the user's function: 42"
    with pytest.raises(exc) as info:
        gvd.jacobian(_raises(exc, message), _x(3), client=client)
    assert type(info.value) is exc and str(info.value) == message
    with pytest.raises(exc) as info:
        gvd.map_vjp(_raises(exc, message), _x(4, 3), client=client, as_dask=True)
    assert type(info.value) is exc and str(info.value) == message


def test_gpuvjp_error_on_a_worker_keeps_type_and_message(client):
    """A per-sample v of the wrong shape: gv.vjp's own RuntimeError, raised on a worker."""
    want = _error(lambda: gv.vjp(lambda t: t.exp(), _x(2, 3)[0], _x(2, 2)[0]))
    got = _error(lambda: gvd.map_vjp(lambda t: t.exp(), _x(2, 3), _x(2, 2), client=client))
    assert got == want and want[0] is RuntimeError


def _claim(folder):
    """The number of this call of a function, over every process (an atomic file create)."""
    n = 0
    while True:
        try:
            os.close(os.open(os.path.join(folder, f"call-{n}"), os.O_CREAT | os.O_EXCL))
            return n
        except FileExistsError:
            n += 1


def test_failing_tasks_are_not_retried(client, tmp_path):
    """Each chunk's task runs once: after the probe (call 0), every call fails."""
    def func(t):
        if _claim(tmp_path):
            raise UserError("deterministic")
        return t.exp()
    with pytest.raises(UserError, match="^deterministic$"):
        gvd.jacobian(func, _x(4), client=client, chunk_size=2)     # 2 tasks
    calls = len(list(tmp_path.iterdir()))
    assert 2 <= calls <= 3                          # the probe, then at most 1 run per task
