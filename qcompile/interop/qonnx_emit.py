"""Turn an importer :class:`~qcompile.interop.qonnx_values.Lin` into IR nodes, exactly.

A value lands either on a quantizer (a QONNX ``Quant``/``Trunc``: integers of step
``scale``, rounded by its mode, saturated to ``[lo, hi]``) or, with no quantizer after it,
on a wide tensor whose unit divides every term's unit (no rounding at all).

For a quantizer the rescale ``unit_in / scale`` must be an integer times 2^-k (it then is the
requant's ``m / 2^k`` exactly), and the bias an integer number of 2^-k output steps; anything
else is refused, naming the node. The IR rounds half up (``+ 2^(k-1)`` before the shift);
QONNX's FLOOR and CEIL (and, on unsigned values, UP, DOWN, HALF_UP, HALF_DOWN) become an
offset in the requant's bias (:func:`rounding_offset`); half to even (ROUND, Brevitas's
default) is refused wherever a tie can occur.
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


def rounding_offset(mode: str, m: int, b: int, k: int) -> int | None:
    """``o`` such that ``floor((acc * m + b + o + 2^(k-1)) / 2^k)`` rounds ``(acc * m + b) /
    2^k`` by ``mode`` for every integer ``acc`` (None: no such ``o``).

    Modes that round every value the same way need only their offset; nearest-value modes
    (half to even, half away from / towards zero) agree with half up wherever no tie can
    occur; any mode is exact where nothing is ever rounded.

    >>> [rounding_offset(*a) for a in (("FLOOR", 3, 0, 3), ("CEIL", 1, 0, 2), ("ROUND", 2, 0, 2))]
    [-4, 1, None]
    >>> rounding_offset("ROUND", 2, 1, 2)  # acc * 2 + 1 is odd: never a tie at a quarter
    0
    """
    if k == 0:
        return 0
    half = 1 << (k - 1)
    fixed = {"FLOOR": 0, "CEIL": (1 << k) - 1, "HALF_UP_POS": half, "HALF_DOWN_NEG": half - 1}
    if mode in fixed:
        return fixed[mode] - half
    step = math.gcd(m, 1 << k)  # acc * m + b runs over b + multiples of step
    if step == 1 << k and b % step == 0:
        return 0  # never a fraction
    ties = (half - b) % step == 0
    return 0 if mode in ("ROUND", "HALF_UP", "HALF_DOWN", "EXACT") and not ties else None


def dyadic_params(
    ratios: list[Fraction], biases: list[Fraction], what: str
) -> tuple[int, list[int], list[int]]:
    """``(k, m, b)`` with ``ratios[c] == m[c] / 2^k`` and ``biases[c] == b[c] / 2^k`` exactly
    (``biases`` in output steps)."""
    k, ms = rescale(ratios, what)
    for b in biases:
        p = dyadic(b)
        if p is None:
            raise QCompileError(
                f"{what}: bias {float(b):.8g} (in output steps) is not an integer times 2^-k: "
                "quantize it to the accumulator's scale (Brevitas bias_quant=Int32Bias)"
            )
        if p[1] > k:
            ms, k = [m << (p[1] - k) for m in ms], p[1]
    if k > 62 or max(ms) > MAX_MULT:
        raise QCompileError(f"{what}: needs a shift beyond 62 or a multiplier beyond 31 bits")
    return k, ms, [int(b * (1 << k)) for b in biases]


def requant_params(
    ratios: list[Fraction], biases: list[Fraction], mode: str, what: str
) -> tuple[int, list[int], list[int]]:
    """:func:`dyadic_params`, the bias raised by the offset ``mode`` needs."""
    k, ms, bs = dyadic_params(ratios, biases, what)
    offsets = [rounding_offset(mode, m, b, k) for m, b in zip(ms, bs, strict=True)]
    if any(o is None for o in offsets):
        raise QCompileError(_mode_error(mode, what))
    return k, ms, [b + o for b, o in zip(bs, offsets, strict=True)]  # type: ignore[operator]


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

    def add(self, node: Node, unit: Fraction) -> Act:
        self.nodes.append(node)
        return Act(node.output, unit)

    def land(self, v: Lin, t: Landing, name: str, what: str) -> Act:
        """Emit ``v`` landing on ``t``; the final node is called ``name``.

        Biases and rounding offsets go on weight layers only (the FPGA backend requantizes
        adds, clips and pools with a plain multiplier and shift): a sum's first weight layer
        carries them, and a lone shortcut that needs one becomes an identity layer (a 1x1
        depthwise convolution, or an identity dense layer on flat tensors)."""
        if t.qtype is None:
            t = self._wide(v, what)
        terms = list(v.terms)
        steps = [b / t.scale for b in v.bias]  # the bias in output steps
        if len(terms) == 1 and isinstance(terms[0], Scaled):
            x = terms[0]
            ratio = [x.src.unit * x.coef / t.scale] * len(steps)
            k, ms, bs = requant_params(ratio, steps, t.mode, what)
            if not any(bs):
                return self._finish(name, Clip(), [x.src.info], None, t, k, ms, bs, what)
            terms = [identity(x, f"{name}.identity")]
        if len(terms) == 1:
            x = terms[0]
            assert isinstance(x, Term)
            k, ms, bs = requant_params([u / t.scale for u in x.units()], steps, t.mode, what)
            return self._finish(name, x.op, [x.src.info], _weights(x, what), t, k, ms, bs, what)
        return self._sum(terms, steps, t, name, what)

    def _sum(
        self, terms: list[Term | Scaled], steps: list[Fraction], t: Landing, name: str, what: str
    ) -> Act:
        """Each weight layer lands exactly on a wide tensor of unit ``t.scale * 2^-K`` (K the
        finest shift any term or bias needs), then one add shifts by K."""
        ratios = [u / t.scale for x in terms for u in _units(x)]
        big_k, ms, bs = dyadic_params(ratios, steps, what)
        g = t.scale / (1 << big_k)
        step = math.gcd(*ms, 1 << big_k)  # the sum runs over bias + multiples of step
        offsets = [rounding_offset(t.mode, step, b, big_k) for b in bs]
        if any(o is None for o in offsets):
            raise QCompileError(_mode_error(t.mode, what))
        carried = [b + o for b, o in zip(bs, offsets, strict=True)]  # type: ignore[operator]
        if any(carried) and not any(isinstance(x, Term) for x in terms):
            terms[0] = identity(terms[0], f"{name}.identity")  # type: ignore[arg-type]
        inputs, mults = [], []
        for i, x in enumerate(terms):
            if isinstance(x, Term):
                ms = [_int(u / g, what, "weight scale / sum unit") for u in x.units()]
                part = self._finish(f"{name}.{x.name}", x.op, [x.src.info], _weights(x, what),
                                    Landing(g, g), 0, ms, carried, what)  # fmt: skip
                carried = [0] * len(carried)  # the first weight layer carries the bias
                inputs.append(part.info)
                mults.append(1)
            else:
                inputs.append(x.src.info)
                mults.append(_int(x.src.unit * x.coef / g, what, f"input {i}'s scale / sum unit"))
        return self._finish(name, Add(tuple(mults)), inputs, None, t, big_k, [1], [0], what)

    def _wide(self, v: Lin, what: str) -> Landing:
        """A wide tensor whose unit divides every term's unit, the bias and the bounds (so
        nothing rounds)."""
        extra = [b for b in (*v.bias, v.lo, v.hi) if b]
        g = unit_gcd([u for x in v.terms for u in _units(x)] + [abs(b) for b in extra])  # type: ignore[misc]
        lo = Landing.lo if v.lo is None else int(v.lo / g)
        hi = Landing.hi if v.hi is None else int(v.hi / g)
        return Landing(g, g, lo, hi)

    def _finish(
        self,
        name: str,
        op: object,
        srcs: list[TensorInfo],
        w: Weights | None,
        t: Landing,
        shift: int,
        ms: list[int],
        bs: list[int],
        what: str,
    ) -> Act:
        """The node with its accumulator width and output type from its inputs' ranges."""
        mult: int | tuple[int, ...] = ms[0] if len(set(ms)) == 1 else tuple(ms)
        bias = tuple(bs) if any(bs) else None
        ranges = [i.qtype.range for i in srcs]
        ins = tuple(i.name for i in srcs)
        try:
            probe = Node(name, op, ins, srcs[0], w, Requant(shift, 0, 0, 64, mult, bias))  # type: ignore[arg-type]
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
        node = Node(name, probe.op, ins, out, w, Requant(shift, lo, hi, acc_bits, mult, bias))
        return self.add(node, t.unit)


def _units(x: Term | Scaled) -> list[Fraction]:
    return x.units() if isinstance(x, Term) else [x.src.unit * x.coef]


def identity(s: Scaled, name: str) -> Term:
    """``s`` as a weight layer of identity weights, to carry a bias."""
    c = s.src.shape[0]
    if len(s.src.shape) == 3:
        op: Conv2d | Dense = Conv2d((1, 1), (0, 0), (1, 1), c)
        w = np.ones((c, 1, 1, 1), dtype=np.int64)
    else:
        op, w = Dense(), np.eye(c, dtype=np.int64)
    return Term(name, s.src, op, w, (s.coef,) * c, 1, 1, np.zeros(1, dtype=np.int64))


def _weights(x: Term, what: str) -> Weights:
    codes = (x.w - x.zero.reshape(-1, *[1] * (x.w.ndim - 1))) // x.step
    try:
        w = Weights(x.bits, tuple(x.w.shape), codes.astype(np.uint8), False, Affine(x.step, x.zero))
        w.check()
    except ValueError as e:
        raise QCompileError(f"{what}: {e}") from None
    return w


def _mode_error(mode: str, what: str) -> str:
    if mode == "ROUND":
        return (
            f"{what}: rounds half to even (QONNX ROUND, Brevitas's default), but this rescale "
            "has ties and the integer contract rounds half up; quantize with "
            "float_to_int_impl_type='floor' (or use scales whose rescale is an integer)"
        )
    return (
        f"{what}: rounding mode {mode} cannot be expressed exactly at this rescale (signed values)"
    )
