"""How a kernel multiplies activation bytes by int8 weights and accumulates, exactly.

Every weight is an int8 (numeric contract v1). The activations enter the dot-product
instructions as bytes ``a = x + o``: unsigned on x86 (vpmaddubsw/vpdpbusd take u8 x s8),
signed on ARM (sdot takes s8 x s8), ``o`` a constant chosen from the input's proven range.
The kernel then adds ``-o * sum(w)`` per output row (``comp``, precomputed at export), so
``sum(a * w) - o * sum(w) = sum(x * w)`` exactly. Positions that are padding (to whole
chunks, to four channels) carry the byte 0 and add nothing.

Modes, from the ranges proven at export:

- ``vnni`` / ``sdot``: four products per int32 lane, no intermediate rounding; always exact.
- ``smlal`` (NEON without dotprod): int16 products added into int16 lanes (``smlal`` the low
  eight bytes, ``smlal2`` the high eight), ``flush`` steps of them before ``saddlp`` widens
  them, two instructions per 16 products; taken where ``2 * flush`` products fit an int16
  (``flush >= 1``: the narrow layers, not 8-bit activations times 8-bit weights).
- ``smull`` (NEON without dotprod, where ``smlal`` is not exact): int16 products (at most
  128 * 128), pair sums widened to int32 at once; always exact.
- ``maddubs`` (x86 without VNNI): int16 pair sums saturate at 2^15, so the mode is taken only
  where ``2 * max(a) * max|w| < 2^15``; ``flush`` steps of pair sums are added in int16 before
  they are widened (as many as the bound allows).
- ``split``: where one pair sum could saturate (8-bit activations times large weights) the
  activation byte is split into nibbles, ``a = 16 * hi + lo``, two vpmaddubsw per step, each
  pair sum at most ``2 * 15 * 128``.
- ``binary`` (x86, 1-bit layers): a 1-bit weight is linear in its code, ``w = w0 + c * d``,
  so ``sum(a * w) = w0 * sum(a) + d * sum(a * c)``. The kernel multiplies the code bytes
  ``c`` (0 or 1, the unsigned operand) by the *signed* activation bytes ``a`` (``x + o`` in
  s8): one vpmaddubsw per step whatever the activations' width (pair sums within
  ``2 * 128``, int16 for ``flush`` steps) or one vpdpbusd, no table lookup; ``sum(a)`` is
  computed once per input row and ``w0``, ``d`` are applied once per output.

>>> from qcompile.backends.tvm.isa import Isa
>>> choose(Isa("x86", 32), (0, 15), (-2, 2), 576)
Mac(mode='maddubs', offset=0, flush=546)
>>> choose(Isa("x86", 32), (-128, 127), (-128, 127), 4096)
Mac(mode='split', offset=128, flush=8)
>>> choose(Isa("arm", 16, dotprod=True), (0, 255), (-1, 1), 64)
Mac(mode='sdot', offset=-128, flush=0)
>>> choose(Isa("arm", 16), (0, 15), (-8, 10), 72)
Mac(mode='smlal', offset=0, flush=109)
>>> choose(Isa("arm", 16), (-128, 127), (-128, 127), 12).mode
'smull'
>>> choose(Isa("x86", 32), (0, 255), (-128, 127), 4096, binary=True)
Mac(mode='binary', offset=-128, flush=127)
"""

from __future__ import annotations

from dataclasses import dataclass

from qcompile.backends.tvm.isa import ARM, Isa

INT16_MAX = (1 << 15) - 1
INT32_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class Mac:
    mode: str
    offset: int  # activation byte = x + offset
    flush: int  # maddubs / split: int16 pair-sum steps between widenings (0: none)

    @property
    def planes(self) -> int:
        """Activation byte planes the kernel reads (split: low and high nibbles)."""
        return 2 if self.mode == "split" else 1


def offset_for(x_range: tuple[int, int], signed: bool) -> int | None:
    """The ``o`` that puts every ``x + o`` in a byte (s8 where ``signed``), or None where the
    range spans more than 256 values."""
    lo, hi = x_range
    if hi - lo > 255:
        return None
    base = -128 if signed else 0
    if base <= lo and hi <= base + 255:
        return 0
    return base - lo


def choose(
    isa: Isa, x_range: tuple[int, int], w_range: tuple[int, int], k: int, binary: bool = False
) -> Mac | None:
    """The exact mode for activations in ``x_range``, weights in ``w_range`` and ``k``
    products per output (padding included), or None where no byte mode is exact.
    ``binary``: every weight is 1-bit (the ``binary`` mode may be taken)."""
    if binary and isa.arch != ARM:
        o = offset_for(x_range, True)
        # |w0 * sum(a)| + |d * sum(a * c)| (|a| <= 128, |w0| <= 128, |d| <= 255) in int32
        if o is not None and k * 128 * (128 + 255) <= INT32_MAX // 2:
            return Mac("binary", o, INT16_MAX // (2 * 128))
    o = offset_for(x_range, isa.arch == ARM)
    if o is None:
        return None
    amax = max(abs(x_range[0] + o), abs(x_range[1] + o))
    wmax = max(abs(w_range[0]), abs(w_range[1]), 1)
    # every partial sum, offset included, stays inside int32: no wrap-around to reason about
    if k * amax * wmax > INT32_MAX // 2:
        return None
    if isa.arch == ARM:
        if isa.dotprod:
            return Mac("sdot", o, 0)
        # an int16 lane takes one product a step, two once the halves are added pairwise
        steps = INT16_MAX // (2 * amax * wmax)
        return Mac("smlal", o, steps) if steps else Mac("smull", o, 0)
    if isa.vnni:
        return Mac("vnni", o, 0)
    pair = 2 * amax * wmax
    if pair <= INT16_MAX:
        return Mac("maddubs", o, INT16_MAX // pair)
    return Mac("split", o, INT16_MAX // (2 * 15 * wmax))
