"""When and how a dense layer runs the vector GEMV kernel (:mod:`gemv_lut`).

The choice is the target's (:func:`isa.isa_of`: AVX2, AVX-512 BW, NEON, with VNNI or
dotprod where the target has them), never this machine's. A dense node qualifies where its
accumulator is int32, every integer weight is an int8 and the input's proven range fits a
byte once offset (:func:`mac.choose`). Its arguments are then the codes in the kernel's row
layout (``rows``), the per-row zero points or int8 tables (``levels``), where the activation
offset is not 0 the per-row correction ``comp = -offset * sum(w)``, and where rows of several
widths are stored out of channel order, each channel's stored row (``order``).

The TE graph holds two computes: the activation bytes ``xp`` (an elementwise compute the
schedule vectorises) and a placeholder for ``acc[row, n]`` that reads every argument;
:func:`attach` replaces the placeholder's loop nest with the kernel statement on the
placeholder's own buffers, after the rest of the graph is scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qcompile.backends.tvm.decode import _arg, c_name
from qcompile.backends.tvm.gemm_dot import GemmPlan, Geometry, tile_shape
from qcompile.backends.tvm.gemv_lut import GemvPlan, decode_width, gemv_stmt, rows_per_step
from qcompile.backends.tvm.isa import ARM, Isa
from qcompile.backends.tvm.lut_decode import LevelsPlan
from qcompile.backends.tvm.mac import Mac, choose
from qcompile.backends.tvm.row_layout import RowLayout
from qcompile.ir.graph import Node
from qcompile.ir.ops import Dense
from qcompile.ir.weights import Affine, Weights

SUFFIX = "_acc_vec"  # name of a placeholder block, which ``attach`` replaces
# From this many input rows a dense layer runs the GEMM: decoding every weight once costs
# less than re-decoding it per row (the GEMV's cost) once a few rows share it.
BATCH_MIN = 4
SCRATCH = 1 << 14  # bytes of decoded weights per block of rows (in L1 beside a pixel tile)
INT8 = (-128, 127)
# The zero-point fold's ``zero * sum(a)`` stays well inside int32 up to this many inputs.
FOLD_K = (1 << 31) // (4 * 128 * 128)
# Below this many multiply-accumulates per input row a parallel launch costs more than the
# rows it shares out (the same trade-off as ``cpu.MIN_PARALLEL_WORK``).
PARALLEL_MACS = 1 << 17


def levels_plan(w: Weights) -> LevelsPlan:
    """How the kernels turn ``w``'s codes into weights: affine, or 16-entry tables."""
    if isinstance(w.levels, Affine):
        return LevelsPlan(True, w.levels.step)
    return LevelsPlan(False, 1, max(1, (1 << w.bits) // 16))


@dataclass(frozen=True)
class DensePlan:
    """A dense layer on the kernels: the GEMV below ``BATCH_MIN`` input rows, the GEMM
    (weights decoded once per call, same stored rows) from there, where the layer has one
    width (rows of several widths keep the GEMV)."""

    gemv: GemvPlan
    gemm: GemmPlan | None

    @property
    def acc_rows(self) -> int:
        return self.gemm.acc_rows if self.gemm else self.gemv.layout.rows


def plan(node: Node, x_range: tuple[int, int], dt: str, isa: Isa | None) -> DensePlan | None:
    """The kernel plan for a dense ``node`` whose input lies in ``x_range``, or None (the
    TE path) where the target has no vector unit or the layer does not qualify."""
    w = node.weights
    if isa is None or not isinstance(node.op, Dense) or w is None or dt != "int32":
        return None
    if len(w.shape) != 2:
        return None
    lo, hi = w.level_range()
    if lo < INT8[0] or hi > INT8[1]:
        return None
    rows, k = w.shape
    layout = RowLayout.plan(k, w.row_bits(), decode_width(isa))
    binary = [g.bits for g in layout.groups] == [1]  # every row 1-bit
    levels = levels_plan(w)
    top = levels.step * ((1 << w.bits) - 1)  # the largest scaled code
    fold = isa.arch == ARM and levels.affine and top <= INT8[1] and k <= FOLD_K
    # a folded GEMV multiplies the scaled codes, the GEMM the weights: bounds for both
    w_range = (min(lo, 0), max(hi, top)) if fold else (lo, hi)
    mac = choose(isa, x_range, w_range, layout.max_kr, binary)
    if mac is None:
        return None
    parallel = rows * layout.max_kr >= PARALLEL_MACS
    gemv = GemvPlan(isa, mac, layout, levels, rows_per_step(isa, mac, fold), parallel, fold)
    if len(layout.groups) > 1:
        return DensePlan(gemv, None)
    r, vecs = tile_shape(isa, mac, layout.max_kr // 4)
    block = max(1, min(4, SCRATCH // (r * layout.max_kr)))
    geo = Geometry(layout.max_kr // 4, (0,), 0, tile_major=True)
    gemm = GemmPlan(isa, mac, layout, gemv.levels, geo, r, vecs, parallel, block)
    return DensePlan(gemv, gemm)


def kernel_arrays(
    layout: RowLayout, mac: Mac, levels: LevelsPlan, w: Weights, perm: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """A kernel's weight arrays for ``w``, rows in stored order: ``rows`` (codes, each row
    padded with code 0 to ``layout.k``), ``levels`` and, for a non-zero offset, ``comp``.
    ``perm``: the kernel's order of a row's positions, each the index of its code in the
    row, -1 where the kernel reads padding (code 0, facing activation byte 0)."""
    rows = w.shape[0]
    order = [r for g in layout.groups for r in g.rows]
    codes = np.zeros((rows, layout.k), np.uint8)
    src = w.codes().reshape(rows, -1)
    if perm is not None:
        src = np.where(perm >= 0, src[:, np.maximum(perm, 0)], 0).astype(np.uint8)
    codes[:, : src.shape[1]] = src
    out = {"rows": layout.pack(codes)}
    lv = w.levels
    if isinstance(lv, Affine):
        zero = np.broadcast_to(lv.zero, (rows,))[order]
        out["levels"] = (zero % 256).astype(np.uint8)
    else:
        table = np.broadcast_to(w.level_table(), (rows, 1 << w.bits))[order]
        entries = np.zeros((rows, 16 * levels.tables), np.int8)
        entries[:, : table.shape[1]] = table
        out["levels"] = entries
    if mac.offset:
        sums = w.decoded().reshape(rows, -1).sum(axis=1)
        out["comp"] = (-mac.offset * sums)[order].astype(np.int32)
    return out


def arrays(p: DensePlan, node: Node) -> dict[str, np.ndarray]:
    """The kernels' arrays for ``node``, plus ``order`` (each channel's stored row) where
    rows of several widths are stored out of channel order."""
    g = p.gemv
    out = kernel_arrays(g.layout, g.mac, g.levels, node.weights)
    order = [r for grp in g.layout.groups for r in grp.rows]
    if order != sorted(order):
        out["order"] = np.argsort(order).astype(np.int32)
    return out


@dataclass
class VecArgs:
    """The TE placeholders of a node on a kernel (``comp``, ``order``: None if absent)."""

    rows: Any
    levels: Any
    comp: Any = None
    order: Any = None


def weight_args(te: Any, prog: Any, node: Node, arrs: dict[str, np.ndarray]) -> VecArgs:
    """Declare a node's kernel arrays on ``prog`` (``compute.Program``)."""
    ph = {kind: _arg(te, prog, node, kind, arr) for kind, arr in arrs.items()}
    return VecArgs(ph["rows"], ph["levels"], ph.get("comp"), ph.get("order"))


def lower(te: Any, tirx: Any, prog: Any, node: Node, x: Any, p: DensePlan, a: VecArgs) -> Any:
    """``acc(n, j)``: an accessor of the int32 accumulator of input row ``n``, channel ``j``
    (the kernels write ``acc[stored row, n]``). The GEMV reads activation bytes ``xp``
    [n, planes, kr], the GEMM tile-major ``act``; each is empty when the other runs."""
    name, g = c_name(node), p.gemv
    k, kr, off = node.weights.shape[1], g.layout.max_kr, g.mac.offset
    split = g.mac.planes == 2
    n = x.shape[0]
    tp = p.gemm.tile_pixels if p.gemm else 1
    padded = (n + (tp - 1)) // tp * tp
    batched = n >= BATCH_MIN if p.gemm else tirx.const(False)

    def byte(row: Any, i: Any) -> Any:
        v = x[tirx.min(row, n - 1), tirx.min(i, k - 1)].astype("int32")
        v = v + tirx.const(off, "int32")
        return v, tirx.all(row < n, i < k)

    def plane(v: Any, q: Any) -> Any:
        return (v >> (q * 4)) & 15 if split else v & 255

    def gemv_byte(row: Any, q: Any, i: Any) -> Any:
        v, inside = byte(row, i)
        return tirx.if_then_else(inside, plane(v, q), 0).astype("uint8")

    rows_xp = tirx.Select(batched, tirx.const(0, "int64"), n)
    xp = te.compute((rows_xp, g.mac.planes, kr), gemv_byte, name=f"{name}_xp")
    reads = [xp[0, 0, 0]]
    if p.gemm:

        def gemm_byte(_: Any, q: Any, i: Any) -> Any:
            # flat [1, planes, bytes], tile-major: [tile, group of 4, pixel, lane]
            pt, c4 = i // (kr * tp), i // (tp * 4) % (kr // 4)
            v, inside = byte(pt * tp + i // 4 % tp, c4 * 4 + i % 4)
            return tirx.if_then_else(inside, plane(v, q), 0).astype("uint8")

        tiles = tirx.Select(batched, padded // tp, tirx.const(0, "int64"))
        act = te.compute((1, g.mac.planes, tiles * (kr * tp)), gemm_byte, name=f"{name}_act")
        reads.append(act[0, 0, 0])

    def stub(j: Any, m: Any) -> Any:
        v = a.rows[j].astype("int32") + sum(r.astype("int32") for r in reads)
        v = v + a.levels[(j, 0) if len(a.levels.shape) == 2 else j].astype("int32")
        return v + a.comp[0] if a.comp is not None else v

    acc = te.compute((p.acc_rows, padded), stub, name=f"{name}{SUFFIX}")
    prog.kernels[acc.op.name] = p
    if a.order is None:
        return lambda m, j: acc[j, m]
    return lambda m, j: acc[a.order[j], m]


def attach(sch: Any, kernels: dict[str, Any]) -> None:
    """Replace each placeholder block named in ``kernels`` (and its loops) with its kernel
    statement (a dense layer's GEMV or GEMM, a conv's GEMM) on the placeholder's own
    buffers: ``*_xp``, ``*_act``, ``*_rows``, ``*_levels``, ``*_comp``, the accumulator."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    from qcompile.backends.tvm.vector_conv import ConvPlan, gemm_on, taps_on

    for name, p in kernels.items():
        rv = sch.get_sblock(name)
        stub = sch.get(rv)
        bufs = {}
        for r in stub.reads:
            kind = r.source.name.rsplit("_", 1)[-1]
            bufs["stored" if kind == "rows" else kind] = r.source
        acc = stub.writes[0].source
        bufs["acc"] = acc
        if isinstance(p, ConvPlan):
            stmt = taps_on(p, bufs)
        else:
            gemv_bufs = {k: v for k, v in bufs.items() if k != "act"}
            stmt = gemv_stmt(p.gemv, gemv_bufs, tirx.Cast("int32", bufs["xp"].shape[0]))
            if p.gemm is not None:
                pixels = tirx.Cast("int32", acc.shape[1])
                batched = gemm_on(p.gemm, {k: v for k, v in bufs.items() if k != "xp"}, pixels)
                rows = bufs["act"].shape[2]  # bytes: 0 unless the batch takes the GEMM
                stmt = tirx.IfThenElse(rows > 0, batched, stmt)
        outer = sch.get_loops(rv)[0]
        block = SBlock([], [], [], name, stmt)
        sch.state.replace(sch.get_sref(outer), SBlockRealize([], tirx.const(True), block), {})
