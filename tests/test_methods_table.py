"""docs/torch_methods.md is current: the committed table equals what
scripts/gen_methods_table.py generates from torch's and gpuvjp's names now."""

import importlib.util
import pathlib

import pytest

from tests.conftest import ORACLE_MESSAGES

torch = pytest.importorskip("torch")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gen_methods_table",
                                                  ROOT / "scripts" / "gen_methods_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not ORACLE_MESSAGES, reason="the table is of torch 2.13's names")
def test_the_committed_table_is_current():
    want = _script().render()
    got = (ROOT / "docs" / "torch_methods.md").read_text()
    assert got == want, ("docs/torch_methods.md is out of date: regenerate it with "
                         "`python3 scripts/gen_methods_table.py` and commit it")


def test_categories():
    cat = _script().category
    assert cat("add_") == "in-place" and cat("__iadd__") == "in-place"
    assert cat("to_sparse_csr") == "sparse" and cat("view_as_real") == "complex"
    assert cat("quantize_per_tensor") == "quantized" and cat("refine_names") == "named tensors"
    assert cat("bernoulli") == "random/distributions" and cat("data_ptr") == "storage/low-level"
    assert cat("index_copy") == "not yet" and cat("flipud") == "not yet"
    assert cat("grid_sampler") == "not yet"


def test_the_new_methods_are_not_listed():
    rows, _, _ = _script().missing()
    for name in ("narrow", "repeat", "cumprod", "new_zeros", "logaddexp", "remainder", "tril"):
        assert name not in rows, name
    assert rows["to_sparse"] == ("method", "sparse")
