"""gv.distributed without dask: importing gpuvjp never imports it, and a call names the extra.
Both run in a fresh interpreter, so that no test's dask modules are in sight."""

import subprocess
import sys

import gpuvjp as gv

_NO_DASK = """
import sys
import gpuvjp as gv
print(sorted(m for m in ("dask", "distributed", "cloudpickle") if m in sys.modules))
for missing in ("dask", "distributed"):
    sys.modules[missing] = None                  # as if it were not installed
    for call in (lambda: gv.distributed.jacobian(lambda t: t.exp(), gv.ones(3)),
                 lambda: gv.distributed.map_vjp(lambda t: t.exp().sum(), gv.ones(2, 3))):
        try:
            call()
        except ImportError as e:
            print(missing, type(e).__name__, e)
    del sys.modules[missing]
"""


def test_without_dask_import_is_free_and_a_call_names_the_extra():
    out = subprocess.run([sys.executable, "-c", _NO_DASK], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "[]"                        # import gpuvjp imported none of them
    assert [line.split()[0] for line in out[1:]] == ["dask"] * 2 + ["distributed"] * 2
    for line in out[1:]:
        assert " ImportError gpuvjp.distributed needs dask and distributed" in line
        assert "pip install 'gpuvjp[distributed]'" in line
    assert gv.distributed.jacobian.__module__ == "gpuvjp.distributed"
