"""Packed-LUT GEMV with the lookup as one AVX-512 instruction (vpermw / vpermb).

acc[n, j] = sum_k x[n, k] * lut[j, code(j, k)], codes of b bits (b = 1, 2, 4) packed LSB-first
in uint32 words exactly as the rest of the backend packs them. The Select-tree kernel spends
about ten vector instructions per 16 weights on the lookup; here 32 weights cost four:

- the 2*b int16 chunks holding 32 codes are loaded once and broadcast to all 32 int16 lanes;
- ``vpsrlvw`` shifts lane ``p`` right by ``b * (p // (2b))``: its low b bits are then code
  ``(p % 2b) * (16 // b) + p // (2b)`` of the block; the high bits are garbage because
- ``vpermw`` reads only the low 5 bits of each index, and the row's LUT is replicated to 32
  int16 entries (``table[i] = lut[i % 2^b]``), so ``index mod 2^b`` is all that matters;
- ``vpdpwssd`` (AVX512-VNNI) multiplies the int16 levels by int16 x and adds pairs into 16
  int32 accumulators (``vpmaddwd`` + ``vpaddd`` without VNNI).

Where levels and inputs fit int8 (``gemv8``, AVX512-VBMI + VNNI) 64 weights cost three:
``vpmultishiftqb`` puts each code in the low bits of a byte lane straight from a broadcast
load, ``vpermb`` looks 64 levels up (stored as level + 128, unsigned) and ``vpdpbusd``
multiplies them by int8 x, four products per int32 lane; ``128 * sum(x)`` is subtracted per
row. All int32 arithmetic wraps, as the Select-tree path's int32 sum does: the result is exact
wherever the true accumulator fits int32 (``acc_dtype`` proves it).

x is permuted once per batch row to the lanes' code order, so only the LUT is re-laid out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LANES = 32  # int16 lanes of a zmm register: weights per vpermw
BYTE_LANES = 64  # byte lanes: weights per vpermb
BITS = (1, 2, 4)
VPERMW = "llvm.x86.avx512.permvar.hi.512"  # (table, indices) -> table[indices & 31]
VPDPWSSD = "llvm.x86.avx512.vpdpwssd.512"  # (acc, a, b) -> acc + pairwise a * b (VNNI)
VPMADDWD = "llvm.x86.avx512.pmaddw.d.512"  # (a, b) -> pairwise a * b as int32
VPERMB = "llvm.x86.avx512.permvar.qi.512"  # (table, indices) -> table[indices & 63] (VBMI)
VPMULTISHIFTQB = "llvm.x86.avx512.pmultishift.qb.512"  # (offsets, qwords) -> 8 bits at each
VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"  # (acc, u8, s8) -> acc + sum of 4 products (VNNI)


def lane_source(bits: int) -> np.ndarray:
    """For each int16 lane of a block, the index (0..31) of the code it holds."""
    chunks = 2 * bits  # int16 chunks holding a block's 32 codes
    p = np.arange(LANES)
    return (p % chunks) * (16 // bits) + p // chunks


def byte_lane_source(bits: int) -> np.ndarray:
    """For each byte lane L = 8q + i of a 64-weight block, the index (0..63) of its code: the
    block's 64*b bits are b qwords, broadcast 8/b times; qword q reads source qword q % b
    and byte i takes the bits from offset b * (i + 8 * (q // b))."""
    lane = np.arange(BYTE_LANES)
    q, i = lane // 8, lane % 8
    return (q % bits) * (64 // bits) + i + 8 * (q // bits)


def replicated_table(lut: np.ndarray) -> np.ndarray:
    """[rows, 2^b] LUT -> [rows, 32] int16 with ``table[:, i] = lut[:, i % 2^b]``."""
    if lut.min() < -(1 << 15) or lut.max() >= 1 << 15:
        raise ValueError("vpermw lookup needs LUT levels in int16 range")
    return np.tile(lut.astype(np.int16), (1, LANES // lut.shape[1]))


def byte_table(lut: np.ndarray) -> np.ndarray:
    """[rows, 2^b] int8-range LUT -> [rows, 64] uint8 levels + 128 (vpdpbusd multiplies
    unsigned by signed bytes), replicated: ``table[:, i] = lut[:, i % 2^b] + 128``."""
    if lut.min() < -128 or lut.max() > 127:
        raise ValueError("the vpermb lookup needs LUT levels in int8 range")
    return np.tile((lut + 128).astype(np.uint8), (1, BYTE_LANES // lut.shape[1]))


def _check(rows: int, k: int, bits: int, block: int, unroll: int) -> None:
    if bits not in BITS:
        raise ValueError(f"the AVX-512 lookup covers 1, 2 and 4-bit codes, got {bits}")
    if k % block or rows % unroll:
        raise ValueError(f"K must be a multiple of {block} ({k}), rows of unroll={unroll}")


def gemv16_macro(
    rows: int, k: int, bits: int, vnni: bool = True, unroll: int = 8, parallel: bool = True
) -> Any:
    """TVMScript macro body(x [n, k], codes uint32[rows * k*b/32], table int16[rows, 32],
    y [n, rows]) for LUT levels and inputs in int16 range (AVX512BW; VNNI when ``vnni``);
    ``parallel``: rows shared out to threads (False inside a loop that already is)."""
    from tvm.script import tirx as T

    loop = T.parallel if parallel else T.serial

    _check(rows, k, bits, LANES, unroll)
    chunks = 2 * bits
    per_row = k * bits // 16  # int16 chunks per row (rows start on word boundaries)
    blocks = k // LANES
    # Lane p of a block reads chunk p % chunks, shifted right by b * (p // chunks); TIR has
    # no vector literal, so the shifts are a Shuffle of a Ramp (LLVM folds it to a constant).
    shuffle = [p % chunks for p in range(LANES)]
    shift_pick = [p // chunks for p in range(LANES)]
    steps = 16 // bits  # distinct shifts
    n_words = rows * k * bits // 32

    def source(i: Any) -> Any:
        """Index into x of the weight in lane i % 32 of block i // 32 (``lane_source``)."""
        p = i % LANES
        return (i // LANES) * LANES + p % chunks * (16 // bits) + p // chunks

    def mac(acc: Any, levels: Any, xv: Any) -> Any:
        if vnni:
            return T.call_llvm_pure_intrin("int32x16", VPDPWSSD, acc, levels, xv)
        return acc + T.call_llvm_pure_intrin("int32x16", VPMADDWD, levels, xv)

    @T.macro
    def body(x: Any, codes: Any, table: Any, y: Any) -> None:
        c16 = T.decl_buffer((n_words * 2,), "uint16", data=codes.data)
        xp = T.alloc_buffer((k,), "int16")
        for b in range(x.shape[0]):
            for i in range(k):
                xp[i] = T.Cast("int16", x[b, source(i)])
            for jo in loop(rows // unroll):
                acc = T.alloc_buffer((unroll, 16), "int32", scope="local")
                for u in T.unroll(unroll):
                    acc[u, T.Ramp(0, 1, 16)] = T.Broadcast(T.int32(0), 16)
                sh = T.Shuffle([T.Ramp(T.uint16(0), T.uint16(bits), steps)] * chunks, shift_pick)
                for kb in range(blocks):
                    xv = xp[T.Ramp(kb * LANES, 1, LANES)]
                    for u in T.unroll(unroll):
                        row = jo * unroll + u
                        raw = c16[T.Ramp(row * per_row + kb * chunks, 1, chunks)]
                        idx = T.reinterpret(
                            "int16x32", T.Shuffle([raw] * (LANES // chunks), shuffle) >> sh
                        )
                        lv = T.call_llvm_pure_intrin(
                            "int16x32", VPERMW, table[row, T.Ramp(0, 1, LANES)], idx
                        )
                        acc[u, T.Ramp(0, 1, 16)] = mac(acc[u, T.Ramp(0, 1, 16)], lv, xv)
                for u in T.unroll(unroll):
                    s = T.alloc_buffer((1,), "int32", scope="local")
                    s[0] = 0
                    for lane in range(16):
                        s[0] = s[0] + acc[u, lane]
                    y[b, jo * unroll + u] = T.Cast(y.dtype, s[0])

    return body


def gemv8_macro(rows: int, k: int, bits: int, unroll: int = 8, parallel: bool = True) -> Any:
    """The byte variant, for LUT levels and inputs in int8 range (AVX512-VBMI + VNNI):
    macro body(x [n, k], codes uint32[...], table uint8[rows, 64], y [n, rows])."""
    from tvm.script import tirx as T

    loop = T.parallel if parallel else T.serial

    _check(rows, k, bits, BYTE_LANES, unroll)
    per_row = k * bits // 64  # uint64 qwords per row
    blocks = k // BYTE_LANES
    n_words = rows * k * bits // 32
    lane = np.arange(BYTE_LANES)
    qword_of = [q % bits for q in range(8)]  # source qword of each qword position
    # Bit offset of each byte lane, b * m, as a Shuffle of a Ramp (no vector literals in TIR).
    m = [int(v) for v in lane % 8 + 8 * (lane // 8 // bits)]

    def broadcast_codes(c64: Any, base: Any) -> Any:
        """The block's b qwords repeated over the 8 qword positions of a zmm, as bytes."""
        if bits == 1:
            return T.reinterpret("uint8x64", T.Broadcast(c64[base], 8))
        raw = c64[T.Ramp(base, 1, bits)]
        return T.reinterpret("uint8x64", T.Shuffle([raw] * (8 // bits), qword_of))

    def source(i: Any) -> Any:
        """Index into x of the weight in byte lane i % 64 of block i // 64."""
        q, r = (i % BYTE_LANES) // 8, i % 8
        return (i // BYTE_LANES) * BYTE_LANES + (q % bits) * (64 // bits) + r + 8 * (q // bits)

    @T.macro
    def body(x: Any, codes: Any, table: Any, y: Any) -> None:
        c64 = T.decl_buffer((n_words // 2,), "uint64", data=codes.data)
        xp = T.alloc_buffer((k,), "int8")
        xsum = T.alloc_buffer((1,), "int32")
        offs = T.Shuffle([T.Ramp(T.uint8(0), T.uint8(bits), 64 // bits)] * bits, m)
        for b in range(x.shape[0]):
            xsum[0] = 0
            for i in range(k):
                xp[i] = T.Cast("int8", x[b, source(i)])
                xsum[0] = xsum[0] + T.Cast("int32", x[b, i])
            for jo in loop(rows // unroll):
                acc = T.alloc_buffer((unroll, 16), "int32", scope="local")
                for u in T.unroll(unroll):
                    acc[u, T.Ramp(0, 1, 16)] = T.Broadcast(T.int32(0), 16)
                for kb in range(blocks):
                    xv = xp[T.Ramp(kb * BYTE_LANES, 1, BYTE_LANES)]
                    for u in T.unroll(unroll):
                        row = jo * unroll + u
                        idx = T.call_llvm_pure_intrin(
                            "uint8x64",
                            VPMULTISHIFTQB,
                            offs,
                            broadcast_codes(c64, row * per_row + kb * bits),
                        )
                        lv = T.call_llvm_pure_intrin(
                            "uint8x64", VPERMB, table[row, T.Ramp(0, 1, BYTE_LANES)], idx
                        )
                        acc[u, T.Ramp(0, 1, 16)] = T.call_llvm_pure_intrin(
                            "int32x16", VPDPBUSD, acc[u, T.Ramp(0, 1, 16)], lv, xv
                        )
                for u in T.unroll(unroll):
                    s = T.alloc_buffer((1,), "int32", scope="local")
                    s[0] = 0 - 128 * xsum[0]
                    for lane in range(16):
                        s[0] = s[0] + acc[u, lane]
                    y[b, jo * unroll + u] = T.Cast(y.dtype, s[0])

    return body


def standalone(
    body: Any, rows: int, k: int, bits: int, table_shape: tuple[int, int], table_dtype: str
) -> Any:
    """A PrimFunc main(x int64[n, k], codes, table, y int64[n, rows]) around a kernel macro
    (the benchmark and the kernel tests call it directly)."""
    from tvm.script import tirx as T

    n_words = rows * k * bits // 32
    n = T.int64()

    @T.prim_func
    def main(
        x: T.Buffer((n, k), "int64"),
        codes: T.Buffer((n_words,), "uint32"),
        table: T.Buffer(table_shape, table_dtype),
        y: T.Buffer((n, rows), "int64"),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        body(x, codes, table, y)

    return main


def gemv16(rows: int, k: int, bits: int, vnni: bool = True, unroll: int = 8) -> Any:
    """Standalone ``gemv16_macro``: table int16[rows, 32]."""
    body = gemv16_macro(rows, k, bits, vnni, unroll)
    return standalone(body, rows, k, bits, (rows, LANES), "int16")


def gemv8(rows: int, k: int, bits: int, unroll: int = 8) -> Any:
    """Standalone ``gemv8_macro``: table uint8[rows, 64]."""
    return standalone(
        gemv8_macro(rows, k, bits, unroll), rows, k, bits, (rows, BYTE_LANES), "uint8"
    )


def inline(body: Any, ins: list, outs: list) -> Any:
    """The kernel macro expanded on given buffers (x, codes, table; acc) as one statement
    (``PrimFunc.specialize`` leaves the body on the old buffers; a macro takes them)."""
    from tvm.script import tirx as T

    x, codes, table = ins

    @T.prim_func(check_well_formed=False)
    def wrap():
        # The parser resolves names through the closure: without a use of T here it would
        # not find T (a local import, to keep ``import tvm`` lazy).
        T.func_attr({"tirx.noalias": True})
        body(x, codes, table, outs[0])

    return wrap.body
