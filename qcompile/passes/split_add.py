"""Split adds of more than ``max_inputs`` tensors into a chain of narrower adds.

``sum_i x_i m_i`` is summed left to right into exact intermediate tensors (shift 0, no
clip, typed to their proven range); the last add keeps the original shift and clip, so the
result is the same integers (the last accumulator may need a bit more: an intermediate's
type is a power-of-two range). For backends whose add kernels take a fixed number of inputs.
"""

from __future__ import annotations

from qcompile.ir import ops
from qcompile.ir.graph import Add, Graph, Node, Requant
from qcompile.ir.types import QType, TensorInfo


def split_add(graph: Graph, max_inputs: int = 2) -> Graph:
    if max_inputs < 2:
        raise ValueError("max_inputs must be >= 2")
    tensors = graph.tensors()
    nodes: list[Node] = []
    for node in graph.nodes:
        if not isinstance(node.op, Add) or len(node.inputs) <= max_inputs:
            nodes.append(node)
            continue
        assert node.requant is not None
        names, mults = list(node.inputs), list(node.op.multipliers)
        k = 1
        while len(names) > max_inputs:
            take = max_inputs
            part = Node(
                f"{node.name}_sum{k}",
                Add(tuple(mults[:take])),
                tuple(names[:take]),
                node.output,
                None,
                Requant(0, 0, 0, 64),
            )
            ranges = [tensors[t].qtype.range for t in part.inputs]
            lo, hi = ops.acc_range(part, ranges)
            frac = node.output.qtype.frac + node.requant.shift
            info = TensorInfo(
                part.name, node.output.shape, QType.fitting(lo, hi, frac), node.output.scale
            )
            part = Node(
                part.name,
                part.op,
                part.inputs,
                info,
                None,
                Requant(0, lo, hi, ops.acc_bits_needed(part, ranges)),
            )
            nodes.append(part)
            tensors[info.name] = info
            names, mults = [info.name, *names[take:]], [1, *mults[take:]]
            k += 1
        last = Node(node.name, Add(tuple(mults)), tuple(names), node.output, None, node.requant)
        # The intermediate's type range is wider than its proven range: re-size the last sum.
        need = ops.acc_bits_needed(last, [tensors[t].qtype.range for t in names])
        r = node.requant
        nodes.append(
            Node(
                node.name,
                last.op,
                last.inputs,
                node.output,
                None,
                Requant(r.shift, r.lo, r.hi, max(need, r.acc_bits), r.multiplier),
            )
        )
    return graph.replace_nodes(nodes)
