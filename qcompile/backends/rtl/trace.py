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
  adder count), the bias, a free ``2^-k`` rescale, a round half up (``quantize(..., 'WRAP',
  'RND')`` at a width no value exceeds) and a clip to ``[lo, hi]`` by two relus.
- maxpool: ``max(a, b) = b + relu(a - b)`` over the in-bounds window; flatten: a reshape.

Two things da4ml 0.6.0 gets wrong, found on jet_mlp (16-64-32-32-5), and avoided here:

- its MSB-select op, which ``quantize(..., 'SAT')`` and ``np.clip``/``np.maximum`` trace to:
  the Verilog it writes for some of them disagrees with its own trace (whose Python
  evaluation matches the simulator): jet_mlp's third layer on 20% of inputs, the whole model
  on 39-54%, pipelined or not. So nothing here traces to it: the requantization rounds with
  ``'WRAP'`` at a width no value can exceed and clips with relus, max-pooling takes maxima
  with relus (exact under Verilator).
- ``2^-k`` rescales are kept as power-of-two factors in ``Decimal``; traced whole, the last
  layer's factor was ``2^-60`` and the default 28-digit context rounded a constant to
  ``-963503.999...``. :func:`exact_decimals` gives the digits every factor needs, and
  :func:`trace_pipeline` traces each layer on fresh inputs, so no factor spans more than
  one layer's shift.
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
    # Round half up to an integer wide enough for every value (no wrap, no saturation),
    # then clip with relus: max(y, lo) = relu(y - lo) + lo, min(y, hi) = hi - relu(hi - y).
    # (quantize's SAT and np.clip trace to da4ml's MSB-select op; see the module docstring.)
    kz, iz, _ = z.kif
    y = quantize(z, kz, iz + 1, 0, "WRAP", "RND")
    y = (y - float(r.lo)).relu() + float(r.lo)
    return -((-y + float(r.hi)).relu()) + float(r.hi)


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
                acc = v + (acc - v).relu() if isinstance(op, MaxPool) else acc + v
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


def segments(graph: Graph) -> list[list[Node]]:
    """The nodes cut into runs that each end with a requantized node whose output is the
    only tensor later nodes read (a chain's layers; a residual block stays whole)."""
    out: list[list[Node]] = [[]]
    for i, node in enumerate(graph.nodes):
        out[-1].append(node)
        later = {t for n in graph.nodes[i + 1 :] for t in n.inputs}
        if node.requant is not None and later == {node.output.name}:
            out.append([])
    return [s for s in out if s]


def trace_pipeline(graph: Graph, cutoff: float, fold: bool = False):
    """da4ml's ``Pipeline`` of ``graph``: each segment (:func:`segments`) traced on fresh
    inputs and pipelined at ``cutoff``, the stages concatenated. Tracing the whole graph at
    once left a power-of-two factor of 2^-60 and beyond on the deep layers' values, and the
    Verilog da4ml 0.6.0 generated for those disagreed with its own trace on about half of
    jet_mlp's inputs; a fresh input per segment keeps every factor within one layer's shift.
    Segment boundaries carry exactly the elements the next segment reads, at the widths the
    previous one produces."""
    from da4ml.trace import FixedVariable, FixedVariableArray, comb_trace, to_pipeline
    from da4ml.types import Pipeline, minimal_kif

    lo, hi = graph.input.qtype.range
    k, i, f = _kif(lo, hi)
    shape = graph.input.shape
    x = FixedVariableArray.from_kif(
        np.full(shape, k), np.full(shape, i), np.full(shape, f), hwconf=(1, -1, -1)
    )
    shapes = {t: info.shape for t, info in graph.tensors().items()}
    src, traced = graph.input.name, []
    for seg in segments(graph):
        values = {src: x}
        for node in seg:
            ins = [values[t] for t in node.inputs]
            values[node.output.name] = trace_node(node, ins, [shapes[t] for t in node.inputs], fold)
        y = values[seg[-1].output.name]
        comb = comb_trace(x.reshape(-1), y.reshape(-1))
        traced.append([x.reshape(-1), y.reshape(-1), comb])
        q = comb.out_qint
        src = seg[-1].output.name
        x = FixedVariableArray.from_lhs(
            np.array([v.min for v in q]).reshape(y.shape),
            np.array([v.max for v in q]).reshape(y.shape),
            np.array([v.step for v in q]).reshape(y.shape),
            hwconf=(1, -1, -1),
        )
    # An element the next segment never reads has no input port there: drop it from the
    # previous segment's outputs (a constant 0 has no port either).
    for s in range(len(traced) - 2, -1, -1):
        unused = [j for j, v in enumerate(traced[s + 1][2].inp_qint) if sum(minimal_kif(v)) == 0]
        if unused:
            xs, ys, _ = traced[s]
            flat = np.array(ys._vars, dtype=object).copy()
            for j in unused:
                flat[j] = FixedVariable.from_const(0, hwconf=flat[j].hwconf)
            traced[s][1] = FixedVariableArray(flat, ys.solver_options, hwconf=ys.hwconf)
            traced[s][2] = comb_trace(xs, traced[s][1])
    for s in range(len(traced) - 1):
        out = [tuple(minimal_kif(v)) for v in traced[s][2].out_qint]
        inp = [tuple(minimal_kif(v)) for v in traced[s + 1][2].inp_qint]
        if [sum(v) for v in out] != [sum(v) for v in inp]:
            raise RuntimeError(f"rtl segments {s} and {s + 1} disagree on their boundary widths")
    stages = []
    for _, _, comb in traced:
        stages += list(to_pipeline(comb, cutoff, verbose=False).solutions) if cutoff > 0 else [comb]
    return Pipeline(tuple(stages))
