"""numpy int64 interpreter of a verified :class:`~qcompile.ir.Graph`.

Typical use: ``Simulator(graph).run(quantize_input(graph, x))[graph.outputs[0]]``; the tests
in tests/sim and tests/freeze hold worked examples.
"""

from __future__ import annotations

import numpy as np

from qcompile.ir.graph import Add, Conv2d, Graph, InputQuant, Node, Pool
from qcompile.sim import kernels as K

FLOAT64_EXACT_BITS = 53  # signed width: |acc| < 2^52 fits the 53-bit float64 significand


def quantize_input(graph: Graph | InputQuant, x: np.ndarray) -> np.ndarray:
    """Float inputs ``[N, *shape]`` to the graph's integer input, in float32 as in training.

    >>> q = InputQuant(bits=8, lo=-1.28, step=0.01, zero=-128)
    >>> quantize_input(q, np.array([[0.0, 0.5, 9.0]])).tolist()
    [[0, 50, 127]]
    """
    iq = graph.input_quant if isinstance(graph, Graph) else graph
    xf = np.asarray(x, dtype=np.float32)
    lo, step = np.float32(iq.lo), np.float32(iq.step)
    codes = np.clip(np.round((xf - lo) / step), 0, (1 << iq.bits) - 1)
    return codes.astype(np.int64) + iq.zero


class Simulator:
    """Runs a graph on integer input batches. Decoded weights are cached per node."""

    def __init__(self, graph: Graph, blas: bool = True) -> None:
        self.graph = graph
        self._weights = {n.name: n.weights.decoded() for n in graph.nodes if n.weights}
        # float64 BLAS where the verified accumulator width proves it exact (kernels.py)
        self._exact = {
            n.name: blas and n.requant is not None and n.requant.acc_bits <= FLOAT64_EXACT_BITS
            for n in graph.nodes
        }

    def run(self, x: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
        """Outputs by tensor name (every tensor with ``keep``) for int input ``[N, *shape]``."""
        g = self.graph
        if tuple(x.shape[1:]) != g.input.shape:
            raise ValueError(
                f"input batch has shape {x.shape[1:]}, the graph takes {g.input.shape}"
            )
        env = {g.input.name: np.asarray(x, dtype=np.int64)}
        for node in g.nodes:
            env[node.output.name] = self._node(node, [env[t] for t in node.inputs])
        return env if keep else {t: env[t] for t in g.outputs}

    def _node(self, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        op, x = node.op, xs[0]
        if node.kind == "flatten":
            return x.reshape(x.shape[0], -1)
        if node.kind == "maxpool":
            assert isinstance(op, Pool)
            return K.maxpool(x, op, node.output.qtype.range[0])
        if node.kind == "conv2d":
            assert isinstance(op, Conv2d) and node.weights is not None
            acc = K.conv2d(x, op, node.weights, self._weights[node.name], self._exact[node.name])
        elif node.kind == "dense":
            assert node.weights is not None
            acc = K.dense(x, node.weights, self._weights[node.name], self._exact[node.name])
        elif node.kind == "avgpool":
            assert isinstance(op, Pool)
            acc = K.sumpool(x, op)
        elif isinstance(op, Add):
            acc = sum(a * m for a, m in zip(xs, op.multipliers, strict=True))
        else:  # clip
            acc = x
        assert node.requant is not None
        return K.requantize(acc, node.requant)


def simulate(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The graph's first output for integer inputs ``x``."""
    return Simulator(graph).run(x)[graph.outputs[0]]
