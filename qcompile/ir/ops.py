"""Each op's contract in one place: input count, output shape, and the exact integer range
of its accumulator for inputs anywhere in their QType ranges (what sizes accumulators and
proves they cannot wrap).

Functions raise ``ValueError`` with the rule broken; :func:`qcompile.ir.verify` adds the
node's name.
"""

from __future__ import annotations

import math

import numpy as np

from qcompile.ir.graph import Add, AvgPool, Conv2d, Node, Pool

Shape = tuple[int, ...]
Range = tuple[int, int]

ARITY = {"conv2d": 1, "dense": 1, "maxpool": 1, "avgpool": 1, "clip": 1, "flatten": 1}
# LUT entries and biases are kept to 32 bits so that per-channel sums of |weights| stay far
# inside int64 while the bound is computed.
LUT_LIMIT = 1 << 31


def arity(node: Node) -> int:
    return len(node.op.multipliers) if isinstance(node.op, Add) else ARITY[node.kind]


def _window(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(f"a {kernel}-wide window does not fit an input of {size} (padding {pad})")
    return out


def infer_shape(node: Node, inputs: list[Shape]) -> Shape:
    """Per-sample output shape of ``node`` for per-sample input shapes ``inputs``."""
    kind, op, w = node.kind, node.op, node.weights
    x = inputs[0]
    if kind == "flatten":
        return (math.prod(x),)
    if kind == "clip":
        return x
    if kind == "add":
        if any(s != x for s in inputs):
            raise ValueError(f"add inputs have different shapes {inputs}")
        return x
    if kind == "dense":
        if len(x) != 1:
            raise ValueError(f"dense needs a flat input, got shape {x}")
        if w is None or len(w.shape) != 2 or w.shape[1] != x[0]:
            raise ValueError(f"dense weights must be [out, {x[0]}]")
        return (w.shape[0],)
    if len(x) != 3:
        raise ValueError(f"{kind} needs a [C, H, W] input, got shape {x}")
    c, h, wd = x
    if isinstance(op, Pool):
        kh, kw = op.kernel
        return (
            c,
            _window(h, kh, op.stride[0], op.padding[0]),
            _window(wd, kw, op.stride[1], op.padding[1]),
        )
    assert isinstance(op, Conv2d)
    if w is None or len(w.shape) != 4:
        raise ValueError("conv2d weights must be [out, in/groups, kh, kw]")
    o, ci, kh, kw = w.shape
    if c % op.groups or o % op.groups or ci * op.groups != c:
        raise ValueError(
            f"conv2d weights {w.shape} do not fit {c} input channels in {op.groups} groups"
        )
    return (
        o,
        _window(h, kh, op.stride[0], op.padding[0], op.dilation[0]),
        _window(wd, kw, op.stride[1], op.padding[1], op.dilation[1]),
    )


def check_weights(node: Node) -> None:
    """LUT and bias sizes and magnitudes, each channel's codes within its width, packed padding
    zero."""
    w = node.weights
    if w is None:
        raise ValueError(f"{node.kind} needs weights")
    levels = 1 << w.bits
    if w.lut.shape[1] != levels or w.lut.shape[0] not in (1, w.shape[0]):
        raise ValueError(
            f"lut is {list(w.lut.shape)}, must be [1 or {w.shape[0]}, {levels}] "
            f"for {w.bits}-bit codes"
        )
    # min/max, not abs: abs(int64 min) wraps to a negative number
    if w.lut.size and not -LUT_LIMIT < int(w.lut.min()) <= int(w.lut.max()) < LUT_LIMIT:
        raise ValueError("lut entries must fit in 32 bits")
    if w.bias is not None:
        if w.bias.shape != (w.shape[0],):
            raise ValueError(f"bias has {w.bias.shape[0]} entries for {w.shape[0]} channels")
        if w.bias.size and not -(1 << 62) < int(w.bias.min()) <= int(w.bias.max()) < 1 << 62:
            raise ValueError("bias entries must fit in 62 bits")
    if w.packed:
        from qcompile.ir.packing import padding_is_zero, rows_padding_is_zero

        # A packed code cannot exceed its row's width; stray bits can only be padding.
        ok = (
            padding_is_zero(w.data, w.bits, w.count)
            if w.channel_bits is None
            else rows_padding_is_zero(w.data, w.channel_bits, w.count // w.shape[0])
        )
        if not ok:
            raise ValueError("packed codes have bits set outside any code")
        return
    if w.data.size == 0:
        return
    widths = np.array(w.row_bits(), dtype=np.int64)
    peaks = w.data.reshape(w.shape[0], -1).max(axis=1).astype(np.int64)
    bad = np.flatnonzero(peaks >= (1 << widths))
    if bad.size:
        c = int(bad[0])
        where = "" if w.channel_bits is None else f" in channel {c}"
        raise ValueError(f"a code is {int(peaks[c])}, beyond {int(widths[c])}-bit codes{where}")


def acc_range(node: Node, inputs: list[Range]) -> Range:
    """Exact ``(min, max)`` of the accumulator (before multiplier and rounding)."""
    kind, op = node.kind, node.op
    lo, hi = inputs[0]
    if kind == "clip":
        return lo, hi
    if isinstance(op, Add):
        terms = [sorted((a * m, b * m)) for (a, b), m in zip(inputs, op.multipliers, strict=True)]
        return sum(t[0] for t in terms), sum(t[1] for t in terms)
    if isinstance(op, AvgPool):
        n = op.kernel[0] * op.kernel[1]
        return min(0, n * lo), max(0, n * hi)  # zero padding is a term too
    w = node.weights
    assert w is not None
    dec = w.decoded().reshape(w.shape[0], -1)
    pos = np.where(dec > 0, dec, 0).sum(axis=1)
    neg = np.where(dec < 0, dec, 0).sum(axis=1)
    bias = w.bias if w.bias is not None else np.zeros(w.shape[0], dtype=np.int64)
    # Padding contributes 0, inside [lo, hi] for every QType (all ranges contain 0).
    mins = [int(b) + int(p) * lo + int(n) * hi for p, n, b in zip(pos, neg, bias, strict=True)]
    maxs = [int(b) + int(p) * hi + int(n) * lo for p, n, b in zip(pos, neg, bias, strict=True)]
    return min(mins), max(maxs)


def requant_range(node: Node, acc: Range) -> Range:
    """Range of ``acc * multiplier + rounding``, the widest value the node holds."""
    r = node.requant
    assert r is not None
    a, b = sorted((acc[0] * r.multiplier, acc[1] * r.multiplier))
    return a + r.rounding, b + r.rounding


def acc_bits_needed(node: Node, inputs: list[Range]) -> int:
    """Signed width holding the accumulator for every input in range."""
    lo, hi = requant_range(node, acc_range(node, inputs))
    return max(1, int(-lo - 1).bit_length() if lo < 0 else 0, int(max(hi, 0)).bit_length()) + 1
