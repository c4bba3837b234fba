"""Integer types and tensor descriptions of the frozen IR.

A tensor between layers holds integers ``q`` of a :class:`QType`; its real value is
``q * 2**-frac * scale``. ``scale`` is 1 for fixed-point tensors (the network's output
logits, residual sums) and the activation quantizer's step for activation codes; it never
enters the integer arithmetic, only the reading of results and the quantizing of inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_BITS = 64


@dataclass(frozen=True)
class QType:
    """``bits``-wide two's-complement (``signed``) or unsigned integers, ``frac`` fraction bits.

    >>> QType(4, signed=False).range
    (0, 15)
    >>> QType(8, signed=True, frac=3).range
    (-128, 127)
    """

    bits: int
    signed: bool
    frac: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"QType bits must be 1..{MAX_BITS}, got {self.bits!r}")
        if self.signed and self.bits < 2:
            raise ValueError("a signed QType needs at least 2 bits")
        if not isinstance(self.frac, int) or abs(self.frac) > MAX_BITS:
            raise ValueError(f"QType frac must be an integer within +-{MAX_BITS}")

    @property
    def range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    def contains(self, lo: int, hi: int) -> bool:
        a, b = self.range
        return a <= lo <= hi <= b

    @staticmethod
    def fitting(lo: int, hi: int, frac: int = 0) -> QType:
        """The narrowest QType holding every integer in ``[lo, hi]``."""
        if lo >= 0:
            return QType(max(1, int(hi).bit_length()), False, frac)
        bits = max(1, int(-lo - 1).bit_length(), int(max(hi, 0)).bit_length()) + 1
        return QType(bits, True, frac)

    def __str__(self) -> str:
        kind = "int" if self.signed else "uint"
        return f"{kind}{self.bits}" + (f".f{self.frac}" if self.frac else "")


@dataclass(frozen=True)
class TensorInfo:
    """A named tensor: per-sample ``shape`` (no batch dimension), integer type, real scale."""

    name: str
    shape: tuple[int, ...]
    qtype: QType
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a tensor needs a non-empty string name")
        if not self.shape or any(not isinstance(d, int) or d < 1 for d in self.shape):
            raise ValueError(f"tensor {self.name}: bad shape {self.shape!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"tensor {self.name}: scale must be finite and > 0")

    @property
    def unit(self) -> float:
        """Real value of one integer step."""
        return math.ldexp(self.scale, -self.qtype.frac)
