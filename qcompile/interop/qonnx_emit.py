"""Turn an importer :class:`~qcompile.interop.qonnx_values.Lin` into IR nodes, exactly.

A value lands either on a quantizer (a QONNX ``Quant``/``Trunc``: integers of step
``scale``, rounded by its mode, saturated to ``[lo, hi]``) or, with no quantizer after it,
on a wide tensor whose unit divides every term's unit (no rounding at all).

For a quantizer the rescale ``unit_in / scale`` must be an integer times 2^-k (it then is the
requant's ``m / 2^k`` exactly); anything else is refused, naming the node. The IR rounds half
up (``+ 2^(k-1)`` before the shift); QONNX's other rounding modes become a per-channel bias
offset where one exists (:func:`rounding_offset`: FLOOR and CEIL always do for power-of-two
rescales), and half-to-even (ROUND) is refused wherever a tie can occur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from qcompile.errors import QCompileError
from qcompile.interop.qonnx_values import Act, Lin, Scaled, Term, dyadic, unit_gcd
from qcompile.ir import ops
from qcompile.ir.graph import Add, Affine, Clip, Conv2d, Dense, Node, Requant, Weights
from qcompile.ir.types import QType, TensorInfo

MAX_MULT = (1 << 31) - 1
# QONNX rounding modes that do not depend on the sign, and where each puts the offset T in
# floor((acc * m + T) / 2^k) (see rounding_offset); the others are mapped here per domain.
SHIFT_INVARIANT = ("FLOOR", "CEIL", "HALF_UP_POS", "HALF_DOWN_NEG")


@dataclass(frozen=True)
class Landing:
    """Integers ``round(v / scale)`` (``mode``) clipped to ``[lo, hi]``, of real unit ``unit``
    and type ``qtype``; ``qtype`` None: a wide tensor of unit ``scale`` (no rounding)."""

    scale: Fraction
    unit: Fraction
    lo: int = -(1 << 62)  # unbounded
    hi: int = 1 << 62
    qtype: QType | None = None
    mode: str = "EXACT"


def rounding_offset(mode: str, m: int, k: int) -> int | None:
    """``d`` such that ``floor(((acc + d) * m + 2^(k-1)) / 2^k)`` rounds ``acc * m / 2^k``
    by ``mode`` for every integer ``acc`` (None: no such ``d``; ``m > 0``).

    >>> [rounding_offset(*a) for a in (("FLOOR", 1, 3), ("CEIL", 2, 3), ("FLOOR", 3, 2))]
    [-4, 1, None]
    """
    step = math.gcd(m, 1 << k)  # acc * m runs over the multiples of step
    if k == 0 or step == 1 << k:
        return 0  # never a fraction: nothing to round
    half = 1 << (k - 1)
    # floor((v + T) / 2^k) is the mode's rounding for every multiple v of step iff T lies in
    # [t0, t0 + step)
    t0 = {"HALF_UP_POS": half, "FLOOR": 0, "CEIL": (1 << k) - step, "HALF_DOWN_NEG": half - step}
    if mode not in t0:
        return None
    want = t0[mode] - half
    d = -(-want // m)  # the smallest d with d * m >= want
    return d if d * m < want + step else None


def rescale(ratios: list[Fraction], what: str) -> tuple[int, list[int]]:
    """``(k, m)`` with ``ratios[c] == m[c] / 2^k`` exactly."""
    pairs = [dyadic(r) for r in ratios]
    for r, p in zip(ratios, pairs, strict=True):
        if p is None or r <= 0:
            raise QCompileError(
                f"{what}: rescales by {float(r):.8g} (input scale / output scale), which is "
                "not an integer times 2^-k: the integer contract cannot represent it exactly "
                "(power-of-two scales, e.g. Brevitas *FixedPoint quantizers, always can)"
            )
    k = max(p[1] for p in pairs if p is not None)
    ms = [p[0] << (k - p[1]) for p in pairs if p is not None]
    if max(ms) > MAX_MULT or k > 62:
        raise QCompileError(
            f"{what}: rescale {float(max(ratios)):.8g} needs a multiplier beyond 31 bits"
        )
    return k, ms


def _int(v: Fraction, what: str, role: str) -> int:
    if v.denominator != 1:
        raise QCompileError(f"{what}: {role} {float(v):.8g} is not on its integer grid")
    return int(v)


class Emitter:
    """Collects IR nodes; :meth:`land` emits a value."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.units: dict[str, Fraction] = {}

    def add(self, node: Node, unit: Fraction) -> Act:
        self.nodes.append(node)
        self.units[node.output.name] = unit
        return Act(node.output, unit)

    def land(self, v: Lin, t: Landing, name: str, what: str) -> Act:
        """Emit ``v`` landing on ``t``; the final node is called ``name``."""
        if t.qtype is None:
            t = self._wide(v, t, what)
        terms = list(v.terms)
        if len(terms) == 1 and isinstance(terms[0], Scaled):
            s = terms[0]
            k, (m,) = rescale([s.src.unit * s.coef / t.scale], what)
            if not any(v.bias) and rounding_offset(t.mode, m, k) == 0:
                return self._finish(name, Clip(), [s.src.info], None, t, k, m, what)
            terms = [identity(s, f"{name}.identity")]  # a bias needs a weight layer
        if len(terms) == 1:
            assert isinstance(terms[0], Term)
            return self._weighted(terms[0], v.bias, t, name, what)
        return self._sum(terms, v.bias, t, name, what)

    def _wide(self, v: Lin, t: Landing, what: str) -> Landing:
        g = unit_gcd([u for x in v.terms for u in _units(x)])
        lo = Landing.lo if v.lo is None else _int(v.lo / g, what, "lower bound")
        hi = Landing.hi if v.hi is None else _int(v.hi / g, what, "upper bound")
        return Landing(g, g, lo, hi)

    def _sum(
        self,
        terms: list[Term | Scaled],
        bias: tuple[Fraction, ...],
        t: Landing,
        name: str,
        what: str,
    ) -> Act:
        """Each weight layer on a wide tensor of the common unit ``g``, then one add."""
        g = unit_gcd([u for x in terms for u in _units(x)])
        k, (m,) = rescale([g / t.scale], what)
        d = rounding_offset(t.mode, m, k)
        if d is None:
            raise QCompileError(_mode_error(t.mode, what))
        if (d or any(bias)) and not any(isinstance(x, Term) for x in terms):
            terms[0] = identity(terms[0], f"{name}.identity")  # type: ignore[arg-type]
        inputs, mults, carried = [], [], False
        for i, x in enumerate(terms):
            if isinstance(x, Term):  # the first weight layer carries the bias and offset
                b = bias if not carried else (Fraction(0),) * len(bias)
                part = self._weighted(
                    x, b, Landing(g, g), f"{name}.{x.name}", what, d if not carried else 0
                )
                carried = True
                inputs.append(part.info)
                mults.append(1)
            else:
                inputs.append(x.src.info)
                mults.append(_int(x.src.unit * x.coef / g, what, f"input {i}'s scale / sum unit"))
        return self._finish(name, Add(tuple(mults)), inputs, None, t, k, m, what)

    def _weighted(
        self,
        x: Term,
        bias: tuple[Fraction, ...],
        t: Landing,
        name: str,
        what: str,
        part_offset: int | None = None,
    ) -> Act:
        """One weight layer landing on ``t``; with ``part_offset`` it is a part of a sum: exact
        in the sum's unit, its bias raised by ``part_offset`` sum units (a rounding offset)."""
        units = x.units()
        ints = [
            _int(b / u, what, "bias / accumulator scale") for b, u in zip(bias, units, strict=True)
        ]
        if part_offset is not None:
            k, ms = 0, [_int(u / t.scale, what, "weight scale / sum unit") for u in units]
            offsets = [part_offset // m if part_offset % m == 0 else None for m in ms]
        else:
            k, ms = rescale([u / t.scale for u in units], what)
            offsets = [rounding_offset(t.mode, m, k) for m in ms]
        if any(o is None for o in offsets):
            raise QCompileError(_mode_error(t.mode, what))
        biases = np.array([b + o for b, o in zip(ints, offsets, strict=True)], dtype=np.int64)  # type: ignore[operator]
        codes = (x.w - x.zero.reshape(-1, *[1] * (x.w.ndim - 1))) // x.step
        try:
            w = Weights(
                x.bits,
                tuple(x.w.shape),
                codes.astype(np.uint8),
                False,
                Affine(x.step, x.zero),
                biases,
            )
            w.check()
        except ValueError as e:
            raise QCompileError(f"{what}: {e}") from None
        mult: int | tuple[int, ...] = ms[0] if len(set(ms)) == 1 else tuple(ms)
        return self._finish(name, x.op, [x.src.info], w, t, k, mult, what)

    def _finish(
        self,
        name: str,
        op: object,
        srcs: list[TensorInfo],
        w: Weights | None,
        t: Landing,
        shift: int,
        mult: int | tuple[int, ...],
        what: str,
    ) -> Act:
        ranges = [i.qtype.range for i in srcs]
        ins = tuple(i.name for i in srcs)
        probe = Node(name, op, ins, srcs[0], w, Requant(shift, 0, 0, 64, mult))  # type: ignore[arg-type]
        try:
            shape = ops.infer_shape(probe, [i.shape for i in srcs])
            acc_bits = ops.acc_bits_needed(probe, ranges)
            lo, hi = ops.shifted_range(probe, ranges)
        except ValueError as e:
            raise QCompileError(f"{what}: {e}") from None
        if t.qtype is None:
            lo, hi = max(lo, t.lo), min(hi, t.hi)
            lo, hi = min(lo, hi), max(lo, hi)
            qtype = QType.fitting(lo, hi)
        else:
            lo, hi, qtype = t.lo, t.hi, t.qtype
        out = TensorInfo(name, shape, qtype, float(t.unit))
        if Fraction(out.scale) != t.unit:
            raise QCompileError(f"{what}: scale {float(t.unit)!r} is not exact in float64")
        node = Node(name, probe.op, ins, out, w, Requant(shift, lo, hi, acc_bits, mult))
        return self.add(node, t.unit)


def _units(x: Term | Scaled) -> list[Fraction]:
    return x.units() if isinstance(x, Term) else [x.src.unit * x.coef]


def identity(s: Scaled, name: str) -> Term:
    """``s`` as a weight layer of identity weights (a sum that needs a bias has no other
    place for it): a 1x1 depthwise convolution, or an identity dense layer on flat tensors."""
    c = s.src.shape[0]
    if len(s.src.shape) == 3:
        op: Conv2d | Dense = Conv2d((1, 1), (0, 0), (1, 1), c)
        w = np.ones((c, 1, 1, 1), dtype=np.int64)
    else:
        op, w = Dense(), np.eye(c, dtype=np.int64)
    return Term(name, s.src, op, w, (s.coef,) * c, 1, 1, np.zeros(1, dtype=np.int64))


def _mode_error(mode: str, what: str) -> str:
    if mode == "ROUND":
        return (
            f"{what}: rounds half to even (QONNX ROUND, Brevitas's default), but this rescale "
            "has ties and the integer contract rounds half up; quantize with "
            "float_to_int_impl_type='floor' (or use scales whose rescale is an integer)"
        )
    return f"{what}: rounding mode {mode} cannot be expressed with this rescale exactly"
