"""Narrower requantization of a clamped accumulator (the x86 schedules).

``f(acc) = clip((acc * m + b + round) >> s, lo, hi)`` needs int64 products where ``acc * m``
can pass 32 bits. It is monotone in ``acc``: every accumulator past the last one that still
lands inside the clip lands outside it on the same side, so clamping the accumulator to one
step past each end first (``window``) changes no output. Inside that window two forms stay
in 32 bits:

- ``clamp_bounds``: the signed product itself fits int32;
- ``offset_requant``: the product counted from the window's low end does (unsigned): with
  ``base = lo_c * m + b + round = q * 2^s + r`` (``0 <= r < 2^s``),
  ``f(acc) = clip(q + (((acc - lo_c) * m + r) >> s), lo, hi)``, every step an unsigned
  32-bit value where it fits (a 4-bit output after a 2^27 shift spans 17 * 2^27 > 2^31:
  int64 in the signed form, uint32 here), else an unsigned 64-bit product of two 32-bit
  values (vpmuludq) with a logical shift, and no 64-bit compares or packs: mobilenetv2's
  expansions on residual sums, 15 of 19 requantized in int64 before, each with vpmuldq,
  64-bit shifts, compares and vpmovqb packs on AVX-512 (on AVX2 the 64-bit arithmetic
  shifts and compares are emulated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qcompile.ir.graph import Node
from qcompile.ir.ops import Conv2d, Dense

INT32 = (-(1 << 31), (1 << 31) - 1)
UINT32_MAX = (1 << 32) - 1


def window(
    node: Node, x_range: tuple[int, int], tight: bool = False
) -> list[tuple[int, int, int, int]] | None:
    """Per channel ``(m, b, lo_c, hi_c)``: the multiplier, bias plus rounding, and the
    accumulator window outside which clamping changes no output; None where the node has
    no such requantization. ``tight``: the window of accumulators inside the clip, where
    that alone gives every output (None where it does not): with ``0 < m <= 2^s`` the
    output steps by at most one per accumulator step, so the first accumulator inside the
    clip lands on its low end and the last on its high end, and no clip is left to do."""
    r = node.requant
    if r is None or not isinstance(node.op, Conv2d | Dense) or r.shift > 30:
        return None
    ms, bs = r.multipliers, r.biases
    out = []
    for c, (alo, ahi) in enumerate(node.op.channel_ranges(node, [x_range])):
        m, b = int(ms[c % ms.size]), int(bs[c % bs.size]) + r.rounding
        if m == 0:
            return None
        k0 = (r.lo << r.shift) - b  # f(a) >= lo  <=>  a * m >= k0
        k1 = ((r.hi + 1) << r.shift) - 1 - b  # f(a) <= hi  <=>  a * m <= k1
        if m > 0:  # inside the clip for a in [ceil(k0 / m), floor(k1 / m)]
            first, last = -(-k0 // m), k1 // m
        else:  # m < 0: the order reverses
            first, last = -(-k1 // m), k0 // m
        if tight:
            if not 0 < m <= 1 << r.shift or first > last or alo > last or ahi < first:
                return None
            out.append((m, b, max(alo, first), min(ahi, last)))
            continue
        lo, hi = max(alo, first - 1), min(ahi, last + 1)
        out.append((m, b, lo, max(hi, lo)))  # all on one side: any one accumulator will do
    return out


def clamp_bounds(
    node: Node, x_range: tuple[int, int], tight: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel int32 bounds ``[lo_c, hi_c]`` such that clamping the accumulator to them
    first leaves the clipped output unchanged and ``acc * m + b + round`` fits int32, or
    None. (An expansion conv on a residual sum, 21-bit accumulators times 15-bit
    multipliers, requantized in int64: vpmuldq and int64 compares on AVX2; clamped, its
    products fit int32.)"""
    w = window(node, x_range, tight) if tight else window(node, x_range)
    if w is None:
        return None
    bias = node.requant.biases
    for c, (m, b, lo, hi) in enumerate(w):
        # each step of the requantization as it is evaluated: product, + bias, + rounding
        d = int(bias[c % bias.size])
        ends = [d, *(a * m + e for a in (lo, hi) for e in (0, d, b))]
        if min(ends) < INT32[0] or max(ends) > INT32[1]:
            return None
    return np.array([v[2] for v in w], np.int32), np.array([v[3] for v in w], np.int32)


@dataclass(frozen=True)
class OffsetRequant:
    """Per-channel arrays of the unsigned form (module docstring)."""

    low: np.ndarray  # int32: the window's low end, the anchor the product counts from
    high: np.ndarray  # int32: its high end
    base_q: np.ndarray  # int32: base >> s
    base_r: np.ndarray  # uint32: base mod 2^s
    product: str  # "uint32" where every (acc - lo_c) * m + r fits, else "uint64"


def offset_requant(
    node: Node, x_range: tuple[int, int], tight: bool = False
) -> OffsetRequant | None:
    """The unsigned form of the node's requantization, or None where a multiplier is not
    positive or the window does not fit int32 (``tight``: ``window``'s)."""
    w = window(node, x_range, tight)
    if w is None or node.requant.shift < 1:
        return None
    s, cols, top = node.requant.shift, [], 0
    for m, b, lo, hi in w:
        base = lo * m + b
        q, rem = base >> s, base & ((1 << s) - 1)
        fits = INT32[0] <= lo and hi <= INT32[1] and INT32[0] <= q <= INT32[1]
        # hi - lo is computed in int32 (no wrap); m and r are read as uint32
        if m < 0 or not fits or hi - lo > INT32[1] or m > UINT32_MAX:
            return None
        cols.append((lo, hi, q, rem))
        top = max(top, (hi - lo) * m + rem)
    low, high, q, rem = zip(*cols, strict=True)
    i32, product = np.int32, "uint32" if top <= UINT32_MAX else "uint64"
    return OffsetRequant(
        np.array(low, i32),
        np.array(high, i32),
        np.array(q, i32),
        np.array(rem, np.uint32),
        product,
    )
