"""The IR as TVM tensor expressions: one ``te.compute`` chain for the whole graph.

Each node computes in int32 where the verifier's accumulator width (``Requant.acc_bits``, which
covers the multiplier and the rounding term) is at most 32 bits, else in int64; tensors
between nodes are int32 whenever their QType fits. The function's input and output stay int64
so every runner and harness sees one calling convention. Weights arrive as arguments: codes
packed LSB-first in uint32 words, per-channel LUTs and biases in the node's type. A code is
``(word[i / n] >> (b * (i % n))) & (2^b - 1)``; it is dequantized by a binary Select tree over
its bits up to ``SELECT_BITS`` (vectorises) and by a gather above (scalar, but a tree of 2^b
leaves would cost more). The requantization is ``clip((acc * m + 2^(s-1)) >> s, lo, hi)``.

Given a target's AVX-512 features (``avx512_dense``; None for every other target), a dense
node that qualifies accumulates with the vpermw/vpermb kernel instead, and its LUT argument
is the kernel's replicated table (weight kind ``table``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qcompile.backends.tvm.avx512_dense import Avx512, Plan, macro, plan, stub_acc, table
from qcompile.ir.graph import Graph, Node, Requant
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool, Pool
from qcompile.ir.packing import codes_per_word

I64, I32 = "int64", "int32"
SELECT_BITS = 4
INT32 = (-(1 << 31), (1 << 31) - 1)


@dataclass
class Program:
    """The TE tensors of a graph: ``params`` in call order (input, then weights per weighted
    node: codes, lut, bias), ``output`` last."""

    params: list = field(default_factory=list)
    # (node name, "codes"|"lut"|"table"|"bias", array)
    weights: list = field(default_factory=list)
    output: object = None
    kernels: dict = field(default_factory=dict)  # placeholder block name -> AVX-512 kernel


def _fits32(*arrays: np.ndarray | None) -> bool:
    return all(
        a is None or not a.size or (a.min() >= INT32[0] and a.max() <= INT32[1]) for a in arrays
    )


def compute_dtype(node: Node) -> str:
    """int32 where every value the node holds is proven to fit, else int64."""
    r, w = node.requant, node.weights
    if r is not None and r.acc_bits > 32:
        return I64
    if w is not None and not _fits32(w.lut, w.bias):
        return I64
    return I32


def storage_dtype(node: Node) -> str:
    lo, hi = node.output.qtype.range
    return I32 if INT32[0] <= lo and hi <= INT32[1] else I64


def _cast(v, dtype: str):
    return v.astype(dtype)  # a no-op when v already has the type


def _requant(te, tirx, value, r: Requant, dt: str, out: str):
    v = value
    if r.multiplier != 1:
        v = v * tirx.const(r.multiplier, dt)
    if r.shift:
        v = (v + tirx.const(r.rounding, dt)) >> tirx.const(r.shift, dt)
    return _cast(tirx.max(tirx.min(v, tirx.const(r.hi, dt)), tirx.const(r.lo, dt)), out)


def build_program(graph: Graph, avx512: Avx512 | None = None) -> Program:
    """``avx512``: the target's features where dense layers may use the AVX-512 kernel."""
    from tvm import te, tirx

    from qcompile.passes import widest_weights

    # The kernels extract one code width per layer: per-channel widths go in at the widest.
    graph = widest_weights(graph)
    prog = Program()
    x = te.placeholder((te.var("n", "int64"), *graph.input.shape), I64, name="input")
    prog.params.append(x)
    first = te.compute(x.shape, lambda *i: x(*i).astype(I32), name="input_i32")
    env = {graph.input.name: first if graph.input.qtype.bits <= 32 else x}
    tensors = graph.tensors()
    for node in graph.nodes:
        ins = [env[t] for t in node.inputs]
        x_range = tensors[node.inputs[0]].qtype.range
        p = plan(node, x_range, compute_dtype(node), avx512) if avx512 else None
        env[node.output.name] = _node(te, tirx, prog, node, ins, p)
    out = env[graph.outputs[0]]
    if out.dtype != I64:
        out = te.compute(out.shape, lambda *i: out(*i).astype(I64), name="output_i64")
    prog.output = out
    prog.params.append(out)
    return prog


def _weights(te, prog: Program, node: Node, dt: str, p: Plan | None = None):
    """Placeholders codes, LUT (the kernel's table where ``p``), bias; their arrays noted."""
    w = node.weights.pack()
    codes = te.placeholder(w.data.shape, "uint32", name=f"{_c(node)}_codes")
    kind, arr = ("table", table(p, node)) if p else ("lut", w.lut.astype(dt))
    lut = te.placeholder(arr.shape, str(arr.dtype), name=f"{_c(node)}_{kind}")
    prog.params += [codes, lut]
    prog.weights += [(node.name, "codes", w.data), (node.name, kind, arr)]
    b = None
    if w.bias is not None:
        b = te.placeholder(w.bias.shape, dt, name=f"{_c(node)}_bias")
        prog.params.append(b)
        prog.weights.append((node.name, "bias", w.bias.astype(dt)))
    return w, codes, lut, b


def _c(node: Node) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in node.name)


def _extract(tirx, word, slot, bits: int):
    sh = (slot * bits).astype("uint32")
    return ((word >> sh) & tirx.const((1 << bits) - 1, "uint32")).astype(I32)


def _lookup(tirx, lut, row, code, bits: int):
    """``lut[row, code]``: a binary Select tree on the code's bits (vectorises), or a gather."""
    if bits > SELECT_BITS:
        return lut[row, code]

    def tree(lo: int, n: int):
        if n == 1:
            return lut[row, lo]
        half = n // 2
        bit = (code >> tirx.const(half.bit_length() - 1, I32)) & tirx.const(1, I32)
        return tirx.Select(bit == tirx.const(1, I32), tree(lo + half, half), tree(lo, half))

    return tree(0, 1 << bits)


def _bias(tirx, b, ch, dt: str):
    return b[ch] if b is not None else tirx.const(0, dt)


def _node(te, tirx, prog: Program, node: Node, ins: list, p: Plan | None = None):
    dt, out = compute_dtype(node), storage_dtype(node)
    return LOWER[type(node.op)](te, tirx, prog, node, ins, _c(node), dt, out, p)


def _flatten(te, tirx, prog, node: Node, ins: list, name: str, dt: str, out: str, p):
    x = ins[0]
    c, h, w = (int(v) for v in x.shape[1:])
    return te.compute(
        (x.shape[0], c * h * w), lambda n, i: x[n, i // (h * w), (i // w) % h, i % w], name=name
    )


def _clip(te, tirx, prog, node: Node, ins: list, name: str, dt: str, out: str, p):
    x, r = ins[0], node.requant
    return te.compute(
        x.shape, lambda *i: _requant(te, tirx, _cast(x(*i), dt), r, dt, out), name=name
    )


def _add(te, tirx, prog, node: Node, ins: list, name: str, dt: str, out: str, p):
    op, r = node.op, node.requant
    assert isinstance(op, Add)

    def add(*i):
        acc = _cast(ins[0](*i), dt) * tirx.const(op.multipliers[0], dt)
        for t, m in zip(ins[1:], op.multipliers[1:], strict=True):
            acc = acc + _cast(t(*i), dt) * tirx.const(m, dt)
        return _requant(te, tirx, acc, r, dt, out)

    return te.compute(ins[0].shape, add, name=name)


def _pool(te, tirx, prog, node: Node, ins: list, name: str, dt: str, out: str, p):
    op, r, x = node.op, node.requant, ins[0]
    assert isinstance(op, Pool)
    batch, c = x.shape[0], int(x.shape[1])
    (kh, kw), (sh, sw), (ph, pw) = op.kernel, op.stride, op.padding
    oh, ow = node.output.shape[1:]
    is_max = isinstance(op, MaxPool)
    lo = node.output.qtype.range[0] if is_max else 0
    padded = _pad(te, tirx, x, ph, pw, lo, name)
    ri, rj = te.reduce_axis((0, kh), name="ri"), te.reduce_axis((0, kw), name="rj")
    if is_max:
        return te.compute(
            (batch, c, oh, ow),
            lambda n, ch, i, j: te.max(padded[n, ch, i * sh + ri, j * sw + rj], axis=[ri, rj]),
            name=name,
        )
    acc = te.compute(
        (batch, c, oh, ow),
        lambda n, ch, i, j: te.sum(
            _cast(padded[n, ch, i * sh + ri, j * sw + rj], dt), axis=[ri, rj]
        ),
        name=f"{name}_acc",
    )
    return te.compute(acc.shape, lambda *i: _requant(te, tirx, acc(*i), r, dt, out), name=name)


def _dense(te, tirx, prog: Program, node: Node, ins: list, name: str, dt: str, out: str, p):
    x = ins[0]
    w, codes, lut, b = _weights(te, prog, node, dt, p)
    o, k = w.shape
    if p is not None:
        acc = stub_acc(te, x, codes, lut, o, name)
        prog.kernels[acc.op.name] = macro(p, node)
        return te.compute(
            (x.shape[0], o),
            lambda n, j: _requant(
                te, tirx, acc[n, j] + _bias(tirx, b, j, dt), node.requant, dt, out
            ),
            name=name,
        )
    n_w = codes_per_word(w.bits)
    row = (lambda j: j) if w.lut.shape[0] > 1 else (lambda j: 0)
    if k % n_w == 0:
        # Rows start on word boundaries: a word axis and a slot axis, so the schedule can
        # vectorise over the codes of one word (the word is loaded once, shifts are constant).
        kw_, kl = te.reduce_axis((0, k // n_w), name="kw"), te.reduce_axis((0, n_w), name="kl")

        def body(n, j):
            code = _extract(tirx, codes[j * (k // n_w) + kw_], kl, w.bits)
            level = _lookup(tirx, lut, row(j), code, w.bits)
            return te.sum(_cast(x[n, kw_ * n_w + kl], dt) * level, axis=[kw_, kl])

    else:
        rk = te.reduce_axis((0, k), name="k")

        def body(n, j):
            idx = j * k + rk
            code = _extract(tirx, codes[idx // n_w], idx % n_w, w.bits)
            return te.sum(_cast(x[n, rk], dt) * _lookup(tirx, lut, row(j), code, w.bits), axis=rk)

    acc = te.compute((x.shape[0], o), body, name=f"{name}_acc")
    return te.compute(
        (x.shape[0], o),
        lambda n, j: _requant(te, tirx, acc[n, j] + _bias(tirx, b, j, dt), node.requant, dt, out),
        name=name,
    )


def _pad(te, tirx, x, ph: int, pw: int, fill: int, name: str):
    if not (ph or pw):
        return x
    c, h, w = (int(v) for v in x.shape[1:])
    return te.compute(
        (x.shape[0], c, h + 2 * ph, w + 2 * pw),
        lambda n, ch, i, j: tirx.if_then_else(
            tirx.all(i >= ph, i < h + ph, j >= pw, j < w + pw),
            x[n, ch, i - ph, j - pw],
            tirx.const(fill, x.dtype),
        ),
        name=f"{name}_pad",
    )


def _conv(te, tirx, prog: Program, node: Node, ins: list, name: str, dt: str, out: str, p):
    op, x = node.op, ins[0]
    w, codes, lut, b = _weights(te, prog, node, dt)
    o, cg, kh, kw = w.shape
    og = o // op.groups
    n_w = codes_per_word(w.bits)
    (sh, sw), (dh, dw) = op.stride, op.dilation
    oh, ow = node.output.shape[1:]
    padded = _pad(te, tirx, x, op.padding[0], op.padding[1], 0, name)
    rc = te.reduce_axis((0, cg), name="rc")
    ri, rj = te.reduce_axis((0, kh), name="ri"), te.reduce_axis((0, kw), name="rj")
    per_channel = w.lut.shape[0] > 1

    # A conv reuses each weight at every output pixel: dequantize the codes once per call
    # (O(weights)) instead of inside the reduction (O(weights x pixels)).
    def level(f, c, a, b):
        idx = ((f * cg + c) * kh + a) * kw + b
        code = _extract(tirx, codes[idx // n_w], idx % n_w, w.bits)
        return _lookup(tirx, lut, f if per_channel else 0, code, w.bits)

    batch = x.shape[0]
    if op.groups == 1:
        # Dense convs accumulate channels-last, levels stored [c, kh, kw, f]: the schedule
        # vectorises over output channels (one broadcast pixel times a vector of levels).
        levels = te.compute((cg, kh, kw, o), lambda c, a, b_, f: level(f, c, a, b_),
                            name=f"{name}_levels")  # fmt: skip
        acc = te.compute(
            (batch, oh, ow, o),
            lambda n, i, j, f: te.sum(
                _cast(padded[n, rc, i * sh + ri * dh, j * sw + rj * dw], dt)
                * levels[rc, ri, rj, f],
                axis=[rc, ri, rj],
            ),
            name=f"{name}_acc_nhwc",
        )
        at = lambda n, f, i, j: acc[n, i, j, f]  # noqa: E731
    else:
        levels = te.compute((o, cg, kh, kw), level, name=f"{name}_levels")
        acc = te.compute(
            (batch, o, oh, ow),
            lambda n, f, i, j: te.sum(
                _cast(padded[n, (f // og) * cg + rc, i * sh + ri * dh, j * sw + rj * dw], dt)
                * levels[f, rc, ri, rj],
                axis=[rc, ri, rj],
            ),
            name=f"{name}_acc",
        )
        at = lambda n, f, i, j: acc[n, f, i, j]  # noqa: E731
    return te.compute(
        (batch, o, oh, ow),
        lambda n, f, i, j: _requant(
            te, tirx, at(n, f, i, j) + _bias(tirx, b, f, dt), node.requant, dt, out
        ),
        name=name,
    )


# The TE lowering of each op class.
LOWER = {
    Conv2d: _conv,
    Dense: _dense,
    MaxPool: _pool,
    AvgPool: _pool,
    Add: _add,
    Clip: _clip,
    Flatten: _flatten,
}
