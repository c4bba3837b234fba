"""The frozen model in PyTorch: float64 emulation of the IR's integer arithmetic.

Independent of the numpy simulator (torch's conv kernels instead of im2col matmuls); exact
because every value is an integer below 2^53 in magnitude, which each node asserts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qcompile.ir.graph import Add, Conv2d, Graph, Node, Pool, Requant

EXACT = float(2**53)


def _exact(t: Tensor, node: Node) -> Tensor:
    if t.numel() and float(t.abs().max()) >= EXACT:
        raise ArithmeticError(f"node {node.name}: a value reached 2^53; float64 is inexact")
    return t


def _requantize(acc: Tensor, r: Requant, node: Node) -> Tensor:
    acc = _exact(acc * r.multiplier + r.rounding, node)
    if r.shift:
        acc = torch.floor(acc * 2.0**-r.shift)  # scaling by 2^-k is exact in float64
    return acc.clamp_(r.lo, r.hi)


class FrozenTorch:
    """``FrozenTorch(graph)(x_int)`` -> output integers (int64 numpy) for int inputs."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.weights = {
            n.name: torch.from_numpy(n.weights.decoded().astype(np.float64))
            for n in graph.nodes
            if n.weights is not None
        }
        self.bias = {
            n.name: torch.from_numpy(n.weights.bias.astype(np.float64))
            for n in graph.nodes
            if n.weights is not None and n.weights.bias is not None
        }

    @torch.no_grad()
    def __call__(self, x: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
        env = {self.graph.input.name: torch.from_numpy(np.asarray(x, dtype=np.float64))}
        for node in self.graph.nodes:
            env[node.output.name] = self._node(node, [env[t] for t in node.inputs])
        names = env if keep else self.graph.outputs
        return {t: env[t].numpy().astype(np.int64) for t in names}

    def _node(self, node: Node, xs: list[Tensor]) -> Tensor:
        op, x, kind = node.op, xs[0], node.kind
        if kind == "flatten":
            return x.flatten(1)
        if kind == "maxpool":
            assert isinstance(op, Pool)
            return F.max_pool2d(x, op.kernel, op.stride, op.padding)  # pads with -inf
        if isinstance(op, Conv2d):
            acc = F.conv2d(
                x,
                self.weights[node.name],
                self.bias.get(node.name),
                op.stride,
                op.padding,
                op.dilation,
                op.groups,
            )
        elif kind == "dense":
            acc = F.linear(x, self.weights[node.name], self.bias.get(node.name))
        elif isinstance(op, Pool):  # avgpool: the window sum
            acc = F.avg_pool2d(x, op.kernel, op.stride, op.padding, divisor_override=1)
        elif isinstance(op, Add):
            acc = sum(a * m for a, m in zip(xs, op.multipliers, strict=True))  # type: ignore[assignment]
        else:
            acc = x
        assert node.requant is not None
        return _requantize(_exact(acc, node), node.requant, node)
