"""The Dask cluster of the distributed tests: a LocalCluster of 2 worker processes (one thread
each, loopback only, no dashboard), started once for this package and closed when its last test
has run (its client's threads would otherwise run beside every later test). Its workers
inherit the environment, so under GPUVJP_EMULATE_CUDA they run the emulated CuPy too (each
process its own emulated devices)."""

import logging

import pytest

DASK_REASON = "needs the gpuvjp[distributed] extra (dask and distributed)"


@pytest.fixture(scope="package")
def client():
    distributed = pytest.importorskip("distributed", reason=DASK_REASON)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, silence_logs=logging.CRITICAL)
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()
