"""The AVX-512 packed-LUT GEMV kernels (qcompile/backends/tvm/avx512.py, as bench/lut_intrin.py
compiles them standalone) against numpy, bit for bit:
vpermw (int16 levels, with VNNI vpdpwssd and without it, vpmaddwd + add) and vpermb (int8
levels, VBMI + VNNI), 1/2/4-bit codes packed as the backend packs them."""

from __future__ import annotations

import numpy as np
import pytest

from bench.lut_intrin import (
    compile_intrin,
    compile_intrin8,
    cpu_flag,
    intrin8_args,
    intrin_args,
    reference,
)

ROWS, K = 32, 256  # small: each case compiles in about a second
BW = cpu_flag("avx512bw")
VNNI = cpu_flag("avx512vnni")
VBMI = cpu_flag("avx512vbmi")

needs_bw = pytest.mark.skipif(
    not BW, reason="vpermw and 512-bit vpsrlvw need AVX512BW, which this CPU lacks"
)


def _case(bits: int, lo: int, hi: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << bits, (ROWS, K)).astype(np.uint8)
    lut = rng.integers(lo, hi + 1, (ROWS, 1 << bits)).astype(np.int64)
    x = rng.integers(-128, 128, K).astype(np.int64)
    # The extremes of both ranges, where a lane mix-up or an overflow would show.
    lut[0, :] = lo
    lut[1, :] = hi
    x[:8] = -128
    return x, codes, lut


@needs_bw
@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize(
    "vnni",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(not VNNI, reason="vpdpwssd needs AVX512-VNNI"),
        ),
    ],
)
def test_vpermw_exact_int16_levels(bits: int, vnni: bool) -> None:
    x, codes, lut = _case(bits, -(1 << 15), (1 << 15) - 1, seed=bits)
    ex = compile_intrin(ROWS, K, bits, vnni=vnni, unroll=4)
    args = intrin_args(x, codes, lut, bits)
    ex["main"](*args)
    assert np.array_equal(args[-1].numpy()[0], reference(x, codes, lut))


@pytest.mark.skipif(
    not (BW and VBMI and VNNI),
    reason="vpermb/vpmultishiftqb need AVX512-VBMI and vpdpbusd AVX512-VNNI",
)
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_vpermb_exact_int8_levels(bits: int) -> None:
    x, codes, lut = _case(bits, -128, 127, seed=10 + bits)
    ex = compile_intrin8(ROWS, K, bits, unroll=4)
    args = intrin8_args(x, codes, lut, bits)
    ex["main"](*args)
    assert np.array_equal(args[-1].numpy()[0], reference(x, codes, lut))


def test_levels_out_of_range_are_refused() -> None:
    from qcompile.backends.tvm.avx512 import byte_table, replicated_table

    with pytest.raises(ValueError, match="int16"):
        replicated_table(np.array([[0, 1 << 15]]))
    with pytest.raises(ValueError, match="int8"):
        byte_table(np.array([[0, 128]]))
