"""A weight layer's arguments to the TVM function and the TE expressions that read them.

Codes stay packed as the .qir stores them (a dense LSB-first bit stream in uint32 words; a
layer with per-channel widths packs each row at its own width from a word boundary) and are
extracted inside the kernels: a code is ``(word >> shift) & (2^b - 1)``, or for widths that
can straddle two words (3, 5, 6, 7 bits) the same on the 64-bit pair of words. The integer
weight is then ``step * code + zero[c]`` (affine levels: the code is the weight) or a table
entry, looked up by a binary Select tree over the code's bits up to ``SELECT_BITS``
(vectorises) and by a gather above.

Arrays, in call order per node: ``codes``, ``zero`` or ``entries`` (or a kernel's own
``table``) and, for per-channel widths, ``row_start`` and ``row_bits``; then the
requantization's per-channel ``mult`` and ``bias`` (:func:`requant_args`, any node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qcompile.ir.graph import Node
from qcompile.ir.packing import row_starts
from qcompile.ir.weights import Affine, Weights

I64, I32 = "int64", "int32"
SELECT_BITS = 4


@dataclass
class WeightArgs:
    """The TE placeholders of one weighted node (None where the node has no such array)."""

    w: Weights
    codes: Any
    zero: Any = None
    table: Any = None
    row_start: Any = None
    row_bits: Any = None

    @property
    def aligned(self) -> bool:
        """Codes never straddle words and every row starts on a word: the fast layout."""
        w = self.w
        per_row = w.count // w.shape[0]
        return w.channel_bits is None and 32 % w.bits == 0 and (per_row * w.bits) % 32 == 0


def c_name(node: Node) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in node.name)


def _arg(te: Any, prog: Any, node: Node, kind: str, arr: np.ndarray) -> Any:
    ph = te.placeholder(arr.shape, str(arr.dtype), name=f"{c_name(node)}_{kind}")
    prog.params.append(ph)
    prog.weights.append((node.name, kind, arr))
    return ph


@dataclass
class RequantArgs:
    """A node's per-channel requantization arrays (None: one multiplier, no bias)."""

    mult: Any = None
    bias: Any = None
    # per-channel bounds the accumulator is clamped to first (``compute.clamp_bounds``)
    acc_lo: Any = None
    acc_hi: Any = None
    # the unsigned form's base (``clamp.offset_requant``): acc_lo is then its anchor
    base_q: Any = None
    base_r: Any = None
    clipped: bool = False  # the clamp to a tight window left no clip to do


def requant_args(te: Any, prog: Any, node: Node) -> RequantArgs:
    """The node's multipliers (int32: the IR keeps them within 32 bits) and biases (int32
    where they fit). An int64 product of an int32 sign-extended is one vpmuldq per four
    lanes on AVX2; of an int64 multiplier LLVM cannot prove fits, three vpmuludq and their
    shifts and adds (lenet/AVX2: its first conv's requantization took 17% of a batch)."""
    r = node.requant
    out = RequantArgs()
    if r is not None and r.per_channel:
        out.mult = _arg(te, prog, node, "mult", r.multipliers.astype(np.int32))
    if r is not None and r.bias is not None:
        out.bias = _arg(te, prog, node, "bias", _narrow(r.biases))
    return out


def _narrow(values: np.ndarray) -> np.ndarray:
    """``values`` as int32 where every one fits, else as they are."""
    i32 = np.iinfo(np.int32)
    fits = values.size == 0 or (i32.min <= values.min() and values.max() <= i32.max)
    return values.astype(np.int32) if fits else values


def weight_args(
    te: Any, prog: Any, node: Node, dt: str, table: np.ndarray | None = None
) -> WeightArgs:
    """Declare the node's weight arguments on ``prog`` (``Program``); ``table``: a kernel's
    own level table, passed in place of the zero points or table (AVX-512)."""
    w = node.weights.pack()

    def arg(kind: str, arr: np.ndarray) -> Any:
        return _arg(te, prog, node, kind, arr)

    args = WeightArgs(w, arg("codes", w.data))
    if table is not None:
        args.table = arg("table", table)
    elif isinstance(w.levels, Affine):
        args.zero = arg("zero", w.levels.zero.astype(dt))
    else:
        args.table = arg("entries", w.levels.entries.astype(dt))
    if w.channel_bits is not None:
        args.row_start = arg("row_start", row_starts(w.per_row, w.channel_bits).astype(I32))
        args.row_bits = arg("row_bits", np.array(w.channel_bits, dtype=I32))
    return args


def extract(tirx: Any, codes: Any, bitpos: Any, bits: Any, straddle: bool) -> Any:
    """The code of ``bits`` bits at stream position ``bitpos`` (int32 expressions); with
    ``straddle``, the next word supplies the high bits where the code crosses a word."""
    word = bitpos >> tirx.const(5, I32)
    shift = (bitpos & tirx.const(31, I32)).astype("uint32")
    mask = (tirx.const(1, "uint32") << bits.astype("uint32")) - tirx.const(1, "uint32")
    low = codes[word] >> shift
    if not straddle:
        return (low & mask).astype(I32)
    # shift 0 never straddles, and `x << 32` is undefined: take the high word only past it
    last = tirx.const(int(codes.shape[0]) - 1, I32)  # Select evaluates both sides: clamp
    high = tirx.Select(
        shift + bits.astype("uint32") > tirx.const(32, "uint32"),
        codes[tirx.min(word + tirx.const(1, I32), last)] << (tirx.const(32, "uint32") - shift),
        tirx.const(0, "uint32"),
    )
    return ((low | high) & mask).astype(I32)


def code_at(tirx: Any, a: WeightArgs, row: Any, i: Any) -> Any:
    """Code ``i`` of output row ``row`` (flat index ``i`` within the row)."""
    w = a.w
    per_row = w.count // w.shape[0]
    if a.row_bits is not None:
        bits = a.row_bits[row]
        pos = a.row_start[row] * tirx.const(32, I32) + i * bits
        return extract(tirx, a.codes, pos, bits, True)
    b = tirx.const(w.bits, I32)
    pos = (row * tirx.const(per_row, I32) + i) * b
    return extract(tirx, a.codes, pos, b, 32 % w.bits != 0)


def level_row(a: WeightArgs, row: Any) -> Any:
    levels = a.zero if a.zero is not None else a.table
    return row if int(levels.shape[0]) > 1 else 0


def weight_at(tirx: Any, a: WeightArgs, row: Any, code: Any, dt: str) -> Any:
    """The integer weight a code of row ``row`` stands for."""
    lv = a.w.levels
    if a.zero is not None:
        assert isinstance(lv, Affine)
        value = code * tirx.const(lv.step, I32) if lv.step != 1 else code
        return value.astype(dt) + a.zero[level_row(a, row)]
    return lookup(tirx, a.table, level_row(a, row), code, a.w.bits)


def lookup(tirx: Any, table: Any, row: Any, code: Any, bits: int) -> Any:
    """``table[row, code]``: a binary Select tree on the code's bits (vectorises), or a gather."""
    if bits > SELECT_BITS:
        return table[row, code]

    def tree(lo: int, n: int) -> Any:
        if n == 1:
            return table[row, lo]
        half = n // 2
        bit = (code >> tirx.const(half.bit_length() - 1, I32)) & tirx.const(1, I32)
        return tirx.Select(bit == tirx.const(1, I32), tree(lo + half, half), tree(lo, half))

    return tree(0, 1 << bits)
