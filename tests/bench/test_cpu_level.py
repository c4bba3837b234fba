"""The float baselines' CPUID mask (bench.cpu_level): what a masked process sees."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import cpu_level

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


def test_masked_process_sees_avx2_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCOMPILE_CPU_FEATURES", "x86-64-v3")
    why = cpu_level.cannot_mask() or (None if "avx512f" in cpu_level.cpu_flags() else "no AVX-512")
    if why is not None:
        pytest.skip(f"no CPUID mask on this host: {why}")
    env, phrase = cpu_level.baseline_env()
    assert "x86-64-v3" in phrase
    # unmasked, this host shows AVX-512 (what the mask is for)
    assert _probe({})[1] == "True"
    capability, avx512f, avx2, fma = _probe(env)
    assert (capability, avx512f, avx2, fma) == ("AVX2", "False", "True", "True")


def test_real_segfault_still_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mask's SIGSEGV handler answers CPUID only: a wild read still dies of SIGSEGV."""
    monkeypatch.setenv("QCOMPILE_CPU_FEATURES", "x86-64-v3")
    if cpu_level.cannot_mask() is not None or "avx512f" not in cpu_level.cpu_flags():
        pytest.skip("no CPUID mask on this host")
    env, _ = cpu_level.baseline_env()
    code = "import ctypes; ctypes.string_at(8)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env})
    assert out.returncode == -11
