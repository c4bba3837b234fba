"""Element-wise ops: residual add, clip (a ReLU on integers), flatten."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from qcompile.ir.ops.base import Op, Range, Shape, attr_ints

if TYPE_CHECKING:
    from qcompile.ir.graph import Node


@dataclass(frozen=True)
class Add(Op):
    """``acc = sum_i x_i * multipliers[i]``: integer multipliers align the inputs' scales."""

    kind: ClassVar[str] = "add"
    requantized: ClassVar[bool] = True
    arity: ClassVar[int | None] = None
    multipliers: tuple[int, ...] = (1, 1)

    def __post_init__(self) -> None:
        if len(self.multipliers) < 2 or any(
            not isinstance(m, int) or abs(m) >= 1 << 31 for m in self.multipliers
        ):
            raise ValueError("add needs a 32-bit integer multiplier for each of >= 2 inputs")

    def infer_shape(self, node: Node, inputs: list[Shape]) -> Shape:
        if len(inputs) != len(self.multipliers):
            raise ValueError(f"takes {len(self.multipliers)} inputs, got {len(inputs)}")
        if any(s != inputs[0] for s in inputs):
            raise ValueError(f"add inputs have different shapes {inputs}")
        return inputs[0]

    def acc_range(self, node: Node, inputs: list[Range]) -> Range:
        terms = [sorted((a * m, b * m)) for (a, b), m in zip(inputs, self.multipliers, strict=True)]
        return sum(t[0] for t in terms), sum(t[1] for t in terms)

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        return sum(a * m for a, m in zip(xs, self.multipliers, strict=True))  # type: ignore[return-value]

    def attrs(self) -> dict[str, Any]:
        return {"multipliers": list(self.multipliers)}

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> Add:
        return cls(attr_ints(a, "multipliers"))


@dataclass(frozen=True)
class Clip(Op):
    """``acc = x``: the requantization alone (ReLU/ReLU6 bounds, a rescale)."""

    kind: ClassVar[str] = "clip"
    requantized: ClassVar[bool] = True

    def acc_range(self, node: Node, inputs: list[Range]) -> Range:
        return inputs[0]

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        return xs[0]


@dataclass(frozen=True)
class Flatten(Op):
    """``[C, H, W]`` -> ``[C*H*W]`` in C order."""

    kind: ClassVar[str] = "flatten"

    def infer_shape(self, node: Node, inputs: list[Shape]) -> Shape:
        return (math.prod(inputs[0]),)

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        return xs[0].reshape(xs[0].shape[0], -1)
