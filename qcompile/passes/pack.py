"""Pack every weight tensor's codes into uint32 words (the form .qir files and backends use)."""

from __future__ import annotations

from qcompile.ir.graph import Graph, Node


def pack_codes(graph: Graph) -> Graph:
    return graph.replace_nodes(
        [
            n
            if n.weights is None
            else Node(n.name, n.op, n.inputs, n.output, n.weights.pack(), n.requant)
            for n in graph.nodes
        ]
    )
