"""The frozen integer IR: typed, immutable dataclasses.

A :class:`Graph` is a list of :class:`Node` in topological order over one quantized input.
Every node produces one tensor (:class:`TensorInfo`); what it computes is fixed by its op
(an op class of :mod:`qcompile.ir.ops`, which holds that op's contract), its
:class:`Weights` and its :class:`Requant`:

    conv2d / dense   acc = sum(x * LUT[c, code]) + bias[c]
    add              acc = sum_i x_i * multipliers[i]
    avgpool          acc = sum of the window (zero padding); the 1/N lives in the scale
    clip             acc = x
    then             y = clip((acc * multiplier + 2^(shift-1)) >> shift, lo, hi)

    maxpool          y = max of the window (padding never wins)
    flatten          y = x reshaped to one dimension

Construction checks each object on its own; :func:`qcompile.ir.verify` checks the graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from qcompile.ir.ops import OPS, Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool, Pool  # noqa: F401 (re-exported)
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
from qcompile.ir.types import TensorInfo

# LUT entries and biases are kept to 32 bits so that per-channel sums of |weights| stay far
# inside int64 while the bound is computed.
LUT_LIMIT = 1 << 31

Op = Conv2d | Dense | Add | MaxPool | AvgPool | Clip | Flatten
WEIGHTED = tuple(k for k, c in OPS.items() if c.weighted)
REQUANTIZED = tuple(k for k, c in OPS.items() if c.requantized)


@dataclass(frozen=True)
class Requant:
    """``y = clip((acc * multiplier + round) >> shift, lo, hi)``, round = ``2^(shift-1)``
    (round half up; 0 when shift is 0). ``acc_bits`` is the signed accumulator width the
    node was built for; the verifier proves no input in range can exceed it."""

    shift: int
    lo: int
    hi: int
    acc_bits: int
    multiplier: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.shift, int) or not 0 <= self.shift <= 62:
            raise ValueError(f"requant shift must be 0..62, got {self.shift!r}")
        if not (isinstance(self.lo, int) and isinstance(self.hi, int)) or self.lo > self.hi:
            raise ValueError(f"requant clip needs integers lo <= hi, got {self.lo!r}..{self.hi!r}")
        if not isinstance(self.acc_bits, int) or not 2 <= self.acc_bits <= 64:
            raise ValueError(f"acc_bits must be 2..64, got {self.acc_bits!r}")
        if not isinstance(self.multiplier, int) or not 0 < abs(self.multiplier) < 1 << 31:
            raise ValueError("requant multiplier must be a non-zero integer within 32 bits")

    @property
    def rounding(self) -> int:
        return 1 << (self.shift - 1) if self.shift else 0

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """``clip((acc * m + 2^(shift-1)) >> shift, lo, hi)``; ``>>`` floors, as in hardware."""
        if self.multiplier != 1:
            acc = acc * self.multiplier
        if self.shift:
            acc = (acc + self.rounding) >> self.shift
        return np.clip(acc, self.lo, self.hi)


@dataclass(frozen=True, eq=False)
class Weights:
    """Weight codes (``bits`` each) with per-channel integer levels.

    ``data`` holds the codes as uint8 shaped ``shape`` or, once packed, as uint32 words
    (:mod:`qcompile.ir.packing`). ``lut`` is int64 ``[C, 2^bits]``, C = 1 (per layer) or
    ``shape[0]`` (per output channel); ``bias`` is int64 ``[shape[0]]`` or None. ``uniform``
    records whether the trained levels were an evenly spaced grid (rounding to fixed point
    can make the integer LUT rows slightly uneven).

    ``channel_bits`` (None: every output channel at ``bits``) gives each output channel its own
    width, ``bits`` being the widest; its codes are then packed row by row
    (:func:`qcompile.ir.packing.pack_rows`) and channel ``c`` uses the first ``2^b_c`` entries
    of its LUT row. :meth:`at_widest` gives the same layer at one width, for kernels that take
    one width per layer.

    >>> codes = np.array([[3, 1], [1, 0]], dtype=np.uint8)
    >>> lut = np.arange(8, dtype=np.int64).reshape(2, 4)
    >>> w = Weights(2, (2, 2), codes, False, lut, None, channel_bits=(2, 1)).pack()
    >>> w.words, w.mean_bits, w.decoded().tolist()
    (2, 1.5, [[3, 1], [5, 4]])
    >>> w.at_widest().words, w.at_widest().channel_bits
    (1, None)
    """

    bits: int
    shape: tuple[int, ...]
    data: np.ndarray
    packed: bool
    lut: np.ndarray
    bias: np.ndarray | None
    uniform: bool = True
    channel_bits: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ValueError(f"weight bits must be 1..8, got {self.bits!r}")
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
        if self.lut.dtype != np.int64 or self.lut.ndim != 2:
            raise ValueError("lut must be a 2-D int64 array")
        if self.bias is not None and (self.bias.dtype != np.int64 or self.bias.ndim != 1):
            raise ValueError("bias must be a 1-D int64 array")

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))

    @property
    def words(self) -> int:
        if self.channel_bits is None:
            return packed_words(self.count, self.bits)
        return sum(row_words(self.count // self.shape[0], self.channel_bits))

    def row_bits(self) -> tuple[int, ...]:
        """Each output channel's width."""
        return self.channel_bits or (self.bits,) * self.shape[0]

    @property
    def mean_bits(self) -> float:
        """Bits per weight: the channel widths' mean (every channel holds as many weights)."""
        return sum(self.row_bits()) / len(self.row_bits()) if self.shape[0] else float(self.bits)

    def codes(self) -> np.ndarray:
        """Codes as uint8 shaped ``shape`` (unpacked if needed)."""
        if not self.packed:
            return self.data
        if self.channel_bits is not None:
            per_row = self.count // self.shape[0]
            return unpack_rows(self.data, self.channel_bits, per_row).reshape(self.shape)
        return unpack_codes(self.data, self.bits, self.count).reshape(self.shape)

    def pack(self) -> Weights:
        if self.packed:
            return self
        cb = self.channel_bits
        words = pack_codes(self.data, self.bits) if cb is None else pack_rows(self.data, cb)
        return replace(self, data=words, packed=True)

    def at_widest(self) -> Weights:
        """The same layer with every channel stored at ``bits`` (flat layout, exact: a code
        below ``2^b_c`` is also below ``2^bits``), packed as ``self`` is. For kernels that
        take one width per layer; it stores more words than the per-channel layout."""
        if self.channel_bits is None:
            return self
        flat = replace(self, data=self.codes(), packed=False, channel_bits=None)
        return flat.pack() if self.packed else flat

    def check(self) -> None:
        """LUT and bias sizes and magnitudes, each channel's codes within its width, packed
        padding zero (raises ValueError with the rule broken)."""
        levels = 1 << self.bits
        if self.lut.shape[1] != levels or self.lut.shape[0] not in (1, self.shape[0]):
            raise ValueError(
                f"lut is {list(self.lut.shape)}, must be [1 or {self.shape[0]}, {levels}] "
                f"for {self.bits}-bit codes"
            )
        # min/max, not abs: abs(int64 min) wraps to a negative number
        if (
            self.lut.size
            and not -LUT_LIMIT < int(self.lut.min()) <= int(self.lut.max()) < LUT_LIMIT
        ):
            raise ValueError("lut entries must fit in 32 bits")
        b = self.bias
        if b is not None:
            if b.shape != (self.shape[0],):
                raise ValueError(f"bias has {b.shape[0]} entries for {self.shape[0]} channels")
            if b.size and not -(1 << 62) < int(b.min()) <= int(b.max()) < 1 << 62:
                raise ValueError("bias entries must fit in 62 bits")
        if self.packed:
            # A packed code cannot exceed its row's width; stray bits can only be padding.
            ok = (
                padding_is_zero(self.data, self.bits, self.count)
                if self.channel_bits is None
                else rows_padding_is_zero(self.data, self.channel_bits, self.count // self.shape[0])
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
            c = int(bad[0])
            where = "" if self.channel_bits is None else f" in channel {c}"
            raise ValueError(f"a code is {int(peaks[c])}, beyond {int(widths[c])}-bit codes{where}")

    def decoded(self) -> np.ndarray:
        """Integer weight values ``LUT[channel, code]`` shaped ``shape`` (int64)."""
        codes = self.codes().reshape(self.shape[0], -1).astype(np.int64)
        rows = self.lut if self.lut.shape[0] == self.shape[0] else self.lut[[0] * self.shape[0]]
        return np.take_along_axis(rows, codes, axis=1).reshape(self.shape)


@dataclass(frozen=True, eq=False)
class Node:
    name: str
    op: Op
    inputs: tuple[str, ...]
    output: TensorInfo
    weights: Weights | None = None
    requant: Requant | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a node needs a non-empty string name")
        if not all(isinstance(t, str) for t in self.inputs):
            raise ValueError(f"node {self.name}: input names must be strings")

    @property
    def kind(self) -> str:
        return self.op.kind


@dataclass(frozen=True)
class InputQuant:
    """How float inputs become the graph's integer input: ``q = clip(round((x - lo) / step),
    0, 2^bits - 1) + zero`` in float32, as the trained model's input quantizer does."""

    bits: int
    lo: float
    step: float
    zero: int

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            raise ValueError(f"input quantizer bits must be 1..16, got {self.bits!r}")
        if not (math.isfinite(self.step) and self.step > 0 and math.isfinite(self.lo)):
            raise ValueError("input quantizer needs a finite lo and a finite step > 0")
        if not isinstance(self.zero, int):
            raise ValueError("input quantizer zero must be an integer")


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    input: TensorInfo
    input_quant: InputQuant
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    metadata: tuple[tuple[str, str], ...] = field(default=())

    def tensors(self) -> dict[str, TensorInfo]:
        out = {self.input.name: self.input}
        out.update((n.output.name, n.output) for n in self.nodes)
        return out

    def weighted(self) -> Iterator[Node]:
        return (n for n in self.nodes if n.weights is not None)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def replace_nodes(self, nodes: tuple[Node, ...] | list[Node]) -> Graph:
        return Graph(
            self.name, self.input, self.input_quant, tuple(nodes), self.outputs, self.metadata
        )

    def meta(self) -> dict[str, str]:
        return dict(self.metadata)
