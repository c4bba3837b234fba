"""Table-lookup GEMV: a dense layer's few input rows against its packed codes, read once.

For a batch of one (or a few) input rows a dense layer is a matrix-vector product and reads
each weight once: it is bound by the bytes of codes it streams. So the codes are decoded in
registers, never stored: per step and row one load of a chunk of codes per plane, a shift, a
mask, a 16-entry table lookup (``vpshufb`` on AVX2/AVX-512, ``tbl`` on NEON; byte arithmetic
for affine 8-bit codes) and one dot-product instruction against the activation bytes
(:mod:`mac`: ``vpdpbusd``, ``vpmaddubsw`` accumulating int16 pair sums between widenings,
``sdot``, ``smlal`` or ``smull``). ``rows`` output rows share each activation load; rows run on
threads where the layer is large enough to pay for them. A 1-bit layer in ``binary`` mode
skips the lookup: its code bytes are the multiplier, ``sum(a)`` is taken once per input row
and each output is ``w0 * sum(a) + d * sum(a * c)``.

Arguments: ``xp`` uint8 [n, planes, kr] (activation bytes, zero past ``k``; planes: the low
and high nibbles in ``split`` mode), ``stored`` uint8 (:mod:`row_layout`), ``levels`` (zero
points or tables, :mod:`lut_decode`), ``comp`` int32 [rows] (``-offset * sum(w)``) and the
output ``acc`` int32 [rows, >= n], rows in stored order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qcompile.backends.tvm import isa as V
from qcompile.backends.tvm.isa import ARM, Isa
from qcompile.backends.tvm.lut_decode import (
    LevelsPlan,
    binary_levels,
    code_vec,
    paired,
    paired_weight_vec,
    weight_vec,
)
from qcompile.backends.tvm.mac import Mac
from qcompile.backends.tvm.row_layout import Group, RowLayout


@dataclass(frozen=True)
class GemvPlan:
    isa: Isa
    mac: Mac
    layout: RowLayout
    levels: LevelsPlan
    rows: int  # output rows per step, sharing each activation load
    parallel: bool
    # affine levels (aarch64): multiply the scaled codes, ``step * c``, and add each row's
    # ``zero * sum(a)`` once: the decode loses its byte add (and NEON the copy usra needs),
    # seven instructions per 32 products of 4-bit codes instead of nine
    fold: bool = False

    @property
    def dw(self) -> int:
        return self.layout.dw


def int16_sums(isa: Isa, mac: Mac) -> bool:
    """Whether the mode adds vpmaddubsw pair sums (smlal products) in int16 between
    widenings."""
    return mac.mode in ("maddubs", "split", "smlal") or (mac.mode == "binary" and not isa.vnni)


def rows_per_step(isa: Isa, mac: Mac, fold: bool = False) -> int:
    """Rows that fit the registers: each holds an int32 accumulator, its table (none in
    ``binary`` mode or with the zero-point ``fold``) and, for the int16 modes, one int16
    accumulator per activation plane."""
    bare = mac.mode == "binary" or fold
    per_row = (1 if bare else 2) + (mac.planes if int16_sums(isa, mac) else 0)
    # a binary row also keeps its chunk of codes live across the chunk's eight steps
    spare = 8 if mac.mode == "binary" else 6
    # folded smlal rows keep no table: 12 share each activation load (lenet's 120 and 84
    # rows on cortex-a72: 2% fewer instructions; with sdot 12 rows took 2% more than 8)
    most = 12 if fold and int16_sums(isa, mac) else 8
    return max(1, min(most, (isa.regs - spare) // per_row))


def _ramp(base: Any, n: int) -> Any:
    from tvm.tirx.script.builder import ir as T

    return T.Ramp(base, 1, n)


def _flush_plan(steps: int, chunks: int, flush: int) -> int:
    """Superchunks accumulated in int16 between widenings (0: widen every step)."""
    if flush < steps:
        return 0
    return max(d for d in range(1, chunks + 1) if chunks % d == 0 and d * steps <= flush)


def _vec(buf: Any, n: int) -> Any:
    return buf[_ramp(0, n)]


def _set(buf: Any, v: Any, n: int) -> None:
    from tvm.tirx.script.builder import ir as T

    T.buffer_store(buf, v, [_ramp(0, n)])


def _mac_step(p: GemvPlan, acc: Any, a16: list | None, xs: list, w: Any) -> None:
    """One dot-product step of a row: weights ``w`` against activation vectors ``xs`` into
    its int32 accumulator ``acc`` (or its int16 pair sums ``a16``, one per plane)."""
    from tvm.tirx.script.builder import ir as T

    isa, mode, L, H = p.isa, p.mac.mode, p.isa.lanes, 2 * p.isa.lanes
    cur = _vec(acc, L)

    def store32(v: Any) -> None:
        _set(acc, v, L)

    if mode == "binary":  # the codes (u8, 0 or 1) times the signed activation bytes
        if isa.vnni:
            store32(V.dpbusd(isa, cur, w, xs[0]))
        elif a16 is None:
            store32(cur + V.widen16(isa, V.maddubs(isa, w, xs[0])))
        else:
            _set(a16[0], _vec(a16[0], H) + V.maddubs(isa, w, xs[0]), H)
    elif mode == "vnni":
        store32(V.dpbusd(isa, cur, xs[0], w))
    elif mode == "sdot":
        store32(V.sdot(cur, T.reinterpret("int8x16", xs[0]), w))
    elif mode == "smlal" and a16 is not None:  # both halves into the one int16 sum
        a = T.reinterpret("int8x16", xs[0])
        _set(a16[0], _vec(a16[0], H) + V.smull(a, w, False) + V.smull(a, w, True), H)
    elif mode in ("smull", "smlal"):
        a = T.reinterpret("int8x16", xs[0])
        store32(cur + V.smull_pairs(a, w, False) + V.smull_pairs(a, w, True))
    elif a16 is None:  # maddubs / split, widened every step
        s = V.widen16(isa, V.maddubs(isa, xs[0], w))
        if mode == "split":
            s = s + V.widen16(isa, V.maddubs(isa, xs[1], w), 16)
        store32(cur + s)
    else:
        for q, xv in enumerate(xs):
            _set(a16[q], _vec(a16[q], H) + V.maddubs(isa, xv, w), H)


def _widen(p: GemvPlan, acc: Any, a16: list) -> None:
    L, H = p.isa.lanes, 2 * p.isa.lanes
    total = _vec(acc, L)
    for q, part in enumerate(a16):
        total = total + V.widen16(p.isa, _vec(part, H), 16 if q else 1)
    _set(acc, total, L)


def _row_block(
    p: GemvPlan, g: Group, first: int, i0: Any, nrows: int, m: Any, bufs: dict[str, Any]
) -> None:
    """Rows ``i0 .. i0 + nrows`` of group ``g`` (stored rows from ``first``) for input ``m``.
    Every accumulator is its own one-vector buffer: LLVM keeps each in a register (one
    buffer of several vectors, five rows of them, was kept in memory lane by lane)."""
    from tvm.tirx.script.builder import ir as T

    isa, dw, L, H = p.isa, p.dw, p.isa.lanes, 2 * p.isa.lanes
    xp, stored, levels, acc_out = bufs["xp"], bufs["stored"], bufs["levels"], bufs["acc"]
    planes = p.mac.planes
    steps = 8 // min(g.planes)  # decode steps per superchunk
    chunks = g.kr // (dw * steps)
    binary = p.mac.mode == "binary"
    pairs = not binary and paired(p.levels, g)
    groups_per_flush = _flush_plan(steps, chunks, p.mac.flush) if int16_sums(isa, p.mac) else 0
    accs = [T.alloc_buffer((L,), "int32") for _ in range(nrows)]
    for acc in accs:
        _set(acc, T.Broadcast(T.int32(0), L), L)
    a16s: list = [None] * nrows
    if groups_per_flush:
        a16s = [[T.alloc_buffer((H,), "int16") for _ in range(planes)] for _ in range(nrows)]

    def steps_of(c: Any) -> None:
        for s in range(steps):
            pos = (c * steps + s) * dw
            xs = [xp[m, q, _ramp(pos, dw)] for q in range(planes)]
            for r in range(nrows):
                row = first + i0 + r
                base = g.offset + (i0 + r) * g.row_bytes
                if pairs:
                    w = paired_weight_vec(isa, stored, g, base, c, s, levels, row, dw)
                else:
                    code = code_vec(stored, g, base, c, s, dw)
                    if p.fold:
                        code = code + code if p.levels.step == 2 else code
                    if binary or p.fold:
                        w = T.reinterpret(f"int8x{dw}", code) if p.fold else code
                    else:
                        w = weight_vec(isa, p.levels, code, levels, row, g.bits, dw)
                _mac_step(p, accs[r], a16s[r], xs, w)

    def fetch_ahead(it: Any, iters: int) -> None:
        """x86: prefetch the next block's rows, ``1 / iters`` of each a loop iteration
        ``it``. Without it the code loads of a 4096x4096 layer (2 MiB a core, past its L2)
        stalled: samples piled on them, and the prefetch took the AVX2 2-bit GEMV from
        0.47 to 0.38 ms, 4-bit 0.55 to 0.40 (AVX-512: 2-bit 0.159 to 0.132). aarch64 is
        left as it was: its instruction counts are measured under qemu, where a prefetch
        only adds instructions."""
        if isa.arch == ARM:
            return
        span = -(-g.row_bytes // iters)
        for r in range(nrows):
            start = g.offset + (i0 + nrows + r) * g.row_bytes + it * span
            for line in range(-(-span // 64)):
                at = T.min(start + line * 64, p.layout.nbytes - 1)
                T.evaluate(
                    T.call_intrin("void", "tirx.prefetch", T.address_of(stored[at]), 0, 3, 1)
                )

    if groups_per_flush:
        with T.serial(0, chunks // groups_per_flush) as co:
            for parts in a16s:
                for part in parts:
                    _set(part, T.Broadcast(T.int16(0), H), H)
            fetch_ahead(co, chunks // groups_per_flush)
            with T.serial(0, groups_per_flush) as ci:
                steps_of(co * groups_per_flush + ci)
            for acc, parts in zip(accs, a16s, strict=True):
                _widen(p, acc, parts)
    else:
        with T.serial(0, chunks) as c:
            fetch_ahead(c, chunks)
            steps_of(c)
    if isa.arch == ARM and nrows % 4 == 0 and not binary:
        _finish_by_four(p, accs, first + i0, m, bufs)
        return
    for r, acc in enumerate(accs):
        total = _hsum(_vec(acc, L), L)
        row = first + i0 + r
        if binary:
            w0, d = binary_levels(p.levels, levels, row)
            total = total * d + w0 * bufs["asum"][0]
        elif p.fold:
            zero = (T.Cast("int32", levels[row]) + 128 & 255) - 128  # the int8 zero point
            total = total + zero * bufs["asum"][0]
        if "comp" in bufs:
            total = total + bufs["comp"][row]
        T.buffer_store(acc_out, total, [row, m])


def _finish_by_four(p: GemvPlan, accs: list, row0: Any, m: Any, bufs: dict[str, Any]) -> None:
    """aarch64: four rows' sums at once, ``addp(addp(r0, r1), addp(r2, r3))``, and their
    zero-point fold and correction as one vector, stored a lane a row (a sum, fold and
    store per row took ~60 instructions per 12 rows more on lenet)."""
    from tvm.tirx.script.builder import ir as T

    levels, acc_out = bufs["levels"], bufs["acc"]
    # a lane a row, through ``acc_out`` itself: a flat view of its memory stored them as one
    # vector, but StorageRewrite sees a buffer's accesses only through that buffer (and a
    # buffer access takes a vector index in its last axis only)
    for r0 in range(0, len(accs), 4):
        a = [_vec(acc, 4) for acc in accs[r0 : r0 + 4]]
        total = V.addp(V.addp(a[0], a[1]), V.addp(a[2], a[3]))
        rows = _ramp(row0 + r0, 4)
        if p.fold:
            zero = T.Cast("int32x4", T.reinterpret("int8x4", levels[rows]))
            total = total + zero * T.Broadcast(bufs["asum"][0], 4)
        if "comp" in bufs:
            total = total + bufs["comp"][rows]
        four = T.alloc_buffer((4,), "int32")  # a register: computed once, stored by lane
        _set(four, total, 4)
        for i in range(4):
            T.buffer_store(acc_out, four[i], [row0 + r0 + i, m])


def _hsum(v: Any, lanes: int) -> Any:
    """The sum of ``v``'s lanes by halving shuffles: the accumulators are read only as whole
    vectors, so LLVM keeps them in registers (a scalar read of one lane made it keep them in
    memory and store every lane back on every step)."""
    from tvm.tirx.script.builder import ir as T

    while lanes > 1:
        lanes //= 2
        lo = T.Shuffle([v], list(range(lanes)))
        hi = T.Shuffle([v], list(range(lanes, 2 * lanes)))
        v = lo + hi
    return v


def gemv_stmt(p: GemvPlan, bufs: dict[str, Any], n: Any) -> Any:
    """The kernel as a TIR statement over input rows ``0 .. n`` (an int32 expression) on
    ``bufs``: xp, stored, levels, acc and, where the activation offset is not 0, comp."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T

    with IRBuilder() as ib, T.serial(0, n) as m:
        if p.mac.mode == "binary" or p.fold:
            bufs = {**bufs, "asum": _act_sum(p, bufs["xp"], m)}
        first = 0
        for g in p.layout.groups:
            full, tail = divmod(len(g.rows), p.rows)
            loop = T.parallel if p.parallel and full > 1 else T.serial
            if full:
                with loop(0, full) as ro:
                    _row_block(p, g, first, ro * p.rows, p.rows, m, bufs)
            if tail:
                with T.serial(0, tail) as rt:
                    _row_block(p, g, first, full * p.rows + rt, 1, m, bufs)
            first += len(g.rows)
    return ib.get()


def _act_sum(p: GemvPlan, xp: Any, m: Any) -> Any:
    """A one-element int32 buffer: the sum of input row ``m``'s signed activation bytes
    (``binary`` mode and the zero-point fold)."""
    from tvm.tirx.script.builder import ir as T

    isa, dw, L = p.isa, p.dw, p.isa.lanes
    ones = T.Broadcast(T.uint8(1), dw)
    vsum = T.alloc_buffer((L,), "int32")
    T.buffer_store(vsum, T.Broadcast(T.int32(0), L), [_ramp(0, L)])
    with T.serial(0, p.layout.max_kr // dw) as c:
        a = xp[m, 0, _ramp(c * dw, dw)]
        if isa.arch == ARM:
            pairs = V.pair_sums8(T.reinterpret("int8x16", a))
        else:
            pairs = V.maddubs(isa, ones, a)  # pair sums within 2 * 128
        T.buffer_store(vsum, vsum[_ramp(0, L)] + V.widen16(isa, pairs), [_ramp(0, L)])
    out = T.alloc_buffer((1,), "int32")
    T.buffer_store(out, _hsum(vsum[_ramp(0, L)], L), [0])
    return out


def decode_width(isa: Isa) -> int:
    """Bytes of codes a GEMV step decodes: a whole register."""
    return 16 if isa.arch == ARM else isa.vbytes
