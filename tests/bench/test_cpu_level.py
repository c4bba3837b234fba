"""The float baselines' CPUID mask (bench.cpu_level): what a masked process sees."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import cpu_level

# why this host cannot or need not mask (None: it can, and has AVX-512 to hide)
WHY_NOT = cpu_level.cannot_mask() or (None if "avx512f" in cpu_level.cpu_flags() else "no AVX-512")
needs_mask = pytest.mark.skipif(WHY_NOT is not None, reason=f"no CPUID mask here: {WHY_NOT}")

PROBE = (
    "import numpy, torch; "
    "from numpy._core._multiarray_umath import __cpu_features__ as f; "
    "from bench.cpu_level import check_masked; check_masked(); "
    "print(torch.backends.cpu.get_cpu_capability(), f['AVX512F'], f['AVX2'], f['FMA3'])"
)


def _probe(env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_no_mask_without_the_avx2_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QCOMPILE_CPU_FEATURES", raising=False)
    assert cpu_level.baseline_env() == ({}, "the host's own features")
    monkeypatch.setenv("QCOMPILE_CPU_FEATURES", "x86-64-v4")
    assert cpu_level.baseline_env()[0] == {}


@needs_mask
def test_masked_process_sees_avx2_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCOMPILE_CPU_FEATURES", "x86-64-v3")
    env, phrase = cpu_level.baseline_env()
    assert "x86-64-v3" in phrase
    # unmasked, this host shows AVX-512 (what the mask is for)
    assert _probe({})[1] == "True"
    capability, avx512f, avx2, fma = _probe(env)
    assert (capability, avx512f, avx2, fma) == ("AVX2", "False", "True", "True")


@needs_mask
def test_real_segfault_still_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mask's SIGSEGV handler answers CPUID only: a wild read still dies of SIGSEGV."""
    monkeypatch.setenv("QCOMPILE_CPU_FEATURES", "x86-64-v3")
    env, _ = cpu_level.baseline_env()
    code = "import ctypes; ctypes.string_at(8)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env})
    assert out.returncode == -11
