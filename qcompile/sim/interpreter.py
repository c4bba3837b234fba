"""numpy int64 interpreter of a verified :class:`~qcompile.ir.Graph`.

Typical use: ``Simulator(graph).run(quantize_input(graph, x))[graph.outputs[0]]``; the tests
in tests/sim and tests/freeze hold worked examples.
"""

from __future__ import annotations

import numpy as np

from qcompile.ir.graph import Graph, InputQuant, Node

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
    codes = np.clip(np.round((xf - lo) / step), *iq.codes)
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
        acc = node.op.execute(node, xs, self._weights.get(node.name), self._exact[node.name])
        return acc if node.requant is None else node.requant.apply(acc)


def simulate(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The graph's first output for integer inputs ``x``."""
    return Simulator(graph).run(x)[graph.outputs[0]]
