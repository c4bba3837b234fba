"""A convolution's activation packing as whole vectors (x86, stride 1, whole bytes).

The GEMM (:mod:`gemm_dot`) reads a conv's input packed as :mod:`vector_conv` lays it out:
per channel group of four, the zero-padded image's pixels, each four bytes ``x + offset``
(a channel past the input's is byte 0, a padding pixel the offset's byte, the pixels past
the plane 0). The TE packing computes that byte by byte, each with its bounds checks and a
branch: on AVX2 it took about 15% of resnet20's batch-1 time. Here a row of each group is
packed as vectors instead: eight columns of each of the group's four channels loaded as one
contiguous vector each, widened to 32 bits, shifted into their byte of the pixel's word and
ORed, eight pixels stored as one 32-byte vector; the padding columns and rows as words. A
wide input (a residual sum) packs one such plane per byte digit, top first (its bytes:
``digits.Digits.byte``; the TE packing of mobilenetv2's expansions on residual sums was
6.5% of its host batch-1 time).

Taken where the stride is 1, each plane holds whole bytes (no nibble split) and channels are
grouped (not lenet's one-channel column packing); the TE packing stays for the rest and on
aarch64 (whose instruction counts are measured under qemu).
"""

from __future__ import annotations

from typing import Any

from qcompile.backends.tvm.isa import ARM
from qcompile.backends.tvm.vector_conv import ConvPlan

VEC = 8  # pixels per vector: 32 bytes, one AVX2 register


def applies(plan: Any) -> bool:
    """Whether ``plan`` (a kernel plan, or None) is a conv this packing handles."""
    if not isinstance(plan, ConvPlan) or plan.columns:
        return False
    g = plan.gemm
    return g.isa.arch != ARM and plan.phases.stride == (1, 1) and g.mac.planes == 1


def pack_stmt(plan: ConvPlan, x: Any, act: Any, parallel: bool = False) -> Any:
    """The packing as one TIR statement: ``x`` the conv's input buffer ``[n, c, h, w]``,
    ``act`` the packed buffer ``[n, planes, groups * group_pixels * 4]`` (uint8; a plane
    per byte digit of a wide input, top first); ``parallel``: its channel groups shared out
    to the threads."""
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T

    ph, geo = plan.phases, plan.gemm.geometry
    n = x.shape[0]  # 1 inside ``batch.per_image``
    cg, h, wd = (int(v) for v in x.shape[1:])
    rows, cols, gp = ph.rows, ph.cols, ph.group_pixels
    pt, pl = (rows - h) // 2, (cols - wd) // 2
    off, digits = plan.gemm.mac.offset, plan.gemm.digits

    def to_byte(q: int, v: Any, count: int) -> Any:
        """Plane ``q``'s byte of ``v`` (int32, or ``count`` of them) as int32: the value
        plus the offset, or its byte digit (``digits.Digits.byte``)."""
        v = v + off if digits is None else digits.byte(tirx, v, q)
        return v & (T.int32(255) if count == 1 else T.Broadcast(T.int32(255), count))

    def lane_byte(q: int, g: Any, lane: int, value: Any) -> Any:
        """``value`` (int32) as lane ``lane``'s byte of the word, 0 past the channels."""
        byte = T.Cast("uint32", to_byte(q, value, 1))
        if cg % 4:
            byte = T.Select(g * 4 + lane < cg, byte, T.uint32(0))
        return byte << T.uint32(8 * lane) if lane else byte

    def store_word(q: int, img: Any, pix: Any, word: Any) -> None:
        T.buffer_store(act, T.reinterpret("uint8x4", word), [img, q, T.Ramp(pix * 4, 1, 4)])

    def pad_word(q: int, g: Any) -> Any:
        word = lane_byte(q, g, 0, T.int32(0))
        for lane in range(1, 4):
            word = word | lane_byte(q, g, lane, T.int32(0))
        return word

    def pixels(q: int, img: Any, g: Any, row: Any, first: Any, count: int) -> None:
        """Columns ``first .. first + count`` of input row ``row`` (inside the image)."""
        at = (g * gp + (row + pt) * cols + pl + first) * 4
        word = None
        for lane in range(4):
            ch = T.min(g * 4 + lane, cg - 1)
            if count == 1:
                v = T.Cast("int32", x[img, ch, row, first])
                part = lane_byte(q, g, lane, v)
            else:
                v = T.Cast(f"int32x{count}", x[img, ch, row, T.Ramp(first, 1, count)])
                byte = T.Cast(f"uint32x{count}", to_byte(q, v, count))
                if cg % 4:
                    keep = T.Broadcast(g * 4 + lane < cg, count)
                    byte = T.Select(keep, byte, T.Broadcast(T.uint32(0), count))
                part = byte << T.Broadcast(T.uint32(8 * lane), count) if lane else byte
            word = part if word is None else word | part
        T.buffer_store(
            act, T.reinterpret(f"uint8x{4 * count}", word), [img, q, T.Ramp(at, 1, 4 * count)]
        )

    groups = T.parallel if parallel else T.serial
    with IRBuilder() as ib, T.serial(0, n) as img, groups(0, geo.groups) as g:
        for q in range(plan.gemm.act_planes):
            pad = T.alloc_buffer((1,), "uint32")
            T.buffer_store(pad, pad_word(q, g), [0])
            with T.serial(0, rows) as r:
                inside = T.And(r >= pt, r < pt + h)
                with T.If(inside):
                    with T.Then():
                        for c in list(range(pl)) + list(range(pl + wd, cols)):
                            store_word(q, img, g * gp + r * cols + c, pad[0])
                        full, tail = divmod(wd, VEC)
                        with T.serial(0, full) as j:
                            pixels(q, img, g, r - pt, j * VEC, VEC)
                        if tail:
                            pixels(q, img, g, r - pt, full * VEC, tail)
                    with T.Else(), T.serial(0, cols) as c:
                        store_word(q, img, g * gp + r * cols + c, pad[0])
            if gp > rows * cols:
                with T.serial(0, gp - rows * cols) as e:
                    # a reinterpret of the constant 0 is TVM's null-pointer shortcut
                    at = (g * gp + rows * cols + e) * 4
                    T.buffer_store(act, T.Broadcast(T.uint8(0), 4), [img, q, T.Ramp(at, 1, 4)])
    return ib.get()
