"""Drop nodes whose outputs reach no graph output."""

from __future__ import annotations

from qcompile.ir.graph import Graph


def eliminate_dead(graph: Graph) -> Graph:
    live = set(graph.outputs)
    keep = []
    for node in reversed(graph.nodes):
        if node.output.name in live:
            keep.append(node)
            live.update(node.inputs)
    return graph.replace_nodes(list(reversed(keep)))
