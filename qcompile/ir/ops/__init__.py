"""The IR's ops, one class each holding its whole contract (:mod:`qcompile.ir.ops.base`),
and the node-level rules built on them.

``OPS`` maps an op's kind (its name in .qir files) to its class. The functions below are what
the verifier, freeze and passes use: they dispatch to the node's op.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qcompile.ir.ops.base import Op, Range, Shape
from qcompile.ir.ops.elementwise import Add, Clip, Flatten
from qcompile.ir.ops.linear import Conv2d, Dense, Linear
from qcompile.ir.ops.pool import AvgPool, MaxPool, Pool

if TYPE_CHECKING:
    from qcompile.ir.graph import Node

OPS: dict[str, type[Op]] = {
    c.kind: c for c in (Conv2d, Dense, Add, MaxPool, AvgPool, Clip, Flatten)
}


def arity(node: Node) -> int:
    """Inputs the node takes (an add: one per multiplier)."""
    n = node.op.arity
    return len(node.op.multipliers) if isinstance(node.op, Add) else int(n or 2)


def infer_shape(node: Node, inputs: list[Shape]) -> Shape:
    """Per-sample output shape of ``node`` for per-sample input shapes ``inputs``."""
    return node.op.infer_shape(node, inputs)


def check_weights(node: Node) -> None:
    """The node's weights on their own (:meth:`qcompile.ir.graph.Weights.check`)."""
    if node.weights is None:
        raise ValueError(f"{node.kind} needs weights")
    node.weights.check()


def acc_range(node: Node, inputs: list[Range]) -> Range:
    """Exact ``(min, max)`` of the accumulator (before multiplier and rounding)."""
    return node.op.acc_range(node, inputs)


def requant_range(node: Node, inputs: list[Range]) -> Range:
    """Range of ``acc * m + b + rounding`` over every channel, the widest value the node holds
    (each channel's own accumulator range, multiplier and bias where they are known)."""
    r = node.requant
    assert r is not None
    ms, bs = [int(m) for m in r.multipliers], [int(b) for b in r.biases]
    channels = max(len(ms), len(bs))
    if isinstance(node.op, Linear) and channels > 1:
        accs = node.op.channel_ranges(node, inputs)
    else:
        accs = [acc_range(node, inputs)] * channels
    ms, bs = ms * (channels // len(ms)), bs * (channels // len(bs))
    ends = [v * m + b for (lo, hi), m, b in zip(accs, ms, bs, strict=True) for v in (lo, hi)]
    return min(ends) + r.rounding, max(ends) + r.rounding


def shifted_range(node: Node, inputs: list[Range]) -> Range:
    """Range of ``(acc * m + b + rounding) >> shift`` before the clip."""
    assert node.requant is not None
    lo, hi = requant_range(node, inputs)
    return lo >> node.requant.shift, hi >> node.requant.shift


def signed_bits(lo: int, hi: int) -> int:
    """Signed width holding every integer in ``[lo, hi]``."""
    return max(1, int(-lo - 1).bit_length() if lo < 0 else 0, int(max(hi, 0)).bit_length()) + 1


def acc_bits_needed(node: Node, inputs: list[Range]) -> int:
    """Signed width holding the accumulator (before the multiplier) for every input in range."""
    return signed_bits(*acc_range(node, inputs))


def product_bits_needed(node: Node, inputs: list[Range]) -> int:
    """Signed width holding ``acc * m + b + rounding`` for every input in range."""
    return signed_bits(*requant_range(node, inputs))


__all__ = [
    "OPS",
    "Add",
    "AvgPool",
    "Clip",
    "Conv2d",
    "Dense",
    "Flatten",
    "Linear",
    "MaxPool",
    "Op",
    "Pool",
    "acc_bits_needed",
    "acc_range",
    "arity",
    "check_weights",
    "infer_shape",
    "product_bits_needed",
    "requant_range",
    "shifted_range",
    "signed_bits",
]
