"""Turning a :class:`Pending` value into IR nodes (numeric contract v1): integer weights of at
most 8 bits, every real scale folded into one per-channel multiplier, rounded once.

A weight layer's real weights are ``s_c * w`` with ``w`` an int8 (:func:`integer_weights`:
the quantizer's own integer grid for uniform levels, a per-channel int8 table for learned
non-uniform ones). For an input of unit ``u_x`` landing on a tensor of unit ``u_y``:

    acc = sum(x * w)
    y   = clip((acc * m_c + b_c + 2^(k-1)) >> k, lo, hi)
          m_c / 2^k ~ s_c * u_x / u_y          b_c = round(bias[c] / u_y * 2^k)

The bias is added after the multiplier, at ``2^-k`` of an output step: added to the
accumulator in its own units ``s_c * u_x`` it would round by up to half of ``m_c / 2^k``
output steps, a systematic per-channel shift that flipped 2-6% of 3-bit activations per
layer on LeNet (measured; the multiplier's own rounding is ``2^-10`` relative or finer).

``u_y`` is an activation quantizer's step, or for a value with no quantizer after it (the
logits, the parts of a residual sum) a fixed-point unit ``scale * 2^-F`` fine enough that its
rounding is negligible (:func:`wide_frac`). :func:`requant_multipliers` chooses ``k`` and the
``m_c`` (16 bits where that keeps every channel precise, up to 31).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qcompile.errors import QCompileError
from qcompile.freeze.values import Int, LinearTerm, Pending, ScaledTerm
from qcompile.ir import ops
from qcompile.ir.graph import Add, Affine, Clip, Node, Requant, Table, Weights
from qcompile.ir.types import QType, TensorInfo
from qcompile.ir.verify import MAX_ACC_BITS, MAX_PRODUCT_BITS

ERR_BITS = 4  # a wide tensor's unit is 2^-ERR_BITS of the finest unit it sums
MAX_FRAC = 40
TABLE_MAX = 127  # non-uniform levels round onto int8 entries in [-127, 127]
MULT_BITS = 16  # a multiplier of this many bits (signed) is enough for most layers ...
MIN_MULT = 1 << 10  # ... unless some live channel would get a multiplier below this
MAX_MULT = (1 << 31) - 1


@dataclass(frozen=True)
class Target:
    """Where a pending value lands: activation codes of ``qtype`` with step ``scale`` clipped
    to ``[lo, hi]``, or (``qtype`` None) a wide fixed-point tensor of that scale."""

    scale: float = 1.0
    qtype: QType | None = None
    lo: int = 0
    hi: int = 0

    @property
    def wide(self) -> bool:
        return self.qtype is None


def integer_weights(term: LinearTerm) -> tuple[np.ndarray, Affine | Table, np.ndarray]:
    """(codes, integer levels, real scale ``s_c`` per channel) of a weight term."""
    codes = term.codes
    if term.grid is not None:
        g = term.grid
        return codes, Affine(g.step, g.zero.astype(np.int64)), g.scale.astype(np.float64)
    levels = term.levels
    peak = np.abs(levels).max(axis=1)
    scale = np.where(peak > 0, peak / TABLE_MAX, 1.0)
    entries = np.clip(np.rint(levels / scale[:, None]), -TABLE_MAX, TABLE_MAX).astype(np.int64)
    return codes, Table(entries), scale


def requant_multipliers(ratio: np.ndarray, acc_bits: int) -> tuple[int, np.ndarray]:
    """``(k, m)`` with ``m_c = round(ratio_c * 2^k)``: the largest ``m_c`` within
    ``MULT_BITS`` signed bits, or wider (to 31 bits) until the smallest live channel's is at
    least ``MIN_MULT``; ``acc * m`` stays within int64."""
    live = np.abs(ratio[ratio != 0])
    if not live.size:  # every channel constant: its bias alone (at 2^-k) is the output
        return MULT_BITS, np.zeros(ratio.shape, dtype=np.int64)
    top, bottom = float(live.max()), float(live.min())
    fit = lambda bound: math.floor(math.log2(bound / top))  # noqa: E731  largest k: top*2^k <= bound
    k = max(fit((1 << (MULT_BITS - 1)) - 1), math.ceil(math.log2(MIN_MULT / bottom)))
    # |m| < 2^(ceil(log2 top) + k): keep acc * m + rounding inside MAX_PRODUCT_BITS
    k_product = MAX_PRODUCT_BITS - 2 - acc_bits - math.ceil(math.log2(top))
    k = max(0, min(k, fit(MAX_MULT), k_product, 62))
    m = np.rint(ratio * 2.0**k).astype(np.int64)
    if np.abs(m).max() > MAX_MULT:
        raise QCompileError(f"a requantization ratio of {top:g} needs a multiplier over 31 bits")
    return k, m


def wide_frac(p: Pending, scale: float) -> int:
    """F for a wide tensor of unit ``scale * 2^-F``: every term's finest step (a weight layer's
    smallest ``s_c * u_x``, a shortcut's largest input times its coefficient) is at least
    2^ERR_BITS units, so rounding each term to the unit moves the sum by < 1/16 of a step."""
    need = 0
    for t in p.terms:
        u = t.src.info.unit / scale
        if isinstance(t, LinearTerm):
            _, _, s = integer_weights(t)
            live = s[s > 0] * u
            finest = float(live.min()) if live.size else 1.0
        else:  # a shortcut's coefficient is rounded to the unit: bound its largest term
            xmax = max(abs(v) for v in t.src.info.qtype.range) or 1
            finest = abs(t.coef) * u / xmax
        extra = math.ceil(math.log2(len(p.terms)))  # each term rounds on its own
        need = max(need, math.ceil(math.log2(1.0 / finest)) + ERR_BITS + extra)
    return max(0, min(MAX_FRAC, need))


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
        alone = len(p.terms) == 1 and linear and not t.wide  # rescaled by its own multipliers
        frac = 0 if alone else wide_frac(p, t.scale)
        while True:
            nodes = build(p, t, frac, name)
            acc = max(n.requant.acc_bits for n in nodes if n.requant)
            if acc <= MAX_ACC_BITS:
                break
            if frac == 0:
                raise QCompileError(
                    f"layer {name}: the accumulator needs {acc} bits even "
                    f"without fraction bits (limit {MAX_ACC_BITS})"
                )
            frac = max(0, frac - (acc - MAX_ACC_BITS))
        self.nodes += nodes
        return Int(nodes[-1].output)

    def add(self, node: Node) -> Int:
        self.nodes.append(node)
        return Int(node.output)


def build(p: Pending, t: Target, frac: int, name: str) -> list[Node]:
    """Nodes computing ``p`` on ``t``; a sum of several terms first lands each weight layer
    on a wide tensor of unit ``t.scale * 2^-frac``, then adds them (shift ``frac``)."""
    linear = [x for x in p.terms if isinstance(x, LinearTerm)]
    scaled = [x for x in p.terms if isinstance(x, ScaledTerm)]
    if not linear and np.any(p.bias):
        raise QCompileError(f"layer {name}: a bias with no weight layer to carry it")
    if len(linear) == 1 and not scaled:
        return [_weighted(linear[0], name, t, frac, p.bias)]
    unit = t.scale * 2.0**-frac
    mults = [round(x.coef * x.src.info.unit / unit) for x in scaled]
    if any(m == 0 for m in mults):
        raise QCompileError(f"layer {name}: a shortcut's scale rounds to 0 at {frac} bits")
    shift = 0 if t.wide else frac
    if not linear and len(scaled) == 1:
        return [_finish(name, Clip(), (scaled[0].src.info,), None, t, frac, shift, mults[0])]
    part_target = Target(t.scale)
    parts = [
        _weighted(x, f"{name}.{x.name}", part_target, frac, p.bias if i == 0 else None)
        for i, x in enumerate(linear)
    ]
    srcs = tuple(n.output for n in parts) + tuple(x.src.info for x in scaled)
    op = Add((1,) * len(parts) + tuple(mults))
    return [*parts, _finish(name, op, srcs, None, t, frac, shift, 1)]


def _weighted(x: LinearTerm, name: str, t: Target, frac: int, bias: np.ndarray | None) -> Node:
    """One weight layer landing on ``t`` (wide: unit ``t.scale * 2^-frac``)."""
    codes, levels, s = integer_weights(x)
    unit_y = t.scale * 2.0**-frac if t.wide else t.scale
    w = Weights(x.bits, tuple(codes.shape), codes, False, levels, x.channel_bits)
    probe = _probe(name, x.op, (x.src.info,), w)
    acc_bits = ops.acc_bits_needed(probe, [x.src.info.qtype.range])
    k, m = requant_multipliers(s * x.src.info.unit / unit_y, acc_bits)
    b = None
    if bias is not None and np.any(bias):
        b = tuple(int(v) for v in np.rint(np.asarray(bias) / unit_y * 2.0**k))
    mult = tuple(int(v) for v in m)
    return _finish(name, x.op, (x.src.info,), _compact(w), t, frac, k, mult, b)


def _compact(w: Weights) -> Weights:
    """Per-channel level arrays whose rows are all equal stored once."""
    lv = w.levels
    if isinstance(lv, Affine) and lv.zero.size > 1 and np.all(lv.zero == lv.zero[0]):
        lv = Affine(lv.step, lv.zero[:1].copy())
    elif isinstance(lv, Table) and lv.rows > 1 and np.all(lv.entries == lv.entries[:1]):
        lv = Table(lv.entries[:1].copy())
    return Weights(w.bits, w.shape, w.data, w.packed, lv, w.channel_bits)


def _probe(name: str, op: object, srcs: tuple[TensorInfo, ...], w: Weights | None) -> Node:
    return Node(name, op, tuple(i.name for i in srcs), srcs[0], w, Requant(0, 0, 0, 64))  # type: ignore[arg-type]


def _finish(
    name: str,
    op: object,
    srcs: tuple[TensorInfo, ...],
    w: Weights | None,
    t: Target,
    frac: int,
    shift: int,
    mult: int | tuple[int, ...],
    bias: tuple[int, ...] | None = None,
) -> Node:
    """The node with its accumulator width and output type computed from its input ranges."""
    ranges = [i.qtype.range for i in srcs]
    req = Requant(shift, 0, 0, 64, mult, bias)
    probe = Node(name, op, tuple(i.name for i in srcs), srcs[0], w, req)  # type: ignore[arg-type]
    shape = ops.infer_shape(probe, [i.shape for i in srcs])
    acc_bits = ops.acc_bits_needed(probe, ranges)
    if t.wide:
        lo, hi = ops.shifted_range(probe, ranges)
        out = TensorInfo(name, shape, QType.fitting(lo, hi, frac), t.scale)
    else:
        assert t.qtype is not None
        lo, hi = t.lo, t.hi
        out = TensorInfo(name, shape, t.qtype, t.scale)
    return Node(name, probe.op, probe.inputs, out, w, Requant(shift, lo, hi, acc_bits, mult, bias))
