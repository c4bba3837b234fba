"""Decoding one vector of a row's codes into int8 weights, in registers (TIR builders).

The codes are stored as :mod:`row_layout` lays them out: a decode step loads one chunk per
plane, shifts it by a constant, masks it and ORs the planes together; ``dw`` consecutive
positions come out, no shuffles. The weight of a code is then

- affine levels: ``step * code + zero[row]`` in byte arithmetic (every weight is an int8, so
  the wrap-around of bytes is exact);
- table levels: a table lookup (``vpshufb`` / ``tbl``, 16 entries per instruction, the row's
  table broadcast to every 128-bit lane); codes of 5 to 7 bits look up ``2^(b-4)`` tables
  and keep the one their high bits select.

Every function returns an expression, to be called while a TVMScript macro is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qcompile.backends.tvm.isa import ARM, Isa, lookup16
from qcompile.backends.tvm.row_layout import Group

_PSHUFB128 = "llvm.x86.ssse3.pshuf.b.128"


@dataclass(frozen=True)
class LevelsPlan:
    """How a layer's codes become weights: ``affine`` (``step``, a zero point per row) or
    tables of ``16 * tables`` int8 entries per row."""

    affine: bool
    step: int = 1
    tables: int = 1


def code_vec(stored: Any, g: Group, row_base: Any, c: Any, s: int, dw: int) -> Any:
    """uint8 x ``dw``: the codes of positions ``(c * steps + s) * dw ...`` of a row of ``g``
    whose stored bytes start at ``row_base``; ``steps = 8 / finest plane``, ``s`` static."""
    from tvm.script import tirx as T

    pmin = min(g.planes)
    code = None
    for i, p in enumerate(g.planes):
        seg = 8 // p
        chunk = c * (p // pmin) + s // seg
        raw = stored[T.Ramp(row_base + g.plane_offset(i) + chunk * dw, 1, dw)]
        shift = (s % seg) * p
        part = raw >> T.Broadcast(T.uint8(shift), dw) if shift else raw
        if p < 8:
            part = part & T.Broadcast(T.uint8((1 << p) - 1), dw)
        if g.plane_shift(i):
            part = part << T.Broadcast(T.uint8(g.plane_shift(i)), dw)
        code = part if code is None else code | part
    return code


def paired(lv: LevelsPlan, g: Group) -> bool:
    """Whether ``g``'s table lookups index several codes at once (:func:`paired_weight_vec`):
    table levels of one plane of 1 or 2 bits."""
    return not lv.affine and len(g.planes) == 1 and g.planes[0] < 4


def paired_weight_vec(
    isa: Isa, stored: Any, g: Group, row_base: Any, c: Any, s: int, levels: Any, row: Any, dw: int
) -> Any:
    """int8 x ``dw``: the weights of step ``s`` of chunk ``c`` (as :func:`code_vec` and
    :func:`weight_vec`) for a group of 1- or 2-bit codes with table levels. The index of a
    lookup is a nibble of the chunk, the codes of ``4 / p`` consecutive steps; step ``s``
    looks it up in a table that keeps its own code's bits, ``T[i] = L[(i >> p * t) & m]``.
    Every ``4 / p`` steps share one shift and mask (``2 * p / 8`` of them per step instead
    of about two)."""
    from tvm.script import tirx as T

    p = g.planes[0]
    per_nibble = 4 // p
    nib, t = divmod(s, per_nibble)
    raw = stored[T.Ramp(row_base + c * dw, 1, dw)]
    idx = raw >> T.Broadcast(T.uint8(4 * nib), dw) if nib else raw
    idx = T.reinterpret(f"int8x{dw}", idx & T.Broadcast(T.uint8(15), dw))
    keep = [(i >> (p * t)) & ((1 << p) - 1) for i in range(16)]
    table = _lookup16(isa, levels[row, T.Ramp(0, 1, 16)], keep)
    return _lookup(isa, table, idx, dw)


def _lookup16(isa: Isa, table16: Any, idx: list[int]) -> Any:
    """int8x16: ``table16[idx[i]]`` for constant indices (one lookup, hoisted per row)."""
    from tvm.script import tirx as T

    const = _const16(idx)
    if isa.arch == ARM:
        return lookup16(isa, table16, const)
    return T.call_llvm_pure_intrin("int8x16", _PSHUFB128, table16, const)


def _const16(values: list[int]) -> Any:
    from tvm.script import tirx as T

    return T.Shuffle([T.Ramp(T.int8(0), T.int8(1), 16)], values)


def _lookup(isa: Isa, table16: Any, idx: Any, dw: int) -> Any:
    from tvm.script import tirx as T

    if isa.arch == ARM or dw == isa.vbytes:
        wide = table16 if dw == 16 else T.Shuffle([table16] * (dw // 16), list(range(dw)))
        return lookup16(isa, wide, idx)
    assert dw == 16, "x86 decodes 16 bytes (xmm) or a whole register"
    return T.call_llvm_pure_intrin("int8x16", _PSHUFB128, table16, idx)


def weight_vec(
    isa: Isa, lv: LevelsPlan, code: Any, levels: Any, row: Any, bits: int, dw: int
) -> Any:
    """int8 x ``dw``: the weights of uint8 ``code`` of stored row ``row``. ``levels``: the
    uint8 zero points [rows] (affine) or the int8 tables [rows, 16 * tables]."""
    from tvm.script import tirx as T

    if lv.affine:
        w = code + code if lv.step == 2 else code
        return T.reinterpret(f"int8x{dw}", w + T.Broadcast(levels[row], dw))
    idx = T.reinterpret(f"int8x{dw}", code & T.Broadcast(T.uint8(15), dw) if bits > 4 else code)
    out = _lookup(isa, levels[row, T.Ramp(0, 1, 16)], idx, dw)
    high = code >> T.Broadcast(T.uint8(4), dw)
    for t in range(1, 1 << max(0, bits - 4)):
        hit = _lookup(isa, levels[row, T.Ramp(16 * t, 1, 16)], idx, dw)
        out = T.Select(high == T.Broadcast(T.uint8(t), dw), hit, out)
    return out


def binary_levels(lv: LevelsPlan, levels: Any, row: Any) -> tuple[Any, Any]:
    """int32 ``(w0, d)`` of a 1-bit row: its weights are ``w0 + c * d`` for codes ``c``
    (``levels`` as for :func:`weight_vec`; an affine zero point is a wrapped int8 byte)."""
    from tvm.script import tirx as T

    def int8(v: Any) -> Any:
        return ((v + 128) & 255) - 128

    if lv.affine:
        zero = T.Cast("int32", levels[row])
        w0 = int8(zero)
        return w0, int8(zero + lv.step) - w0
    w0 = T.Cast("int32", levels[row, 0])
    return w0, T.Cast("int32", levels[row, 1]) - w0
