"""The frozen integer IR: typed, immutable dataclasses.

A :class:`Graph` is a list of :class:`Node` in topological order over one quantized input.
Every node produces one tensor (:class:`TensorInfo`); what it computes is fixed by its op
(an op class of :mod:`qcompile.ir.ops`, which holds that op's contract), its
:class:`Weights` and its :class:`Requant`:

    conv2d / dense   acc = sum(x * w[c, code])               (w: int8, see weights.py)
    add              acc = sum_i x_i * multipliers[i]
    avgpool          acc = sum of the window (zero padding); the 1/N lives in the scale
    clip             acc = x
    then             y = clip((acc * m[c] + b[c] + 2^(shift-1)) >> shift, lo, hi)

    maxpool          y = max of the window (padding never wins)
    flatten          y = x reshaped to one dimension

Construction checks each object on its own; :func:`qcompile.ir.verify` checks the graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from qcompile.ir.ops import OPS, Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool, Pool  # noqa: F401 (re-exported)
from qcompile.ir.types import TensorInfo
from qcompile.ir.weights import Affine, Table, Weights  # noqa: F401 (re-exported)

BIAS_LIMIT = 1 << 61  # a requant bias stays far inside int64 while bounds are computed

Op = Conv2d | Dense | Add | MaxPool | AvgPool | Clip | Flatten
WEIGHTED = tuple(k for k, c in OPS.items() if c.weighted)
REQUANTIZED = tuple(k for k, c in OPS.items() if c.requantized)


@dataclass(frozen=True)
class Requant:
    """``y = clip((acc * m + b + round) >> shift, lo, hi)``, round = ``2^(shift-1)`` (round
    half up; 0 when shift is 0). ``m`` = ``multiplier``: one integer for the whole tensor, or
    a tuple of one per output channel (dimension 0 of the node's per-sample output); ``b`` =
    ``bias``: None, or one integer per output channel, in units of ``2^-shift`` output steps
    (added after the multiplier, so its rounding error is ``2^-shift`` of an output step, and
    it is the post-adder of a DSP's multiply-add).

    ``acc_bits`` is the signed width of the accumulator ``acc`` the node was built for; the
    verifier proves no input in range can exceed it, and that ``acc * m + b + round`` fits
    int64.
    """

    shift: int
    lo: int
    hi: int
    acc_bits: int
    multiplier: int | tuple[int, ...] = 1
    bias: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.shift, int) or not 0 <= self.shift <= 62:
            raise ValueError(f"requant shift must be 0..62, got {self.shift!r}")
        if not (isinstance(self.lo, int) and isinstance(self.hi, int)) or self.lo > self.hi:
            raise ValueError(f"requant clip needs integers lo <= hi, got {self.lo!r}..{self.hi!r}")
        if not isinstance(self.acc_bits, int) or not 2 <= self.acc_bits <= 64:
            raise ValueError(f"acc_bits must be 2..64, got {self.acc_bits!r}")
        m = self.multiplier
        if isinstance(m, tuple):
            if not m or any(not isinstance(v, int) or abs(v) >= 1 << 31 for v in m):
                raise ValueError("per-channel requant multipliers must be integers within 32 bits")
        elif not isinstance(m, int) or not 0 < abs(m) < 1 << 31:
            raise ValueError("requant multiplier must be a non-zero integer within 32 bits")
        b = self.bias
        if b is not None and (
            not isinstance(b, tuple)
            or not b
            or any(not isinstance(v, int) or abs(v) >= BIAS_LIMIT for v in b)
        ):
            raise ValueError("requant bias must be integers within 62 bits, one per channel")

    @property
    def per_channel(self) -> bool:
        return isinstance(self.multiplier, tuple)

    @property
    def multipliers(self) -> np.ndarray:
        """int64 ``[C]`` (per channel) or ``[1]``."""
        m = self.multiplier
        return np.array(m if isinstance(m, tuple) else (m,), dtype=np.int64)

    @property
    def rounding(self) -> int:
        return 1 << (self.shift - 1) if self.shift else 0

    @property
    def biases(self) -> np.ndarray:
        """int64 ``[C]``, or ``[1]`` zero without a bias."""
        return np.array(self.bias or (0,), dtype=np.int64)

    def channel_view(self, values: np.ndarray, ndim: int) -> np.ndarray:
        """Per-channel ``values`` shaped to broadcast over a ``[N, C, ...]`` batch."""
        return values.reshape(1, -1, *([1] * (ndim - 2))) if values.size > 1 else values.reshape(())

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """``clip((acc * m + b + 2^(shift-1)) >> shift, lo, hi)``; ``>>`` floors, as in
        hardware."""
        if self.multiplier != 1:
            acc = acc * self.channel_view(self.multipliers, acc.ndim)
        if self.bias is not None:
            acc = acc + self.channel_view(self.biases, acc.ndim)
        if self.shift:
            acc = (acc + self.rounding) >> self.shift
        return np.clip(acc, self.lo, self.hi)


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

    def macs(self) -> int:
        """Multiplies by a weight in one inference: each weight once per output pixel."""
        if self.weights is None:
            return 0
        pixels = math.prod(self.output.shape[1:]) if len(self.output.shape) == 3 else 1
        return self.weights.count * pixels


@dataclass(frozen=True)
class InputQuant:
    """How float inputs become the graph's integer input: ``q = clip(round((x - lo) / step),
    0, 2^bits - 1) + zero`` in float32, as the trained model's input quantizer does.
    ``signed`` codes clip to ``[-2^(bits-1), 2^(bits-1) - 1]`` instead (a signed QONNX/Brevitas
    input quantizer: ``lo`` 0, ``round(x / step)``)."""

    bits: int
    lo: float
    step: float
    zero: int
    signed: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            raise ValueError(f"input quantizer bits must be 1..16, got {self.bits!r}")
        if not (math.isfinite(self.step) and self.step > 0 and math.isfinite(self.lo)):
            raise ValueError("input quantizer needs a finite lo and a finite step > 0")
        if not isinstance(self.zero, int):
            raise ValueError("input quantizer zero must be an integer")
        if not isinstance(self.signed, bool) or (self.signed and self.bits < 2):
            raise ValueError("a signed input quantizer needs a bool signed and 2+ bits")

    @property
    def codes(self) -> tuple[int, int]:
        """Range of the codes before ``zero`` is added."""
        lo = -(1 << (self.bits - 1)) if self.signed else 0
        return lo, lo + (1 << self.bits) - 1


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

    def macs(self) -> int:
        """Multiplies by a weight in one inference: each weight once per output pixel."""
        return sum(n.macs() for n in self.nodes)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def replace_nodes(self, nodes: tuple[Node, ...] | list[Node]) -> Graph:
        return Graph(
            self.name, self.input, self.input_quant, tuple(nodes), self.outputs, self.metadata
        )

    def meta(self) -> dict[str, str]:
        return dict(self.metadata)
