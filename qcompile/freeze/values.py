"""What freeze tracks for each value of the traced network.

A value is either :class:`Int`, a tensor already in the IR, or :class:`Pending`, a real
affine combination of IR tensors not yet turned into integers: weight layers, the BatchNorm
after them, residual adds. Pending values wait until their consumer (an activation
quantizer, a pool, the output) says which scale they must land on; then they are emitted
with every scale folded into integer LUTs, biases and multipliers, rounded once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from qcompile.ir.graph import Conv2d, Dense
from qcompile.ir.types import TensorInfo


@dataclass(frozen=True)
class Int:
    info: TensorInfo


@dataclass(frozen=True, eq=False)
class Grid:
    """Uniform levels on an integer grid: ``level[c, k] = scale[c] * (step * k + zero[c])``
    (``scale`` float64 ``[C]``, ``zero`` int64 ``[C]``)."""

    scale: np.ndarray
    step: int
    zero: np.ndarray


@dataclass(frozen=True, eq=False)
class LinearTerm:
    """``conv/dense(src, weights)``: real weights ``levels[c, codes]`` (``[C, 2^bits]``, BN
    scales already multiplied in); ``grid`` holds them as integers times a per-channel scale
    when the quantizer's levels are uniform (None: non-uniform, freeze picks a table)."""

    name: str
    src: Int
    op: Conv2d | Dense
    bits: int
    codes: np.ndarray
    levels: np.ndarray
    grid: Grid | None
    channel_bits: tuple[int, ...] | None = None


@dataclass(frozen=True, eq=False)
class ScaledTerm:
    """``coef * src``: an identity shortcut."""

    src: Int
    coef: float


@dataclass(frozen=True, eq=False)
class Pending:
    terms: tuple[LinearTerm | ScaledTerm, ...]
    bias: np.ndarray
    shape: tuple[int, ...]

    def scaled(self, gain: np.ndarray, shift: np.ndarray) -> Pending:
        """``gain[c] * self + shift[c]`` per channel: an eval-mode BatchNorm folded in."""
        terms: list[LinearTerm | ScaledTerm] = []
        for t in self.terms:
            if isinstance(t, ScaledTerm):
                if not np.all(gain == gain[0]):
                    raise ValueError("a BatchNorm after a residual add cannot be folded")
                terms.append(ScaledTerm(t.src, t.coef * float(gain[0])))
            else:
                grid = t.grid and replace(t.grid, scale=t.grid.scale * gain)
                terms.append(replace(t, levels=t.levels * gain[:, None], grid=grid))
        return Pending(tuple(terms), self.bias * gain + shift, self.shape)

    def __add__(self, other: Pending) -> Pending:
        return Pending(self.terms + other.terms, self.bias + other.bias, self.shape)


Value = Int | Pending


def as_pending(v: Value) -> Pending:
    if isinstance(v, Pending):
        return v
    return Pending((ScaledTerm(v, 1.0),), np.zeros(v.info.shape[0]), v.info.shape)
