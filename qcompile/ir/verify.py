"""``verify(graph)``: the well-formedness rules of the IR, each error naming the node.

Rules: unique names; inputs defined before use; op arity; output shape equals the inferred
one; weights (codes within their widths, integer weights within int8, table and bias sizes);
requant clip inside the output type, one multiplier per output channel (or one per tensor);
accumulators proven wide enough for every input in range (no silent wrap) and within
``MAX_ACC_BITS``, and ``acc * m + round`` within ``MAX_PRODUCT_BITS``; pass-through ops keep
their input type and scale.
"""

from __future__ import annotations

from qcompile.errors import QCompileError
from qcompile.ir import ops
from qcompile.ir.graph import Graph, Node
from qcompile.ir.types import TensorInfo

# The PyTorch reference sums in float64, exact below 2**53; the requantization product is
# computed in int64 everywhere (leave a bit for the rounding term).
MAX_ACC_BITS = 53
MAX_PRODUCT_BITS = 63


class VerifyError(QCompileError):
    """A graph breaks an IR rule; the message names the node and the rule."""


def verify(graph: Graph) -> Graph:
    """Check every rule; return ``graph`` unchanged, or raise :class:`VerifyError`."""
    known: dict[str, TensorInfo] = {graph.input.name: graph.input}
    names: set[str] = set()
    iq = graph.input_quant
    if graph.input.qtype.bits != iq.bits or not graph.input.qtype.contains(
        iq.zero + iq.codes[0], iq.zero + iq.codes[1]
    ):
        raise VerifyError(
            f"graph input: type {graph.input.qtype} does not hold the "
            f"{iq.bits}-bit input codes offset by {iq.zero}"
        )
    for node in graph.nodes:
        if node.name in names:
            raise VerifyError(f"node {node.name}: duplicate node name")
        names.add(node.name)
        if node.output.name in known:
            raise VerifyError(f"node {node.name}: tensor {node.output.name} is defined twice")
        try:
            _check_node(node, [_lookup(known, t) for t in node.inputs])
        except ValueError as e:
            raise VerifyError(f"node {node.name} ({node.kind}): {e}") from None
        known[node.output.name] = node.output
    if not graph.outputs:
        raise VerifyError("graph has no outputs")
    for t in graph.outputs:
        if t not in known:
            raise VerifyError(f"graph output {t} is not produced by any node")
    return graph


def _lookup(known: dict[str, TensorInfo], name: str) -> TensorInfo:
    if name not in known:
        raise ValueError(f"input {name} is not defined before this node")
    return known[name]


def _check_node(node: Node, inputs: list[TensorInfo]) -> None:
    if len(inputs) != ops.arity(node):
        raise ValueError(f"takes {ops.arity(node)} inputs, got {len(inputs)}")
    if node.op.weighted:
        ops.check_weights(node)
    elif node.weights is not None:
        raise ValueError("has weights but its op takes none")
    shape = ops.infer_shape(node, [t.shape for t in inputs])
    if shape != node.output.shape:
        raise ValueError(f"output shape {node.output.shape} should be {shape}")
    out = node.output.qtype
    if not node.op.requantized:
        if node.requant is not None:
            raise ValueError("has requant parameters but its op does not requantize")
        src = inputs[0]
        if src.qtype != out or src.scale != node.output.scale:
            raise ValueError(f"must keep its input's type {src.qtype} and scale")
        return
    r = node.requant
    if r is None:
        raise ValueError("needs requant parameters")
    if not out.contains(r.lo, r.hi):
        raise ValueError(f"clip [{r.lo}, {r.hi}] exceeds the output type {out}")
    channels = node.output.shape[0]
    if r.per_channel and len(r.multipliers) != channels:
        raise ValueError(f"{len(r.multipliers)} requant multipliers for {channels} channels")
    if r.bias is not None and len(r.bias) != channels:
        raise ValueError(f"bias has {len(r.bias)} entries for {channels} channels")
    ranges = [t.qtype.range for t in inputs]
    need = ops.acc_bits_needed(node, ranges)
    if need > r.acc_bits:
        raise ValueError(
            f"accumulator needs {need} bits for inputs in range, "
            f"declared {r.acc_bits} (it could overflow)"
        )
    if r.acc_bits > MAX_ACC_BITS:
        raise ValueError(f"accumulator of {r.acc_bits} bits exceeds {MAX_ACC_BITS}")
    product = ops.product_bits_needed(node, ranges)
    if product > MAX_PRODUCT_BITS:
        raise ValueError(
            f"acc * multiplier + bias + rounding needs {product} bits, beyond {MAX_PRODUCT_BITS}"
        )
