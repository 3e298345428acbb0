"""The main job: PyTorch's two vjp doc examples, then a large exp_reducer, on the best device."""

from __future__ import annotations

import argparse
import time

import numpy as np

import gpuvjp as gv


def exp_reducer(x):
    return x.exp().sum(dim=1)


def adder(x, y):
    return 2 * x + 3 * y


def _sync(device):
    if device == "cuda":
        gv.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if gv.cuda.is_available() else "cpu")
    ap.add_argument("-n", type=int, default=None, help="size of the large exp_reducer (NxN)")
    args = ap.parse_args()
    dev = args.device
    print(f"gpuvjp {gv.__version__} on {dev}")

    x = gv.rand(4, 4, device=dev)
    v = gv.ones(4, device=dev)
    out, g = gv.vjp(exp_reducer, x, v)
    print("vjp(exp_reducer, x, v):\n  out =", out, "\n  vjp =", g)
    assert np.allclose(g.numpy(), x.exp().numpy(), rtol=1e-6), "vjp must equal x.exp()"

    out, g = gv.vjp(exp_reducer, x, v, create_graph=True)
    print("with create_graph=True: out.grad_fn =", out.grad_fn, ", vjp.grad_fn =", g.grad_fn)

    out, (gx, gy) = gv.vjp(adder, (gv.rand(2, device=dev), gv.rand(2, device=dev)),
                           gv.ones(2, device=dev))
    print("vjp(adder, (x, y), v) =", (gx, gy))
    assert gx.tolist() == [2.0, 2.0] and gy.tolist() == [3.0, 3.0]

    n = args.n or (8192 if dev == "cuda" else 2048)
    x = gv.rand(n, n, device=dev)
    v = gv.ones(n, device=dev)
    gv.vjp(exp_reducer, x, v)                               # warm-up (compiles kernels)
    _sync(dev)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        _, g = gv.vjp(exp_reducer, x, v)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    err = float(np.max(np.abs(g.numpy() - x.exp().numpy()) / x.exp().numpy()))
    print(f"exp_reducer on {n}x{n} float32 ({dev}): median {np.median(times) * 1e3:.2f} ms "
          f"per vjp, max relative error {err:.1e}")
    assert err < 1e-5


if __name__ == "__main__":
    main()
