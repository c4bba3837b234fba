"""Narrower requantization of clamped accumulators (``clamp``): every accumulator of a small
conv's range gives the IR's clipped output."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from qcompile.backends.tvm.clamp import clamp_bounds, offset_requant, window
from qcompile.ir import Conv2d, Node, QType, TensorInfo, Weights
from tests.backends.helpers import levels, requantized


def _conv(seed: int, shift: int, signs: bool, bias: int | None = None, bits: int = 12):
    """(a 1x1 conv on a ``bits``-wide input requantized to 0..15 after ``shift``, its input);
    ``signs``: alternate the multipliers' signs; ``bias``: every channel's, else random."""
    rng = np.random.default_rng(seed)
    x = TensorInfo("x", (3, 4, 4), QType(bits, True), 0.05)
    shape = (5, 3, 1, 1)
    w = Weights(
        4, shape, rng.integers(0, 16, shape).astype(np.uint8), False, levels(rng, "uniform", 4, 5)
    )
    node = requantized("c", Conv2d(), x, w, (5, 4, 4), rng, (0, 15), 5)
    mults = tuple(
        int(m) * ((-1) ** i if signs else 1) for i, m in enumerate(node.requant.multipliers)
    )
    biases = node.requant.bias if bias is None else (bias,) * 5
    requant = replace(node.requant, multiplier=mults, shift=shift, bias=biases)
    return replace(node, requant=requant), x


def _reference(node: Node, c: int):
    r = node.requant
    m, b = int(r.multipliers[c]), int(r.biases[c]) + r.rounding
    return lambda a: np.clip((a * m + b) >> r.shift, r.lo, r.hi)


@pytest.mark.parametrize("seed", range(6))
def test_clamped_accumulators_give_the_same_clipped_outputs(seed):
    # every accumulator of a small conv's range, requantized as the IR says and after the
    # clamp: the same integers, and the clamped steps inside int32
    node, x = _conv(seed, 20, signs=True)
    bounds = clamp_bounds(node, x.qtype.range)
    assert bounds is not None
    r = node.requant
    for c, (lo, hi) in enumerate(node.op.channel_ranges(node, [x.qtype.range])):
        acc = np.arange(lo, hi + 1, dtype=np.int64)
        m, b, out = int(r.multipliers[c]), int(r.biases[c]) + r.rounding, _reference(node, c)
        clamped = np.clip(acc, bounds[0][c], bounds[1][c])
        assert bounds[1][c] - bounds[0][c] < hi - lo  # the clamp bites
        assert np.array_equal(out(clamped), out(acc)), c
        assert np.abs(clamped * m + b).max() < 1 << 31


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("shift", "bias"), [(27, -(1 << 28)), (29, 0)])
def test_offset_form_gives_the_same_clipped_outputs_in_unsigned_steps(seed, shift, bias):
    # 16-bit inputs whose window's products pass int32 (no clamp_bounds), counted from the
    # window's low end: 32-bit unsigned steps at a 2^27 shift, a 64-bit product at 2^29
    node, x = _conv(seed, shift, signs=False, bias=bias, bits=16)
    assert clamp_bounds(node, x.qtype.range) is None
    off = offset_requant(node, x.qtype.range)
    assert off is not None and off.product == ("uint32" if shift == 27 else "uint64")
    r, bites = node.requant, 0
    for c, (lo, hi) in enumerate(node.op.channel_ranges(node, [x.qtype.range])):
        acc = np.arange(lo, hi + 1, dtype=np.int64)
        clamped = np.clip(acc, off.low[c], off.high[c])
        step = (clamped - off.low[c]) * int(r.multipliers[c]) + int(off.base_r[c])
        assert step.min() >= 0
        if off.product == "uint32":
            assert step.max() < 1 << 32
        bites += off.high[c] - off.low[c] < hi - lo
        got = np.clip((step >> r.shift) + int(off.base_q[c]), r.lo, r.hi)
        assert np.array_equal(got, _reference(node, c)(acc)), c
    assert bites  # the clamp bites


def test_offset_form_needs_positive_multipliers():
    node, x = _conv(0, 27, signs=True, bias=-(1 << 28), bits=16)
    assert offset_requant(node, x.qtype.range) is None


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("shift", "bias", "bits"), [(20, None, 12), (27, -(1 << 28), 16)])
def test_tight_windows_give_the_clipped_outputs_with_no_clip(seed, shift, bias, bits):
    # multipliers at most 2^shift: the clamp to the accumulators inside the clip is the clip
    node, x = _conv(seed, shift, signs=False, bias=bias, bits=bits)
    r = node.requant
    assert all(int(m) <= 1 << r.shift for m in r.multipliers)
    tight = window(node, x.qtype.range, tight=True)
    off = offset_requant(node, x.qtype.range, tight=True)
    assert tight is not None and off is not None
    for c, (lo, hi) in enumerate(node.op.channel_ranges(node, [x.qtype.range])):
        acc = np.arange(lo, hi + 1, dtype=np.int64)
        m, b, low, high = tight[c]
        want = _reference(node, c)(acc)
        assert np.array_equal((np.clip(acc, low, high) * m + b) >> r.shift, want), c
        step = (np.clip(acc, off.low[c], off.high[c]) - off.low[c]) * m + int(off.base_r[c])
        assert np.array_equal((step >> r.shift) + int(off.base_q[c]), want), c


def test_no_tight_window_where_a_step_passes_one_output():
    node, x = _conv(0, 6, signs=False)  # multipliers of 2^10..2^15 after a 2^6 shift
    assert window(node, x.qtype.range, tight=True) is None
    assert window(node, x.qtype.range) is not None
