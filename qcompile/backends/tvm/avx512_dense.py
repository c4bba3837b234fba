"""When and how a dense layer's accumulation runs the AVX-512 LUT kernel (``avx512.py``).

The decision is the target's, not this machine's: an artifact runs where its target says, so
the features are the target's instruction set (``cpu_features.target_isa``: its psABI level or
mcpu, and its mattr; for the host profile, the features this CPU really has, never what
LLVM infers from its name). They are also what the artifact's manifest records as needed.
The kernel replaces only ``acc = sum_k x * lut[code]``; bias, requantization and the rest of
the graph stay TE computes. The TE graph holds a placeholder compute for acc; ``schedule_cpu``
schedules the other blocks, then ``attach`` replaces the placeholder's loop nest with one block
whose statement is the kernel macro expanded on the placeholder's buffers (the kernel is
scheduled by hand: parallel rows, unrolled, vector intrinsics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qcompile.backends.cpu_features import is_x86_64, target_isa
from qcompile.backends.tvm.avx512 import (
    BITS,
    BYTE_LANES,
    LANES,
    byte_table,
    gemv8_macro,
    gemv16_macro,
    inline,
    replicated_table,
)
from qcompile.ir.graph import Node
from qcompile.ir.ops import Dense

SUFFIX = "_acc_avx512"  # name of a placeholder block, which ``attach`` replaces
INT8, INT16 = (-128, 127), (-(1 << 15), (1 << 15) - 1)


@dataclass(frozen=True)
class Avx512:
    """The AVX-512 extensions of a target that the kernels use (BW is required)."""

    vnni: bool
    vbmi: bool


@dataclass(frozen=True)
class Plan:
    """One dense node on the kernel: ``byte`` (vpermb, int8) or the int16 vpermw kernel."""

    byte: bool
    vnni: bool
    unroll: int
    parallel: bool = True  # rows shared out to threads


def target_features(tvm_target: dict) -> Avx512 | None:
    """The target's AVX-512 features, or None where it is not x86-64 with AVX512BW."""
    if tvm_target.get("kind") != "llvm" or not is_x86_64(str(tvm_target.get("mtriple", ""))):
        return None
    feats = target_isa(tvm_target)
    if "avx512bw" not in feats:  # vpermw and 512-bit vpsrlvw need BW (F lacks 16-bit forms)
        return None
    return Avx512(vnni="avx512vnni" in feats, vbmi="avx512vbmi" in feats)


def _within(a: np.ndarray | tuple[int, int], bounds: tuple[int, int]) -> bool:
    lo, hi = (int(a.min()), int(a.max())) if isinstance(a, np.ndarray) else a
    return bounds[0] <= lo and hi <= bounds[1]


def plan(node: Node, x_range: tuple[int, int], dt: str, feats: Avx512 | None) -> Plan | None:
    """The kernel variant for a dense ``node`` whose input lies in ``x_range``, or None
    (the Select-tree path) where any requirement fails."""
    w = node.weights
    if feats is None or not isinstance(node.op, Dense) or w is None or dt != "int32":
        return None  # int32: the kernel's accumulators are int32 lanes
    if w.bits not in BITS or len(w.shape) != 2 or w.channel_bits is not None:
        return None
    rows, k = w.shape
    unroll = next(u for u in (8, 4, 2, 1) if rows % u == 0)  # rows per iteration share x
    byte_ok = feats.vbmi and feats.vnni and k % BYTE_LANES == 0
    levels = w.level_table()
    if byte_ok and _within(levels, INT8) and _within(x_range, INT8):
        return Plan(byte=True, vnni=True, unroll=unroll)
    if k % LANES == 0 and _within(levels, INT16) and _within(x_range, INT16):
        return Plan(byte=False, vnni=feats.vnni, unroll=unroll)
    return None


def table(p: Plan, node: Node) -> np.ndarray:
    """The weight array the kernel takes in place of the LUT: one replicated row per output
    row (a per-layer LUT is repeated, so the kernel has one addressing rule)."""
    lut = node.weights.level_table()
    if lut.shape[0] == 1:
        lut = np.repeat(lut, node.weights.shape[0], axis=0)
    return byte_table(lut) if p.byte else replicated_table(lut)


def macro(p: Plan, node: Node) -> Any:
    """The kernel, a TVMScript macro body(x, codes, table, acc)."""
    rows, k = node.weights.shape
    bits = node.weights.bits
    if p.byte:
        return gemv8_macro(rows, k, bits, p.unroll, p.parallel)
    return gemv16_macro(rows, k, bits, p.vnni, p.unroll, p.parallel)


def stub_acc(te: Any, x: Any, codes: Any, tab: Any, rows: int, name: str) -> Any:
    """acc[n, j] (int32) as a placeholder compute that reads x, codes and table, so the
    function's signature and buffers are in place; ``attach`` swaps in the kernel after
    scheduling. (A ``te.extern`` op works in ``create_prim_func``, but its loop-less block
    makes ``rfactor`` on the other dense blocks fail a check.)"""
    return te.compute(
        (x.shape[0], rows),
        lambda n, j: x[n, 0].astype("int32") + codes[j].astype("int32") + tab[j, 0].astype("int32"),
        name=f"{name}{SUFFIX}",
    )


def attach(sch: Any, kernels: dict[str, Any]) -> None:
    """Replace each placeholder block named in ``kernels`` (and its loops) with the kernel
    macro expanded on the placeholder's own buffers: x, ``*_codes``, ``*_table``, acc."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    for name, body in kernels.items():
        rv = sch.get_sblock(name)
        stub = sch.get(rv)
        reads = [r.source for r in stub.reads]
        codes = next(b for b in reads if b.name.endswith("_codes"))
        tab = next(b for b in reads if b.name.endswith("_table"))
        x = next(b for b in reads if not b.name.endswith(("_codes", "_table")))
        stmt = inline(body, [x, codes, tab], [stub.writes[0].source])
        block = SBlock([], [], [], name, stmt)
        outer = sch.get_loops(rv)[0]
        sch.state.replace(sch.get_sref(outer), SBlockRealize([], tirx.const(True), block), {})
