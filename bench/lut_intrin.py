"""Prototype: the packed-LUT GEMV with the lookup as one AVX-512 instruction (vpermw).

y[j] = sum_k x[k] * lut[j, code(j, k)], codes of b bits (b = 1, 2, 4) packed LSB-first in
uint32 words, as in the backend's dense layer. The backend's kernel (``qcompile/backends/tvm``)
spends about ten vector instructions per 16 weights on the lookup (shift, mask, a compare and
blend per Select level, a 32-bit multiply, an add). Here 32 weights cost four:

- the 2*b int16 chunks holding 32 codes are loaded once and broadcast to all 32 int16 lanes
  (a shuffle LLVM turns into a broadcast load);
- ``vpsrlvw`` shifts lane ``p`` right by ``b * (p // (2b))``: its low b bits are then code
  ``(p % 2b) * (16 // b) + p // (2b)`` of the block; the high bits are left as garbage because
- ``vpermw`` reads only the low 5 bits of each index, and the row's LUT is replicated to 32
  int16 entries (``table[i] = lut[i % 2^b]``), so ``index mod 2^b`` is all that matters;
- ``vpdpwssd`` (AVX512-VNNI) multiplies the int16 levels by int16 x and adds pairs into 16
  int32 accumulators (``vpmaddwd`` + ``vpaddd`` without VNNI).

x is permuted once per call to the lanes' code order (4096 int16 moves, negligible), so the
packed weight format is the backend's, unchanged. Written as a TVMScript PrimFunc with vector
types and ``T.call_llvm_pure_intrin``; ``main`` times it against the backend's kernel.

    TVM_NUM_THREADS=2 python -m bench.lut_intrin [--repeats 20] [--bits 1 2 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

LANES = 32  # int16 lanes of a zmm register: weights per lookup instruction
TABLE = 32  # entries vpermw can index (low 5 bits of each index)
VPERMW = "llvm.x86.avx512.permvar.hi.512"  # (table, indices) -> table[indices & 31]
VPDPWSSD = "llvm.x86.avx512.vpdpwssd.512"  # (acc, a, b) -> acc + pairwise a * b (VNNI)
VPMADDWD = "llvm.x86.avx512.pmaddw.d.512"  # (a, b) -> pairwise a * b as int32
VPERMB = "llvm.x86.avx512.permvar.qi.512"  # (table, indices) -> table[indices & 63] (VBMI)
VPMULTISHIFTQB = "llvm.x86.avx512.pmultishift.qb.512"  # (offsets, qwords) -> 8 bits at each
VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"  # (acc, u8, s8) -> acc + sum of 4 products (VNNI)
BITS = (1, 2, 4)
BYTE_LANES = 64  # byte lanes of a zmm register: weights per vpermb


def cpu_flag(name: str) -> bool:
    """Whether /proc/cpuinfo lists ``name`` (False where there is no /proc, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and name in line.split() for line in f)
    except OSError:
        return False


def has_avx512bw() -> bool:
    """vpermw and 512-bit vpsrlvw need AVX512BW (AVX512F alone lacks the 16-bit forms)."""
    return cpu_flag("avx512bw")


def has_avx512vnni() -> bool:
    return cpu_flag("avx512_vnni")


def lane_source(bits: int) -> np.ndarray:
    """For each int16 lane of a block, the index (0..31) of the code it holds."""
    chunks = 2 * bits  # int16 chunks holding a block's 32 codes
    p = np.arange(LANES)
    return (p % chunks) * (16 // bits) + p // chunks


def replicated_table(lut: np.ndarray) -> np.ndarray:
    """[rows, 2^b] LUT -> [rows, 32] int16 with ``table[:, i] = lut[:, i % 2^b]``."""
    if lut.min() < -(1 << 15) or lut.max() >= 1 << 15:
        raise ValueError("vpermw lookup needs LUT levels in int16 range")
    reps = TABLE // lut.shape[1]
    return np.tile(lut.astype(np.int16), (1, reps))


def intrin_gemv(rows: int, k: int, bits: int, vnni: bool = True, unroll: int = 8) -> Any:
    """PrimFunc main(x int64[k], codes uint32[rows * k*b/32], table int16[rows, 32],
    y int64[rows]): the same calling convention as the backend (int64 in and out)."""
    from tvm.script import tirx as T

    if bits not in BITS:
        raise ValueError(f"vpermw lookup covers 1, 2 and 4-bit codes, got {bits}")
    if k % LANES:
        raise ValueError(f"K must be a multiple of {LANES}, got {k}")
    if rows % unroll:
        raise ValueError(f"rows must be a multiple of unroll={unroll}")
    chunks = 2 * bits
    per_row = k * bits // 16  # int16 chunks per row (rows start on word boundaries)
    blocks = k // LANES
    src = lane_source(bits)
    # Lane p of a block reads chunk p % chunks, shifted right by b * (p // chunks).
    shuffle = [int(p % chunks) for p in range(LANES)]
    shifts = [int(bits * (p // chunks)) for p in range(LANES)]
    steps = 16 // bits  # distinct shifts
    shift_pick = [int(p // chunks) for p in range(LANES)]
    n_words = rows * k * bits // 32
    del src, shifts

    @T.prim_func
    def main(
        x: T.Buffer((k,), "int64"),
        codes: T.Buffer((n_words,), "uint32"),
        table: T.Buffer((rows, TABLE), "int16"),
        y: T.Buffer((rows,), "int64"),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        c16 = T.decl_buffer((n_words * 2,), "uint16", data=codes.data)
        xp = T.alloc_buffer((k,), "int16")
        for i in range(k):
            # lane i % 32 of block i // 32 holds the code lane_source(bits)[i % 32]
            xp[i] = T.Cast(
                "int16",
                x[
                    (i // LANES) * LANES
                    + (i % LANES) % chunks * (16 // bits)
                    + (i % LANES) // chunks
                ],
            )
        for jo in T.parallel(rows // unroll):
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
                        "int16x32", VPERMW, table[row, T.Ramp(0, 1, TABLE)], idx
                    )
                    if vnni:
                        acc[u, T.Ramp(0, 1, 16)] = T.call_llvm_pure_intrin(
                            "int32x16", VPDPWSSD, acc[u, T.Ramp(0, 1, 16)], lv, xv
                        )
                    else:
                        acc[u, T.Ramp(0, 1, 16)] = acc[
                            u, T.Ramp(0, 1, 16)
                        ] + T.call_llvm_pure_intrin("int32x16", VPMADDWD, lv, xv)
            for u in T.unroll(unroll):
                s = T.alloc_buffer((1,), "int32", scope="local")
                s[0] = 0
                for lane in range(16):
                    s[0] = s[0] + acc[u, lane]
                y[jo * unroll + u] = T.Cast("int64", s[0])

    return main


def byte_lane_source(bits: int) -> np.ndarray:
    """For each byte lane L = 8q + i of a 64-weight block, the index (0..63) of its code: the
    block's 64*b bits are b qwords, broadcast 8/b times; qword q reads source qword q % b
    and byte i takes the bits from offset b * (i + 8 * (q // b))."""
    lane = np.arange(BYTE_LANES)
    q, i = lane // 8, lane % 8
    return (q % bits) * (64 // bits) + i + 8 * (q // bits)


def byte_table(lut: np.ndarray) -> np.ndarray:
    """[rows, 2^b] int8-range LUT -> [rows, 64] uint8 levels + 128 (vpdpbusd multiplies
    unsigned by signed bytes), replicated: ``table[:, i] = lut[:, i % 2^b] + 128``."""
    if lut.min() < -128 or lut.max() > 127:
        raise ValueError("the vpermb lookup needs LUT levels in int8 range")
    return np.tile((lut + 128).astype(np.uint8), (1, BYTE_LANES // lut.shape[1]))


def intrin_gemv8(rows: int, k: int, bits: int, unroll: int = 8) -> Any:
    """The byte variant, for LUT levels in int8 range (AVX512-VBMI + VNNI): per 64 weights
    one ``vpmultishiftqb`` puts each code in the low bits of a byte lane, one ``vpermb``
    looks 64 levels up and one ``vpdpbusd`` multiplies them (as level + 128, unsigned) by
    int8 x, 4 products per int32 lane; ``128 * sum(x)`` is subtracted at the end.
    main(x int64[k], codes uint32[...], table uint8[rows, 64], y int64[rows])."""
    from tvm.script import tirx as T

    if bits not in BITS:
        raise ValueError(f"vpermb lookup covers 1, 2 and 4-bit codes, got {bits}")
    if k % BYTE_LANES or rows % unroll:
        raise ValueError(f"K must be a multiple of {BYTE_LANES}, rows of unroll={unroll}")
    per_row = k * bits // 64  # uint64 qwords per row
    blocks = k // BYTE_LANES
    n_words = rows * k * bits // 32
    lane = np.arange(BYTE_LANES)
    qword_of = [q % bits for q in range(8)]  # source qword of each qword position
    # Bit offset of each byte lane, b * m; TIR has no vector literal, so it is a Shuffle of
    # a Ramp (LLVM folds it to a constant).
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

    @T.prim_func
    def main(
        x: T.Buffer((k,), "int64"),
        codes: T.Buffer((n_words,), "uint32"),
        table: T.Buffer((rows, BYTE_LANES), "uint8"),
        y: T.Buffer((rows,), "int64"),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        c64 = T.decl_buffer((n_words // 2,), "uint64", data=codes.data)
        xp = T.alloc_buffer((k,), "int8")
        xsum = T.alloc_buffer((1,), "int32")
        xsum[0] = 0
        for i in range(k):
            xp[i] = T.Cast("int8", x[source(i)])
            xsum[0] = xsum[0] + T.Cast("int32", x[i])
        offs = T.Shuffle([T.Ramp(T.uint8(0), T.uint8(bits), 64 // bits)] * bits, m)
        for jo in T.parallel(rows // unroll):
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
                y[jo * unroll + u] = T.Cast("int64", s[0])

    return main


def target() -> Any:
    import tvm
    from tvm.target import codegen

    return tvm.target.Target({"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu())})


def reference(x: np.ndarray, codes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """y[j] = sum_k x[k] * lut[j, codes[j, k]] in int64."""
    levels = np.take_along_axis(lut.astype(np.int64), codes.astype(np.int64), axis=1)
    return levels @ x.astype(np.int64)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def compile_intrin(rows: int, k: int, bits: int, **kw: Any) -> Any:
    import tvm

    return tvm.compile(tvm.IRModule({"main": intrin_gemv(rows, k, bits, **kw)}), target=target())


def intrin_args(x: np.ndarray, codes: np.ndarray, lut: np.ndarray, bits: int) -> list:
    """Call arguments of the intrinsic kernel: the backend's packed words, the replicated
    LUT, int64 input and output."""
    import tvm

    from qcompile.ir.packing import pack_codes

    dev = tvm.cpu()
    arrays = (x, pack_codes(codes, bits), replicated_table(lut), np.zeros(len(codes), np.int64))
    return [tvm.runtime.tensor(a, dev) for a in arrays]


def compile_intrin8(rows: int, k: int, bits: int, **kw: Any) -> Any:
    import tvm

    return tvm.compile(tvm.IRModule({"main": intrin_gemv8(rows, k, bits, **kw)}), target=target())


def intrin8_args(x: np.ndarray, codes: np.ndarray, lut: np.ndarray, bits: int) -> list:
    import tvm

    from qcompile.ir.packing import pack_codes

    dev = tvm.cpu()
    arrays = (x, pack_codes(codes, bits), byte_table(lut), np.zeros(len(codes), np.int64))
    return [tvm.runtime.tensor(a, dev) for a in arrays]


def current_kernel(bits: int) -> tuple[Any, list, np.ndarray, np.ndarray]:
    """The backend's own dense kernel (compute + CPU schedule through ``compile_graph``) on
    ``bench.kernels``' 4096x4096 graph (8-bit LUT levels: the backend then accumulates in
    int32; int16 levels would push its accumulator to int64): (executable, weight arrays,
    codes, lut)."""
    from bench.kernels import gemv_graph
    from qcompile.backends.targets import load_target
    from qcompile.backends.tvm.export import compile_graph

    graph = gemv_graph(bits)
    ex, weights = compile_graph(graph, load_target("cpu"))
    w = graph.nodes[0].weights
    return ex, [a for _, _, a in weights], w.data, w.lut


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time of each function, calls alternating so that load from other processes
    on this shared machine hits every kernel alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    import tvm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--bits", type=int, nargs="+", default=[2])
    ap.add_argument("--unroll", type=int, default=8)
    a = ap.parse_args()
    if not has_avx512bw():
        raise SystemExit("this CPU lacks AVX512BW: no vpermw")
    vnni = has_avx512vnni()
    vbmi = vnni and cpu_flag("avx512vbmi")
    print(f"TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')} vnni={vnni} unroll={a.unroll}")
    rng = np.random.default_rng(1)
    n = 4096
    x = rng.integers(-128, 128, n).astype(np.int64)
    for bits in a.bits:
        ex_cur, weights, codes, lut = current_kernel(bits)
        want = reference(x, codes, lut)
        dev = tvm.cpu()
        cur = [tvm.runtime.tensor(v, dev) for v in (x[None], *weights, np.zeros((1, n), np.int64))]
        ex_new = compile_intrin(n, n, bits, vnni=vnni, unroll=a.unroll)
        new = intrin_args(x, codes, lut, bits)
        fns = {"current": partial(ex_cur["main"], *cur), "vpermw": partial(ex_new["main"], *new)}
        if vbmi:  # the bench's levels are 8-bit: the byte kernel applies
            ex_8 = compile_intrin8(n, n, bits, unroll=a.unroll)
            new8 = intrin8_args(x, codes, lut, bits)
            fns["vpermb"] = partial(ex_8["main"], *new8)
        t = interleaved(fns, a.repeats)
        exact = {
            "current": np.array_equal(cur[-1].numpy()[0], want),
            "vpermw": np.array_equal(new[-1].numpy(), want),
        }
        if vbmi:
            exact["vpermb"] = np.array_equal(new8[-1].numpy(), want)
        # The word kernel's own range: LUT levels anywhere in int16.
        lut16 = rng.integers(-(1 << 15), 1 << 15, lut.shape).astype(np.int64)
        args16 = intrin_args(x, codes, lut16, bits)
        ex_new["main"](*args16)
        exact["vpermw int16 LUT"] = np.array_equal(args16[-1].numpy(), reference(x, codes, lut16))
        print(
            f"{bits}-bit {n}x{n} GEMV, median ms: "
            + ", ".join(f"{name} {v * 1e3:.3f} ({t['current'] / v:.2f}x)" for name, v in t.items())
            + f"; exact: {exact}",
            flush=True,
        )
        if not all(exact.values()):
            raise SystemExit(f"{bits}-bit: a kernel differs from the numpy reference")


if __name__ == "__main__":
    main()
