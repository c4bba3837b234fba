"""The baselines on the CPU that ``$QCOMPILE_CPU_FEATURES`` stands for.

``QCOMPILE_CPU_FEATURES=x86-64-v3`` builds qcompile's AVX2 code on any x86 host, so that this
AVX-512 machine measures what an AVX2 machine (issue 16's AMD EPYC) would run. The float
baselines choose their kernels from CPUID at run time: left alone, onnxruntime, torch and
numpy run their AVX-512 kernels here, which no AVX2 machine has. Under that profile each
baseline's process therefore loads ``cpuid_mask.c`` (LD_PRELOAD): Linux's CPUID faulting
makes every CPUID the process executes trap, and the library answers with the host's values
less the AVX-512, AMX and AVX-VNNI bits; torch, oneDNN, MKL and OpenBLAS also get their own
switches. Each baseline's process checks that the mask is in force before it times anything.

Where the host cannot (no CPUID faulting, not x86-64 Linux, no C compiler) the baselines run
with the host's features and the report says so. A library that installs its own SIGSEGV
handler after the mask would take the trap itself and crash the baseline's process (perf
does): the bench then fails loudly, it cannot time an unmasked baseline.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("cpuid_mask.c")
AVX512F = 1 << 16  # CPUID leaf 7, EBX
LEVEL = "x86-64-v3"  # the profile the mask stands for (AVX2, FMA, no AVX-512)
_built: dict[str, str] = {}


def level() -> str | None:
    """``x86-64-v3`` where ``$QCOMPILE_CPU_FEATURES`` names it, else None."""
    spec = os.environ.get("QCOMPILE_CPU_FEATURES", "").split(",")[0].strip()
    return spec if spec == LEVEL else None


def cpu_flags() -> list[str]:
    """The host's CPU flags as Linux lists them (none off x86-64 Linux)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return []
    return Path("/proc/cpuinfo").read_text().split()


def cannot_mask() -> str | None:
    """Why this host cannot hide AVX-512 from a process, or None where it can."""
    flags = cpu_flags()
    if not flags:
        return "not x86-64 Linux"
    if "cpuid_fault" not in flags:
        return "the kernel offers no CPUID faulting"
    if not (shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler for the CPUID mask"
    return None


def _library() -> str:
    if "path" not in _built:
        out = Path(tempfile.mkdtemp(prefix="qcompile-cpuid-"))
        atexit.register(shutil.rmtree, out, True)
        lib = out / "cpuid_mask.so"
        cc = shutil.which("cc") or "gcc"
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(SOURCE)], check=True)
        _built["path"] = str(lib)
    return _built["path"]


def baseline_env() -> tuple[dict[str, str], str]:
    """(environment for a float baseline's process, a phrase saying what it ran on)."""
    lvl = level()
    if lvl is None:
        return {}, "the host's own features"
    if "avx512f" not in cpu_flags():
        return {}, "the host's own features (no AVX-512 here)"
    why = cannot_mask()
    if why is not None:
        return {}, f"the host's own features ({why}: not masked to {lvl})"
    env = {
        "LD_PRELOAD": _library(),
        "QCOMPILE_CPUID_MASK": "1",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
    }
    return env, f"{lvl} (AVX-512, AMX and AVX-VNNI hidden from CPUID: bench/cpu_level.py)"


def check_masked() -> None:
    """In a baseline's process: fail unless CPUID hides AVX-512 where the mask was asked."""
    if not os.environ.get("QCOMPILE_CPUID_MASK"):
        return
    lib = ctypes.CDLL(os.environ["LD_PRELOAD"])
    lib.qcompile_cpuid_leaf7_ebx.restype = ctypes.c_uint32
    if lib.qcompile_cpuid_leaf7_ebx() & AVX512F:
        raise SystemExit("the CPUID mask is not in force: the baseline would run AVX-512")
