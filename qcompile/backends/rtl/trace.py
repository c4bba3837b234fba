"""Trace an IR graph into da4ml's DAIS combinational logic (constant-weight adder graphs).

Every node becomes numpy-style operations on da4ml ``FixedVariableArray`` values, one per
element of the node's per-sample tensor, all integers (fraction bits 0 at every node
boundary):

- dense: ``acc = x @ W.T`` with ``W`` the decoded integer weights. Uniform (affine) and
  learned non-uniform (table) levels are both constants at trace time, so a table costs
  nothing beyond its values: the constant-matrix-vector multiply (CMVM) is solved by da4ml
  into shift-and-add trees.
- conv2d: im2col by slicing: one CMVM per output pixel over its in-bounds taps (zero
  padding contributes nothing), per group.
- add: ``sum x_i * m_i``; avgpool: the window's sum; clip: the input itself.
- then the requantization ``clip((acc * m_c + b_c + 2^(k-1)) >> k, lo, hi)``: a constant
  multiply per channel (kept apart from ``W``: folding ``m_c`` into the weights doubles the
  adder count), the bias, a free ``2^-k`` rescale, ``quantize(..., 'SAT', 'RND')`` (RND is
  round half up) and a clip to ``[lo, hi]``.
- maxpool: a comparator tree over the in-bounds window; flatten: a reshape (no logic).
"""

from __future__ import annotations

import numpy as np

from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph, Node
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool

# The ops the RTL target takes (the others are refused at export, naming the node).
SUPPORTED = (Dense, Conv2d, Add, Clip, Flatten, MaxPool, AvgPool)


def _kif(lo: int, hi: int) -> tuple[int, int, int]:
    """``(signed, integer bits, fraction bits)`` of the narrowest da4ml fixed type holding
    every integer in ``[lo, hi]``."""
    k = 1 if lo < 0 else 0
    i = max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0)
    return k, i, 0


def _requant(node: Node, acc):
    """``clip((acc * m + b + 2^(k-1)) >> k, lo, hi)`` on a ``[C, ...]`` traced array."""
    from da4ml.trace.ops import quantize

    r = node.requant
    assert r is not None
    shape = acc.shape
    view = (-1,) + (1,) * (len(shape) - 1)
    m = r.multipliers.astype(np.float64).reshape(view) if r.per_channel else float(r.multiplier)
    z = acc * m if r.multiplier != 1 else acc
    if r.bias is not None:
        z = z + np.broadcast_to(r.biases.astype(np.float64).reshape(view), shape)
    if r.shift:
        z = z * 2.0**-r.shift
    k, i, f = _kif(r.lo, r.hi)
    y = quantize(z, k, i, f, "SAT", "RND")
    # A clip inside the type's range, as relus: max(y, lo) = relu(y - lo) + lo and
    # min(y, hi) = hi - relu(hi - y). (np.clip traces to da4ml's MSB-select op, whose
    # Verilog for these constants disagreed with the traced logic on 39% of jet inputs.)
    if r.lo > -(2**i) * k:
        y = (y - float(r.lo)).relu() + float(r.lo)
    if r.hi < 2**i - 1:
        y = -((-y + float(r.hi)).relu()) + float(r.hi)
    return y


def _windows(node: Node, shape: tuple[int, ...], kernel, stride, padding, dilation=(1, 1)):
    """For every output pixel ``(oh, ow)``: the in-bounds taps ``(kh, kw, ih, iw)``."""
    _, h, w = shape
    oh, ow = node.output.shape[1:]
    for y in range(oh):
        for x in range(ow):
            taps = []
            for kh in range(kernel[0]):
                for kw in range(kernel[1]):
                    ih = y * stride[0] + kh * dilation[0] - padding[0]
                    iw = x * stride[1] + kw * dilation[1] - padding[1]
                    if 0 <= ih < h and 0 <= iw < w:
                        taps.append((kh, kw, ih, iw))
            yield y, x, taps


def _conv(node: Node, x, in_shape: tuple[int, ...]):
    op = node.op
    assert isinstance(op, Conv2d) and node.weights is not None
    wt = node.weights.decoded().astype(np.float64)  # [O, C/g, kh, kw]
    o, cg = wt.shape[:2]
    g, og = op.groups, wt.shape[0] // op.groups
    oh, ow = node.output.shape[1:]
    cols = np.empty((o, oh, ow), dtype=object)
    for y, xx, taps in _windows(node, in_shape, wt.shape[2:], op.stride, op.padding, op.dilation):
        for k in range(g):
            if not taps:
                raise QCompileError(f"node {node.name}: an output pixel sees only padding")
            patch = np.stack([x[k * cg + c, ih, iw] for c in range(cg) for (_, _, ih, iw) in taps])
            mat = np.stack(
                [wt[k * og : (k + 1) * og, c, kh, kw] for c in range(cg) for (kh, kw, _, _) in taps]
            )
            cols[k * og : (k + 1) * og, y, xx] = list(patch @ mat)
    return _array(cols)


def _pool(node: Node, x, in_shape: tuple[int, ...]):
    op = node.op
    assert isinstance(op, MaxPool | AvgPool)
    c = in_shape[0]
    oh, ow = node.output.shape[1:]
    out = np.empty((c, oh, ow), dtype=object)
    for y, xx, taps in _windows(node, in_shape, op.kernel, op.stride, op.padding):
        for ch in range(c):
            vals = [x[ch, ih, iw] for (_, _, ih, iw) in taps]
            acc = vals[0]
            for v in vals[1:]:
                acc = np.maximum(acc, v) if isinstance(op, MaxPool) else acc + v
            out[ch, y, xx] = acc
    return _array(out)


def _array(objs: np.ndarray):
    """A FixedVariableArray from an object array of FixedVariable / 0-d arrays."""
    from da4ml.trace import FixedVariableArray

    flat = [v._vars.item() if isinstance(v, FixedVariableArray) else v for v in objs.ravel()]
    return FixedVariableArray(np.array(flat, dtype=object).reshape(objs.shape))


def trace_node(node: Node, xs: list, shapes: list[tuple[int, ...]]):
    """The traced output of ``node`` for traced inputs ``xs`` (per-sample shapes ``shapes``)."""
    op = node.op
    if isinstance(op, Flatten):
        return xs[0].reshape(-1)
    if isinstance(op, Dense):
        assert node.weights is not None
        acc = xs[0] @ node.weights.decoded().astype(np.float64).T
    elif isinstance(op, Conv2d):
        acc = _conv(node, xs[0], shapes[0])
    elif isinstance(op, Add):
        acc = xs[0] * float(op.multipliers[0])
        for x, m in zip(xs[1:], op.multipliers[1:], strict=True):
            acc = acc + x * float(m)
    elif isinstance(op, MaxPool):
        return _pool(node, xs[0], shapes[0])
    elif isinstance(op, AvgPool):
        acc = _pool(node, xs[0], shapes[0])
    elif isinstance(op, Clip):
        acc = xs[0]
    else:
        raise QCompileError(f"node {node.name}: op {node.kind} has no rtl lowering")
    return _requant(node, acc)


def trace_graph(graph: Graph):
    """``(inputs, output)``: the traced input (the graph's input QType) and output arrays,
    flattened, ready for ``da4ml.trace.comb_trace``."""
    from da4ml.trace import FixedVariableArray

    lo, hi = graph.input.qtype.range
    k, i, f = _kif(lo, hi)
    shape = graph.input.shape
    x = FixedVariableArray.from_kif(
        np.full(shape, k), np.full(shape, i), np.full(shape, f), hwconf=(1, -1, -1)
    )
    values = {graph.input.name: x}
    shapes = {t: info.shape for t, info in graph.tensors().items()}
    for node in graph.nodes:
        ins = [values[t] for t in node.inputs]
        values[node.output.name] = trace_node(node, ins, [shapes[t] for t in node.inputs])
    return x.reshape(-1), values[graph.outputs[0]].reshape(-1)
