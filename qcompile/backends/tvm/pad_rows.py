"""A grouped conv's zero-padded input copy as whole rows (every CPU target).

``compute._padded_copy`` (stride 1) and ``compute._phase_copy`` (strided, split by stride
phase) pad a depthwise conv's input into a tensor of its own. As a TE block each padded byte
is an ``if_then_else`` with a load, which TVM's vectoriser leaves scalar: one load, compare
and store per byte, 11% of mobilenetv2's host batch-1 time, more than its depthwise sums.
Here each output row is one vector: the input row loaded whole and stored over a row of
zeros, or, where the stride takes every other column, the stride phase's columns picked by
one shuffle (``[row, zeros]`` indexed per output column); rows past the image are stored as
zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANNOTATION = "qcompile_pad"  # the TE block's attrs: padding and stride, read back here
MAX_WIDTH = 256  # an input row wider than this keeps the TE copy (one vector per row)


@dataclass(frozen=True)
class PadGeometry:
    padding: tuple[int, int]
    stride: tuple[int, int]
    flat: bool = False  # ``[n, c, phases, rows * cols]`` (``flat_grid``)

    def attrs(self) -> dict[str, list[int]]:
        return {ANNOTATION: [*self.padding, *self.stride, int(self.flat)]}


def geometry(block: Any) -> PadGeometry | None:
    """The padding and stride of a padded-copy block (``attrs``), or None."""
    value = block.annotations.get(ANNOTATION)
    if value is None:
        return None
    ph, pw, sh, sw, flat = (int(v) for v in value)
    return PadGeometry((ph, pw), (sh, sw), bool(flat))


def applies(x: Any) -> bool:
    """Whether the copy of input buffer ``x`` ``[n, c, h, w]`` is taken here."""
    return int(x.shape[3]) <= MAX_WIDTH


def pad_stmt(x: Any, out: Any, geo: PadGeometry, parallel: bool = False) -> Any:
    """The copy as one TIR statement: ``x`` ``[n, c, h, w]``; ``out`` ``[n, c, rows,
    cols]`` (stride 1) or ``[n, c, sh * sw, rows, cols]`` (phase ``py * sw + px`` holds
    padded pixels ``(py + sh * r, px + sw * q)``), or with ``geo.flat`` each phase's rows
    one after another, ``[n, c, sh * sw, rows * cols]``. ``parallel``: its channels
    shared out to the threads."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T

    (ph, pw), (sh, sw) = geo.padding, geo.stride
    n, c, h, w = (x.shape[0], *(int(v) for v in x.shape[1:]))
    if geo.flat:
        cols = -(-(w + 2 * pw) // sw)
        rows = int(out.shape[-1]) // cols
    else:
        rows, cols = (int(v) for v in out.shape[-2:])
    phased = len(out.shape) == 5 or geo.flat  # a phase axis (a stride-1 copy has one phase)
    zero = T.Broadcast(T.Cast(x.dtype, 0), cols)
    channels = T.parallel if parallel else T.serial
    with IRBuilder() as ib, T.serial(0, n) as img, channels(0, c) as ch:
        for p in range(sh * sw):
            py, px = divmod(p, sw)
            # output column q is input column px + sw * q - pw; lane w of [row, zeros] is 0
            cols_in = [px + sw * q - pw for q in range(cols)]
            index = [j if 0 <= j < w else w for j in cols_in]
            with T.serial(0, rows) as r:
                i = py + sh * r - ph

                def at(first: int, count: int, r: Any = r, p: int = p) -> list[Any]:
                    if geo.flat:
                        return [img, ch, p, T.Ramp(r * cols + first, 1, count)]
                    return [img, ch, *([p] if phased else []), r, T.Ramp(first, 1, count)]

                with T.If(T.And(i >= 0, i < h)):
                    with T.Then():
                        row = x[img, ch, i, T.Ramp(0, 1, w)]
                        if sw == 1:
                            # the columns in order: zeros, then the row over them (AVX2 has
                            # no byte permute across lanes: a shuffle went byte by byte)
                            T.buffer_store(out, zero, at(0, cols))
                            T.buffer_store(out, row, at(pw, w))
                        else:
                            both = [row, T.Broadcast(T.Cast(x.dtype, 0), w)]
                            T.buffer_store(out, T.Shuffle(both, index), at(0, cols))
                    with T.Else():
                        T.buffer_store(out, zero, at(0, cols))
    return ib.get()
