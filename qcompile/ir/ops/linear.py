"""Weighted ops: ``acc = sum(x * w)`` with integer weights decoded from codes (the bias is
added by the node's requantization)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from qcompile.ir.ops import kernels as K
from qcompile.ir.ops.base import Op, Pair, Range, Shape, attr_int, attr_ints, check_pair, window

if TYPE_CHECKING:
    from qcompile.ir.graph import Node


class Linear(Op):
    """Shared contract of conv2d and dense: the accumulator's exact range from the decoded
    weights' per-channel sums of positive and negative values."""

    weighted: ClassVar[bool] = True
    requantized: ClassVar[bool] = True

    def acc_range(self, node: Node, inputs: list[Range]) -> Range:
        ranges = self.channel_ranges(node, inputs)
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def channel_ranges(self, node: Node, inputs: list[Range]) -> list[Range]:
        """Exact accumulator range of each output channel (Python ints: no overflow)."""
        lo, hi = inputs[0]
        w = node.weights
        assert w is not None
        dec = w.decoded().reshape(w.shape[0], -1)
        pos = np.where(dec > 0, dec, 0).sum(axis=1)
        neg = np.where(dec < 0, dec, 0).sum(axis=1)
        # Padding contributes 0, inside [lo, hi] for every QType (all ranges contain 0).
        return [
            (int(p) * lo + int(n) * hi, int(p) * hi + int(n) * lo)
            for p, n in zip(pos, neg, strict=True)
        ]


@dataclass(frozen=True)
class Conv2d(Linear):
    kind: ClassVar[str] = "conv2d"
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        check_pair("stride", self.stride, 1)
        check_pair("padding", self.padding, 0)
        check_pair("dilation", self.dilation, 1)
        if not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups!r}")

    def infer_shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x, w = inputs[0], node.weights
        if len(x) != 3:
            raise ValueError(f"conv2d needs a [C, H, W] input, got shape {x}")
        if w is None or len(w.shape) != 4:
            raise ValueError("conv2d weights must be [out, in/groups, kh, kw]")
        c, h, wd = x
        o, ci, kh, kw = w.shape
        if c % self.groups or o % self.groups or ci * self.groups != c:
            raise ValueError(
                f"conv2d weights {w.shape} do not fit {c} input channels in {self.groups} groups"
            )
        return (
            o,
            window(h, kh, self.stride[0], self.padding[0], self.dilation[0]),
            window(wd, kw, self.stride[1], self.padding[1], self.dilation[1]),
        )

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        assert node.weights is not None and weights is not None
        return K.conv2d(
            xs[0], weights, self.stride, self.padding, self.dilation, self.groups, exact
        )

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    def attrs(self) -> dict[str, Any]:
        return {
            "strides": list(self.stride),
            "pads": list(self.padding),
            "dilations": list(self.dilation),
            "group": self.groups,
        }

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> Conv2d:
        return cls(
            attr_ints(a, "strides"),  # type: ignore[arg-type]
            attr_ints(a, "pads"),  # type: ignore[arg-type]
            attr_ints(a, "dilations"),  # type: ignore[arg-type]
            attr_int(a, "group"),
        )


@dataclass(frozen=True)
class Dense(Linear):
    kind: ClassVar[str] = "dense"

    def infer_shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x, w = inputs[0], node.weights
        if len(x) != 1:
            raise ValueError(f"dense needs a flat input, got shape {x}")
        if w is None or len(w.shape) != 2 or w.shape[1] != x[0]:
            raise ValueError(f"dense weights must be [out, {x[0]}]")
        return (w.shape[0],)

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        assert node.weights is not None and weights is not None
        return K.matmul(xs[0], weights.T, exact)


def fan_in(node: Node) -> int:
    """Inputs summed per output of a weighted node."""
    assert node.weights is not None
    return math.prod(node.weights.shape[1:])
