"""Reading QONNX constants, attributes and weights for the importer: the integers a ``Quant``
gives a constant (computed as qonnx computes them), per-channel scales and zero points, biases
as exact fractions, rounding modes as exact functions, and pool windows.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

import numpy as np

from qcompile.errors import QCompileError
from qcompile.interop.qonnx_values import Act, QConst, Term, Value, fractions
from qcompile.ir.graph import Conv2d, Dense

BREVITAS_NOISE = (
    "export_handler",
    "act_quant",
    "weight_quant",
    "bias_quant",
    "trunc_quant",
    "activation_impl",
)


def sanitize(name: str) -> str:
    """``name`` as an identifier (backends turn IR names into C identifiers), without the
    parts of Brevitas's names that only repeat what the node is.

    >>> sanitize("/r2/act_quant/export_handler/Quant"), sanitize("/0/Conv")
    ('r2_Quant', 'n_0_Conv')
    """
    parts = [p for p in re.split(r"[^0-9A-Za-z_]+", name) if p and p not in BREVITAS_NOISE]
    base = "_".join(parts) or "node"
    return base if base[0].isalpha() else f"n_{base}"


def attr_value(a: Any) -> Any:
    """An ONNX attribute as Python: str, list, numpy array or number."""
    from onnx import helper, numpy_helper

    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if hasattr(v, "dims"):  # a TensorProto
        return numpy_helper.to_array(v)
    return list(v) if isinstance(v, list | tuple) else v


def bit_width(bits: np.ndarray, what: str) -> int:
    """A Quant's constant bit width, one integer >= 1."""
    if (
        bits.size != 1
        or float(bits.reshape(-1)[0]) != int(bits.reshape(-1)[0])
        or bits.reshape(-1)[0] < 1
    ):
        raise QCompileError(
            f"{what}: bit width {bits.reshape(-1)[:2].tolist()} is not one integer >= 1"
        )
    return int(bits.reshape(-1)[0])


def scalar_of(a: np.ndarray, role: str, what: str) -> Fraction:
    """An activation quantizer's one scale or zero point, exactly."""
    if a.size != 1:
        raise QCompileError(f"{what}: per-channel {role}s of activations are not representable")
    return Fraction(float(a.reshape(-1)[0]))


def domain_mode(mode: str, unsigned: bool) -> str:
    """The QONNX rounding mode as a sign-independent one (on non-negative values, where
    "up"/"down"/"half up" no longer depend on the sign); others stay as they are."""
    if mode in ("FLOOR", "CEIL"):
        return mode
    if unsigned:
        return {
            "DOWN": "FLOOR",
            "ROUND_TO_ZERO": "FLOOR",
            "UP": "CEIL",
            "HALF_UP": "HALF_UP_POS",
            "HALF_DOWN": "HALF_DOWN_NEG",
        }.get(mode, mode)
    return mode


def round_as(mode: str, v: Fraction) -> int:
    """``v`` rounded as ``mode`` does (exact)."""
    if mode == "FLOOR":
        return math.floor(v)
    if mode == "CEIL":
        return math.ceil(v)
    if mode in ("HALF_UP_POS", "HALF_UP"):
        return (
            math.floor(v + Fraction(1, 2))
            if v >= 0 or mode == "HALF_UP_POS"
            else -math.floor(-v + Fraction(1, 2))
        )
    if mode in ("HALF_DOWN_NEG", "HALF_DOWN"):
        return (
            math.ceil(v - Fraction(1, 2))
            if v >= 0 or mode == "HALF_DOWN_NEG"
            else -math.ceil(-v - Fraction(1, 2))
        )
    if mode in ("DOWN", "ROUND_TO_ZERO"):
        return math.trunc(v)
    if mode == "UP":
        return math.ceil(v) if v >= 0 else math.floor(v)
    return round(v)  # ROUND: half to even


def quant_const(
    x: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    bits: int,
    signed: bool,
    narrow: bool,
    mode: str,
    name: str,
    what: str,
) -> QConst:
    """The integers qonnx's Quant gives a constant (computed as qonnx computes them, in
    float32), checked to be exactly ``ints * scale`` once dequantized."""
    from qonnx.custom_op.general.quant import max_int, min_int, resolve_rounding_mode

    if np.any(np.asarray(scale) <= 0):
        raise QCompileError(f"{what}: scales must be positive")
    s, z = np.asarray(scale, np.float32), np.asarray(zero, np.float32)
    if np.any(z != np.round(z)):
        raise QCompileError(f"{what}: zero points must be integers")
    if bits == 1 and signed:  # qonnx's int_quant treats it as bipolar
        y = np.where(x.astype(np.float32) / s + z >= 0, 1.0, -1.0)
    else:
        y = np.clip(
            x.astype(np.float32) / s + z,
            min_int(signed, narrow, bits),
            max_int(signed, narrow, bits),
        )
        y = resolve_rounding_mode(mode)(y)
    ints = (y - z).astype(np.int64)
    deq = ((y - z) * s).astype(np.float32)  # what the source computes with
    exact = np.broadcast_to(s.astype(np.float64), deq.shape) * ints
    if not np.array_equal(deq.astype(np.float64), exact):
        raise QCompileError(
            f"{what}: its dequantized values round in float32 (scale {s.reshape(-1)[0]:g})"
        )
    return QConst(ints, s.astype(np.float64), bits, signed, narrow, z.astype(np.int64), name)


def weights_of(w: Value | None, what: str, ndim: int) -> QConst:
    if isinstance(w, np.ndarray):
        raise QCompileError(
            f"{what}: its weights are float (no Quant on them); the integer contract needs "
            "quantized weights"
        )
    if not isinstance(w, QConst) or w.ints.ndim != ndim:
        raise QCompileError(f"{what}: weights must be a {ndim}-D constant under a Quant")
    if w.bits > 8:
        raise QCompileError(f"{what}: {w.bits}-bit weights (the integer contract holds 1..8 bits)")
    return w


def transposed(q: QConst) -> QConst:
    """Weights given ``[in, out]`` (MatMul, Gemm without transB) as ``[out, in]``."""
    full = lambda a: np.broadcast_to(np.asarray(a), q.ints.shape).T  # noqa: E731
    return QConst(q.ints.T, full(q.scale), q.bits, q.signed, q.narrow, full(q.zero), q.node)


def per_channel(a: np.ndarray, shape: tuple[int, ...], role: str, what: str) -> np.ndarray:
    """``a`` (broadcast over a tensor of ``shape``) as one value per output channel."""
    full = np.broadcast_to(np.asarray(a), shape).reshape(shape[0], -1)
    if np.any(full != full[:, :1]):
        raise QCompileError(f"{what}: its weight {role} varies within an output channel")
    return full[:, 0]


def term_of(name: str, src: Act, op: Conv2d | Dense, q: QConst, what: str) -> Term:
    """Quantized weights ``[O, ...]`` as a weight layer on ``src``: per-channel scales, and
    codes ``w - zero`` (a narrow range leaves code 0 unused, keeping weights int8)."""
    shape = q.ints.shape
    scale = tuple(Fraction(float(v)) for v in per_channel(q.scale, shape, "scale", what))
    if q.bits == 1 and q.signed:  # +-1 levels: w = 2 code - 1
        return Term(name, src, op, q.ints, scale, 1, 2, np.array([-1], dtype=np.int64))
    from qonnx.custom_op.general.quant import min_int

    zero = per_channel(q.zero, shape, "zero point", what).astype(np.int64)
    lowest = int(min_int(q.signed, False, q.bits)) - zero  # narrow: code 0 unused, w in int8
    return Term(
        name,
        src,
        op,
        q.ints,
        scale,
        q.bits,
        1,
        lowest if np.any(lowest != lowest[0]) else lowest[:1],
    )


def bias_of(
    b: Value | None, c: int, what: str, shape: tuple[int, ...] | None = None
) -> tuple[Fraction, ...]:
    """Real per-channel bias values (a QConst exactly, a float constant as it is)."""
    if b is None:
        return (Fraction(0),) * c
    if isinstance(b, QConst):
        vals = np.broadcast_to(b.scale, b.ints.shape).reshape(-1)
        real = [Fraction(float(s)) * int(i) for s, i in zip(vals, b.ints.reshape(-1), strict=True)]
        arr = np.array(real, dtype=object).reshape(b.ints.shape)
    elif isinstance(b, np.ndarray):
        arr = np.array(fractions(b), dtype=object).reshape(b.shape)
    else:
        raise QCompileError(f"{what}: adds a computed tensor where a bias was expected")
    full_shape = (1, *(shape or (c,)))
    try:
        full = np.broadcast_to(arr, full_shape).reshape(c, -1)
    except ValueError:
        raise QCompileError(
            f"{what}: bias of shape {list(arr.shape)} does not fit {c} channels"
        ) from None
    if any(v != row[0] for row in full for v in row):
        raise QCompileError(f"{what}: adds a constant that varies within a channel (not a bias)")
    return tuple(row[0] for row in full)


def window_of(
    attrs: dict, shape: tuple[int, ...], what: str, op: str
) -> tuple[tuple[int, int], ...]:
    """``(kernel, strides, pads)`` of a 2-D pool node (a global pool: the whole image)."""
    if len(shape) != 3:
        raise QCompileError(f"{what}: pools need [C, H, W] inputs")
    if op == "GlobalAveragePool":
        return (shape[1], shape[2]), (shape[1], shape[2]), (0, 0)
    if attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise QCompileError(f"{what}: ceil_mode and dilations are not supported")
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise QCompileError(f"{what}: auto_pad {attrs['auto_pad']} is not supported; give pads")
    k = tuple(attrs["kernel_shape"])
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(k) != 2 or len(pads) != 4 or pads[:2] != pads[2:]:
        raise QCompileError(f"{what}: needs a 2-D window with symmetric pads")
    return k, tuple(attrs.get("strides", [1, 1])), (pads[0], pads[1])  # type: ignore[return-value]
