"""The frozen model in PyTorch: float64 emulation of the IR's integer arithmetic.

Independent of the numpy simulator (torch's conv kernels instead of im2col matmuls). Sums are
float64, exact because every value is an integer below 2^53 in magnitude, which each node
asserts; the requantization product is computed in int64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qcompile.ir.graph import Graph, Node, Requant
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool, Op

EXACT = float(2**53)


def _exact(t: Tensor, node: Node) -> Tensor:
    if t.numel() and float(t.abs().max()) >= EXACT:
        raise ArithmeticError(f"node {node.name}: a value reached 2^53; float64 is inexact")
    return t


def _requantize(acc: Tensor, r: Requant, node: Node) -> Tensor:
    """The requantization in int64 (the product may pass 2^53); the accumulator, a float64
    sum below 2^53, converts exactly."""
    m = torch.from_numpy(r.channel_view(r.multipliers, acc.dim()))
    b = torch.from_numpy(r.channel_view(r.biases, acc.dim()))
    v = acc.to(torch.int64) * m + b + r.rounding
    if r.shift:
        v = v >> r.shift  # arithmetic: floors, as the IR says
    return v.clamp_(r.lo, r.hi).to(torch.float64)


class FrozenTorch:
    """``FrozenTorch(graph)(x_int)`` -> output integers (int64 numpy) for int inputs."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.weights = {
            n.name: torch.from_numpy(n.weights.decoded().astype(np.float64))
            for n in graph.nodes
            if n.weights is not None
        }

    @torch.no_grad()
    def __call__(self, x: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
        env = {self.graph.input.name: torch.from_numpy(np.asarray(x, dtype=np.float64))}
        for node in self.graph.nodes:
            env[node.output.name] = self._node(node, [env[t] for t in node.inputs])
        names = env if keep else self.graph.outputs
        return {t: env[t].numpy().astype(np.int64) for t in names}

    def _node(self, node: Node, xs: list[Tensor]) -> Tensor:
        value = KERNELS[type(node.op)](self, node, xs)
        if node.requant is None:
            return value
        return _requantize(_exact(value, node), node.requant, node)

    def _conv2d(self, node: Node, xs: list[Tensor]) -> Tensor:
        op = node.op
        assert isinstance(op, Conv2d)
        w = self.weights[node.name]
        return F.conv2d(xs[0], w, None, op.stride, op.padding, op.dilation, op.groups)

    def _dense(self, node: Node, xs: list[Tensor]) -> Tensor:
        return F.linear(xs[0], self.weights[node.name])


def _maxpool(ref: FrozenTorch, node: Node, xs: list[Tensor]) -> Tensor:
    op = node.op
    assert isinstance(op, MaxPool)
    return F.max_pool2d(xs[0], op.kernel, op.stride, op.padding)  # pads with -inf


def _sumpool(ref: FrozenTorch, node: Node, xs: list[Tensor]) -> Tensor:
    op = node.op
    assert isinstance(op, AvgPool)
    return F.avg_pool2d(xs[0], op.kernel, op.stride, op.padding, divisor_override=1)


def _add(ref: FrozenTorch, node: Node, xs: list[Tensor]) -> Tensor:
    op = node.op
    assert isinstance(op, Add)
    return sum(a * m for a, m in zip(xs, op.multipliers, strict=True))  # type: ignore[return-value]


# The reference's kernel for each op class: torch's own ops, independent of the numpy ones.
KERNELS: dict[type[Op], Callable[[FrozenTorch, Node, list[Tensor]], Tensor]] = {
    Conv2d: FrozenTorch._conv2d,
    Dense: FrozenTorch._dense,
    MaxPool: _maxpool,
    AvgPool: _sumpool,
    Add: _add,
    Clip: lambda ref, node, xs: xs[0],
    Flatten: lambda ref, node, xs: xs[0].flatten(1),
}
