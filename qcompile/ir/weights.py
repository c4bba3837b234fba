"""A weight layer's integers: codes of ``b`` bits per weight (``b`` per output channel), the
small signed integer each code stands for, and the bias.

Numeric contract v1: a code maps to an integer weight ``w`` of at most 8 bits, either

- :class:`Affine` (uniform levels, BWN, TWN): ``w = step * code + zero[c]``, step 1 or 2. The
  code *is* the weight: no table; ``w`` has at most ``b + 1`` bits;
- :class:`Table` (learned non-uniform levels: DDQ, DMBQ): ``w = entries[c, code]``, a
  per-channel table of ``2^b`` int8 entries chosen at freeze.

Scales and biases are not here: a layer's real weights are ``s_c * w`` and ``s_c`` is folded,
with the input and output scales, into the per-channel requantization multiplier of its node
(:class:`qcompile.ir.graph.Requant`), which also adds the bias.

>>> codes = np.array([[3, 1], [1, 0]], dtype=np.uint8)
>>> w = Weights(2, (2, 2), codes, False, Affine(1, np.array([-2, 0])), (2, 1)).pack()
>>> w.words, w.mean_bits, w.decoded().tolist()
(2, 1.5, [[1, -1], [1, 0]])
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from qcompile.ir.packing import (
    pack_codes,
    pack_rows,
    packed_words,
    padding_is_zero,
    row_words,
    rows_padding_is_zero,
    unpack_codes,
    unpack_rows,
)

WEIGHT_RANGE = (-128, 127)  # every integer weight is an int8


def _ints(a: np.ndarray, name: str) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.int64:
        raise ValueError(f"{name} must be an int64 array")


@dataclass(frozen=True, eq=False)
class Affine:
    """``w = step * code + zero[c]`` with ``zero`` int64 ``[C]`` (per output channel) or
    ``[1]`` (per layer); ``step`` is 1 (integer zero point: min-max, LSQ, TWN) or 2
    (half-integer zero point: SAWB, BWN, symmetric around 0)."""

    step: int
    zero: np.ndarray

    def __post_init__(self) -> None:
        if self.step not in (1, 2):
            raise ValueError(f"affine levels step must be 1 or 2, got {self.step!r}")
        _ints(self.zero, "affine zero points")
        if self.zero.ndim != 1 or self.zero.size < 1:
            raise ValueError("affine zero points must be a 1-D array")

    @property
    def rows(self) -> int:
        return int(self.zero.size)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``[C, n]`` codes -> ``[C, n]`` int64 weights."""
        zero = self.zero.reshape(-1, 1)
        return self.step * codes.astype(np.int64) + zero

    def row_range(self, row: int, bits: int) -> tuple[int, int]:
        z = int(self.zero[row if self.rows > 1 else 0])
        return z, z + self.step * ((1 << bits) - 1)


@dataclass(frozen=True, eq=False)
class Table:
    """``w = entries[c, code]``: int64 ``[C or 1, 2^bits]`` with int8 values."""

    entries: np.ndarray

    def __post_init__(self) -> None:
        _ints(self.entries, "table entries")
        if self.entries.ndim != 2:
            raise ValueError("table entries must be a 2-D array")

    @property
    def rows(self) -> int:
        return int(self.entries.shape[0])

    def decode(self, codes: np.ndarray) -> np.ndarray:
        rows = self.entries
        if rows.shape[0] != codes.shape[0]:
            rows = rows[[0] * codes.shape[0]]
        return np.take_along_axis(rows, codes.astype(np.int64), axis=1)

    def row_range(self, row: int, bits: int) -> tuple[int, int]:
        r = self.entries[row if self.rows > 1 else 0, : 1 << bits]
        return int(r.min()), int(r.max())


Levels = Affine | Table


@dataclass(frozen=True, eq=False)
class Weights:
    """Codes (``bits`` each) and the integer weights they stand for (``levels``).

    ``data`` holds the codes as uint8 shaped ``shape`` or, once packed, as uint32 words
    (:mod:`qcompile.ir.packing`). ``channel_bits`` (None: every output channel at ``bits``)
    gives each output channel its own width, ``bits`` being the widest; its codes are then
    packed row by row (:func:`qcompile.ir.packing.pack_rows`) and channel ``c`` uses codes
    below ``2^b_c``.
    """

    bits: int
    shape: tuple[int, ...]
    data: np.ndarray
    packed: bool
    levels: Levels
    channel_bits: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ValueError(f"weight bits must be 1..8, got {self.bits!r}")
        if not isinstance(self.levels, Affine | Table):
            raise ValueError("weight levels must be Affine or Table")
        cb = self.channel_bits
        if cb is not None:
            if (
                not isinstance(cb, tuple)
                or not cb
                or not self.shape
                or len(cb) != self.shape[0]
                or any(not isinstance(b, int) or not 1 <= b <= 8 for b in cb)
            ):
                raise ValueError(f"channel_bits must be {self.shape[:1]} widths of 1..8 bits")
            if max(cb) != self.bits:
                raise ValueError(f"the widest channel is {max(cb)} bits, not bits={self.bits}")
            # one layout per layer: equal widths are the flat layout (channel_bits None)
            if min(cb) == max(cb):
                raise ValueError("channel_bits are all equal: use channel_bits=None")
        if self.packed:
            if self.data.dtype != np.uint32 or self.data.shape != (self.words,):
                raise ValueError(f"packed codes must be {self.words} uint32 words")
        elif self.data.dtype != np.uint8 or self.data.shape != self.shape:
            raise ValueError(f"codes must be uint8 shaped {self.shape}")

    @property
    def uniform(self) -> bool:
        """Affine levels (no table)."""
        return isinstance(self.levels, Affine)

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))

    @property
    def per_row(self) -> int:
        return self.count // self.shape[0]

    @property
    def words(self) -> int:
        if self.channel_bits is None:
            return packed_words(self.count, self.bits)
        return sum(row_words(self.per_row, self.channel_bits))

    def row_bits(self) -> tuple[int, ...]:
        """Each output channel's width."""
        return self.channel_bits or (self.bits,) * self.shape[0]

    @property
    def mean_bits(self) -> float:
        """Bits per weight: the channel widths' mean (every channel holds as many weights)."""
        return sum(self.row_bits()) / len(self.row_bits()) if self.shape[0] else float(self.bits)

    def level_range(self) -> tuple[int, int]:
        """Smallest and largest integer weight any code of any channel can stand for."""
        spans = [self.levels.row_range(c, b) for c, b in enumerate(self.row_bits())]
        return min(s[0] for s in spans), max(s[1] for s in spans)

    def level_table(self) -> np.ndarray:
        """int64 ``[C or 1, 2^bits]``: the integer weight of every code, per channel (affine
        levels materialised), for kernels that look weights up."""
        lv = self.levels
        if isinstance(lv, Table):
            return lv.entries
        k = np.arange(1 << self.bits, dtype=np.int64).reshape(1, -1)
        return lv.step * k + lv.zero.reshape(-1, 1)

    def codes(self) -> np.ndarray:
        """Codes as uint8 shaped ``shape`` (unpacked if needed)."""
        if not self.packed:
            return self.data
        if self.channel_bits is not None:
            return unpack_rows(self.data, self.channel_bits, self.per_row).reshape(self.shape)
        return unpack_codes(self.data, self.bits, self.count).reshape(self.shape)

    def pack(self) -> Weights:
        if self.packed:
            return self
        cb = self.channel_bits
        words = pack_codes(self.data, self.bits) if cb is None else pack_rows(self.data, cb)
        return replace(self, data=words, packed=True)

    def decoded(self) -> np.ndarray:
        """Integer weights shaped ``shape`` (int64)."""
        codes = self.codes().reshape(self.shape[0], -1)
        return self.levels.decode(codes).reshape(self.shape)

    def check(self) -> None:
        """Level sizes and magnitudes, each channel's codes within its width, packed padding
        zero (raises ValueError with the rule broken)."""
        c, lv = self.shape[0], self.levels
        if lv.rows not in (1, c):
            raise ValueError(f"levels have {lv.rows} rows, must be 1 or {c} (one per channel)")
        if isinstance(lv, Table) and lv.entries.shape[1] != 1 << self.bits:
            raise ValueError(
                f"table is {list(lv.entries.shape)}, must be [1 or {c}, {1 << self.bits}] "
                f"for {self.bits}-bit codes"
            )
        lo, hi = self.level_range()
        if lo < WEIGHT_RANGE[0] or hi > WEIGHT_RANGE[1]:
            raise ValueError(f"integer weights span [{lo}, {hi}], beyond int8")
        self._check_codes()

    def _check_codes(self) -> None:
        if self.packed:
            # A packed code cannot exceed its row's width; stray bits can only be padding.
            ok = (
                padding_is_zero(self.data, self.bits, self.count)
                if self.channel_bits is None
                else rows_padding_is_zero(self.data, self.channel_bits, self.per_row)
            )
            if not ok:
                raise ValueError("packed codes have bits set outside any code")
            return
        if self.data.size == 0:
            return
        widths = np.array(self.row_bits(), dtype=np.int64)
        peaks = self.data.reshape(self.shape[0], -1).max(axis=1).astype(np.int64)
        bad = np.flatnonzero(peaks >= (1 << widths))
        if bad.size:
            ch = int(bad[0])
            where = "" if self.channel_bits is None else f" in channel {ch}"
            peak, width = int(peaks[ch]), int(widths[ch])
            raise ValueError(f"a code is {peak}, beyond {width}-bit codes{where}")
