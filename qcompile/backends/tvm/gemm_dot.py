"""Byte dot-product GEMM for convolutions and batched dense layers: weights decoded once per
tile, pixels in vector lanes, register-blocked.

A convolution reuses every weight at each output pixel and a batched dense layer at each
input row, so decoding once is cheap and the multiply-accumulates are what count. For each
tile of ``rows`` output channels the kernel decodes their codes (:mod:`lut_decode`, one
vector per step) into a small scratch, row-major, of int32 words (four int8 weights each:
the buffer its loads name), then sweeps every image and pixel tile of ``vecs`` vectors:
per channel group of four and kernel tap, one load of ``vecs`` activation vectors (four
channels of ``lanes`` consecutive pixels each), one broadcast of each row's four weights,
``rows * vecs`` dot-product instructions (:mod:`mac`) into int32 (or int16, widened as the
proven bounds allow) accumulators held in registers.

Activations arrive packed by the graph (``compute``): bytes ``x + offset``, four channels
interleaved, each stride phase of the zero-padded image a plane of ``plane`` pixels,
``[images, planes, groups of 4 channels, pixels * 4]``; a dense layer's batch rows are the
pixels of one image. Output pixel ``p`` of a convolution is ``oh * width + ow`` over the
phase plane's width (the columns past the output's are computed and never read), so every
tap is a constant offset and every load contiguous. Output: int32 ``acc[image, row, pixel]``
(``-offset * sum(w)`` added per row: ``comp``). A dense 1-bit layer in ``binary`` mode
(:mod:`mac`) decodes its codes, not weights: each tile multiplies them by the signed
activation bytes, and its outputs are ``w0 * sum(a) + d * sum(a * c)`` with ``sum(a)`` per
pixel taken once per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qcompile.backends.tvm import isa as V
from qcompile.backends.tvm.digits import Digits
from qcompile.backends.tvm.gemv_lut import _flush_plan, _ramp, _set, _vec, int16_sums
from qcompile.backends.tvm.isa import ARM, Isa
from qcompile.backends.tvm.lut_decode import LevelsPlan, binary_levels, code_vec, weight_vec
from qcompile.backends.tvm.mac import Mac
from qcompile.backends.tvm.row_layout import RowLayout


@dataclass(frozen=True)
class Geometry:
    """Where each tap reads: ``taps`` pixel offsets into a group's packed pixels (static),
    ``group_pixels`` pixels per channel group (per image and activation plane). A dense
    layer's activations are ``tile_major``: each pixel tile's groups contiguous, so a tile
    streams through them."""

    groups: int  # channel groups of four (the reduction's outer loop)
    taps: tuple[int, ...]
    group_pixels: Any  # int, or an expression (a dense layer's padded batch)
    tile_major: bool = False
    # A conv whose output rows are whole vectors: the tiles sweep only the ``out_vecs``
    # vectors of output pixels, ``row_vecs`` a row, each row ``row_pixels`` apart (the
    # phase planes' width), not the columns past the output's (resnet20's 8x8 layers
    # computed 80 pixels a channel for 64). 0: every pixel vector from 0.
    row_vecs: int = 0
    row_pixels: int = 0
    out_vecs: int = 0


@dataclass(frozen=True)
class GemmPlan:
    isa: Isa
    mac: Mac
    layout: RowLayout
    levels: LevelsPlan
    geometry: Geometry
    rows: int  # output channels per register tile
    vecs: int  # pixel vectors per register tile
    parallel: bool
    block: int = 1  # register tiles of rows decoded together (sharing each activation pass)
    split: int = 1  # parallel slices of the pixel tiles (each decodes its rows again)
    digits: Digits | None = None  # wide activations: one reduction per byte digit
    # x86 convs: prefetch the next pixel tile's activations (the threaded graph's GEMMs,
    # which read lines the other core packed; an image a thread gained nothing from it)
    prefetch: bool = False

    @property
    def act_planes(self) -> int:
        """Activation planes packed per image: the multiply mode's (split: two nibbles)
        for each byte digit."""
        return self.mac.planes * (self.digits.count if self.digits else 1)

    @property
    def tile_pixels(self) -> int:
        return self.vecs * self.isa.lanes

    @property
    def kd(self) -> int:
        """Bytes of a decoded weight row the micro-kernel reads."""
        return self.geometry.groups * len(self.geometry.taps) * 4

    @property
    def block_rows(self) -> int:
        return self.rows * self.block

    def slots(self) -> list[tuple[int, int]]:
        """(first stored row, first accumulator row) of each width group: groups start on
        a whole block of rows, so a block never mixes widths."""
        out, stored, slot = [], 0, 0
        for g in self.layout.groups:
            out.append((stored, slot))
            stored += len(g.rows)
            slot += -(-len(g.rows) // self.block_rows) * self.block_rows
        return out

    @property
    def acc_rows(self) -> int:
        last = self.layout.groups[-1]
        return self.slots()[-1][1] + -(-len(last.rows) // self.block_rows) * self.block_rows


def tile_shape(
    isa: Isa, mac: Mac, steps: int = 0, digits: bool = False, max_vecs: int = 4
) -> tuple[int, int]:
    """(rows, vecs) of the register tile: accumulators, activation vectors and a broadcast
    weight within the register file; ``steps``: 4-byte steps per output (0: unknown);
    ``digits``: the reduction runs once per byte digit (the int32 sums live across it);
    ``max_vecs``: pixel vectors the layer has. Fewer than four (mobilenetv2's 4x4 layers
    are one AVX-512 vector) take taller tiles: a 4 x 1 VNNI tile's four accumulators each
    waited on its previous vpdpbusd (latency-bound at about 0.8 a cycle)."""
    per_acc = {"vnni": 1, "sdot": 1, "smull": 2}.get(mac.mode)
    one_flush = 0 < steps <= mac.flush
    if mac.mode == "binary" and isa.vnni:
        per_acc = 1
    elif mac.mode == "smlal":
        # two int16 halves, and an int32 sum unless every step fits one flush
        per_acc = 2 if one_flush else 3
    elif per_acc is None:
        # int16 accumulators per plane, and an int32 sum unless every step fits one flush
        # (then the sums are widened once, after the loop: resnet20's narrow layers on
        # AVX2 take 4 x 2 tiles instead of 2 x 2, whose accumulators LLVM had kept partly
        # in general registers, and ran 10% faster)
        per_acc = mac.planes + (0 if one_flush and not digits else 1)
    # smull and smlal read each activation vector as two halves (ext; the weights' halves
    # are one broadcast, so LLVM takes no smull2/smlal2): two registers per vector. Past the
    # budget LLVM spills the accumulators lane by lane (4.6x the instructions).
    per_vec = mac.planes * (2 if mac.mode in ("smull", "smlal") else 1)
    budget = isa.regs - 4
    shapes = ((4, 4), (4, 3), (4, 2), (2, 2), (2, 1), (1, 1))
    if max_vecs < 4:  # up to the same sixteen accumulators, in taller tiles: the most first
        tall = {(r, v) for v in range(1, max_vecs + 1) for r in (16 // v, 4, 2, 1)}
        shapes = tuple(sorted(tall, key=lambda rv: (-rv[0] * rv[1], -rv[1])))
    for rows, vecs in shapes:
        if rows * vecs * per_acc + vecs * per_vec <= budget:
            return rows, vecs
    return 1, 1


def _bcast_w(isa: Isa, w32: Any, row: int, at: Any, lane: int | None = None) -> Any:
    """The four int8 weights of ``row`` at byte ``4 * at`` in every int32 lane. ``lane``
    (aarch64): the weights are word ``at + lane``, taken
    from one 16-byte load of four words by a lane broadcast (``dup``, or sdot's own lane
    index) instead of a load-and-broadcast per word (``ld1r``, which has no offset
    addressing: an address computation each)."""
    from tvm.tirx.script.builder import ir as T

    if lane is None:
        return T.reinterpret(V.vec(isa, "int8"), T.Broadcast(w32[row, at], isa.lanes))
    words = w32[row, T.Ramp(at, 1, 4)]
    return T.reinterpret("int8x16", T.Shuffle([words], [lane] * 4))


def _dot(p: GemmPlan, mode: str, acc: list, acc16: list | None, a: list, w: Any) -> None:
    """One accumulator (``acc``: its int32 vectors, two for smull; ``acc16``: its int16 pair
    sums per plane, smlal's low and high halves, None if not flushed): add the products of
    activation vectors ``a`` (planes) and ``w``."""
    from tvm.tirx.script.builder import ir as T

    isa, L, H = p.isa, p.isa.lanes, 2 * p.isa.lanes
    cur = _vec(acc[0], L)
    if mode == "smlal":  # smlal / smlal2: 8 products of a half into int16 lanes
        a8 = T.reinterpret("int8x16", a[0])
        for h, part in enumerate(acc16):
            _set(part, _vec(part, H) + V.smull(a8, w, h == 1), H)
    elif mode == "smull":  # two pair-sum accumulators per tile, combined at the end
        a8 = T.reinterpret("int8x16", a[0])
        for h in range(2):
            _set(acc[h], _vec(acc[h], L) + V.smull_pairs(a8, w, h == 1), L)
    elif mode == "binary":  # the codes (u8, 0 or 1) times the signed activation bytes
        if isa.vnni:
            _set(acc[0], V.dpbusd(isa, cur, w, a[0]), L)
        elif acc16 is None:
            _set(acc[0], cur + V.widen16(isa, V.maddubs(isa, w, a[0])), L)
        else:
            _set(acc16[0], _vec(acc16[0], H) + V.maddubs(isa, w, a[0]), H)
    elif mode == "vnni":
        _set(acc[0], V.dpbusd(isa, cur, a[0], w), L)
    elif mode == "sdot":
        _set(acc[0], V.sdot(cur, T.reinterpret("int8x16", a[0]), w), L)
    elif acc16 is None:
        s = V.widen16(isa, V.maddubs(isa, a[0], w))
        if mode == "split":
            s = s + V.widen16(isa, V.maddubs(isa, a[1], w), 16)
        _set(acc[0], cur + s, L)
    else:
        for part, av in zip(acc16, a, strict=True):
            _set(part, _vec(part, H) + V.maddubs(isa, av, w), H)


def _widen_all(p: GemmPlan, accs: list, accs16: list) -> None:
    L, H = p.isa.lanes, 2 * p.isa.lanes
    for acc, parts in zip(accs, accs16, strict=True):
        total = _vec(acc[0], L)
        if p.mac.mode == "smlal":  # the halves' pairs, then pairs again: four channels a pixel
            both = V.addp16(_vec(parts[0], H), _vec(parts[1], H))
            _set(acc[0], total + V.widen16(p.isa, both), L)
            continue
        for q, part in enumerate(parts):
            total = total + V.widen16(p.isa, _vec(part, H), 16 * q or 1)
        _set(acc[0], total, L)


def _decode_rows(p: GemmPlan, gi: int, i0: Any, scratch: Any, bufs: dict[str, Any]) -> None:
    """Decode rows ``i0 .. i0 + block_rows`` of width group ``gi`` into ``scratch``, int32
    words of four int8 weights (a row past the group repeats its last row: defined values
    for accumulators nobody reads)."""
    from tvm.tirx.script.builder import ir as T

    g, dw = p.layout.groups[gi], p.layout.dw
    assert dw % 4 == 0, "decoded vectors are stored as whole int32 words"
    first = p.slots()[gi][0]
    steps = 8 // min(g.planes)
    with T.serial(0, p.block_rows) as r:
        i = T.min(i0 + r, len(g.rows) - 1)
        with T.serial(0, g.kr // (dw * steps)) as c:
            for s in range(steps):
                code = code_vec(bufs["stored"], g, g.offset + i * g.row_bytes, c, s, dw)
                w = code
                if p.mac.mode != "binary":
                    w = weight_vec(p.isa, p.levels, code, bufs["levels"], first + i, g.bits, dw)
                words = T.reinterpret(f"int32x{dw // 4}", w)
                T.buffer_store(scratch, words, [r, _ramp((c * steps + s) * dw // 4, dw // 4)])


def _tile(
    p: GemmPlan,
    w32: Any,
    sub: Any,
    img: Any,
    pt: Any,
    row0: Any,
    comp: list,
    bufs: dict,
    ahead: tuple[Any, int, Any] | None = None,
) -> None:
    """One register tile: ``rows`` accumulator rows from ``row0`` x ``vecs`` pixel vectors
    of pixel tile ``pt`` of image ``img`` (None: a dense layer's one image, 2-D ``acc``);
    weights from scratch rows ``sub ..`` (read as int32); ``comp``: each row's stored
    index. With ``digits``, the reduction runs once per byte digit of the activations, top
    first, the accumulators times 256 between digits (:mod:`digits`). ``ahead``: ``(start,
    nbytes, t)``, codes the next block of rows will decode, prefetched a cache line per
    reduction step from line ``t * steps`` (the decode then finds them in cache: an 8-bit
    layer's decode stalled on memory for 9% of its GEMM)."""
    from tvm.tirx.script.builder import ir as T

    isa, mac, geo = p.isa, p.mac, p.geometry
    L, R, Q, planes = isa.lanes, p.rows, p.vecs, mac.planes
    act, out = bufs["act"], bufs["acc"]
    image = 0 if img is None else img
    TP = p.tile_pixels
    p0 = pt * TP
    firsts = [p0 + q * L for q in range(Q)]  # each vector's first pixel
    if geo.row_vecs:
        # the last tile repeats the last vector past the output's (same values stored)
        vecs = [T.min(pt * Q + q, geo.out_vecs - 1) for q in range(Q)]
        firsts = [v // geo.row_vecs * geo.row_pixels + v % geo.row_vecs * L for v in vecs]

    def act_at(c4: Any, q: int, off: int) -> Any:
        if geo.tile_major:
            return ((pt * geo.groups + c4) * TP + q * L + off) * 4
        return (c4 * geo.group_pixels + firsts[q] + off) * 4

    taps = len(geo.taps)
    steps_total = geo.groups * taps
    flush = mac.flush if int16_sums(isa, mac) else 0
    per_flush = _flush_plan(taps, geo.groups, flush) if flush else 0
    # smlal whose flush is shorter than a channel group's taps: smull's int32 pair sums
    mode = "smull" if mac.mode == "smlal" and not per_flush else mac.mode
    # every accumulator vector its own buffer: LLVM keeps each in a register (one buffer of
    # twelve vectors was kept in memory lane by lane)
    per = 2 if mode == "smull" else 1
    accs = [[T.alloc_buffer((L,), "int32") for _ in range(per)] for _ in range(R * Q)]
    # digits on x86: the accumulators start at -offset * sum(w) of the top digit (then
    # every intermediate is a bounded partial sum, see ``digits``)
    start = "comp" in bufs and p.digits is not None
    assert not (start and mode == "smull"), "aarch64 digits are balanced: no offset"
    for r in range(R):
        init = T.Broadcast(bufs["comp"][comp[r]] if start else T.int32(0), L)
        for q in range(Q):
            for part in accs[r * Q + q]:
                _set(part, init, L)
    accs16: list = [None] * (R * Q)
    if per_flush:
        halves = 2 if mode == "smlal" else planes
        accs16 = [[T.alloc_buffer((2 * L,), "int16") for _ in range(halves)] for _ in accs]

    def fetch_ahead(step: Any, steps: int) -> None:
        if ahead is None:
            return
        start, nbytes, t = ahead
        line = t * steps + step
        with T.If(line < nbytes // 64), T.Then():
            at = T.min(start + line * 64, p.layout.nbytes - 1)
            T.evaluate(
                T.call_intrin("void", "tirx.prefetch", T.address_of(bufs["stored"][at]), 0, 3, 1)
            )

    def prefetch_next_tile(c4: Any, digit: Any) -> None:
        """``prefetch``: the cache lines of channel group ``c4`` the next pixel tile reads.
        Each tile reads one line or a few from every channel group, many streams at once
        for the hardware prefetcher, and a GEMM with few row blocks reads each line only
        once or twice: in the threaded graph (:mod:`spmd`) mobilenetv2's projection GEMMs
        (24-96 rows) read lines the other core had packed, and 40% of one's samples sat on
        an activation load (its CPU time 2.2x the one-thread run's)."""
        if not p.prefetch or geo.tile_major or isa.arch == ARM or img is None:
            return
        last = act.shape[2] - 1
        for pl in range(planes):
            for line in range(max(1, TP * 4 // 64)):
                at = T.min(act_at(c4, 0, geo.taps[0]) + TP * 4 + line * 64, last)
                byte = act[image, digit * planes + pl, at]
                T.evaluate(T.call_intrin("void", "tirx.prefetch", T.address_of(byte), 0, 3, 1))

    def group(c4: Any, digit: int) -> None:
        prefetch_next_tile(c4, digit)
        for t, off in enumerate(geo.taps):
            a_by_q = [
                [
                    act[image, digit * planes + pl, _ramp(act_at(c4, q, off), 4 * L)]
                    for pl in range(planes)
                ]
                for q in range(Q)
            ]
            for r in range(R):
                if isa.arch == ARM:  # four words a load (the scratch has a spare row)
                    w = _bcast_w(isa, w32, sub + r, c4 * taps + t - t % 4, t % 4)
                else:
                    w = _bcast_w(isa, w32, sub + r, c4 * taps + t)
                for q in range(Q):
                    _dot(p, mode, accs[r * Q + q], accs16[r * Q + q], a_by_q[q], w)

    def reduction(digit: Any) -> None:
        if per_flush:
            with T.serial(0, geo.groups // per_flush) as co:
                for parts in accs16:
                    for part in parts:
                        _set(part, T.Broadcast(T.int16(0), 2 * L), 2 * L)
                fetch_ahead(co, geo.groups // per_flush)
                with T.serial(0, per_flush) as ci:
                    group(co * per_flush + ci, digit)
                _widen_all(p, accs, accs16)
        else:
            with T.serial(0, geo.groups) as c4:
                fetch_ahead(c4, geo.groups)
                group(c4, digit)

    if p.digits is None:
        reduction(0)
    else:  # a loop, not unrolled: one copy of the reduction's code whatever the digits
        with T.serial(0, p.digits.count) as digit:
            with T.If(digit > 0), T.Then():
                for acc in accs:
                    for part in acc:
                        _set(part, _vec(part, L) * T.Broadcast(T.int32(256), L), L)
            reduction(digit)
    assert steps_total > 0
    for r in range(R):
        for q in range(Q):
            acc = accs[r * Q + q]
            v = _vec(acc[0], L)
            if mode == "smull":
                v = V.addp(v, _vec(acc[1], L))
            if mac.mode == "binary":
                w0, d = binary_levels(p.levels, bufs["levels"], comp[r])
                asum = bufs["asum"][_ramp(p0 + q * L, L)]
                v = v * T.Broadcast(d, L) + asum * T.Broadcast(w0, L)
            if "comp" in bufs and not start:
                v = v + T.Broadcast(bufs["comp"][comp[r]], L)
            at = [row0 + r, _ramp(firsts[q], L)]
            T.buffer_store(out, v, at if img is None else [img, *at])


def gemm_stmt(p: GemmPlan, bufs: dict[str, Any], images: Any, pixels: Any, dense: bool) -> Any:
    """The kernel as one TIR statement. ``bufs``: act, stored, levels, acc and (offset not
    0) comp; ``images`` (batch, int32 expression; 1 for a dense layer, whose ``acc`` is
    [rows, pixels]) and ``pixels`` (output pixels per image, a multiple of the tile)."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T

    R, B = p.rows, p.block_rows
    kr = p.layout.max_kr
    geo = p.geometry
    tiles = -(-geo.out_vecs // p.vecs) if geo.row_vecs else pixels // p.tile_pixels
    with IRBuilder() as ib, T.serial(0, 1):
        if p.mac.mode == "binary":
            assert dense and p.geometry.tile_major, "binary mode: dense layers only"
            bufs = {**bufs, "asum": _act_sums(p, bufs["act"], tiles)}
        for gi, g in enumerate(p.layout.groups):
            first, slot = p.slots()[gi]
            blocks = -(-len(g.rows) // B)
            loop = T.parallel if p.parallel and blocks * p.split > 1 else T.serial
            with loop(0, blocks * p.split) as it:
                ob, part = it // p.split, it % p.split
                # aarch64 reads the weights four words at a time, up to 12 bytes past a row
                spare = 1 if p.isa.arch == ARM else 0
                # int32 words written and read through this one buffer: TVM's StorageRewrite
                # tracks a buffer's liveness by the buffer it is accessed through, so an int8
                # scratch read through an int32 view looked dead once decoded, and its memory
                # went to the GEMM's own output (resnet20 on AVX2: every output wrong)
                w32 = T.alloc_buffer((B + spare, kr // 4), "int32")
                _decode_rows(p, gi, ob * B, w32, bufs)
                lo = part * tiles // p.split
                hi = (part + 1) * tiles // p.split
                with T.serial(0, hi - lo) as pi, T.serial(0, p.block) as sb:
                    i0 = ob * B + sb * R
                    comp = [first + T.min(i0 + r, len(g.rows) - 1) for r in range(R)]
                    if dense:
                        nbytes = B * g.row_bytes
                        ahead = (g.offset + (ob + 1) * nbytes, nbytes, pi * p.block + sb)
                        _tile(p, w32, sb * R, None, lo + pi, slot + i0, comp, bufs, ahead)
                    else:
                        with T.serial(0, images) as img:
                            _tile(p, w32, sb * R, img, lo + pi, slot + i0, comp, bufs)
    return ib.get()


def _act_sums(p: GemmPlan, act: Any, tiles: Any) -> Any:
    """int32 [tiles * tile_pixels]: each pixel's sum of its signed activation bytes (a dense
    layer's tile-major activations)."""
    from tvm.tirx.script.builder import ir as T

    isa, L, TP, groups = p.isa, p.isa.lanes, p.tile_pixels, p.geometry.groups
    out = T.alloc_buffer((tiles * TP,), "int32")
    ones = T.Broadcast(T.uint8(1), 4 * L)
    with T.serial(0, tiles) as pt:
        for q in range(p.vecs):
            at = _ramp(pt * TP + q * L, L)
            T.buffer_store(out, T.Broadcast(T.int32(0), L), [at])
            with T.serial(0, groups) as c4:
                a = act[0, 0, _ramp(((pt * groups + c4) * TP + q * L) * 4, 4 * L)]
                T.buffer_store(out, out[at] + V.widen16(isa, V.maddubs(isa, ones, a)), [at])
    return out
