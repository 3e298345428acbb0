"""Client side of gv.distributed: the only module that imports dask and distributed.

It finds the client, ships a call's payload once (scattered with broadcast=True; distributed
pickles functions that pickle cannot ship with cloudpickle), submits the tasks of `_tasks` (no
retries: a user's error is deterministic; a lost worker's tasks are rescheduled by the
scheduler), gathers their blocks or wraps them as dask arrays.
"""

from __future__ import annotations

import operator
import uuid

from .. import _device, _log

_EXTRA = ("gpuvjp.distributed needs dask and distributed (dask-cuda for GPU clusters): "
          "install them with `pip install 'gpuvjp[distributed]'`")


def modules():
    """(dask.array, distributed), or an ImportError that names the extra."""
    try:
        import dask.array as da
        import distributed
    except ImportError as e:
        raise ImportError(f"{_EXTRA} ({e})") from e
    return da, distributed


def get_client(client, fn_name):
    """`client`, or the default client when it is None; checks that it has workers."""
    _, distributed = modules()
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError:
            raise RuntimeError(
                f"gpuvjp.distributed.{fn_name}: client=None uses the default Dask client, but "
                "there is none. Start one (`distributed.Client(...)`) or pass client=."
            ) from None
    elif not isinstance(client, distributed.Client):
        raise TypeError(f"gpuvjp.distributed.{fn_name}: client must be a distributed.Client or "
                        f"None, but got {type(client).__name__}")
    if not client.nthreads():
        raise RuntimeError(f"gpuvjp.distributed.{fn_name}: the Dask cluster has no workers")
    return client


def threads(client):
    """Task slots over the cluster's workers (their threads)."""
    return sum(client.nthreads().values())


def free_bytes(client, device_type):
    """The smallest free memory a task may use, over the workers (a worker's free memory split
    between its threads)."""
    from . import _tasks
    nthreads = client.nthreads()
    free = client.run(_tasks.free_bytes, device_type)
    return min(int(b) // max(nthreads.get(w, 1), 1) for w, b in free.items())


class Call:
    """One distributed call: its payload on every worker, its tasks, its keys."""

    def __init__(self, client, fn_name, payload):
        self.client = client
        self.name = f"gpuvjp-{fn_name}-{uuid.uuid4().hex[:12]}"
        # Once per call, to every worker (a worker that joins or restarts copies it from a
        # peer). distributed pickles it with protocol 5, arrays out of band, and with
        # cloudpickle where pickle cannot (lambdas, closures, functions of __main__).
        self.payload = client.scatter([payload], broadcast=True, hash=False)[0]
        self.futures = []
        self._n = 0

    def submit(self, fn, *args, label="task"):
        self._n += 1
        f = self.client.submit(fn, self.payload, *args, key=f"{self.name}-{label}-{self._n}",
                               pure=False)
        self.futures.append(f)
        return f

    def log_plan(self, label, step):
        """One info record of the plan: the tasks of `label` and their size (GPUVJP_LOG=info)."""
        tasks = sum(f.key.rsplit("-", 2)[-2] == label for f in self.futures)
        _log.logger.info("%s: %d %s tasks of up to %d, on %d workers", self.name, tasks, label,
                         step, len(self.client.nthreads()))
        return tasks

    def result(self, future):
        try:
            return future.result()
        except BaseException:
            self.cancel()
            raise

    def gather(self, futures):
        """The futures' results, in order; the first error raises with its own type and
        message, and the call's other tasks are cancelled."""
        try:
            return self.client.gather(futures)
        except BaseException:
            self.cancel()
            raise

    def cancel(self):
        self.client.cancel(self.futures + [self.payload])

    def blocks(self, futures, counts):
        """Elements 0:count of each future's tuple result, as futures of their own (the same
        array objects, on the worker that ran the task), once they are computed."""
        out = [[self.client.submit(operator.getitem, f, j, key=f"{f.key}-{j}", pure=False)
                for j in range(count)] for f, count in zip(futures, counts)]
        flat = [b for row in out for b in row]
        self.futures.extend(flat)
        self.wait(flat)
        return out

    def wait(self, futures):
        """Block until `futures` are done; a failed one raises its error here, at the call."""
        _, distributed = modules()
        with self.client.as_current():              # wait() asks for the current client
            distributed.wait(futures)
        for f in futures:
            if f.status == "error":
                self.result(f)


def _meta(dev, dtype, ndim):
    """An empty array of the blocks' type (CuPy for a cuda call, NumPy for cpu), on the current
    device: the blocks are on their workers' devices, whatever the inputs' device is here."""
    return _device.array_module(dev).empty((0,) * ndim, dtype=dtype)


def dask_concat(blocks, shapes, axis, final_shape, dtype, dev):
    """A dask array over block futures of the given shapes, concatenated along `axis` and
    reshaped to `final_shape` (no reshape when the blocks already tile it)."""
    da, _ = modules()
    parts = [da.from_delayed(b, shape=s, dtype=dtype, meta=_meta(dev, dtype, len(s)))
             for b, s in zip(blocks, shapes)]
    if not parts:                                   # an empty result: nothing ran
        return da.from_array(_device.array_module(dev).zeros(final_shape, dtype=dtype))
    x = parts[0] if len(parts) == 1 else da.concatenate(parts, axis=axis)
    return x if tuple(x.shape) == tuple(final_shape) else x.reshape(final_shape)
