"""The IR as TVM tensor expressions: one ``te.compute`` chain for the whole graph.

Each node sums in int32 where the verifier's accumulator width (``Requant.acc_bits``) is at
most 32 bits, else in int64, and requantizes (``clip((acc * m_c + 2^(s-1)) >> s, lo, hi)``)
in int32 only where ``acc * m + round`` is proven to fit, else in int64 (on x86 the
accumulator is first clamped to the window that reaches the clip, which mostly keeps it in
32 bits: :mod:`qcompile.backends.tvm.clamp`); tensors between nodes
are int32 whenever their QType fits (for the x86 CPU schedules: int8 or int16 where that fits).
The function's input and output stay int64 so every runner and harness sees one calling
convention. Weights arrive as arguments
(:mod:`qcompile.backends.tvm.decode`: packed codes, zero points or int8 tables, biases,
per-channel multipliers).

Given a target's vector unit (``isa``), dense and dense-conv nodes that qualify run the
vector kernels (``vector_dense``: GEMV, and GEMM from a few input rows; ``vector_conv``:
GEMM), with their own weight arrays (``rows``, ``levels``, ``comp``, ``order``). Given its
AVX-512 features (``avx512_dense``), a dense node they decline (int16-range inputs) that
qualifies accumulates with the vpermw/vpermb kernel, whose levels argument is the kernel's
replicated table (weight kind ``table``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from qcompile.backends.tvm import flat_grid, vector_conv, vector_dense
from qcompile.backends.tvm.avx512_dense import Avx512, macro, plan, stub_acc, table
from qcompile.backends.tvm.clamp import clamp_bounds, offset_requant
from qcompile.backends.tvm.decode import (
    I32,
    I64,
    RequantArgs,
    _arg,
    c_name,
    code_at,
    requant_args,
    weight_args,
    weight_at,
)
from qcompile.backends.tvm.isa import Isa
from qcompile.backends.tvm.pad_rows import PadGeometry
from qcompile.ir import ops
from qcompile.ir.graph import Graph, Node
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool, Pool


@dataclass
class Program:
    """The TE tensors of a graph: ``params`` in call order (input, then each weighted node's
    arrays, see ``decode``), ``output`` last."""

    params: list = field(default_factory=list)
    # (node name, kind, array): kind codes | zero | entries | table | bias | mult | row_*
    weights: list = field(default_factory=list)
    output: object = None
    kernels: dict = field(default_factory=dict)  # placeholder block name -> AVX-512 kernel
    narrow: bool = False  # the x86 schedules (``build_program``)


def acc_dtype(node: Node) -> str:
    """int32 where the node's accumulator is proven to fit, else int64."""
    r = node.requant
    return I64 if r is not None and r.acc_bits > 32 else I32


def grouped_acc(node: Node, acc: str) -> str:
    """int16 for a grouped (depthwise) conv whose accumulator is proven to fit (every
    partial sum then fits too: each product's range holds 0), else ``acc``. Its
    multiply-adds are then 16 lanes a 256-bit vector (vpmullw, vpaddw) where int32 took
    vpmulld, two uops for 8 lanes: mobilenetv2's depthwise sums were 15% of its AVX2 time.
    For the x86 schedules (``narrow``); aarch64 keeps int32."""
    op, r = node.op, node.requant
    if isinstance(op, Conv2d) and op.groups > 1 and r is not None and r.acc_bits <= 16:
        return "int16"
    return acc


def product_dtype(node: Node, ranges: list[tuple[int, int]]) -> str:
    """int32 where ``acc * m + round`` is proven to fit, else int64."""
    if node.requant is None:
        return I32
    return I64 if ops.product_bits_needed(node, ranges) > 32 else I32


def storage_dtype(node: Node, narrow: bool = False) -> str:
    """int32 where the node's output fits, else int64; with ``narrow``, the narrowest of
    int8, int16, int32, int64 that holds it."""
    lo, hi = node.output.qtype.range
    widths = (("int8", 8), ("int16", 16), (I32, 32)) if narrow else ((I32, 32),)
    for dtype, bits in widths:
        if -(1 << (bits - 1)) <= lo and hi < 1 << (bits - 1):
            return dtype
    return I64


@dataclass(frozen=True)
class Types:
    """A node's dtypes (accumulator, requantization product, stored output) and its
    per-channel requantization arrays."""

    acc: str
    product: str
    out: str
    requant: RequantArgs


def _cast(v, dtype: str):
    return v.astype(dtype)  # a no-op when v already has the type


def _requant(tirx, value, node: Node, t: Types, ch=None):
    """``clip((acc * m + b + 2^(s-1)) >> s, lo, hi)``; ``ch`` indexes per-channel arrays."""
    r, a = node.requant, t.requant
    dt = t.product
    if a.acc_lo is not None:  # the same clipped output from a narrower product
        value = tirx.max(tirx.min(_cast(value, I32), a.acc_hi[ch]), a.acc_lo[ch])
    if a.base_r is not None:  # counted from the window's low end, unsigned (``clamp``)
        m = a.mult[ch] if a.mult is not None else tirx.const(r.multiplier, I32)
        step, m = (_cast(_cast(v, "uint32"), dt) for v in (value - a.acc_lo[ch], m))
        u = step * m + _cast(a.base_r[ch], dt)
        v = _cast(u >> tirx.const(r.shift, dt), I32) + a.base_q[ch]
        if a.clipped:
            return _cast(v, t.out)
        return _cast(tirx.max(tirx.min(v, tirx.const(r.hi, I32)), tirx.const(r.lo, I32)), t.out)
    v = _cast(value, dt)
    if a.mult is not None:
        v = v * _cast(a.mult[ch], dt)
    elif r.multiplier != 1:
        v = v * tirx.const(r.multiplier, dt)
    if a.bias is not None:
        v = v + _cast(a.bias[ch], dt)
    if r.shift:
        v = (v + tirx.const(r.rounding, dt)) >> tirx.const(r.shift, dt)
    if a.clipped:
        return _cast(v, t.out)
    return _cast(tirx.max(tirx.min(v, tirx.const(r.hi, dt)), tirx.const(r.lo, dt)), t.out)


def build_program(
    graph: Graph,
    avx512: Avx512 | None = None,
    isa: Isa | None = None,
    batch: int | None = None,
    threads: bool = True,
    narrow: bool = False,
    spread: bool = False,
) -> Program:
    """``avx512``: the target's features where dense layers may use the AVX-512 kernel;
    ``isa``: its vector unit, where the other dense layers may use the vector GEMV;
    ``batch``: a static batch size (None: the function takes any); ``threads``: whether
    the kernels may share their rows out to threads; ``narrow``: tensors between nodes
    stored at their narrowest integer type (the x86 schedules: a quarter of the bytes for
    4-bit activations; the GPU schedule keeps int32, where no GPU here could check it);
    ``spread``: every conv GEMM shares its rows out to the threads, whatever its size (one
    parallel region around the graph, :mod:`spmd`: a share costs a barrier, not a launch)."""
    from tvm import te, tirx

    prog = Program(narrow=narrow)
    n = te.var("n", "int64") if batch is None else tirx.const(batch, "int64")
    x = te.placeholder((n, *graph.input.shape), I64, name="input")
    prog.params.append(x)
    first = te.compute(x.shape, lambda *i: x(*i).astype(I32), name="input_i32")
    env = {graph.input.name: first if graph.input.qtype.bits <= 32 else x}
    tensors = graph.tensors()
    accs: dict[tuple, Any] = {}  # a conv's ``shared_key`` -> its accumulator's accessor
    for node in graph.nodes:
        ins = [env[t] for t in node.inputs]
        ranges = [tensors[t].qtype.range for t in node.inputs]
        acc = acc_dtype(node)
        acc = grouped_acc(node, acc) if narrow else acc
        key = shared_key(node, acc)
        if key is not None and key in accs:
            # the same sums as an earlier conv's: only this node's requantization is new
            t = _types(te, prog, node, acc, ranges, narrow)
            env[node.output.name] = _conv_out(te, tirx, node, ins[0], accs[key], c_name(node), t)
            continue
        # The vector kernels first (as fast as the AVX-512 LUT kernel on one input row, and
        # they decode once for batches); the LUT kernel still takes int16-range inputs.
        p = None
        if isa is not None:
            p = vector_dense.plan(node, ranges[0], acc, isa)
            p = p or vector_conv.plan(node, ranges[0], acc, isa, tensors[node.inputs[0]].shape)
        if p is None and avx512:
            p = plan(node, ranges[0], acc, avx512)
        if isinstance(p, vector_dense.DensePlan) and batch is not None:
            # a static batch takes one of the two kernels: no run-time choice
            p = p if batch >= vector_dense.BATCH_MIN else vector_dense.DensePlan(p.gemv, None)
        if p is not None and not threads:
            p = _serial(p)
        if spread and isinstance(p, vector_conv.ConvPlan):
            p = vector_conv.spread(p)
        if isinstance(p, vector_dense.DensePlan | vector_conv.ConvPlan):
            mod = vector_dense if isinstance(p, vector_dense.DensePlan) else vector_conv
            a = vector_dense.weight_args(te, prog, node, mod.arrays(p, node))
        elif node.weights:
            a = weight_args(te, prog, node, acc, table(p, node) if p else None)
        else:
            a = None
        t = _types(te, prog, node, acc, ranges, narrow)
        if key is not None:
            accs[key] = _conv_acc(te, tirx, prog, node, ins[0], c_name(node), acc, p, a)
            env[node.output.name] = _conv_out(te, tirx, node, ins[0], accs[key], c_name(node), t)
            continue
        env[node.output.name] = LOWER[type(node.op)](
            te, tirx, prog, node, ins, c_name(node), t, p, a
        )
    out = env[graph.outputs[0]]
    if out.dtype != I64:
        out = te.compute(out.shape, lambda *i: out(*i).astype(I64), name="output_i64")
    prog.output = out
    prog.params.append(out)
    return prog


def shared_key(node: Node, acc: str) -> tuple | None:
    """What decides a conv's accumulator (input tensor, geometry, decoded weights,
    accumulator type): two convs with one key compute the same integers, so the sums run
    once and each node applies its own requantization to them. (A frozen residual block
    recomputes an earlier projection for each sum it feeds, every copy requantized to its own
    scale: mobilenetv2's are 27M of its 64M projection MACs.) None for other nodes."""
    op = node.op
    if not isinstance(op, Conv2d) or node.weights is None:
        return None
    w = node.weights.decoded()
    geometry = (op.stride, op.padding, op.dilation, op.groups, w.shape)
    return (node.inputs[0], geometry, w.astype(np.int64).tobytes(), acc)


def _types(te, prog: Program, node: Node, acc: str, ranges: list, narrow: bool) -> Types:
    product, args = product_dtype(node, ranges), requant_args(te, prog, node)
    if narrow and product == I64 and acc == I32:
        # the tight window where it exists: the clamp alone then clips (``clamp.window``)
        for tight in (True, False):
            bounds = clamp_bounds(node, ranges[0], tight)
            offset = None if bounds is not None else offset_requant(node, ranges[0], tight)
            if bounds is not None or offset is not None:
                args.clipped = tight
                break
        if offset is not None:
            bounds = offset.low, offset.high
            args.base_q = _arg(te, prog, node, "base_q", offset.base_q)
            args.base_r = _arg(te, prog, node, "base_r", offset.base_r)
        if bounds is not None:
            args.acc_lo = _arg(te, prog, node, "acc_lo", bounds[0])
            args.acc_hi = _arg(te, prog, node, "acc_hi", bounds[1])
            product = I32 if offset is None else offset.product
    return Types(acc, product, storage_dtype(node, narrow), args)


def _serial(p: Any) -> Any:
    """A kernel plan whose loops all run on the calling thread."""
    if isinstance(p, vector_dense.DensePlan):
        gemm = None if p.gemm is None else replace(p.gemm, parallel=False)
        return vector_dense.DensePlan(replace(p.gemv, parallel=False), gemm)
    if isinstance(p, vector_conv.ConvPlan):
        return replace(p, gemm=replace(p.gemm, parallel=False, split=1))
    return replace(p, parallel=False)


def _flatten(te, tirx, prog, node: Node, ins: list, name: str, t: Types, p, a):
    x = ins[0]
    c, h, w = (int(v) for v in x.shape[1:])
    return te.compute(
        (x.shape[0], c * h * w), lambda n, i: x[n, i // (h * w), (i // w) % h, i % w], name=name
    )


def _clip(te, tirx, prog, node: Node, ins: list, name: str, t: Types, p, a):
    x = ins[0]
    return te.compute(
        x.shape, lambda *i: _requant(tirx, _cast(x(*i), t.acc), node, t, i[1]), name=name
    )


def _add(te, tirx, prog, node: Node, ins: list, name: str, t: Types, p, a):
    op, dt = node.op, t.acc
    assert isinstance(op, Add)

    def add(*i):
        acc = _cast(ins[0](*i), dt) * tirx.const(op.multipliers[0], dt)
        for x, m in zip(ins[1:], op.multipliers[1:], strict=True):
            acc = acc + _cast(x(*i), dt) * tirx.const(m, dt)
        return _requant(tirx, acc, node, t, i[1])

    return te.compute(ins[0].shape, add, name=name)


def _pool(te, tirx, prog, node: Node, ins: list, name: str, t: Types, p, a):
    op, x = node.op, ins[0]
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
            lambda n, ch, i, j: te.max(padded(n, ch, i * sh + ri, j * sw + rj), axis=[ri, rj]),
            name=name,
        )
    acc = te.compute(
        (batch, c, oh, ow),
        lambda n, ch, i, j: te.sum(
            _cast(padded(n, ch, i * sh + ri, j * sw + rj), t.acc), axis=[ri, rj]
        ),
        name=f"{name}_acc",
    )
    return te.compute(acc.shape, lambda *i: _requant(tirx, acc(*i), node, t, i[1]), name=name)


def _dense(te, tirx, prog: Program, node: Node, ins: list, name: str, t: Types, p, a):
    x, dt = ins[0], t.acc
    o, k = node.weights.shape

    def finish(at):
        return te.compute(
            (x.shape[0], o),
            lambda n, j: _requant(tirx, at(n, j), node, t, j),
            name=name,
        )

    if isinstance(p, vector_dense.DensePlan):
        return finish(vector_dense.lower(te, tirx, prog, node, x, p, a))
    w = a.w
    if p is not None:
        acc = stub_acc(te, x, a.codes, a.table, o, name)
        prog.kernels[acc.op.name] = macro(p, node)
        return finish(lambda n, j: acc[n, j])
    if a.aligned:
        # Rows start on word boundaries and no code straddles: a word axis and a slot axis,
        # so the schedule can vectorise over the codes of one word (the word is loaded once,
        # the shifts are constants).
        n_w = 32 // w.bits
        kw_, kl = te.reduce_axis((0, k // n_w), name="kw"), te.reduce_axis((0, n_w), name="kl")

        def body(n, j):
            word = a.codes[j * (k // n_w) + kw_]
            sh = (kl * w.bits).astype("uint32")
            code = ((word >> sh) & tirx.const((1 << w.bits) - 1, "uint32")).astype(I32)
            level = weight_at(tirx, a, j, code, dt)
            return te.sum(_cast(x[n, kw_ * n_w + kl], dt) * level, axis=[kw_, kl])

    else:
        rk = te.reduce_axis((0, k), name="k")

        def body(n, j):
            level = weight_at(tirx, a, j, code_at(tirx, a, j, rk), dt)
            return te.sum(_cast(x[n, rk], dt) * level, axis=rk)

    acc = te.compute((x.shape[0], o), body, name=f"{name}_acc")
    return finish(lambda n, j: acc[n, j])


def _pad(te, tirx, x, ph: int, pw: int, fill: int, name: str):
    """``x`` zero-padded (``fill`` outside) as an accessor ``padded(n, c, i, j)``, inlined
    into its consumer: no padded copy, and no separate block whose inlining the vector
    kernels' placeholders could block."""
    if not (ph or pw):
        return lambda *i: x(*i)
    h, w = (int(v) for v in x.shape[2:])
    del te, name

    def padded(n, ch, i, j):
        inside = tirx.all(i >= ph, i < h + ph, j >= pw, j < w + pw)
        return tirx.if_then_else(inside, x[n, ch, i - ph, j - pw], tirx.const(fill, x.dtype))

    return padded


def _padded_copy(te, tirx, x, padding: tuple[int, int], name: str):
    """``x`` zero-padded as a tensor of its own (an accessor onto it)."""
    (ph, pw), (h, w) = padding, (int(v) for v in x.shape[2:])
    inner = _pad(te, tirx, x, ph, pw, 0, name)
    shape = (x.shape[0], x.shape[1], h + 2 * ph, w + 2 * pw)
    attrs = PadGeometry(padding, (1, 1)).attrs()
    out = te.compute(shape, lambda n, c, i, j: inner(n, c, i, j), name=f"{name}_pad", attrs=attrs)
    return lambda n, c, i, j: out[n, c, i, j]


def _phase_copy(te, tirx, x, padding: tuple[int, int], stride: tuple[int, int], name: str):
    """``x`` zero-padded and split by stride phase, ``[n, c, phase, rows, cols]`` (phase
    ``(py, px)`` holds padded pixels ``(py + sh * r, px + sw * q)``), as an accessor in padded
    coordinates: a strided conv's taps then read consecutive columns (read straight from
    the padded image, a stride-2 row was gathered byte by byte)."""
    (ph, pw), (sh, sw) = padding, stride
    h, w = (int(v) for v in x.shape[2:])
    rows, cols = -(-(h + 2 * ph) // sh), -(-(w + 2 * pw) // sw)
    inner = _pad(te, tirx, x, ph, pw, 0, name)
    shape = (x.shape[0], x.shape[1], sh * sw, rows, cols)
    out = te.compute(
        shape,
        lambda n, c, p, r, q: inner(n, c, p // sw + sh * r, p % sw + sw * q),
        name=f"{name}_pad",
        attrs=PadGeometry(padding, stride).attrs(),
    )
    return lambda n, c, i, j: out[n, c, i % sh * sw + j % sw, i // sh, j // sw]


def _conv_acc(te, tirx, prog: Program, node: Node, x, name: str, dt: str, p, a):
    """``at(n, f, i, j)``: an accessor of the conv's accumulator (the vector GEMM's, or a TE
    reduction's: channels-last for dense convs, per row for grouped ones)."""
    op = node.op
    if isinstance(p, vector_conv.ConvPlan):
        return vector_conv.lower(te, tirx, prog, node, x, p, a)
    w = a.w
    o, cg, kh, kw = w.shape
    og = o // op.groups
    (sh, sw), (dh, dw) = op.stride, op.dilation
    oh, ow = node.output.shape[1:]
    padded = _pad(te, tirx, x, op.padding[0], op.padding[1], 0, name)
    rc = te.reduce_axis((0, cg), name="rc")
    ri, rj = te.reduce_axis((0, kh), name="ri"), te.reduce_axis((0, kw), name="rj")

    # A conv reuses each weight at every output pixel: decode the codes once per call
    # (O(weights)) instead of inside the reduction (O(weights x pixels)).
    def level(f, c, i, j):
        code = code_at(tirx, a, f, (c * kh + i) * kw + j)
        return weight_at(tirx, a, f, code, dt)

    batch = x.shape[0]
    if op.groups == 1:
        # Dense convs accumulate channels-last, weights stored [c, kh, kw, f]: the schedule
        # vectorises over output channels (one broadcast pixel times a vector of weights).
        levels = te.compute((cg, kh, kw, o), lambda c, i, j, f: level(f, c, i, j),
                            name=f"{name}_levels")  # fmt: skip
        acc = te.compute(
            (batch, oh, ow, o),
            lambda n, i, j, f: te.sum(
                _cast(padded(n, rc, i * sh + ri * dh, j * sw + rj * dw), dt)
                * levels[rc, ri, rj, f],
                axis=[rc, ri, rj],
            ),
            name=f"{name}_acc_nhwc",
        )
        return lambda n, f, i, j: acc[n, i, j, f]
    # A grouped (depthwise) conv reads each input pixel kh * kw times along vectorised
    # output rows: padded once into its own tensor, those reads need no bounds checks.
    levels = te.compute((o, cg, kh, kw), level, name=f"{name}_levels")
    if prog.narrow and flat_grid.applies(op, node.output.shape):
        inner = _pad(te, tirx, x, op.padding[0], op.padding[1], 0, name)
        return flat_grid.flat_acc(te, x, op, levels, node.output.shape, dt, inner, name)
    if any(s > 1 for s in op.stride):
        padded = _phase_copy(te, tirx, x, op.padding, op.stride, name)
    elif any(op.padding):
        padded = _padded_copy(te, tirx, x, op.padding, name)
    acc = te.compute(
        (batch, o, oh, ow),
        lambda n, f, i, j: te.sum(
            _cast(padded(n, (f // og) * cg + rc, i * sh + ri * dh, j * sw + rj * dw), dt)
            * levels[f, rc, ri, rj],
            axis=[rc, ri, rj],
        ),
        name=f"{name}_acc",
    )
    return lambda n, f, i, j: acc[n, f, i, j]


def _conv_out(te, tirx, node: Node, x, at, name: str, t: Types):
    """The node's output: its requantization of the accumulator ``at``."""
    return te.compute(
        (x.shape[0], *node.output.shape),
        lambda n, f, i, j: _requant(tirx, at(n, f, i, j), node, t, f),
        name=name,
    )


def _conv(te, tirx, prog: Program, node: Node, ins: list, name: str, t: Types, p, a):
    at = _conv_acc(te, tirx, prog, node, ins[0], name, t.acc, p, a)
    return _conv_out(te, tirx, node, ins[0], at, name, t)


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
