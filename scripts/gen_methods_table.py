"""Generate docs/torch_methods.md: every public torch function and torch.Tensor method that
gpuvjp lacks, each with the reason it is missing.

The lists come from torch's own `dir()` (the pinned torch 2.13 CPU build): public, callable, not
a class or a module. A name counts as present when `gpuvjp` (for a function) or `gpuvjp.Tensor`
(for a method) has an attribute of that name. Each missing name gets the first category whose
rule matches, in the order of CATEGORIES; the rest are "not yet". The output depends only on
torch's and gpuvjp's names, sorted, so it is deterministic; tests/test_methods_table.py checks
that the committed file is current.

    python3 scripts/gen_methods_table.py            # rewrite docs/torch_methods.md
    python3 scripts/gen_methods_table.py --check    # exit 1 if the file is not current
"""

from __future__ import annotations

import argparse
import inspect
import os
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "torch_methods.md"
TORCH_VERSION = "2.13"

# (category, what it means, the rule: a regular expression matched against the whole name)
CATEGORIES = [
    ("in-place", "writes into a tensor (in-place ops have their own issue)",
     r".*[^_]_|__i\w+__"),
    ("sparse", "sparse layouts (COO, CSR, CSC, BSR, BSC); gpuvjp tensors are dense",
     r".*(sparse|coalesce|crow_indices|ccol_indices|col_indices|row_indices|"
     r"to_dense|dense_dim|_nnz|smm|hspmm|sspaddmm|saddmm|spmm).*|indices|values|nnz|"
     r"indices_copy|values_copy|smm|is_coalesced"),
    ("complex", "complex dtypes; gpuvjp has real dtypes only",
     r".*(complex|conj|view_as_real|polar).*|real|imag|angle|sgn|isreal|is_neg|resolve_neg|"
     r"adjoint|cdouble|cfloat|chalf"),
    ("quantized", "quantized tensors",
     r".*(quantiz|qscheme|q_per_|q_scale|q_zero_point|qparams|int_repr|fake_quant|fbgemm|"
     r"qint|quint).*"),
    ("named tensors", "named dimensions",
     r"names|rename|refine_names|align_to|align_as|align_tensors|has_names"),
    ("random/distributions", "random sampling beyond rand, randn and manual_seed",
     r"rand\w*|bernoulli|multinomial|poisson|binomial|\w*dropout|rrelu|normal|cauchy|"
     r"geometric|exponential|log_normal|uniform|random|\w*seed|\w*rng_state|sobol\w*|"
     r"standard_gamma|sample_dirichlet|thread_safe_generator"),
    ("storage/low-level", "storage, strides, layouts, other backends, runtime settings",
     r".*(storage|data_ptr|stride|pin_memory|pinned|share_memory|is_shared|record_stream|"
     r"mkldnn|cudnn|miopen|vulkan|nested|autocast|deterministic|"
     r"num_threads|num_interop|anomaly|inference|printoptions|default_tensor_type|"
     r"float32_matmul|warn_always|flush_denormal|dim_order|memory_format|resize|"
     r"register_|sym_).*|(?!index_copy)\w+_copy|get_device|is_meta|is_contiguous|"
     r"is_set_to|untyped|as_subclass|module_load|from_file|frombuffer|load|save|compile|"
     r"ipu|xpu|mps|hpu|mtia|fork|wait|vmap|is_tensor|is_storage|typename|is_distributed|"
     r"empty_permuted|"
     r"get_device_module|classproperty|import_ir_module(_from_buffer)?|get_file_path|"
     r"is_vulkan_available|prepare_multiprocessing_environment|cpp|export|cond|while_loop|"
     r"data|is_inference|type|element_size|nbytes|itemsize|device|dim_order|"
     r"is_grad_enabled|set_grad_enabled|get_default_device|set_default_device|"
     r"compiled_with_cxx11_abi|get_num_threads|init_num_threads|parse_\w+|\w+_type_comment|"
     r"unify_type_list|profiler_\w+|set_flush_denormal"),
]
COMPILED = [(name, what, re.compile(rule)) for name, what, rule in CATEGORIES]


def category(name: str) -> str:
    for cat, _, rule in COMPILED:
        if rule.fullmatch(name):
            return cat
    return "not yet"


def _public_callables(obj):
    out = set()
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:                  # a lazily imported attribute that fails to load
            continue
        if not callable(value) or inspect.isclass(value) or inspect.ismodule(value):
            continue
        out.add(name)
    return out


def missing():
    """{name: (kinds missing, category)} over torch's functions and Tensor methods."""
    import torch
    import gpuvjp as gv
    functions = _public_callables(torch)
    methods = _public_callables(torch.Tensor)
    rows = {}
    for name in sorted(functions | methods):
        kinds = []
        if name in functions and not hasattr(gv, name):
            kinds.append("function")
        if name in methods and not hasattr(gv.Tensor, name):
            kinds.append("method")
        if kinds:
            rows[name] = (", ".join(kinds), category(name))
    return rows, len(functions), len(methods)


def render() -> str:
    import torch
    rows, n_fn, n_meth = missing()
    order = [c[0] for c in CATEGORIES] + ["not yet"]
    meaning = {c[0]: c[1] for c in CATEGORIES}
    meaning["not yet"] = "in scope, not implemented yet"
    counts = {c: sum(1 for _, cat in rows.values() if cat == c) for c in order}
    intro = textwrap.fill(
        f"Generated from the public callables of `torch` ({n_fn}) and `torch.Tensor` ({n_meth}) "
        f"in torch {'.'.join(torch.__version__.split('.')[:2])}: each one `gpuvjp` or "
        "`gpuvjp.Tensor` has no attribute for, with the reason. A name listed under "
        "\"function, method\" is missing as both. Regenerate with "
        "`python3 scripts/gen_methods_table.py` after adding an op; "
        "`tests/test_methods_table.py` fails while this file is out of date.", width=100)
    lines = [
        "# torch functions and Tensor methods gpuvjp lacks",
        "",
        "<!-- Generated by scripts/gen_methods_table.py; do not edit by hand. -->",
        "",
        intro,
        "",
        "| reason | what it means | missing |",
        "|---|---|---|",
    ]
    lines += [f"| {c} | {meaning[c]} | {counts[c]} |" for c in order]
    for c in order:
        names = [(n, k) for n, (k, cat) in rows.items() if cat == c]
        if not names:
            continue
        lines += ["", f"## {c} ({len(names)})", "", "| name | missing as |", "|---|---|"]
        lines += [f"| `{n}` | {k} |" for n, k in names]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/torch_methods.md is not current")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("GPUVJP_DEVICE", "cpu")
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.is_file() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run "
                  "python3 scripts/gen_methods_table.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
