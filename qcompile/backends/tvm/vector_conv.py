"""When and how a convolution runs the vector GEMM kernel (:mod:`gemm_dot`).

A dense (groups = 1) convolution with int8 weights, an int32 accumulator and an input whose
proven range fits a byte (or, wider, splits into byte digits: :mod:`digits`, one plane of
bytes per digit) is lowered as a GEMM over its output pixels, the kernel decoding each
tile of output channels' codes once per call into a scratch of int8 weights (stored as
int32 words, as they are read) and sweeping every pixel
tile with register-blocked dot products (:mod:`mac`). Grouped and depthwise convolutions keep
the TE schedule (one weight per pixel: nothing to share).

The activations are packed by an elementwise compute (bytes ``x + offset``) as an implicit
GEMM reads them (``Phases``): each image's zero-padded input, split by stride phase, four
channels interleaved per pixel, ``[image, plane, channel group, pixel, 4]`` (computed flat);
each input byte is packed once and every kernel tap is a constant pixel offset into it
(output pixel ``(i, j)`` is ``i * width + j`` over the phase plane's width; the columns past
the output's are computed and never read, except on x86 where an output row is whole
vectors: its tiles then sweep the rows' vectors only, ``Geometry.row_vecs``). On x86 a
stride-1 conv's packing runs as whole vectors (:mod:`conv_pack`). The weights are
reordered to match: ``[channel group][tap][4 channels]``, channels padded to four with
byte 0. (An im2col packing, one row of ``c * kh * kw`` bytes per output pixel, wrote each
input byte ``kh * kw`` times with a division per byte: it took most of lenet's time;
padding lenet's one input channel to four costs far less.)

Arguments as for :mod:`vector_dense` (``rows``, ``levels``, ``comp``), plus ``order`` (each
output channel's accumulator row) where rows of several widths are stored apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qcompile.backends.tvm import digits as D
from qcompile.backends.tvm.decode import c_name
from qcompile.backends.tvm.gemm_dot import GemmPlan, Geometry, tile_shape
from qcompile.backends.tvm.isa import ARM, Isa
from qcompile.backends.tvm.mac import Mac, choose
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
# Pixel-tile slices per row block where the GEMM runs in parallel (a layer of 16 channels is
# one row block: without slices it would run on one thread).
SLICES = 4


@dataclass(frozen=True)
class Phases:
    """A conv's zero-padded input split by stride phase: ``sh * sw`` planes of ``rows x
    cols`` pixels (phase ``(py, px)`` holds padded pixels ``(py + sh * r, px + sw * c)``),
    ``group_pixels`` pixels per channel group (the planes, then zeros the last tile's taps
    may read)."""

    stride: tuple[int, int]
    rows: int
    cols: int
    offsets: tuple[int, ...]  # per tap (ky, kx): its pixel offset from the output pixel
    out_pixels: int  # computed pixels per image: out rows x cols, rounded to whole tiles
    group_pixels: int  # a multiple of cols

    @property
    def plane(self) -> int:
        return self.rows * self.cols

    @staticmethod
    def of(op: Conv2d, shape: tuple[int, ...], kernel: tuple[int, int], tile: int) -> Phases:
        """For ``op`` on an input of ``shape`` (c, h, w), ``tile`` pixels per kernel tile."""
        (sh, sw), (dh, dw), (ph, pw) = op.stride, op.dilation, op.padding
        h, w = shape[1] + 2 * ph, shape[2] + 2 * pw
        rows, cols = -(-h // sh), -(-w // sw)
        oh = (h - dh * (kernel[0] - 1) - 1) // sh + 1
        offsets = tuple(
            ((ky * dh) % sh * sw + (kx * dw) % sw) * rows * cols
            + (ky * dh) // sh * cols
            + (kx * dw) // sw
            for ky in range(kernel[0])
            for kx in range(kernel[1])
        )
        out = -(-oh * cols // tile) * tile
        # whole rows of the planes' width: the packing's loops then split without remainders
        group = -(-max(sh * sw * rows * cols, out + max(offsets)) // cols) * cols
        return Phases((sh, sw), rows, cols, offsets, out, group)


@dataclass(frozen=True)
class ConvPlan:
    """A convolution on the GEMM kernel: ``k`` products per output (``c * kh * kw``), the
    input packed as ``phases`` lays it out."""

    gemm: GemmPlan
    k: int
    phases: Phases
    # One input channel at column stride 1: the four bytes of a packed pixel are four
    # neighbouring columns, a "channel group" is a kernel row's columns 4g .. 4g + 3 (the
    # image shifted by 4g, columns past the kernel's width byte 0) and a tap is a kernel
    # row (``column_order``). Padding the channel to four made lenet's first conv compute
    # four times its products.
    columns: bool = False


def plan(
    node: Node, x_range: tuple[int, int], dt: str, isa: Isa | None, x_shape: tuple[int, ...]
) -> ConvPlan | None:
    """The GEMM plan of a conv ``node`` with input in ``x_range`` of ``x_shape`` (c, h, w),
    or None (the TE path)."""
    op, w = node.op, node.weights
    if isa is None or not isinstance(op, Conv2d) or op.groups != 1 or dt != "int32":
        return None
    lo, hi = w.level_range()
    if lo < INT8[0] or hi > INT8[1]:
        return None
    o, cg, kh, kw = w.shape
    k = cg * kh * kw
    columns = cg == 1 and op.stride[1] == 1 and op.dilation[1] == 1
    # Decoding runs once per call, so 16-byte steps cost nothing and keep a small layer's
    # padding (at most one chunk per row: 128 positions of a 1-bit plane) small.
    kp = -(-kw // 4) * 4 * kh if columns else -(-cg // 4) * 4 * kh * kw
    layout = RowLayout.plan(kp, w.row_bits(), DECODE_BYTES)
    mac, digits = choose(isa, x_range, (lo, hi), layout.max_kr), None
    if mac is None and x_range[1] - x_range[0] > 255:
        # a wide input: one reduction per byte digit, each digit a byte in the mode's range
        # (the bound counts real products: padding positions carry byte 0 in every digit)
        digits = D.plan(isa, x_range, (lo, hi), k)
        byte = (-128, 127) if isa.signed_acts else (0, 255)
        mac = choose(isa, byte, (lo, hi), layout.max_kr) if digits else None
    if mac is None:
        return None
    # no more pixel vectors per tile than the layer has output pixels (mobilenet's 4x4
    # layers: 16 pixels, which a 64-pixel tile would compute four times over)
    oh = node.output.shape[1]
    cols = -(-(x_shape[2] + 2 * op.padding[1]) // op.stride[1])
    total = -(-oh * cols // isa.lanes)
    if isa.arch == ARM:
        rows, vecs = tile_shape(isa, mac, kp // 4, digits is not None)
        rows, vecs = neon_tile(mac, rows, vecs, o, total)
    else:
        rows, vecs = tile_shape(isa, mac, kp // 4, digits is not None, max(1, total))
    # no more register tiles per block than the layer has rows (lenet's 6 channels)
    block = max(1, min(4, SCRATCH // (rows * layout.max_kr), -(-o // rows)))
    ow = node.output.shape[2]
    parallel = o * k * oh * ow >= PARALLEL_MACS
    blocks = -(-o // (rows * block))
    split = max(1, SLICES // blocks) if parallel else 1
    phases = Phases.of(op, x_shape, (kh, 1) if columns else (kh, kw), vecs * isa.lanes)
    geo = Geometry(-(-(kw if columns else cg) // 4), phases.offsets, phases.group_pixels)
    if isa.arch != ARM and ow % isa.lanes == 0:
        # tiles of whole output-row vectors only (x86; aarch64's instruction counts keep
        # their layout): each tap's loads stay contiguous within a row
        row_vecs = ow // isa.lanes
        geo = replace(geo, row_vecs=row_vecs, row_pixels=phases.cols, out_vecs=oh * row_vecs)
    gemm = GemmPlan(
        isa, mac, layout, levels_plan(w), geo, rows, vecs, parallel, block, split, digits
    )
    return ConvPlan(gemm, k, phases, columns)


def spread(p: ConvPlan) -> ConvPlan:
    """``p`` with its row blocks (and, where there are fewer than ``SLICES``, slices of its
    pixel tiles) in a parallel loop whatever the layer's size, prefetching the activations
    (half of them packed by the other core)."""
    g = p.gemm
    blocks = sum(-(-len(grp.rows) // g.block_rows) for grp in g.layout.groups)
    split = max(1, SLICES // blocks)
    return replace(p, gemm=replace(g, parallel=True, split=split, prefetch=True))


def neon_tile(mac: Mac, rows: int, vecs: int, o: int, total: int) -> tuple[int, int]:
    """(rows, vecs) of an aarch64 register tile within ``tile_shape``'s for ``o`` output
    channels and ``total`` pixel vectors: the fewest instructions per tap, counting the
    products of every tile computed (sdot one instruction, smlal two, smull four), a weight
    broadcast per row and an activation load per vector (two with smull's and smlal's
    halves). Lenet's first conv has six channels: tiles of four rows computed eight."""
    per_mac = {"sdot": 1, "smlal": 2}.get(mac.mode, 4)
    per_load = 1 if mac.mode == "sdot" else 2

    def cost(rv: tuple[int, int]) -> tuple[int, int]:
        r, v = rv
        return -(-o // r) * -(-total // v) * (r * v * per_mac + r + v * per_load), -r * v

    shapes = [(r, v) for r in (1, 2, 4) if r <= rows for v in range(1, min(vecs, total) + 1)]
    return min(shapes, key=cost)


def tap_order(cg: int, kh: int, kw: int) -> np.ndarray:
    """The implicit GEMM's order of a row's positions, ``[channel group][tap][4 channels]``:
    each the index of its code in the row (``(c * kh + ky) * kw + kx``), -1 for padding."""
    c4 = -(-cg // 4)
    g, t, lane = np.meshgrid(np.arange(c4), np.arange(kh * kw), np.arange(4), indexing="ij")
    c = g * 4 + lane
    return np.where(c < cg, c * kh * kw + t, -1).reshape(-1)


def column_order(kh: int, kw: int) -> np.ndarray:
    """``tap_order`` of a one-channel conv in ``columns`` mode, ``[column group][kernel
    row][4 columns]``: each the index of its code in the row, -1 past ``kw``."""
    g, ky, lane = np.meshgrid(np.arange(-(-kw // 4)), np.arange(kh), np.arange(4), indexing="ij")
    kx = g * 4 + lane
    return np.where(kx < kw, ky * kw + kx, -1).reshape(-1)


def acc_rows_of(p: GemmPlan) -> np.ndarray:
    """The accumulator row of each output channel."""
    out = np.zeros(p.layout.rows, np.int32)
    for g, (_, slot) in zip(p.layout.groups, p.slots(), strict=True):
        out[list(g.rows)] = slot + np.arange(len(g.rows))
    return out


def lower(te: Any, tirx: Any, prog: Any, node: Node, x: Any, p: ConvPlan, a: VecArgs) -> Any:
    """``acc(n, f, i, j)``: an accessor of the int32 accumulator of image ``n``, channel
    ``f``, output pixel ``(i, j)``; the packed phase planes ``act[image, plane, bytes]`` and
    the accumulator ``acc[image, row, pixel]`` the kernel writes."""
    op, g, ph, name = node.op, p.gemm, p.phases, c_name(node)
    cg = node.weights.shape[1]
    (sh, sw), (pt, pl) = op.stride, op.padding
    h, wd = (int(v) for v in x.shape[2:])
    off, split, nib = g.mac.offset, g.mac.planes == 2, g.mac.planes
    planes = sh * sw * ph.plane

    def clamp(v: Any, hi: int) -> Any:
        return tirx.Max(tirx.Min(v, tirx.const(hi, "int32")), tirx.const(0, "int32"))

    def byte(img: Any, q: Any, grp: Any, pix: Any, lane: Any) -> Any:
        # Indices clamped into x (the region analysis then needs no padded copy); the zero
        # padding is the integer 0 (its byte is the offset, which ``comp`` removes); padding
        # channels and the pixels past the planes are byte 0.
        c = 0 if p.columns else grp * 4 + lane
        r = pix % ph.plane if sh * sw > 1 else pix
        phase = pix // ph.plane
        row = r // ph.cols * sh + (phase // sw if sh * sw > 1 else 0) - pt
        col = r % ph.cols * sw + (phase % sw if sh * sw > 1 else 0) - pl
        col = col + grp * 4 + lane if p.columns else col
        v = x[img, clamp(c, cg - 1), clamp(row, h - 1), clamp(col, wd - 1)].astype("int32")
        v = tirx.if_then_else(tirx.all(row >= 0, row < h, col >= 0, col < wd), v, 0)
        if g.digits is None:
            v = v + tirx.const(off, "int32")
        else:  # plane q: nibble q % 2 (split) of digit q // planes, the top digit first
            v = _digit_select(tirx, g.digits, v, q // nib)
        v = (v >> (q % nib * 4)) & 15 if split else v & 255
        kw = node.weights.shape[3]
        if p.columns:
            conds = [grp * 4 + lane < kw] if kw % 4 else []
        else:
            conds = [c < cg] if cg % 4 else []
        conds += [pix < planes] if ph.group_pixels > planes else []
        inside = tirx.all(*conds) if conds else None
        v = v if inside is None else tirx.if_then_else(inside, v, 0)
        return v.astype("uint8")

    gp = ph.group_pixels

    def flat(img: Any, q: Any, i: Any) -> Any:
        return byte(img, q, i // (gp * 4), i // 4 % gp, i % 4)

    shape = (x.shape[0], g.act_planes, g.geometry.groups * gp * 4)
    act = te.compute(shape, flat, name=f"{name}_act")

    def stub(img: Any, r: Any, px: Any) -> Any:
        v = act[img, 0, px].astype("int32") + a.rows[r].astype("int32")
        v = v + a.levels[(r, 0) if len(a.levels.shape) == 2 else r].astype("int32")
        return v + a.comp[0] if a.comp is not None else v

    acc = te.compute((x.shape[0], g.acc_rows, ph.out_pixels), stub, name=f"{name}{SUFFIX}")
    prog.kernels[acc.op.name] = p

    def at(n: Any, f: Any, i: Any, j: Any) -> Any:
        row = f if a.order is None else a.order[f]
        return acc[n, row, i * ph.cols + j]

    return at


def _digit_select(tirx: Any, digits: D.Digits, v: Any, plane: Any) -> Any:
    """Digit ``plane`` of ``v`` (a loop variable picks the plane: a Select chain)."""
    out = digits.byte(tirx, v, digits.count - 1)
    for d in range(digits.count - 2, -1, -1):
        out = tirx.Select(plane == d, digits.byte(tirx, v, d), out)
    return out


def taps_on(p: ConvPlan, bufs: dict[str, Any]) -> Any:
    """The implicit GEMM statement on a placeholder's buffers."""
    from tvm import tirx

    from qcompile.backends.tvm.gemm_dot import gemm_stmt

    images = tirx.Cast("int32", bufs["act"].shape[0])
    return gemm_stmt(p.gemm, bufs, images, p.phases.out_pixels, False)


def gemm_on(p: GemmPlan, bufs: dict[str, Any], pixels: Any) -> Any:
    """The GEMM statement on a placeholder's buffers for ``pixels`` accumulator columns.
    (``act`` is computed flat, ``[1, planes, bytes]``, as the kernel addresses it: a view of
    a shaped buffer would hide the kernel's reads from the storage planner, which could then
    give its memory to a later buffer.)"""
    from qcompile.backends.tvm.gemm_dot import gemm_stmt

    return gemm_stmt(p, bufs, 1, pixels, True)


def arrays(p: ConvPlan, node: Node) -> dict[str, np.ndarray]:
    """The GEMM's arrays for ``node``, plus ``order`` (each channel's accumulator row)
    where some channel's row is not its own index."""
    g = p.gemm
    shape = node.weights.shape[1:]
    order = column_order(*shape[1:]) if p.columns else tap_order(*shape)
    out = kernel_arrays(g.layout, g.mac, g.levels, node.weights, order)
    if g.digits is not None and g.digits.top_offset:
        # the accumulators' start: the top digit's offset times each row's weight sum
        stored = [r for grp in g.layout.groups for r in grp.rows]
        sums = node.weights.decoded().reshape(node.weights.shape[0], -1).sum(axis=1)
        out["comp"] = (-g.digits.top_offset * sums)[stored].astype(np.int32)
    rows = acc_rows_of(g)
    if not np.array_equal(rows, np.arange(rows.size)):
        out["order"] = rows
    return out
