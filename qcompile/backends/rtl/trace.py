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

da4ml keeps the ``2^-k`` rescales as a power-of-two factor on each value, in ``Decimal``;
after a few layers the factor is ``2^-60`` and beyond, which the default 28-digit context
cannot hold exactly: a constant then came out as ``-963503.99999...`` and the Verilog
disagreed with the traced logic on 39% of jet_mlp's inputs (DESIGN.md's "_const_f range
trap" is this). :func:`exact_decimals` gives tracing enough digits for every factor.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph, Node
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool

# The ops the RTL target takes (the others are refused at export, naming the node).
SUPPORTED = (Dense, Conv2d, Add, Clip, Flatten, MaxPool, AvgPool)


@contextmanager
def exact_decimals(graph: Graph) -> Iterator[None]:
    """A Decimal context in which every power-of-two factor of ``graph``'s trace is exact:
    ``2^-S`` has S significant digits, S at most the sum of the shifts and of 64 bits a
    layer for weights, multipliers and rounding."""
    shifts = sum(n.requant.shift + 64 for n in graph.nodes if n.requant is not None)
    with decimal.localcontext() as ctx:
        ctx.prec = max(ctx.prec, 2 * shifts + 100)
        yield


def _kif(lo: int, hi: int) -> tuple[int, int, int]:
    """``(signed, integer bits, fraction bits)`` of the narrowest da4ml fixed type holding
    every integer in ``[lo, hi]``."""
    k = 1 if lo < 0 else 0
    i = max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0)
    return k, i, 0


def _folds(node: Node, fold: bool) -> bool:
    return fold and node.weights is not None and node.requant is not None


def _weights(node: Node, fold: bool) -> np.ndarray:
    """The decoded integer weights as float64 constants; with ``fold``, each output row
    times its requantization multiplier (the layer as a converter of the real-valued model
    sees it: one fixed-point weight per tap)."""
    assert node.weights is not None and node.requant is not None
    w = node.weights.decoded().astype(np.float64)
    if _folds(node, fold):
        m = node.requant.multipliers.astype(np.float64)
        w = w * m.reshape(-1, *([1] * (w.ndim - 1)))
    return w


def _requant(node: Node, acc, fold: bool = False):
    """``clip((acc * m + b + 2^(k-1)) >> k, lo, hi)`` on a ``[C, ...]`` traced array (``m``
    already inside ``acc`` when folded)."""
    from da4ml.trace.ops import quantize

    r = node.requant
    assert r is not None
    shape = acc.shape
    view = (-1,) + (1,) * (len(shape) - 1)
    m = r.multipliers.astype(np.float64).reshape(view) if r.per_channel else float(r.multiplier)
    z = acc * m if r.multiplier != 1 and not _folds(node, fold) else acc
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


def _conv(node: Node, x, in_shape: tuple[int, ...], fold: bool):
    op = node.op
    assert isinstance(op, Conv2d) and node.weights is not None
    wt = _weights(node, fold)  # [O, C/g, kh, kw]
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


def trace_node(node: Node, xs: list, shapes: list[tuple[int, ...]], fold: bool = False):
    """The traced output of ``node`` for traced inputs ``xs`` (per-sample shapes ``shapes``)."""
    op = node.op
    if isinstance(op, Flatten):
        return xs[0].reshape(-1)
    if isinstance(op, Dense):
        acc = xs[0] @ _weights(node, fold).T
    elif isinstance(op, Conv2d):
        acc = _conv(node, xs[0], shapes[0], fold)
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
    return _requant(node, acc, fold)


def trace_graph(graph: Graph, fold: bool = False):
    """``(inputs, output)``: the traced input (the graph's input QType) and output arrays,
    flattened, ready for ``da4ml.trace.comb_trace``. ``fold`` multiplies each weighted
    layer's requantization multipliers into its weights (the same integers: a baseline for
    comparing costs, not what the rtl target exports)."""
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
        values[node.output.name] = trace_node(node, ins, [shapes[t] for t in node.inputs], fold)
    return x.reshape(-1), values[graph.outputs[0]].reshape(-1)
