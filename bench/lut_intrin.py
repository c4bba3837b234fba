"""Benchmark: the packed-LUT GEMV with the lookup as one AVX-512 instruction (vpermw).

The kernels live in ``qcompile/backends/tvm/avx512.py`` (the backend's dense layers use them);
this script compiles them standalone (outside any graph) and times them against the
backend's own dense path through ``compile_graph``, which uses them where the target allows;
it writes nothing to BENCHMARKS.md (``bench.kernels`` measures the backend).

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

Where the levels fit int8 (``intrin_gemv8``, AVX512-VBMI + VNNI) 64 weights cost three
vector instructions: ``vpmultishiftqb`` puts each code in the low bits of a byte lane straight
from a broadcast load, ``vpermb`` looks 64 levels up (stored as level + 128, unsigned) and
``vpdpbusd`` multiplies them by int8 x, four products per int32 lane; ``128 * sum(x)`` is
subtracted once per row.

x is permuted once per call to the lanes' code order (4096 moves, negligible), so the packed
weight format is the backend's, unchanged; only the LUT is re-laid out (replicated to the
table width). Both are TVMScript PrimFuncs with vector types and ``T.call_llvm_pure_intrin``,
rows in parallel, ``unroll`` rows per iteration sharing each load of x. ``main`` times them
against the backend's own kernel, calls interleaved, all checked bit-exact against numpy.

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

from qcompile.backends.cpu_features import host_target, running_features
from qcompile.backends.tvm.avx512 import byte_table, gemv8, gemv16, replicated_table


def cpu_flag(name: str) -> bool:
    """Whether this CPU has LLVM feature ``name`` (as the OS reports it, or as
    $QCOMPILE_CPU_FEATURES says for a test run)."""
    return name in running_features()


def has_avx512bw() -> bool:
    """vpermw and 512-bit vpsrlvw need AVX512BW (AVX512F alone lacks the 16-bit forms)."""
    return cpu_flag("avx512bw")


def has_avx512vnni() -> bool:
    return cpu_flag("avx512vnni")


def target() -> Any:
    import tvm

    return tvm.target.Target(host_target())  # this CPU's real features, not its name


def reference(x: np.ndarray, codes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """y[j] = sum_k x[k] * lut[j, codes[j, k]] in int64."""
    levels = np.take_along_axis(lut.astype(np.int64), codes.astype(np.int64), axis=1)
    return levels @ x.astype(np.int64)


def compile_intrin(rows: int, k: int, bits: int, **kw: Any) -> Any:
    import tvm

    return tvm.compile(tvm.IRModule({"main": gemv16(rows, k, bits, **kw)}), target=target())


def intrin_args(x: np.ndarray, codes: np.ndarray, lut: np.ndarray, bits: int) -> list:
    """Call arguments of the intrinsic kernel: a batch of one input row (int64), the
    backend's packed words, the replicated LUT, int64 output [1, rows]."""
    import tvm

    from qcompile.ir.packing import pack_codes

    dev = tvm.cpu()
    arrays = (
        x[None],
        pack_codes(codes, bits),
        replicated_table(lut),
        np.zeros((1, len(codes)), np.int64),
    )
    return [tvm.runtime.tensor(a, dev) for a in arrays]


def compile_intrin8(rows: int, k: int, bits: int, **kw: Any) -> Any:
    import tvm

    return tvm.compile(tvm.IRModule({"main": gemv8(rows, k, bits, **kw)}), target=target())


def intrin8_args(x: np.ndarray, codes: np.ndarray, lut: np.ndarray, bits: int) -> list:
    import tvm

    from qcompile.ir.packing import pack_codes

    dev = tvm.cpu()
    arrays = (
        x[None],
        pack_codes(codes, bits),
        byte_table(lut),
        np.zeros((1, len(codes)), np.int64),
    )
    return [tvm.runtime.tensor(a, dev) for a in arrays]


def current_kernel(bits: int) -> tuple[Any, list, np.ndarray, np.ndarray]:
    """The backend's own dense kernel (compute + CPU schedule through ``compile_graph``; on an
    AVX-512 host that is now these kernels, so "current" no longer means the Select tree) on
    ``bench.kernels``' 4096x4096 graph (8-bit LUT levels: the backend then accumulates in
    int32; int16 levels would push its accumulator to int64): (executable, weight arrays,
    codes, lut)."""
    from bench.kernels import gemv_graph
    from qcompile.backends.targets import load_target
    from qcompile.backends.tvm.export import compile_graph

    graph = gemv_graph(bits)
    ex, weights = compile_graph(graph, load_target("cpu"))
    w = graph.nodes[0].weights
    return ex, [a for _, _, a in weights], w.data, w.level_table()


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
            "vpermw": np.array_equal(new[-1].numpy()[0], want),
        }
        if vbmi:
            exact["vpermb"] = np.array_equal(new8[-1].numpy()[0], want)
        # The word kernel's own range: LUT levels anywhere in int16.
        lut16 = rng.integers(-(1 << 15), 1 << 15, lut.shape).astype(np.int64)
        args16 = intrin_args(x, codes, lut16, bits)
        ex_new["main"](*args16)
        exact["vpermw int16 LUT"] = np.array_equal(
            args16[-1].numpy()[0], reference(x, codes, lut16)
        )
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
