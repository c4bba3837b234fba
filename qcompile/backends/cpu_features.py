"""The x86-64 instruction-set features a CPU really has, and the ones an artifact needs.

On virtual machines LLVM's host CPU *name* can promise more than the CPU gives: a hypervisor
that masks AVX-512 still reports ``znver4``, and code built for that name dies with SIGILL.
So the host target is never a CPU name: it is the highest psABI level the CPU reaches
(``x86-64``, ``-v2``, ``-v3``, ``-v4``) plus the extra features it has, each named in
``mattr``. "Has" means reported by the operating system (``/proc/cpuinfo``) *and* by LLVM's
own host detection. ``QCOMPILE_CPU_FEATURES`` (for testing: a comma-separated list of LLVM
feature names and/or level names) replaces what the operating system reports, so a machine
with AVX-512 can play one without it.

Nothing here imports TVM at module level; the functions that ask LLVM import it lazily.

>>> sorted(LEVELS["x86-64-v4"] - LEVELS["x86-64-v3"])
['avx512bw', 'avx512cd', 'avx512dq', 'avx512f', 'avx512vl']
>>> level_of(LEVELS["x86-64-v3"] | {"avx512f"})
'x86-64-v3'
>>> parse_features("x86-64-v2,avx2") == LEVELS["x86-64-v2"] | {"avx2"}
True
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterable
from pathlib import Path

from qcompile.errors import QCompileError

ENV = "QCOMPILE_CPU_FEATURES"
CPUINFO = Path("/proc/cpuinfo")

# Linux /proc/cpuinfo flag -> LLVM feature name, for the instruction-set extensions compiled
# code can use. A feature missing from this table is never put in a host target's mattr (so
# it is never used), which is the safe direction.
PROC_TO_LLVM = {
    "cmov": "cmov", "cx8": "cx8", "fxsr": "fxsr", "mmx": "mmx", "sse": "sse", "sse2": "sse2",
    "cx16": "cx16", "lahf_lm": "sahf", "popcnt": "popcnt", "pni": "sse3", "sse4_1": "sse4.1",
    "sse4_2": "sse4.2", "ssse3": "ssse3",
    "avx": "avx", "avx2": "avx2", "bmi1": "bmi", "bmi2": "bmi2", "f16c": "f16c", "fma": "fma",
    "abm": "lzcnt", "movbe": "movbe", "xsave": "xsave",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512cd": "avx512cd",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl",
    "avx512_vnni": "avx512vnni", "avx512vbmi": "avx512vbmi", "avx512_vbmi2": "avx512vbmi2",
    "avx512_bitalg": "avx512bitalg", "avx512_vpopcntdq": "avx512vpopcntdq",
    "avx512ifma": "avx512ifma", "avx512_bf16": "avx512bf16", "avx512_fp16": "avx512fp16",
    "avx_vnni": "avxvnni", "gfni": "gfni", "vaes": "vaes", "vpclmulqdq": "vpclmulqdq",
    "aes": "aes", "pclmulqdq": "pclmul", "adx": "adx", "sha_ni": "sha", "rdrand": "rdrnd",
    "rdseed": "rdseed", "fsgsbase": "fsgsbase", "xsaveopt": "xsaveopt", "xsavec": "xsavec",
    "xsaves": "xsaves", "clflushopt": "clflushopt", "clwb": "clwb", "movdiri": "movdiri",
    "movdir64b": "movdir64b", "3dnowprefetch": "prfchw",
}  # fmt: skip
KNOWN = frozenset(PROC_TO_LLVM.values())

# The x86-64 psABI micro-architecture levels, as LLVM's CPUs of the same names define them
# (restricted to KNOWN; tests/backends/test_cpu_features.py checks them against LLVM).
_V1 = frozenset({"cmov", "cx8", "fxsr", "mmx", "sse", "sse2"})
_V2 = _V1 | {"cx16", "sahf", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3"}
_V3 = _V2 | {"avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"}
_V4 = _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
LEVELS = {"x86-64": _V1, "x86-64-v2": _V2, "x86-64-v3": _V3, "x86-64-v4": _V4}
# Levels with a profile in targets/: what a refusal suggests exporting instead.
PROFILES = ("x86-64-v3", "x86-64-v4")


def is_x86_64(triple: str = "") -> bool:
    """Whether ``triple`` (empty: this machine) is 64-bit x86."""
    if triple:
        return triple.split("-")[0] in ("x86_64", "amd64")
    return platform.machine().lower() in ("x86_64", "amd64")


def parse_features(text: str) -> frozenset[str]:
    """LLVM feature names and level names, comma- or space-separated, as a feature set."""
    out: set[str] = set()
    for word in text.replace(",", " ").split():
        if word in LEVELS:
            out |= LEVELS[word]
        elif word in KNOWN:
            out.add(word)
        else:
            raise QCompileError(
                f"{ENV}: unknown feature '{word}'; use LLVM names such as avx2, avx512bw "
                f"or a level ({', '.join(LEVELS)})"
            )
    return frozenset(out)


def os_features(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The features the operating system reports (Linux: the ``flags`` of /proc/cpuinfo),
    in LLVM's names; None where it reports none (another OS, or not x86)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(PROC_TO_LLVM[f] for f in value.split() if f in PROC_TO_LLVM)
    return None


@functools.cache
def llvm_host_features() -> frozenset[str]:
    """The features LLVM's host detection (cpuid) says are on, restricted to KNOWN."""
    import tvm  # noqa: F401  (registers LLVM's global functions)
    import tvm_ffi

    found = tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
    return frozenset(str(k) for k, on in found.items() if bool(on) and str(k) in KNOWN)


def running_features() -> frozenset[str]:
    """What this CPU can execute: ``$QCOMPILE_CPU_FEATURES`` if set, else what the OS
    reports, else (no report) LLVM's host detection."""
    override = os.environ.get(ENV)
    if override is not None:
        return parse_features(override)
    found = os_features()
    return found if found is not None else llvm_host_features()


def level_of(features: Iterable[str]) -> str:
    """The highest psABI level whose every feature is in ``features``."""
    have = set(features)
    reached = [name for name, need in LEVELS.items() if need <= have]
    return reached[-1] if reached else ""


def host_target() -> dict:
    """The TVM target for this host: a psABI level plus the extra features, never a CPU
    name. Machines that are not x86-64 keep LLVM's name for their CPU."""
    from tvm.target import codegen

    if not is_x86_64():
        return {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu())}
    have = running_features() & llvm_host_features()
    level = level_of(have) or "x86-64"
    extra = sorted(have - LEVELS[level])
    return {"kind": "llvm", "mcpu": level, **({"mattr": [f"+{f}" for f in extra]} if extra else {})}


def target_isa(tvm_target: dict) -> frozenset[str]:
    """The instruction-set features code built for ``tvm_target`` may use: for x86-64, LLVM's
    reading of its mcpu and mattr restricted to KNOWN; elsewhere the features its mattr
    enables; for a non-llvm target (cuda) none on the host."""
    if tvm_target.get("kind") != "llvm":
        return frozenset()
    if not is_x86_64(str(tvm_target.get("mtriple", ""))):
        return frozenset(a[1:] for a in tvm_target.get("mattr", ()) if a.startswith("+"))
    import tvm
    from tvm.target import codegen

    return frozenset(codegen.llvm_get_cpu_features(tvm.target.Target(tvm_target))) & KNOWN


def aarch64_features(tvm_target: dict) -> frozenset[str]:
    """The features LLVM enables for an aarch64 target: its mcpu's (``cortex-a76`` brings
    ``dotprod``) plus its mattr. ``target_isa`` reports only the mattr of non-x86 targets,
    which is what a manifest records; the kernels ask this."""
    import tvm
    from tvm.target import codegen

    found = codegen.llvm_get_cpu_features(tvm.target.Target(tvm_target))
    return frozenset(str(k) for k in found)


def check_runnable(artifact: Path | str, needs: Iterable[str]) -> None:
    """Refuse, in one line, to run an artifact that needs features this CPU lacks."""
    have = running_features()
    missing = sorted(set(needs) - have)
    if not missing:
        return
    level = level_of(have)
    instead = "--target cpu on this machine"
    if level in PROFILES:
        instead = f"--target {level} or {instead}"
    source = f" (CPU features from ${ENV})" if ENV in os.environ else ""
    shown = ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" * (len(missing) > 12))
    raise QCompileError(
        f"{artifact} needs {shown}, which this CPU lacks{source}: export it with {instead}"
    )
