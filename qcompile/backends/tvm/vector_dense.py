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
from qcompile.backends.tvm.gemv_lut import GemvPlan, decode_width, gemv_stmt, rows_per_step
from qcompile.backends.tvm.isa import Isa
from qcompile.backends.tvm.lut_decode import LevelsPlan
from qcompile.backends.tvm.mac import Mac, choose
from qcompile.backends.tvm.row_layout import RowLayout
from qcompile.ir.graph import Node
from qcompile.ir.ops import Dense
from qcompile.ir.weights import Affine, Weights

SUFFIX = "_acc_vec"  # name of a placeholder block, which ``attach`` replaces
INT8 = (-128, 127)
# Below this many multiply-accumulates per input row a parallel launch costs more than the
# rows it shares out (the same trade-off as ``cpu.MIN_PARALLEL_WORK``).
PARALLEL_MACS = 1 << 17


def levels_plan(w: Weights) -> LevelsPlan:
    """How the kernels turn ``w``'s codes into weights: affine, or 16-entry tables."""
    if isinstance(w.levels, Affine):
        return LevelsPlan(True, w.levels.step)
    return LevelsPlan(False, 1, max(1, (1 << w.bits) // 16))


def plan(node: Node, x_range: tuple[int, int], dt: str, isa: Isa | None) -> GemvPlan | None:
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
    mac = choose(isa, x_range, (lo, hi), layout.max_kr)
    if mac is None:
        return None
    parallel = rows * layout.max_kr >= PARALLEL_MACS
    return GemvPlan(isa, mac, layout, levels_plan(w), rows_per_step(isa, mac), parallel)


def kernel_arrays(
    layout: RowLayout, mac: Mac, levels: LevelsPlan, w: Weights
) -> dict[str, np.ndarray]:
    """A kernel's weight arrays for ``w``, rows in stored order: ``rows`` (codes, each row
    padded with code 0 to ``layout.k``), ``levels`` and, for a non-zero offset, ``comp``."""
    rows = w.shape[0]
    order = [r for g in layout.groups for r in g.rows]
    codes = np.zeros((rows, layout.k), np.uint8)
    codes[:, : w.per_row] = w.codes().reshape(rows, -1)
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


def arrays(p: GemvPlan, node: Node) -> dict[str, np.ndarray]:
    """The GEMV's arrays for ``node``, plus ``order`` (each channel's stored row) where
    rows of several widths are stored out of channel order."""
    out = kernel_arrays(p.layout, p.mac, p.levels, node.weights)
    order = [r for g in p.layout.groups for r in g.rows]
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


def lower(te: Any, tirx: Any, prog: Any, node: Node, x: Any, p: GemvPlan, a: VecArgs) -> Any:
    """``acc(n, j)``: an accessor of the int32 accumulator of input row ``n``, channel ``j``
    (the kernel writes ``acc[stored row, n]``)."""
    name = c_name(node)
    k, kr, off = node.weights.shape[1], p.layout.max_kr, p.mac.offset
    split = p.mac.planes == 2

    def byte(n: Any, q: Any, i: Any) -> Any:
        v = x[n, tirx.min(i, k - 1)].astype("int32") + tirx.const(off, "int32")
        v = (v >> (q * 4)) & 15 if split else v & 255
        return tirx.if_then_else(i < k, v, 0).astype("uint8")

    xp = te.compute((x.shape[0], p.mac.planes, kr), byte, name=f"{name}_xp")

    def stub(j: Any, n: Any) -> Any:
        v = xp[n, 0, 0].astype("int32") + a.rows[j].astype("int32")
        v = v + a.levels[(j, 0) if len(a.levels.shape) == 2 else j].astype("int32")
        return v + a.comp[j] if a.comp is not None else v

    rows = node.weights.shape[0]
    acc = te.compute((rows, x.shape[0]), stub, name=f"{name}{SUFFIX}")
    prog.kernels[acc.op.name] = p
    if a.order is None:
        return lambda n, j: acc[j, n]
    return lambda n, j: acc[a.order[j], n]


def attach(sch: Any, kernels: dict[str, Any]) -> None:
    """Replace each placeholder block named in ``kernels`` (and its loops) with its kernel
    statement (GEMV or GEMM) on the placeholder's own buffers: ``*_xp`` or ``*_act``,
    ``*_rows``, ``*_levels``, ``*_comp``."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    from qcompile.backends.tvm.vector_conv import attach_gemm

    for name, p in kernels.items():
        rv = sch.get_sblock(name)
        if isinstance(p, GemvPlan):
            stub = sch.get(rv)
            bufs = {}
            for r in stub.reads:
                kind = r.source.name.rsplit("_", 1)[-1]
                bufs["stored" if kind == "rows" else kind] = r.source
            acc = stub.writes[0].source
            bufs["acc"] = acc
            stmt = gemv_stmt(p, bufs, tirx.Cast("int32", acc.shape[1]))
        else:
            stmt = attach_gemm(sch, name, p)
        outer = sch.get_loops(rv)[0]
        block = SBlock([], [], [], name, stmt)
        sch.state.replace(sch.get_sref(outer), SBlockRealize([], tirx.const(True), block), {})
