"""The op interface: everything one kind of IR node means lives in its op class.

An op class is a frozen dataclass of the node's attributes that also holds its contract:

- ``infer_shape``: per-sample output shape from the input shapes;
- ``acc_range``: the exact integer range of the accumulator before requantization, for
  inputs anywhere in their QType ranges (what sizes accumulators and proves they cannot
  wrap); only ops that requantize (``requantized``) have one;
- ``execute``: the numpy int64 semantics (the accumulator for requantizing ops, the output
  otherwise): :class:`qcompile.sim.Simulator` is just this method applied in order;
- ``attrs`` / ``from_attrs``: the node attributes in a .qir file.

Class variables say what a node of the op carries: ``weighted`` (codes, levels, bias),
``requantized`` (a :class:`~qcompile.ir.graph.Requant`), ``arity`` (inputs; None: two or
more). Backends map op classes to their kernels in one table each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from qcompile.ir.graph import Node

Shape = tuple[int, ...]
Range = tuple[int, int]
Pair = tuple[int, int]


class Op:
    """Base of every op class (see the module docstring)."""

    kind: ClassVar[str]
    weighted: ClassVar[bool] = False
    requantized: ClassVar[bool] = False
    arity: ClassVar[int | None] = 1

    def infer_shape(self, node: Node, inputs: list[Shape]) -> Shape:
        return inputs[0]

    def acc_range(self, node: Node, inputs: list[Range]) -> Range:
        raise TypeError(f"{self.kind} does not accumulate")

    def execute(
        self, node: Node, xs: list[np.ndarray], weights: np.ndarray | None, exact: bool
    ) -> np.ndarray:
        """int64 batches ``xs`` (``[N, *shape]``) -> the accumulator (requantizing ops) or
        the output. ``weights``: the node's decoded integer weights; ``exact``: float64
        BLAS is proven exact for this node (:mod:`qcompile.ir.ops.kernels`)."""
        raise NotImplementedError

    def attrs(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> Op:
        return cls()


def check_pair(name: str, v: Pair, low: int) -> None:
    if len(v) != 2 or any(not isinstance(x, int) or x < low for x in v):
        raise ValueError(f"{name} must be two integers >= {low}, got {v!r}")


def window(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a sliding window."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(f"a {kernel}-wide window does not fit an input of {size} (padding {pad})")
    return out


def attr_int(a: Mapping[str, Any], key: str) -> int:
    """Integer attribute ``key`` (missing or mistyped: a ValueError naming it)."""
    if key not in a:
        raise ValueError(f"missing attribute '{key}'")
    v = a[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"attribute '{key}' must be an integer, got {v!r}")
    return v


def attr_ints(a: Mapping[str, Any], key: str) -> tuple[int, ...]:
    if key not in a:
        raise ValueError(f"missing attribute '{key}'")
    vs = a[key]
    if not isinstance(vs, list | tuple) or any(
        not isinstance(v, int) or isinstance(v, bool) for v in vs
    ):
        raise ValueError(f"attribute '{key}' must be a list of integers, got {vs!r}")
    return tuple(vs)


def spatial(shape: Shape, kind: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{kind} needs a [C, H, W] input, got shape {shape}")
    return shape[0], shape[1], shape[2]
