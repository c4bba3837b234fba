"""The frozen integer IR: typed, immutable dataclasses.

A :class:`Graph` is a list of :class:`Node` in topological order over one quantized input.
Every node produces one tensor (:class:`TensorInfo`); what it computes is fixed by its op
(one of the attribute classes below), its :class:`Weights` and its :class:`Requant`:

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
from typing import ClassVar

import numpy as np

from qcompile.ir.packing import (
    pack_codes,
    pack_rows,
    packed_words,
    row_words,
    unpack_codes,
    unpack_rows,
)
from qcompile.ir.types import TensorInfo

Pair = tuple[int, int]


def _pair(name: str, v: Pair, low: int) -> None:
    if len(v) != 2 or any(not isinstance(x, int) or x < low for x in v):
        raise ValueError(f"{name} must be two integers >= {low}, got {v!r}")


@dataclass(frozen=True)
class Conv2d:
    kind: ClassVar[str] = "conv2d"
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        _pair("stride", self.stride, 1)
        _pair("padding", self.padding, 0)
        _pair("dilation", self.dilation, 1)
        if not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups!r}")


@dataclass(frozen=True)
class Dense:
    kind: ClassVar[str] = "dense"


@dataclass(frozen=True)
class Add:
    """Sum of the inputs, each times an integer multiplier (aligns their scales)."""

    kind: ClassVar[str] = "add"
    multipliers: tuple[int, ...] = (1, 1)

    def __post_init__(self) -> None:
        if len(self.multipliers) < 2 or any(
            not isinstance(m, int) or abs(m) >= 1 << 31 for m in self.multipliers
        ):
            raise ValueError("add needs a 32-bit integer multiplier for each of >= 2 inputs")


@dataclass(frozen=True)
class Pool:
    kernel: Pair
    stride: Pair
    padding: Pair = (0, 0)

    def __post_init__(self) -> None:
        _pair("kernel", self.kernel, 1)
        _pair("stride", self.stride, 1)
        _pair("padding", self.padding, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel, strict=True)):
            raise ValueError("pool padding must be at most half the kernel")


@dataclass(frozen=True)
class MaxPool(Pool):
    kind: ClassVar[str] = "maxpool"


@dataclass(frozen=True)
class AvgPool(Pool):
    kind: ClassVar[str] = "avgpool"


@dataclass(frozen=True)
class Clip:
    kind: ClassVar[str] = "clip"


@dataclass(frozen=True)
class Flatten:
    kind: ClassVar[str] = "flatten"


Op = Conv2d | Dense | Add | MaxPool | AvgPool | Clip | Flatten
OPS: dict[str, type] = {c.kind: c for c in (Conv2d, Dense, Add, MaxPool, AvgPool, Clip, Flatten)}
WEIGHTED = ("conv2d", "dense")
REQUANTIZED = ("conv2d", "dense", "add", "avgpool", "clip")


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
