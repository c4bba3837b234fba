"""The quantizer interface shared by weight and activation quantizers.

A quantizer is an ``nn.Module`` whose ``forward`` fake-quantizes (the value a deployed model
would see, with a straight-through gradient) and whose ``encode`` returns the same values as
integer codes plus a lookup table of levels. ``encode(x).decode()`` equals ``forward(x)`` bit
for bit: that identity is what lets freeze turn any quantizer into LUT contents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class IntGrid:
    """Uniform levels as integers times a scale: ``levels[c, k] = scale[c] * (step * k +
    zero[c])``, ``step`` 1 (an integer zero point) or 2 (a half-integer one, symmetric
    levels), ``scale`` and ``zero`` ``[C]`` or ``[1]``. What lets freeze deploy the code itself
    as the integer weight, with no table (the numeric contract's affine levels).

    >>> IntGrid(torch.tensor([0.5]), 2, torch.tensor([-3])).levels(2).tolist()
    [[-1.5, -0.5, 0.5, 1.5]]
    """

    scale: Tensor
    step: int
    zero: Tensor

    def levels(self, bits: int) -> Tensor:
        k = torch.arange(2**bits, dtype=self.scale.dtype, device=self.scale.device)
        ints = self.step * k.reshape(1, -1) + self.zero.reshape(-1, 1).to(self.scale.dtype)
        return self.scale.reshape(-1, 1) * ints


@dataclass(frozen=True)
class Encoded:
    """Integer codes and their levels: ``value = levels[channel, code]``.

    ``levels`` has shape ``[C, 2**bits]`` where ``C`` is the size of dimension 0 of ``codes``
    (per-channel) or 1 (per-tensor). Unused table entries (TWN's fourth level) are 0. ``grid``
    describes uniform levels as integers (None: non-uniform levels, which freeze rounds onto a
    table of int8 entries).

    >>> e = Encoded(bits=1, codes=torch.tensor([[0, 1]]), levels=torch.tensor([[-1.0, 1.0]]))
    >>> e.decode().tolist()
    [[-1.0, 1.0]]
    """

    bits: int
    codes: Tensor
    levels: Tensor
    grid: IntGrid | None = None

    def __post_init__(self) -> None:
        if self.levels.dim() != 2 or self.levels.shape[1] != 2**self.bits:
            raise ValueError(f"levels must be [C, {2**self.bits}], got {tuple(self.levels.shape)}")
        if self.levels.shape[0] not in (1, self.codes.shape[0]):
            raise ValueError("levels must have one row per channel (dim 0 of codes) or one row")

    def decode(self) -> Tensor:
        rows = self.levels.shape[0]
        flat = self.codes.reshape(rows, -1)
        return torch.gather(self.levels, 1, flat).reshape(self.codes.shape)


def channel_rows(x: Tensor, per_channel: bool) -> Tensor:
    """View ``x`` as ``[C, n]`` (per-channel along dim 0) or ``[1, n]`` (per-tensor)."""
    return x.reshape(x.shape[0], -1) if per_channel else x.reshape(1, -1)


def expand_rows(stat: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-row statistic ``[C]`` (or ``[1]``) against a tensor shaped like ``like``."""
    return stat.reshape(-1, *([1] * (like.dim() - 1)))


class Quantizer(nn.Module, ABC):
    """Fake-quantizer with a LUT export.

    Subclasses set ``bits`` (storage bits per code; 32 means "not quantized") and implement
    ``forward`` and ``encode``. ``uniform`` tells whether the levels are an evenly spaced grid.
    """

    bits: int
    uniform: bool = True
    # True when every output is >= 0 and inputs <= 0 get no gradient (PACT): a ReLU in front
    # of such a quantizer changes neither values nor gradients and is skipped. (Unsigned LSQ
    # clamps too, but passes a gradient at exactly 0, where ReLU does not.)
    unsigned: bool = False

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def encode(self, x: Tensor) -> Encoded: ...

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class Identity(Quantizer):
    """No quantization (bits = 32): float training, or the FP member of a DQA/BR mixture."""

    def __init__(self) -> None:
        super().__init__()
        self.bits = 32

    def forward(self, x: Tensor) -> Tensor:
        return x

    def encode(self, x: Tensor) -> Encoded:
        raise ValueError("a float (32-bit) quantizer has no integer codes; quantize to <= 8 bits")
