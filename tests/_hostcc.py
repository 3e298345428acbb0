"""Host C++ compiler for the tests: compile a source into a shared library, load it with ctypes."""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess

__all__ = ["FLAGS", "HostCompileError", "find_cxx", "load"]

# -ffp-contract=off: no FMA contraction, so the C++ rounds like NumPy's one-op-at-a-time twin
FLAGS = ("-O1", "-shared", "-fPIC", "-std=c++17", "-ffp-contract=off")

_LOADED: dict[str, ctypes.CDLL] = {}


class HostCompileError(RuntimeError):
    """The host compiler rejected a source; the message holds its diagnostics."""


def find_cxx() -> str | None:
    """$CXX, else the first of g++, c++, clang++ on PATH; None when there is none."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


def load(source: str, build_dir: pathlib.Path, cxx: str, flags=FLAGS) -> ctypes.CDLL:
    """`source` built with `cxx flags` into build_dir and loaded, once per (compiler, flags,
    source): an unchanged source is neither recompiled nor reloaded."""
    key = hashlib.sha256("\0".join([cxx, *flags, source]).encode()).hexdigest()[:20]
    if key in _LOADED:
        return _LOADED[key]
    build_dir = pathlib.Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    lib = build_dir / f"gv_{key}.so"
    if not lib.exists():
        src = build_dir / f"gv_{key}.cpp"
        src.write_text(source)
        tmp = build_dir / f"gv_{key}.{os.getpid()}.so.tmp"    # concurrent sessions never see
        proc = subprocess.run([cxx, *flags, "-o", str(tmp), str(src)],   # a half-written .so
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostCompileError(
                f"{os.path.basename(cxx)} {' '.join(flags)} failed on {src}:\n"
                f"{proc.stderr.strip()}")
        os.replace(tmp, lib)
    _LOADED[key] = ctypes.CDLL(str(lib))
    return _LOADED[key]
