"""What the QONNX importer knows about each tensor of the model it reads.

Every real number is an exact :class:`~fractions.Fraction` (a float32 scale converts to one
exactly), so deciding whether a rescale is an integer multiplier times 2^-k is a fact, not a
tolerance. A tensor is one of:

- :class:`QConst`: a constant under a ``Quant`` (weights, biases): integers and their scale;
- :class:`Act`: an integer tensor already in the IR (``real = int * unit``);
- :class:`Lin`: an exact affine combination of IR tensors not yet requantized (a Conv/Gemm
  output, a residual sum, their ReLU/Clip bounds), emitted once its consumer says where it
  lands (:mod:`qcompile.interop.qonnx_emit`).

>>> dyadic(Fraction(3, 8)), dyadic(Fraction(1, 3))
((3, 3), None)
>>> unit_gcd([Fraction(1, 4), Fraction(3, 8)])
Fraction(1, 8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from qcompile.ir.graph import Conv2d, Dense
from qcompile.ir.types import TensorInfo


def dyadic(r: Fraction) -> tuple[int, int] | None:
    """``(m, k)`` with ``r = m / 2^k`` (k >= 0, smallest), or None if ``r`` is not one."""
    d = r.denominator
    if d & (d - 1):
        return None
    return r.numerator, d.bit_length() - 1


def unit_gcd(units: list[Fraction]) -> Fraction:
    """The largest unit every one of ``units`` is an integer multiple of."""
    den = math.lcm(*(u.denominator for u in units))
    return Fraction(math.gcd(*(int(u * den) for u in units)), den)


def fractions(a: np.ndarray) -> list[Fraction]:
    """Exact fractions of a float array's values (float32 and float64 convert exactly)."""
    return [Fraction(float(v)) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


@dataclass(frozen=True)
class Act:
    """An IR integer tensor of exact unit ``unit`` (``info.unit`` as a float)."""

    info: TensorInfo
    unit: Fraction

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape


@dataclass(frozen=True, eq=False)
class QConst:
    """``real = ints * scale`` for a constant under a Quant (``scale`` float64, broadcast
    over ``ints``); ``bits``/``signed``/``narrow``/``zero`` as the Quant declared them."""

    ints: np.ndarray
    scale: np.ndarray
    bits: int
    signed: bool
    narrow: bool
    zero: np.ndarray
    node: str


@dataclass(frozen=True, eq=False)
class Term:
    """``sum(w * src)`` of one weight layer, real weights ``scale[c] * w[c]``: ``w`` int64
    ``[C, ...]``, codes ``w - zero[c]`` of ``bits`` each (``step`` 2 for +-1 levels)."""

    name: str
    src: Act
    op: Conv2d | Dense
    w: np.ndarray
    scale: tuple[Fraction, ...]
    bits: int
    step: int
    zero: np.ndarray

    def units(self) -> list[Fraction]:
        """Each output channel's accumulator unit."""
        return [self.src.unit * s for s in self.scale]


@dataclass(frozen=True)
class Scaled:
    """``coef * src`` (an identity path into a sum)."""

    src: Act
    coef: Fraction


@dataclass(frozen=True, eq=False)
class Lin:
    """``sum(terms) + bias[c]``, clamped to ``[lo, hi]`` (None: unbounded) in real units."""

    terms: tuple[Term | Scaled, ...]
    bias: tuple[Fraction, ...]
    shape: tuple[int, ...]
    name: str
    lo: Fraction | None = None
    hi: Fraction | None = None

    @property
    def clamped(self) -> bool:
        return self.lo is not None or self.hi is not None

    def bounded(self, lo: Fraction | None, hi: Fraction | None) -> Lin:
        """This value clamped further to ``[lo, hi]``."""
        new_lo = lo if self.lo is None else self.lo if lo is None else max(lo, self.lo)
        new_hi = hi if self.hi is None else self.hi if hi is None else min(hi, self.hi)
        return replace(self, lo=new_lo, hi=new_hi)

    def __add__(self, other: Lin) -> Lin:
        bias = tuple(a + b for a, b in zip(self.bias, other.bias, strict=True))
        return Lin(self.terms + other.terms, bias, self.shape, self.name)


def as_lin(v: Act | Lin, name: str) -> Lin:
    if isinstance(v, Lin):
        return v
    return Lin((Scaled(v, Fraction(1)),), (Fraction(0),) * v.shape[0], v.shape, name)


Value = Act | Lin | QConst | np.ndarray
