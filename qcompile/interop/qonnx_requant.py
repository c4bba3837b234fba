"""The requantization ``y = clip((acc * m_c + b_c + 2^(k-1)) >> k, lo, hi)`` as standard ONNX
ops and one QONNX ``Quant``, exact under qonnx's executor (numpy for Quant, onnxruntime for
the rest).

QONNX has no round-half-up-with-integer-multiplier node, so it is composed:

    t = acc * (m_c 2^-k)             Mul           (acc * m_c is an integer: exact in float32
                                                    below 2^24, in float64 below 2^53, and
                                                    a power of two changes no bit)
    t = t + (b_c + 2^(k-1)) 2^-k     Add           (the bias, in 2^-k output steps, and the
                                                    rounding: exact likewise)
    y = Quant(t, scale=1, zero=0, bits, signed, rounding_mode=FLOOR)
                                                   (floor, and saturation to the output type)
    y = Clip(y, lo, hi)              where [lo, hi] is narrower than the type (ReLU/ReLU6)

``Quant`` returns float32, so it is used where the output fits in 24 bits; a wider output
(logits, the parts of a residual sum) uses ``Floor`` and ``Clip`` in float64. Where
``acc * m`` could pass 2^53, ``acc`` is first clamped per channel to the window outside of
which the output saturates anyway (:func:`saturation_window`), which changes no result.
"""

from __future__ import annotations

import numpy as np

from qcompile.errors import QCompileError
from qcompile.interop.onnx_graph import DOUBLE, FLOAT, NUMPY, QONNX_DOMAIN, Builder, Val
from qcompile.ir.graph import Requant
from qcompile.ir.types import QType, TensorInfo

F32_EXACT = 1 << 24  # every integer of magnitude <= 2^24 is a float32
F64_EXACT = 1 << 53

Range = tuple[int, int]


def exact_dtype(rng: Range, what: str) -> int:
    """float32 where every integer of ``rng`` is one, else float64 (else an error)."""
    top = max(abs(rng[0]), abs(rng[1]))
    if top <= F32_EXACT:
        return FLOAT
    if top <= F64_EXACT:
        return DOUBLE
    raise QCompileError(
        f"{what} holds integers up to 2^{top.bit_length()}: beyond the 2^53 that float64, the "
        "widest type qonnx's executor computes in, holds exactly"
    )


def channel_shape(ndim: int, c: int) -> tuple[int, ...]:
    """Shape broadcasting a per-channel vector over an ``[N, C, ...]`` tensor of ``ndim``
    (no batch dimension: hls4ml broadcasts constants over one sample)."""
    return (c, *([1] * (ndim - 2)))


def saturation_window(m: int, k: int, rnd: int, lo: int, hi: int) -> Range:
    """``[a, b]`` such that clamping ``acc`` to it never changes
    ``clip((acc * m + rnd) >> k, lo, hi)`` (``m != 0``; ``rnd``: bias plus rounding).

    >>> saturation_window(3, 2, 2, 0, 15)  # acc <= -1 gives 0, acc >= 21 gives 15
    (-1, 21)
    """
    if m < 0:
        a, b = saturation_window(-m, k, rnd, lo, hi)
        return -b, -a
    top = -((rnd - (hi + 1) * (1 << k)) // m)  # ceil(((hi+1) 2^k - rnd) / m): y >= hi + 1
    bottom = (lo * (1 << k) - rnd - 1) // m  # floor: y <= lo - 1
    return bottom, top


def requantize(
    b: Builder, acc: Val, channels: list[Range], r: Requant, out: TensorInfo, what: str
) -> Val:
    """Emit the requantization of ``acc`` (exact integers; ``channels`` gives each output
    channel's accumulator range, or one range for all); returns the output tensor, named
    ``out.name``."""
    c = max(len(channels), len(r.multipliers), len(r.biases))
    channels = channels * (c // len(channels))
    ms = [int(v) for v in r.multipliers] * (c // len(r.multipliers))
    offsets = [int(v) + r.rounding for v in r.biases] * (c // len(r.biases))  # b + 2^(k-1)
    ends = _ends(channels, ms, offsets)
    v = acc
    if max(abs(e) for e in ends) > F64_EXACT:
        v, channels = _clamp_to_window(b, acc, channels, ms, offsets, r, what)
        ends = _ends(channels, ms, offsets)
    dt = FLOAT if acc.dtype == FLOAT and max(abs(e) for e in ends) <= F32_EXACT else DOUBLE
    v = b.cast(v, dt)
    ndim = len(v.shape)
    if r.shift or any(m != 1 for m in ms):
        # acc * (m 2^-k): exact, as acc * m is (a power of two changes no significant bit)
        v = b.mul(v, _per_channel([m * 2.0**-r.shift for m in ms], ndim), f"{out.name}.scaled")
    if any(offsets):
        # + (b + 2^(k-1)) 2^-k: exact, as acc * m + b + 2^(k-1) is
        t = _per_channel([o * 2.0**-r.shift for o in offsets], ndim)
        v = b.add(v, t, f"{out.name}.rounded")
    shifted = [e >> r.shift for e in ends[1::2]]  # the output's range before the clip
    y = _floor_clip(b, v, r, out, (min(shifted), max(shifted)), what)
    return rename_last(b, y, out.name)


def _ends(channels: list[Range], ms: list[int], offsets: list[int]) -> list[int]:
    """Pairs (``acc * m``, ``acc * m + offset``) at both ends of every channel's range: the
    values the requantization computes in float."""
    return [
        x
        for (lo, hi), m, o in zip(channels, ms, offsets, strict=True)
        for v in (lo, hi)
        for x in (v * m, v * m + o)
    ]


def _per_channel(values: list[float], ndim: int) -> np.ndarray | float:
    if len(set(values)) == 1:
        return values[0]
    return np.array(values).reshape(channel_shape(ndim, len(values)))


def _clamp_to_window(
    b: Builder,
    acc: Val,
    channels: list[Range],
    ms: list[int],
    offsets: list[int],
    r: Requant,
    what: str,
) -> tuple[Val, list[Range]]:
    clamped = []
    for (lo, hi), m, o in zip(channels, ms, offsets, strict=True):
        a, z = saturation_window(m, r.shift, o, r.lo, r.hi)
        lo, hi = max(lo, a), min(hi, z)
        clamped.append((lo, max(lo, hi)))
    if max(abs(e) for e in _ends(clamped, ms, offsets)) > F64_EXACT:
        raise QCompileError(
            f"{what}: its requantization (shift {r.shift}) needs integers beyond 2^53 even "
            "where the output does not saturate; float64 cannot hold them exactly"
        )
    v = b.cast(acc, DOUBLE)
    shape = channel_shape(len(v.shape), len(channels))
    lo_c = b.const(
        f"{v.name}.window_lo", np.array([c[0] for c in clamped], np.float64).reshape(shape)
    )
    hi_c = b.const(
        f"{v.name}.window_hi", np.array([c[1] for c in clamped], np.float64).reshape(shape)
    )
    v = b.node("Max", [v, lo_c], f"{v.name}.above")
    return b.node("Min", [v, hi_c], f"{v.name}.below"), clamped


def _floor_clip(b: Builder, v: Val, r: Requant, out: TensorInfo, pre: Range, what: str) -> Val:
    """Floor (after a shift) and saturate to ``[r.lo, r.hi]`` (where ``pre``, the range before
    the clip, can leave it): ``Quant`` for float32 outputs, ``Floor``/``Clip`` in float64."""
    saturates = pre[0] < r.lo or pre[1] > r.hi
    if exact_dtype((r.lo, r.hi), what) == FLOAT and (r.shift or saturates):
        qt = QType.fitting(r.lo, r.hi)  # the narrowest type Quant can saturate to
        y = quant(b, v, qt.bits, qt.signed, "FLOOR", f"{out.name}.quant")
        narrower = (r.lo, r.hi) != qt.range and (pre[0] < r.lo or pre[1] > r.hi)
        return b.clip(y, r.lo, r.hi, f"{out.name}.clip") if narrower else y
    if exact_dtype((r.lo, r.hi), what) == FLOAT:
        v = b.cast(v, FLOAT)
    else:
        v = b.cast(v, DOUBLE)
        if r.shift:
            v = b.node("Floor", [v], f"{out.name}.floor")
        if saturates:
            v = b.clip(v, r.lo, r.hi, f"{out.name}.clip")
    if not b.nodes or b.nodes[-1].output[0] != v.name:  # nothing to compute: name it
        v = b.node("Identity", [v], f"{out.name}.same")
    return v


def quant(b: Builder, v: Val, bits: int, signed: bool, rounding: str, name: str) -> Val:
    """QONNX ``Quant`` with scale 1 and zero point 0: saturate to ``bits`` (two's complement
    if ``signed``), then round with ``rounding``; float32 out."""
    one = b.scalar(f"{name}.scale", 1.0, FLOAT)
    zero = b.scalar(f"{name}.zero", 0.0, FLOAT)
    width = b.scalar(f"{name}.bits", float(bits), FLOAT)
    return b.node(
        "Quant",
        [v, one, zero, width],
        name,
        dtype=FLOAT,
        domain=QONNX_DOMAIN,
        signed=int(signed),
        narrow=0,
        rounding_mode=rounding,
    )


def rename_last(b: Builder, v: Val, name: str) -> Val:
    """Give the tensor the last node produced (``v``) the name ``name``."""
    node, info = b.nodes[-1], b.infos[-1]
    assert node.output[0] == v.name == info.name
    node.output[0] = info.name = name
    return Val(name, v.dtype, v.shape)


__all__ = ["F32_EXACT", "F64_EXACT", "NUMPY", "exact_dtype", "quant", "requantize"]
