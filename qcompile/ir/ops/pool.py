"""Window ops over ``[C, H, W]``: max pooling (pass-through type) and average pooling (the
window sum; the 1/N lives in the output's scale)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from qcompile.ir.ops import kernels as K
from qcompile.ir.ops.base import Op, Pair, Range, Shape, attr_ints, check_pair, spatial, window

if TYPE_CHECKING:
    from qcompile.ir.graph import Node


@dataclass(frozen=True)
class Pool(Op):
    kernel: Pair
    stride: Pair
    padding: Pair = (0, 0)

    def __post_init__(self) -> None:
        check_pair("kernel", self.kernel, 1)
        check_pair("stride", self.stride, 1)
        check_pair("padding", self.padding, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel, strict=True)):
            raise ValueError("pool padding must be at most half the kernel")

    def infer_shape(self, node: Node, inputs: list[Shape]) -> Shape:
        c, h, w = spatial(inputs[0], self.kind)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return c, window(h, kh, sh, ph), window(w, kw, sw, pw)

    def attrs(self) -> dict[str, Any]:
        return {
            "kernel": list(self.kernel),
            "strides": list(self.stride),
            "pads": list(self.padding),
        }

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> Pool:
        return cls(attr_ints(a, "kernel"), attr_ints(a, "strides"), attr_ints(a, "pads"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class MaxPool(Pool):
    """``y`` = the window's maximum; padding never wins."""

    kind: ClassVar[str] = "maxpool"

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        fill = node.output.qtype.range[0]
        return K.pool(xs[0], self.kernel, self.stride, self.padding, fill, "max")


@dataclass(frozen=True)
class AvgPool(Pool):
    """``acc`` = the window's sum with zero padding (requantized like any accumulator)."""

    kind: ClassVar[str] = "avgpool"
    requantized: ClassVar[bool] = True

    @property
    def size(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def acc_range(self, node: Node, inputs: list[Range]) -> Range:
        lo, hi = inputs[0]
        n = self.size
        return min(0, n * lo), max(0, n * hi)  # zero padding is a term too

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        return K.pool(xs[0], self.kernel, self.stride, self.padding, 0, "sum")
