"""Fuse a standalone ``clip`` (a ReLU/ReLU6 on integers) into the node producing its input.

``clip(clip(v, a, b), c, d) == clip(v, max(a, c), min(b, d))`` when the two intervals meet,
so a requantizing producer whose only consumer is the clip takes the narrower bounds and
the clip's output tensor; the clip disappears.
"""

from __future__ import annotations

from dataclasses import replace

from qcompile.ir.graph import Graph, Node
from qcompile.ir.ops import Clip


def fuse_activation(graph: Graph) -> Graph:
    nodes = list(graph.nodes)
    by_output = {n.output.name: i for i, n in enumerate(nodes)}
    for j, clip in enumerate(nodes):
        if clip is None or not isinstance(clip.op, Clip) or clip.requant is None:
            continue
        r2 = clip.requant
        if r2.shift or r2.multiplier != 1:
            continue  # a rescaling clip, not a plain ReLU
        src = clip.inputs[0]
        i = by_output.get(src)
        if i is None or nodes[i] is None or src in graph.outputs:
            continue
        prod = nodes[i]
        users = [n for n in nodes if n is not None and src in n.inputs]
        if not prod.op.requantized or prod.requant is None or len(users) != 1:
            continue
        lo, hi = max(prod.requant.lo, r2.lo), min(prod.requant.hi, r2.hi)
        if lo > hi:
            continue
        nodes[i] = Node(
            prod.name,
            prod.op,
            prod.inputs,
            clip.output,
            prod.weights,
            replace(prod.requant, lo=lo, hi=hi),
        )
        nodes[j] = None  # type: ignore[call-overload]
        by_output[clip.output.name] = i
    return graph.replace_nodes([n for n in nodes if n is not None])
