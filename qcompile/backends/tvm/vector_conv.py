"""When and how a convolution runs the vector GEMM kernel (:mod:`gemm_dot`).

A dense (groups = 1) convolution with int8 weights, an int32 accumulator and an input whose
proven range fits a byte is lowered as a GEMM over its output pixels: an elementwise compute
packs the activation bytes in the kernel's tile-major layout (im2col: one row of
``c * kh * kw`` bytes per output pixel of the whole batch, the padding read as 0), and the
kernel decodes each tile of output channels' codes once per call into an int8 scratch and
sweeps every pixel tile with register-blocked dot products (:mod:`mac`). Grouped and
depthwise convolutions keep the TE schedule (one weight per pixel: nothing to share).

Arguments as for :mod:`vector_dense` (``rows``, ``levels``, ``comp``), plus ``order`` (each
output channel's accumulator row) where rows of several widths are stored apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qcompile.backends.tvm.decode import c_name
from qcompile.backends.tvm.gemm_dot import GemmPlan, Geometry, tile_shape
from qcompile.backends.tvm.isa import Isa
from qcompile.backends.tvm.mac import choose
from qcompile.backends.tvm.row_layout import RowLayout
from qcompile.backends.tvm.vector_dense import (
    INT8,
    PARALLEL_MACS,
    SCRATCH,
    VecArgs,
    kernel_arrays,
    levels_plan,
)
from qcompile.ir.graph import Node
from qcompile.ir.ops import Conv2d

SUFFIX = "_acc_gemm"
DECODE_BYTES = 16


@dataclass(frozen=True)
class ConvPlan:
    """A convolution on the GEMM kernel: ``k`` products per output (``c * kh * kw``)."""

    gemm: GemmPlan
    k: int

    @property
    def k4(self) -> int:
        return self.gemm.layout.k


def plan(node: Node, x_range: tuple[int, int], dt: str, isa: Isa | None) -> ConvPlan | None:
    """The GEMM plan of a conv ``node`` with input in ``x_range``, or None (the TE path)."""
    op, w = node.op, node.weights
    if isa is None or not isinstance(op, Conv2d) or op.groups != 1 or dt != "int32":
        return None
    lo, hi = w.level_range()
    if lo < INT8[0] or hi > INT8[1]:
        return None
    o, cg, kh, kw = w.shape
    k = cg * kh * kw
    # Decoding runs once per call, so 16-byte steps cost nothing and keep a small layer's
    # padding (at most one chunk per row: 128 positions of a 1-bit plane) small.
    layout = RowLayout.plan(-(-k // 4) * 4, w.row_bits(), DECODE_BYTES)
    mac = choose(isa, x_range, (lo, hi), layout.max_kr)
    if mac is None:
        return None
    rows, vecs = tile_shape(isa, mac)
    block = max(1, min(4, SCRATCH // (rows * layout.max_kr)))
    oh, ow = node.output.shape[1:]
    parallel = o * k * oh * ow >= PARALLEL_MACS
    geo = Geometry(layout.k // 4, (0,), 0, tile_major=True)
    gemm = GemmPlan(isa, mac, layout, levels_plan(w), geo, rows, vecs, parallel, block)
    return ConvPlan(gemm, k)


def acc_rows_of(p: GemmPlan) -> np.ndarray:
    """The accumulator row of each output channel."""
    out = np.zeros(p.layout.rows, np.int32)
    for g, (_, slot) in zip(p.layout.groups, p.slots(), strict=True):
        out[list(g.rows)] = slot + np.arange(len(g.rows))
    return out


def lower(te: Any, tirx: Any, prog: Any, node: Node, x: Any, p: ConvPlan, a: VecArgs) -> Any:
    """``acc(n, f, i, j)``: an accessor of the int32 accumulator of image ``n``, channel
    ``f``, output pixel ``(i, j)`` (the kernel writes ``acc[row, pixel]``)."""
    op, g, name = node.op, p.gemm, c_name(node)
    _, cg, kh, kw = node.weights.shape
    (sh, sw), (dh, dw), (ph, pw) = op.stride, op.dilation, op.padding
    h, wd = (int(v) for v in x.shape[2:])
    oh, ow = node.output.shape[1:]
    batch = x.shape[0]
    tp = g.tile_pixels
    pixels = batch * (oh * ow)
    tiles = (pixels + (tp - 1)) // tp
    off, split = g.mac.offset, g.mac.planes == 2

    def clamp(v: Any, hi: int) -> Any:
        return tirx.Max(tirx.Min(v, tirx.const(hi, "int32")), tirx.const(0, "int32"))

    def byte(_: Any, q: Any, pt: Any, c4: Any, pix: Any, lane: Any) -> Any:
        # Every index clamped into x (the region analysis then needs no padded copy). The
        # zero padding is the integer 0 (its byte is the offset, which ``comp`` removes);
        # positions past the batch or past c * kh * kw are byte 0 (they add nothing).
        px = (pt * tp + pix).astype("int32")
        kk = (c4 * 4 + lane).astype("int32")
        img = tirx.Min((px // (oh * ow)).astype("int64"), batch - 1)  # n is int64
        c, t = clamp(kk // (kh * kw), cg - 1), kk % (kh * kw)
        row = (px % (oh * ow)) // ow * sh + (t // kw) * dh - ph
        col = px % ow * sw + (t % kw) * dw - pw
        v = x[img, c, clamp(row, h - 1), clamp(col, wd - 1)].astype("int32")
        v = tirx.if_then_else(tirx.all(row >= 0, row < h, col >= 0, col < wd), v, 0)
        v = v + tirx.const(off, "int32")
        v = (v >> (q * 4)) & 15 if split else v & 255
        inside = tirx.all(px < pixels.astype("int32"), kk < p.k)
        return tirx.if_then_else(inside, v, 0).astype("uint8")

    shape = (1, g.mac.planes, tiles, p.k4 // 4, tp, 4)
    act = te.compute(shape, byte, name=f"{name}_act")

    def stub(r: Any, px: Any) -> Any:
        v = act[0, 0, 0, 0, px % tp, 0].astype("int32") + a.rows[r].astype("int32")
        v = v + a.levels[(r, 0) if len(a.levels.shape) == 2 else r].astype("int32")
        return v + a.comp[0] if a.comp is not None else v

    acc = te.compute((g.acc_rows, tiles * tp), stub, name=f"{name}{SUFFIX}")
    prog.kernels[acc.op.name] = g

    def at(n: Any, f: Any, i: Any, j: Any) -> Any:
        row = f if a.order is None else a.order[f]
        return acc[row, (n * oh + i) * ow + j]

    return at


def gemm_on(p: GemmPlan, bufs: dict[str, Any], pixels: Any) -> Any:
    """The GEMM statement on a placeholder's buffers (``act`` viewed flat, as the kernel
    addresses it) for ``pixels`` accumulator columns."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T
    from tvm.tirx.script.builder.ir import add_to_parent

    from qcompile.backends.tvm.gemm_dot import gemm_stmt

    act = bufs["act"]
    flat = act.shape[2] * act.shape[3] * act.shape[4] * act.shape[5]
    with IRBuilder() as ib, T.serial(0, 1):
        # a declared flat view of the activations, then the kernel
        view = T.decl_buffer((1, act.shape[1], flat), "uint8", data=act.data)
        add_to_parent(gemm_stmt(p, {**bufs, "act": view}, 1, pixels, True))
    return ib.get()


def arrays(p: ConvPlan, node: Node) -> dict[str, np.ndarray]:
    """The GEMM's arrays for ``node``, plus ``order`` (each channel's accumulator row)
    where some channel's row is not its own index."""
    g = p.gemm
    out = kernel_arrays(g.layout, g.mac, g.levels, node.weights)
    rows = acc_rows_of(g)
    if not np.array_equal(rows, np.arange(rows.size)):
        out["order"] = rows
    return out
