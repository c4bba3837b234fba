"""The IR as TVM tensor expressions: one ``te.compute`` chain for the whole graph.

Every tensor is int64 (accumulators are proven to fit 53 bits), weights arrive as function
arguments: codes packed LSB-first in uint32 words, per-channel int64 LUTs, int64 biases. A
code is extracted as ``(word[i / n] >> (b * (i % n))) & (2^b - 1)`` and dequantized by a LUT
gather; the requantization is the contract's ``clip((acc * m + 2^(s-1)) >> s, lo, hi)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qcompile.ir.graph import Add, Conv2d, Graph, Node, Pool, Requant
from qcompile.ir.packing import codes_per_word

I64 = "int64"


@dataclass
class Program:
    """The TE tensors of a graph: ``params`` in call order (input, then weights per weighted
    node: codes, lut, bias), ``output`` last."""

    params: list = field(default_factory=list)
    weights: list = field(default_factory=list)  # (node name, "codes"|"lut"|"bias", array)
    output: object = None


def _requant(te, tirx, value, r: Requant):
    v = value
    if r.multiplier != 1:
        v = v * tirx.const(r.multiplier, I64)
    if r.shift:
        v = (v + tirx.const(r.rounding, I64)) >> tirx.const(r.shift, I64)
    return tirx.max(tirx.min(v, tirx.const(r.hi, I64)), tirx.const(r.lo, I64))


def build_program(graph: Graph) -> Program:
    from tvm import te, tirx

    prog = Program()
    x = te.placeholder((te.var("n", "int64"), *graph.input.shape), I64, name="input")
    prog.params.append(x)
    env = {graph.input.name: x}
    for node in graph.nodes:
        ins = [env[t] for t in node.inputs]
        env[node.output.name] = _node(te, tirx, prog, node, ins)
    prog.output = env[graph.outputs[0]]
    prog.params.append(prog.output)
    return prog


def _weights(te, prog: Program, node: Node):
    w = node.weights.pack()
    bias = w.bias if w.bias is not None else None
    codes = te.placeholder(w.data.shape, "uint32", name=f"{_c(node)}_codes")
    lut = te.placeholder(w.lut.shape, I64, name=f"{_c(node)}_lut")
    prog.params += [codes, lut]
    prog.weights += [(node.name, "codes", w.data), (node.name, "lut", w.lut)]
    b = None
    if bias is not None:
        b = te.placeholder(bias.shape, I64, name=f"{_c(node)}_bias")
        prog.params.append(b)
        prog.weights.append((node.name, "bias", bias))
    return w, codes, lut, b


def _c(node: Node) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in node.name)


def _code(tirx, codes, idx, bits: int):
    n = codes_per_word(bits)
    word = codes[idx // n]
    sh = ((idx % n) * bits).astype("uint32")
    return ((word >> sh) & tirx.const((1 << bits) - 1, "uint32")).astype("int32")


def _node(te, tirx, prog: Program, node: Node, ins: list):
    op, r, x = node.op, node.requant, ins[0]
    batch = x.shape[0]
    name = _c(node)
    if node.kind == "flatten":
        c, h, w = (int(v) for v in x.shape[1:])
        return te.compute(
            (batch, c * h * w), lambda n, i: x[n, i // (h * w), (i // w) % h, i % w], name=name
        )
    if node.kind == "clip":
        return te.compute(x.shape, lambda *i: _requant(te, tirx, x(*i), r), name=name)
    if isinstance(op, Add):

        def add(*i):
            acc = ins[0](*i) * tirx.const(op.multipliers[0], I64)
            for t, m in zip(ins[1:], op.multipliers[1:], strict=True):
                acc = acc + t(*i) * tirx.const(m, I64)
            return _requant(te, tirx, acc, r)

        return te.compute(x.shape, add, name=name)
    if node.kind == "dense":
        w, codes, lut, b = _weights(te, prog, node)
        o, k = w.shape
        rk = te.reduce_axis((0, k), name="k")
        row = (lambda j: j) if w.lut.shape[0] > 1 else (lambda j: 0)
        acc = te.compute(
            (batch, o),
            lambda n, j: te.sum(
                x[n, rk] * lut[row(j), _code(tirx, codes, j * k + rk, w.bits)], axis=rk
            ),
            name=f"{name}_acc",
        )
        return te.compute(
            (batch, o),
            lambda n, j: _requant(
                te, tirx, acc[n, j] + (b[j] if b is not None else tirx.const(0, I64)), r
            ),
            name=name,
        )
    if isinstance(op, Conv2d):
        return _conv(te, tirx, prog, node, x, batch, name)
    assert isinstance(op, Pool)
    c = int(x.shape[1])
    (kh, kw), (sh, sw), (ph, pw) = op.kernel, op.stride, op.padding
    oh, ow = node.output.shape[1:]
    lo = node.output.qtype.range[0] if node.kind == "maxpool" else 0
    padded = _pad(te, tirx, x, ph, pw, lo, name)
    ri, rj = te.reduce_axis((0, kh), name="ri"), te.reduce_axis((0, kw), name="rj")
    if node.kind == "maxpool":
        return te.compute(
            (batch, c, oh, ow),
            lambda n, ch, i, j: te.max(padded[n, ch, i * sh + ri, j * sw + rj], axis=[ri, rj]),
            name=name,
        )
    acc = te.compute(
        (batch, c, oh, ow),
        lambda n, ch, i, j: te.sum(padded[n, ch, i * sh + ri, j * sw + rj], axis=[ri, rj]),
        name=f"{name}_acc",
    )
    return te.compute(acc.shape, lambda *i: _requant(te, tirx, acc(*i), r), name=name)


def _pad(te, tirx, x, ph: int, pw: int, fill: int, name: str):
    if not (ph or pw):
        return x
    c, h, w = (int(v) for v in x.shape[1:])
    return te.compute(
        (x.shape[0], c, h + 2 * ph, w + 2 * pw),
        lambda n, ch, i, j: tirx.if_then_else(
            tirx.all(i >= ph, i < h + ph, j >= pw, j < w + pw),
            x[n, ch, i - ph, j - pw],
            tirx.const(fill, I64),
        ),
        name=f"{name}_pad",
    )


def _conv(te, tirx, prog: Program, node: Node, x, batch, name: str):
    op = node.op
    w, codes, lut, b = _weights(te, prog, node)
    o, cg, kh, kw = w.shape
    og = o // op.groups
    (sh, sw), (dh, dw) = op.stride, op.dilation
    oh, ow = node.output.shape[1:]
    padded = _pad(te, tirx, x, op.padding[0], op.padding[1], 0, name)
    rc = te.reduce_axis((0, cg), name="rc")
    ri, rj = te.reduce_axis((0, kh), name="ri"), te.reduce_axis((0, kw), name="rj")
    per_channel = w.lut.shape[0] > 1

    def acc_fn(n, f, i, j):
        idx = ((f * cg + rc) * kh + ri) * kw + rj
        level = lut[f if per_channel else 0, _code(tirx, codes, idx, w.bits)]
        return te.sum(
            padded[n, (f // og) * cg + rc, i * sh + ri * dh, j * sw + rj * dw] * level,
            axis=[rc, ri, rj],
        )

    acc = te.compute((batch, o, oh, ow), acc_fn, name=f"{name}_acc")
    return te.compute(
        acc.shape,
        lambda n, f, i, j: _requant(
            te,
            tirx,
            acc[n, f, i, j] + (b[f] if b is not None else tirx.const(0, I64)),
            node.requant,
        ),
        name=name,
    )
