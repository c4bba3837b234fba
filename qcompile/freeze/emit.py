"""Turning a :class:`Pending` value into IR nodes: choose the fixed-point fraction F, fold
every scale into integers (rounded once), size the accumulators.

For a value landing on an activation quantizer with step ``s_y`` (clip ``[lo, hi]``):

    LUT[c, k] = round(level[c, k] * s_x / s_y * 2^F)      bias[c] = round(b[c] / s_y * 2^F)
    y = clip((acc + 2^(F-1)) >> F, lo, hi)

A value with no quantizer after it (the logits, a residual sum feeding a pool) lands on a
"wide" fixed-point tensor with scale 1: ``y = acc``, real value ``y * 2^-F``. F bounds the
rounding error of the folded levels (:func:`choose_frac`) and is lowered where needed until
the accumulator's proven worst case fits in ``MAX_ACC_BITS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qcompile.errors import QCompileError
from qcompile.freeze.values import Int, LinearTerm, Pending, ScaledTerm
from qcompile.ir import ops
from qcompile.ir.graph import Add, Clip, Node, Requant, Weights
from qcompile.ir.types import QType, TensorInfo
from qcompile.ir.verify import MAX_ACC_BITS

LUT_BITS = 16
ERR_BITS = 4
MAX_FRAC = 40


@dataclass(frozen=True)
class Target:
    """Where a pending value lands: activation codes of ``qtype`` with step ``scale`` clipped
    to ``[lo, hi]``, or (``qtype`` None) a wide fixed-point tensor of scale 1."""

    scale: float = 1.0
    qtype: QType | None = None
    lo: int = 0
    hi: int = 0

    @property
    def wide(self) -> bool:
        return self.qtype is None


def _frac_for(ratio: float, bits: int) -> int:
    """Largest F with ``ratio * 2^F`` inside ``bits`` signed bits."""
    return math.floor(math.log2(((1 << (bits - 1)) - 1) / ratio)) if ratio > 0 else MAX_FRAC


def _term(term: LinearTerm | ScaledTerm, t: Target) -> tuple[float, int]:
    """(largest |integer coefficient| per 2^F, inputs summed) of one term."""
    unit = term.src.info.unit / t.scale
    if isinstance(term, LinearTerm):
        return float(np.abs(term.levels).max()) * unit, int(np.prod(term.codes.shape[1:]))
    return abs(term.coef) * unit, 1


def choose_frac(p: Pending, t: Target) -> int:
    """F: every LUT entry rounds by at most 2^-(F+1); summed over a term's inputs that is at
    most ``fan_in * max|x| * 2^-(F+1)`` output steps, which F keeps below 2^-ERR_BITS (and
    never coarser than a 16-bit LUT), while no entry may exceed 32 bits."""
    need, cap = 0, MAX_FRAC
    for term in p.terms:
        ratio, fan_in = _term(term, t)
        xmax = max(abs(v) for v in term.src.info.qtype.range)
        precise = math.ceil(math.log2(fan_in * xmax)) + ERR_BITS if xmax else 0
        need = max(need, _frac_for(ratio, LUT_BITS), precise)
        cap = min(cap, _frac_for(ratio, 32))
    f = min(need, cap)
    if t.wide:  # keep wide shortcuts exact: their multiplier is then a power of two
        f = max([f] + [s.src.info.qtype.frac for s in p.terms if isinstance(s, ScaledTerm)])
    return max(0, min(MAX_FRAC, f))


class Emitter:
    """Collects the IR nodes of a graph under construction."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def unique(self, name: str) -> str:
        used = {n.name for n in self.nodes}
        k, out = 1, name
        while out in used or any(u.startswith(out + ".") for u in used):
            k, out = k + 1, f"{name}_{k}"
        return out

    def materialize(self, p: Pending, t: Target, name: str) -> Int:
        """Emit ``p`` landing on ``t``. A lone weight layer keeps its own name; sums are named
        after their consumer ``name``."""
        linear = [x for x in p.terms if isinstance(x, LinearTerm)]
        name = self.unique(linear[0].name if len(p.terms) == 1 and linear else name)
        frac = choose_frac(p, t)
        while True:
            nodes = build(p, t, frac, name)
            need = max(n.requant.acc_bits for n in nodes if n.requant)
            if need <= MAX_ACC_BITS:
                break
            if frac == 0:
                raise QCompileError(
                    f"layer {name}: the accumulator needs {need} bits even "
                    f"without fraction bits (limit {MAX_ACC_BITS})"
                )
            frac = max(0, frac - (need - MAX_ACC_BITS))
        self.nodes += nodes
        return Int(nodes[-1].output)

    def add(self, node: Node) -> Int:
        self.nodes.append(node)
        return Int(node.output)


def build(p: Pending, t: Target, frac: int, name: str) -> list[Node]:
    s = t.scale
    shift = 0 if t.wide else frac
    bias = np.rint(p.bias / s * 2.0**frac).astype(np.int64)
    linear = [x for x in p.terms if isinstance(x, LinearTerm)]
    scaled = [x for x in p.terms if isinstance(x, ScaledTerm)]
    if not linear and np.any(bias):
        raise QCompileError(f"layer {name}: a bias with no weight layer to carry it")
    mults = [round(x.coef * x.src.info.unit / s * 2.0**frac) for x in scaled]
    if any(m == 0 for m in mults):
        raise QCompileError(f"layer {name}: a shortcut's scale rounds to 0 at {frac} bits")
    if len(linear) == 1 and not scaled:
        return [_weighted(linear[0], name, t, frac, shift, bias)]
    if not linear and len(scaled) == 1:
        return [_finish(name, Clip(), (scaled[0].src.info,), None, t, frac, shift, mults[0])]
    parts = [
        _weighted(x, f"{name}.{x.name}", Target(s), frac, 0, bias if i == 0 else None)
        for i, x in enumerate(linear)
    ]
    srcs = tuple(n.output for n in parts) + tuple(x.src.info for x in scaled)
    op = Add((1,) * len(parts) + tuple(mults))
    return [*parts, _finish(name, op, srcs, None, t, frac, shift, 1)]


def _weighted(
    x: LinearTerm, name: str, t: Target, frac: int, shift: int, bias: np.ndarray | None
) -> Node:
    lut = np.rint(x.levels * (x.src.info.unit / t.scale * 2.0**frac)).astype(np.int64)
    if np.all(lut == lut[:1]):
        lut = lut[:1].copy()
    w = Weights(x.bits, tuple(x.codes.shape), x.codes, False, lut, bias, x.uniform, x.channel_bits)
    return _finish(name, x.op, (x.src.info,), w, t, frac, shift, 1)


def _finish(
    name: str,
    op: object,
    srcs: tuple[TensorInfo, ...],
    w: Weights | None,
    t: Target,
    frac: int,
    shift: int,
    mult: int,
) -> Node:
    """The node with its accumulator width and output type computed from its input ranges."""
    probe = Node(
        name,
        op,
        tuple(i.name for i in srcs),
        srcs[0],
        w,  # type: ignore[arg-type]
        Requant(shift, 0, 0, 64, mult),
    )
    ranges = [i.qtype.range for i in srcs]
    shape = ops.infer_shape(probe, [i.shape for i in srcs])
    acc_bits = ops.acc_bits_needed(probe, ranges)
    if t.wide:
        lo, hi = ops.requant_range(probe, ops.acc_range(probe, ranges))
        lo, hi = lo >> shift, hi >> shift
        out = TensorInfo(name, shape, QType.fitting(lo, hi, frac - shift), t.scale)
    else:
        assert t.qtype is not None
        lo, hi = t.lo, t.hi
        out = TensorInfo(name, shape, t.qtype, t.scale)
    return Node(name, probe.op, probe.inputs, out, w, Requant(shift, lo, hi, acc_bits, mult))
