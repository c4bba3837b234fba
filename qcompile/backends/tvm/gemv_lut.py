"""Table-lookup GEMV: a dense layer's few input rows against its packed codes, read once.

For a batch of one (or a few) input rows a dense layer is a matrix-vector product and reads
each weight once: it is bound by the bytes of codes it streams. So the codes are decoded in
registers, never stored: per step and row one load of a chunk of codes per plane, a shift, a
mask, a 16-entry table lookup (``vpshufb`` on AVX2/AVX-512, ``tbl`` on NEON; byte arithmetic
for affine 8-bit codes) and one dot-product instruction against the activation bytes
(:mod:`mac`: ``vpdpbusd``, ``vpmaddubsw`` accumulating int16 pair sums between widenings,
``sdot``, or ``smull``). ``rows`` output rows share each activation load; rows run on
threads where the layer is large enough to pay for them.

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
from qcompile.backends.tvm.lut_decode import LevelsPlan, code_vec, weight_vec
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

    @property
    def dw(self) -> int:
        return self.layout.dw


def rows_per_step(isa: Isa, mac: Mac) -> int:
    """Rows that fit the registers: each holds an int32 accumulator, its table and, for
    the int16 modes, one int16 accumulator per activation plane."""
    per_row = 2 + (mac.planes if mac.mode in ("maddubs", "split") else 0)
    return max(1, min(8, (isa.regs - 6) // per_row))


def _ramp(base: Any, n: int) -> Any:
    from tvm.tirx.script.builder import ir as T

    return T.Ramp(base, 1, n)


def _flush_plan(steps: int, chunks: int, flush: int) -> int:
    """Superchunks accumulated in int16 between widenings (0: widen every step)."""
    if flush < steps:
        return 0
    return max(d for d in range(1, chunks + 1) if chunks % d == 0 and d * steps <= flush)


def _mac_step(p: GemvPlan, acc: Any, a16: Any, r: int, xs: list, w: Any) -> None:
    """One dot-product step of row ``r``: weights ``w`` against activation vectors ``xs``."""
    from tvm.tirx.script.builder import ir as T

    isa, mode, L = p.isa, p.mac.mode, p.isa.lanes
    cur = acc[_ramp(r * L, L)]

    def store32(v: Any) -> None:
        T.buffer_store(acc, v, [_ramp(r * L, L)])

    if mode == "vnni":
        store32(V.dpbusd(isa, cur, xs[0], w))
    elif mode == "sdot":
        store32(V.sdot(cur, T.reinterpret("int8x16", xs[0]), w))
    elif mode == "smull":
        a = T.reinterpret("int8x16", xs[0])
        store32(cur + V.smull_pairs(a, w, False) + V.smull_pairs(a, w, True))
    elif a16 is None:  # maddubs / split, widened every step
        s = V.widen16(isa, V.maddubs(isa, xs[0], w))
        if mode == "split":
            s = s + V.widen16(isa, V.maddubs(isa, xs[1], w), 16)
        store32(cur + s)
    else:
        H = 2 * L
        for q, xv in enumerate(xs):
            at = _ramp((r * len(xs) + q) * H, H)
            T.buffer_store(a16, a16[at] + V.maddubs(isa, xv, w), [at])


def _widen(p: GemvPlan, acc: Any, a16: Any, r: int, planes: int) -> None:
    from tvm.tirx.script.builder import ir as T

    L, H = p.isa.lanes, 2 * p.isa.lanes
    total = acc[_ramp(r * L, L)]
    for q in range(planes):
        total = total + V.widen16(p.isa, a16[_ramp((r * planes + q) * H, H)], 16 if q else 1)
    T.buffer_store(acc, total, [_ramp(r * L, L)])


def _row_block(
    p: GemvPlan, g: Group, first: int, i0: Any, nrows: int, m: Any, bufs: dict[str, Any]
) -> None:
    """Rows ``i0 .. i0 + nrows`` of group ``g`` (stored rows from ``first``) for input ``m``."""
    from tvm.tirx.script.builder import ir as T

    isa, dw, L = p.isa, p.dw, p.isa.lanes
    xp, stored, levels, acc_out = bufs["xp"], bufs["stored"], bufs["levels"], bufs["acc"]
    planes = p.mac.planes
    steps = 8 // min(g.planes)  # decode steps per superchunk
    chunks = g.kr // (dw * steps)
    groups_per_flush = (
        _flush_plan(steps, chunks, p.mac.flush) if p.mac.mode in ("maddubs", "split") else 0
    )
    acc = T.alloc_buffer((nrows * L,), "int32")
    T.buffer_store(acc, T.Broadcast(T.int32(0), nrows * L), [_ramp(0, nrows * L)])
    a16 = None
    if groups_per_flush:
        a16 = T.alloc_buffer((nrows * planes * 2 * L,), "int16")

    def steps_of(c: Any) -> None:
        for s in range(steps):
            pos = (c * steps + s) * dw
            xs = [xp[m, q, _ramp(pos, dw)] for q in range(planes)]
            for r in range(nrows):
                row = first + i0 + r
                base = g.offset + (i0 + r) * g.row_bytes
                code = code_vec(stored, g, base, c, s, dw)
                w = weight_vec(isa, p.levels, code, levels, row, g.bits, dw)
                _mac_step(p, acc, a16, r, xs, w)

    if groups_per_flush:
        with T.serial(0, chunks // groups_per_flush) as co:
            zero = T.Broadcast(T.int16(0), nrows * planes * 2 * L)
            T.buffer_store(a16, zero, [_ramp(0, nrows * planes * 2 * L)])
            with T.serial(0, groups_per_flush) as ci:
                steps_of(co * groups_per_flush + ci)
            for r in range(nrows):
                _widen(p, acc, a16, r, planes)
    else:
        with T.serial(0, chunks) as c:
            steps_of(c)
    for r in range(nrows):
        total = _hsum(acc[_ramp(r * L, L)], L)
        row = first + i0 + r
        if "comp" in bufs:
            total = total + bufs["comp"][row]
        T.buffer_store(acc_out, total, [row, m])


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


def decode_width(isa: Isa) -> int:
    """Bytes of codes a GEMV step decodes: a whole register."""
    return 16 if isa.arch == ARM else isa.vbytes
