"""Wide activations on the byte kernels: an input of more than 8 bits split into byte digits.

A residual sum is 14-22 bits wide (mobilenetv2's), so the 1x1 convolutions that read it
cannot feed the dot-product instructions one byte per activation. Written in base 256,
``x = sum_d 256^d * x_d``, each digit is a byte, and the GEMM runs its reduction once per
digit on the same decoded weights and the same register accumulators, top digit first
(Horner's rule): ``acc = 256 * acc + sum(byte_d * w)``. After digit ``d`` the accumulator
holds ``sum(q_d * w)`` with ``q_d`` the input's top digits (``x`` divided by ``256^d``, in
the representation's rounding), so every intermediate is bounded by about ``|x| * sum|w|``:
:func:`plan` checks that bound against int32 (the result then never wraps, and is exact).

- x86 (u8 activation operand): the low digits are the unsigned bytes ``(x >> 8d) & 255``;
  the top digit ``x >> 8(D-1)`` (signed) takes an offset ``o`` into a byte, removed by
  starting the accumulators at ``comp = -o * sum(w)`` (``digit_comp``) instead of 0.
- aarch64 (s8 operand): balanced digits in -128..127, ``x_d = (x + c_d) >> 8d`` with
  ``c_d = 128 * (256^d - 1) / 255`` and digit ``((x_d + 128) & 255) - 128``; the top digit
  ``x_{D-1}`` is chosen to fit a signed byte: no offset, no correction (a full int16 range
  then takes three digits: its balanced top digit reaches 128).

>>> from qcompile.backends.tvm.isa import Isa
>>> d = plan(Isa("x86", 64, vnni=True), (-131072, 131071), (-2, 2), 320)
>>> d.count, d.top_offset
(3, 2)
>>> plan(Isa("arm", 16, dotprod=True), (-8192, 8191), (-2, 2), 64).count
2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qcompile.backends.tvm.isa import ARM, Isa

INT32_MAX = (1 << 31) - 1
MAX_DIGITS = 4  # an int32 input


@dataclass(frozen=True)
class Digits:
    """``count`` byte digits of an int32 activation, top first in the packed planes;
    ``balanced``: signed digits (aarch64); ``top_offset``: the top digit's byte offset
    (x86; 0 on aarch64)."""

    count: int
    balanced: bool
    top_offset: int

    def byte(self, tirx: Any, x: Any, plane: int) -> Any:
        """The int32 value whose low byte plane ``plane`` (0: the top digit) carries for the
        int32 expression ``x``: the digit plus its offset (x86), the signed digit (aarch64,
        its two's complement byte)."""
        d = self.count - 1 - plane  # the digit's power of 256
        if self.balanced:
            carry = 128 * ((1 << (8 * d)) - 1) // 255
            q = (x + tirx.const(carry, "int32")) >> tirx.const(8 * d, "int32") if d else x
            return q if plane == 0 else ((q + tirx.const(128, "int32")) & 255) - 128
        q = x >> tirx.const(8 * d, "int32") if d else x
        if plane == 0:
            return q + tirx.const(self.top_offset, "int32")
        return q & 255

    def value(self, x: int, plane: int) -> int:
        """:meth:`byte` on a Python integer, as the signed digit (``byte`` minus any offset):
        the reference the tests check the packing against."""
        d = self.count - 1 - plane
        if self.balanced:
            q = (x + 128 * ((1 << (8 * d)) - 1) // 255) >> (8 * d)
            return q if plane == 0 else ((q + 128) & 255) - 128
        q = x >> (8 * d)
        return q if plane == 0 else q & 255


def plan(isa: Isa, x_range: tuple[int, int], w_range: tuple[int, int], k: int) -> Digits | None:
    """The digits of activations in ``x_range`` (wider than a byte) for ``k`` products per
    output with weights in ``w_range``, or None where the Horner intermediates could leave
    int32 or the input needs more than four digits."""
    lo, hi = x_range
    wmax = max(abs(w_range[0]), abs(w_range[1]), 1)
    # 256 * acc (|acc| <= (|x| / 256^(d+1) + 1) * k * wmax) plus a pass of bytes
    if k * wmax * (max(abs(lo), abs(hi)) + 512) > INT32_MAX:
        return None
    balanced = isa.arch == ARM
    for count in range(2, MAX_DIGITS + 1):
        s = 8 * (count - 1)
        if balanced:
            carry = 128 * ((1 << s) - 1) // 255
            top = ((lo + carry) >> s, (hi + carry) >> s)
            if top[0] >= -128 and top[1] <= 127:
                return Digits(count, True, 0)
        else:
            top = (lo >> s, hi >> s)
            if top[1] - top[0] <= 255:
                return Digits(count, False, 0 if top[0] >= 0 and top[1] <= 255 else -top[0])
    return None
