"""gv.profiler: every kernel gpuvjp runs, with the ops fused into it and the bytes it moves.

    >>> import gpuvjp as gv
    >>> x = gv.ones(4, 4)
    >>> with gv.profiler.profile() as prof:
    ...     _ = gv.vjp(lambda t: t.exp().sum(dim=1), x, gv.ones(4))
    >>> prof.launches
    2

One record per kernel, in order, on both devices: a fused plan is one record (on the CPU the
record is the plan the GPU runs, so CPU tests assert the GPU's launch counts and bytes); an op
that runs unfused is one record per op call (CuPy's two-pass reductions and a cuBLAS call count
as one); an op that returns a view of its input (reshape, expand, basic indexing) launches
nothing and is not recorded. `bytes_read` counts each array argument's memory once (a broadcast
view reads its base), `bytes_written` the outputs; scalars passed as kernel arguments count
nothing. On cuda `time_us` comes from CUDA events around the launch (read at the end of the
`with` block); on the CPU it is the wall time of the NumPy evaluation.
"""

from __future__ import annotations

import time

from . import _device

__all__ = ["profile", "Profile", "KernelRecord"]

ACTIVE: list = []          # the open profiles; empty: recording costs one truth test


class KernelRecord:
    """One kernel: `name`, `ops` (the op names computed in it), `elements`, `bytes_read`,
    `bytes_written`, `time_us`, `device`."""

    __slots__ = ("name", "ops", "elements", "bytes_read", "bytes_written", "time_us", "device",
                 "_events")

    def __init__(self, name, ops, elements, bytes_read, bytes_written, device):
        self.name = name
        self.ops = tuple(ops)
        self.elements = int(elements)
        self.bytes_read = int(bytes_read)
        self.bytes_written = int(bytes_written)
        self.time_us = None
        self.device = device
        self._events = None

    @property
    def bytes(self):
        return self.bytes_read + self.bytes_written

    def __repr__(self):
        return (f"KernelRecord({self.name!r}, ops={list(self.ops)}, elements={self.elements}, "
                f"bytes_read={self.bytes_read}, bytes_written={self.bytes_written})")


class Profile:
    """The records of one `with gv.profiler.profile()` block."""

    def __init__(self):
        self.kernels: list[KernelRecord] = []

    def __enter__(self):
        ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        ACTIVE.remove(self)
        for k in self.kernels:
            if k._events is not None:
                start, end = k._events
                end.synchronize()
                cupy = _device.cupy_library()
                k.time_us = cupy.cuda.get_elapsed_time(start, end) * 1e3
                k._events = None
        return False

    @property
    def launches(self) -> int:
        return len(self.kernels)

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.kernels)

    def table(self) -> str:
        """A printable table: one row per kernel, then the totals."""
        rows = [("#", "kernel", "ops", "elements", "read", "written", "time_us")]
        for i, k in enumerate(self.kernels):
            ops = ",".join(k.ops)
            rows.append((str(i), k.name, ops if len(ops) <= 48 else ops[:45] + "...",
                         str(k.elements), str(k.bytes_read), str(k.bytes_written),
                         "" if k.time_us is None else f"{k.time_us:.1f}"))
        total = sum(k.time_us or 0.0 for k in self.kernels)
        rows.append(("", f"{self.launches} kernels", "", "",
                     str(sum(k.bytes_read for k in self.kernels)),
                     str(sum(k.bytes_written for k in self.kernels)), f"{total:.1f}"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        return "\n".join("  ".join(v.ljust(w) if c < 3 else v.rjust(w)
                                   for c, (v, w) in enumerate(zip(r, widths))) for r in rows)


def profile() -> Profile:
    """A context manager recording every kernel gpuvjp runs inside it (see the module doc)."""
    return Profile()


# ----- recording (called by apply and the plan runner) ---------------------------------------
def start(dev):
    """A token marking a launch's start: a recorded CUDA event on cuda, the time on the CPU."""
    if dev.type == "cpu":
        return time.perf_counter()
    cupy = _device.cupy_library()
    ev = cupy.cuda.Event()
    ev.record()
    return ev


def add(name, ops, elements, bytes_read, bytes_written, token=None):
    if not ACTIVE:
        return
    dev = "cpu"
    events = None
    if token is not None and not isinstance(token, float):
        cupy = _device.cupy_library()
        end = cupy.cuda.Event()
        end.record()
        events = (token, end)
        dev = "cuda"
    rec = KernelRecord(name, ops, elements, bytes_read, bytes_written, dev)
    if events is not None:
        rec._events = events
    elif token is not None:
        rec.time_us = (time.perf_counter() - token) * 1e6
    for p in ACTIVE:
        p.kernels.append(rec)


def _arrays_of(x):
    if isinstance(x, (tuple, list)):
        for a in x:
            yield from _arrays_of(a)
    elif hasattr(x, "nbytes") and hasattr(x, "strides"):
        yield x


def _is_view(out, arrays):
    base = getattr(out, "base", None)
    for a in arrays:
        if out is a or (base is not None and (base is a or base is getattr(a, "base", 0))):
            return True
    return False


def op_launch(op, arrays, out, token):
    """The record of one unfused op call (nothing for an op that returned a view)."""
    from ._plan import footprint
    ins = [a for a in arrays if hasattr(a, "nbytes") and hasattr(a, "strides")]
    outs = list(_arrays_of(out))
    if len(outs) == 1 and _is_view(outs[0], ins):
        return
    elements = max([a.size for a in outs + ins] or [0])
    add(f"gv_{op.name}", (op.name,), elements, sum(footprint(a) for a in ins),
        sum(a.nbytes for a in outs), token)
