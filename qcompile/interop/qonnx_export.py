"""Export a verified graph as a QONNX model that qonnx's executor runs bit for bit.

Every IR tensor becomes a QONNX tensor holding the IR's integers exactly (float32 where they
fit in 24 bits, float64 up to 53): the model computes in integer units and only its ends
touch real numbers. The float input goes through the graph's input quantizer (``Sub``,
``Div``, ``Quant`` with ROUND, as :func:`qcompile.sim.quantize_input` does in float32); each
output is multiplied by its unit, so ``global_out = int * unit`` and the integers come back
as ``np.rint(global_out / unit)`` (units in the ``qcompile.output_units`` property; exact:
float32 outputs stay below 2^23, float64 ones below 2^51).

Weights are constants under a ``Quant`` (scale 1: the integer weights, their width declared)
or ``BipolarQuant`` (1-bit +-1 levels); learned non-uniform levels stay a per-channel table
and the codes that index it (``GatherElements``). Convolutions and matrix products run in
float32 where every partial sum stays below 2^24 in magnitude (a convolution that could pass
it is split over input channels, each part exact, summed in float64); dense layers beyond
that multiply in float64. Requantization: :mod:`qcompile.interop.qonnx_requant`.

>>> from qcompile.ir import Dense, Graph, InputQuant, Node, QType, Requant, TensorInfo
>>> from qcompile.ir import Affine, Weights
>>> w = Weights(2, (2, 3), np.array([[0, 1, 3], [2, 2, 0]], np.uint8), False,
...             Affine(1, np.array([-2])))
>>> x = TensorInfo("x", (3,), QType(8, True), 0.5)
>>> y = Node("y", Dense(), ("x",), TensorInfo("y", (2,), QType(4, False), 0.25), w,
...          Requant(1, 0, 15, 12, 1, (5, -1)))
>>> m = to_qonnx(Graph("g", x, InputQuant(8, -64.0, 0.5, -128), (y,), ("y",)))
>>> [n.op_type for n in m.graph.node][:4]
['Sub', 'Div', 'Quant', 'Add']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from qcompile.errors import QCompileError
from qcompile.fileio import atomic_write
from qcompile.interop.onnx_graph import DOUBLE, FLOAT, QONNX_DOMAIN, Builder, Val
from qcompile.interop.qonnx_requant import (
    F32_EXACT,
    F64_EXACT,
    quant,
    rename_last,
    requantize,
)
from qcompile.ir import ops
from qcompile.ir.graph import Graph, Node, Table
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool, Op
from qcompile.ir.types import TensorInfo
from qcompile.ir.verify import verify

OPSET = 17
KEY_UNITS = "qcompile.output_units"
Range = tuple[int, int]


def to_qonnx(graph: Graph, batch: int = 1) -> onnx.ModelProto:
    """``graph`` as a QONNX model for inputs ``[batch, *shape]`` (qonnx runs fixed shapes;
    ``qonnx.transformation.change_batchsize.ChangeBatchSize`` changes it)."""
    if not isinstance(batch, int) or batch < 1:
        raise QCompileError(f"batch must be a positive integer, got {batch!r}")
    return _Exporter(verify(graph), batch).run()


def save_qonnx(graph: Graph, path: str | Path, batch: int = 1, force: bool = False) -> None:
    """Write :func:`to_qonnx` to ``path`` atomically (an existing file only with ``force``)."""
    p = Path(path)
    if p.exists() and (p.is_dir() or not force):
        raise QCompileError(
            f"{p} is a directory"
            if p.is_dir()
            else f"{p} already exists; pass --force to replace it"
        )
    data = to_qonnx(graph, batch).SerializeToString()
    try:
        atomic_write(p, lambda tmp: tmp.write_bytes(data))
    except OSError as e:
        raise QCompileError(f"cannot write {p}: {e.strerror or e}") from None


class _Exporter:
    def __init__(self, graph: Graph, batch: int) -> None:
        self.g, self.n, self.b = graph, batch, Builder()
        self.vals: dict[str, Val] = {}
        self.ranges: dict[str, Range] = {}
        self.b.reserve([t.name for t in graph.tensors().values()])

    def run(self) -> onnx.ModelProto:
        self._input()
        for node in self.g.nodes:
            what = f"node {node.name} ({node.kind})"
            self.vals[node.output.name] = EMIT[type(node.op)](self, node, what)
            self.ranges[node.output.name] = self._range(node)
        outs = [self._output(self.g.tensors()[t]) for t in self.g.outputs]
        meta = {
            KEY_UNITS: json.dumps([self.g.tensors()[t].unit for t in self.g.outputs]),
            "qcompile.graph": self.g.name,
            "qcompile.contract": "tensors hold the IR's integers; global_out = int * unit",
        }
        return self.b.model(self.g.name, outs, OPSET, meta)

    def _range(self, node: Node) -> Range:
        r = node.requant
        return (r.lo, r.hi) if r is not None else self.ranges[node.inputs[0]]

    def shape(self, t: TensorInfo) -> tuple[int, ...]:
        return (self.n, *t.shape)

    # -- ends ---------------------------------------------------------------------------------

    def _input(self) -> None:
        """``q = clip(round((x - lo) / step), codes) + zero`` in float32, as quantize_input."""
        iq, x_info = self.g.input_quant, self.g.input
        b = self.b
        t = b.input("global_in", FLOAT, self.shape(x_info))
        if iq.lo != 0.0:
            t = b.node("Sub", [t, b.scalar("input.lo", iq.lo, FLOAT)], "input.shifted")
        t = b.node("Div", [t, b.scalar("input.step", iq.step, FLOAT)], "input.scaled")
        q = quant(b, t, iq.bits, iq.signed, "ROUND", "input.codes")
        if iq.zero:
            q = b.add(q, float(iq.zero), "input.offset")
        self.vals[x_info.name] = rename_last(b, q, x_info.name)
        self.ranges[x_info.name] = (iq.zero + iq.codes[0], iq.zero + iq.codes[1])

    def _output(self, t: TensorInfo) -> Val:
        y, (lo, hi) = self.vals[t.name], self.ranges[t.name]
        top, unit = max(abs(lo), abs(hi)), t.unit
        if y.dtype == FLOAT and top < 1 << 23 and float(np.float32(unit)) == unit:
            return self.b.mul(y, unit, "global_out")
        if top >= 1 << 51:
            raise QCompileError(
                f"output {t.name} holds integers up to 2^{top.bit_length()}: its real values "
                "would not give them back exactly in float64"
            )
        return self.b.mul(self.b.cast(y, DOUBLE), unit, "global_out")

    # -- ops ----------------------------------------------------------------------------------

    def weighted(self, node: Node, what: str) -> Val:
        assert node.weights is not None and node.requant is not None
        x, xr = self.vals[node.inputs[0]], self.ranges[node.inputs[0]]
        w = node.weights.decoded()
        if isinstance(node.op, Dense):
            acc = self._matmul(node, x, w, max(abs(xr[0]), abs(xr[1])), what)
        else:
            acc = self._conv(node, x, xr, w, what)
        channels = node.op.channel_ranges(node, [xr])  # type: ignore[union-attr]
        return requantize(self.b, acc, channels, node.requant, node.output, what)

    def _weight(self, node: Node, name: str) -> Val:
        """The integer weights ``[O, ...]`` as float32, under a Quant declaring their width."""
        w, b = node.weights, self.b
        assert w is not None
        dec = w.decoded()
        if isinstance(w.levels, Table):
            # out[o, i, ...] = table[o, codes[o, i, ...]]: the table repeated over the kernel
            # positions so that GatherElements needs no reshape (which ChangeBatchSize edits)
            c, width = w.shape[0], w.levels.entries.shape[1]
            table = np.broadcast_to(
                w.levels.entries.reshape(-1, width, *[1] * (len(w.shape) - 2)),
                (c, width, *w.shape[2:]),
            )
            t = b.const(f"{name}.table", table.astype(np.float32))
            codes = b.const(f"{name}.codes", w.codes().astype(np.int64))
            v = b.node("GatherElements", [t, codes], f"{name}.levels", shape=w.shape, axis=1)
        else:
            v = b.const(f"{name}.weights", dec.astype(np.float32))
        lo, hi = int(dec.min(initial=0)), int(dec.max(initial=0))
        if set(np.unique(dec).tolist()) <= {-1, 1}:
            scale = b.scalar(f"{name}.scale", 1.0, FLOAT)
            return b.node("BipolarQuant", [v, scale], f"{name}.quant", domain=QONNX_DOMAIN)
        return quant(b, v, max(2, ops.signed_bits(lo, hi)), True, "ROUND", f"{name}.quant")

    def _matmul(self, node: Node, x: Val, w: np.ndarray, amax: int, what: str) -> Val:
        bound = int(np.abs(w).sum(axis=1).max(initial=0)) * amax
        wt = self.b.node(
            "Transpose",
            [self._weight(node, node.name)],
            f"{node.name}.wt",
            shape=(w.shape[1], w.shape[0]),
            perm=[1, 0],
        )
        dt = FLOAT if x.dtype == FLOAT and bound <= F32_EXACT else DOUBLE
        if bound > F64_EXACT:
            raise QCompileError(f"{what}: partial sums can pass 2^53")
        out = (self.n, w.shape[0])
        xs, ws = self.b.cast(x, dt), self.b.cast(wt, dt)
        return self.b.node("MatMul", [xs, ws], f"{node.name}.acc", shape=out)

    def _conv(self, node: Node, x: Val, xr: Range, w: np.ndarray, what: str) -> Val:
        """float32 convolutions, each exact: the input split into base-2^s digits where its
        integers are too wide, the input channels into groups where partial sums could pass
        2^24; the parts summed in float64."""
        op = node.op
        assert isinstance(op, Conv2d)
        mags = np.abs(w).sum(axis=(2, 3))  # [O, C/g]: each input channel's weight mass
        total = int(mags.sum(axis=1).max(initial=0))
        # Prefer digits small enough for the whole fan-in (one convolution per digit); split
        # channels too only where even 16 levels per digit would not fit.
        whole = op.groups > 1 or F32_EXACT // max(total, 1) >= 15
        single = total if whole else int(mags.max(initial=0))
        digits = self._digits(x, xr, F32_EXACT // max(single, 1), what)
        weights = self._weight(node, node.name)
        out = self.shape(node.output)
        attrs = {
            "kernel_shape": list(w.shape[2:]),
            "strides": list(op.stride),
            "pads": [*op.padding, *op.padding],
            "dilations": list(op.dilation),
            "group": op.groups,
        }
        parts: list[tuple[Val, int]] = []
        for d, (dx, amax, place) in enumerate(digits):
            chunks = [(0, w.shape[1])] if whole else _chunks(mags * amax)
            for lo, hi in chunks:
                px = dx if len(chunks) == 1 else self._slice(dx, lo, hi, f"{node.name}.x{d}_{lo}")
                pw = (
                    weights
                    if len(chunks) == 1
                    else self._slice(weights, lo, hi, f"{node.name}.w{lo}")
                )
                part = self.b.node("Conv", [px, pw], f"{node.name}.acc", shape=out, **attrs)
                parts.append((part, place))
        if len(parts) == 1 and parts[0][1] == 1:
            return parts[0][0]
        total: Val | None = None
        for part, place in parts:  # each part exact; their weighted sum in float64 (< 2^53)
            p = self.b.cast(part, DOUBLE)
            p = p if place == 1 else self.b.mul(p, float(place), f"{p.name}.placed")
            total = p if total is None else self.b.node("Add", [total, p], f"{node.name}.sum")
        assert total is not None
        return total

    def _digits(self, x: Val, xr: Range, limit: int, what: str) -> list[tuple[Val, int, int]]:
        """``x = sum(digit * place)``: float32 digits of magnitude at most ``limit``, with
        their magnitude bound and place value (``[(x, max|x|, 1)]`` when x is narrow)."""
        if limit < 1:
            raise QCompileError(f"{what}: one input's products can pass 2^24")
        top = max(abs(xr[0]), abs(xr[1]))
        if x.dtype == FLOAT and top <= limit:
            return [(x, top, 1)]
        s = min(24, (limit + 1).bit_length() - 1)  # digits in [0, 2^s) are within the limit
        out, lo, hi, place, rest = [], xr[0], xr[1], 1, x
        while max(abs(lo), abs(hi)) > limit:
            name = f"{x.name}.digit{len(out)}"
            high = self.b.node("Floor", [self.b.mul(rest, 2.0**-s, f"{name}.down")], f"{name}.hi")
            low = self.b.node("Sub", [rest, self.b.mul(high, float(1 << s), f"{name}.up")], name)
            out.append((self.b.cast(low, FLOAT), (1 << s) - 1, place))
            rest, lo, hi, place = high, lo >> s, hi >> s, place << s
        return [*out, (self.b.cast(rest, FLOAT), max(abs(lo), abs(hi)), place)]

    def _slice(self, v: Val, lo: int, hi: int, name: str) -> Val:
        """Channels ``lo:hi`` (dimension 1)."""
        b = self.b
        ints = lambda k, a: b.const(f"{name}.{k}", np.array([a], dtype=np.int64))  # noqa: E731
        shape = list(v.shape)
        shape[1] = hi - lo
        ins = [v, ints("start", lo), ints("end", hi), ints("axis", 1)]
        return b.node("Slice", ins, name, shape=tuple(shape))

    def add(self, node: Node, what: str) -> Val:
        op = node.op
        assert isinstance(op, Add) and node.requant is not None
        ranges = [self.ranges[t] for t in node.inputs]
        bound = sum(
            max(abs(lo), abs(hi)) * abs(m)
            for (lo, hi), m in zip(ranges, op.multipliers, strict=True)
        )
        xs = [self.vals[t] for t in node.inputs]
        dt = FLOAT if all(x.dtype == FLOAT for x in xs) and bound <= F32_EXACT else DOUBLE
        total: Val | None = None
        for i, (x, m) in enumerate(zip(xs, op.multipliers, strict=True)):
            t = self.b.cast(x, dt)
            t = t if m == 1 else self.b.mul(t, m, f"{node.name}.term{i}")
            total = t if total is None else self.b.node("Add", [total, t], f"{node.name}.sum")
        assert total is not None
        acc = ops.acc_range(node, ranges)
        return requantize(self.b, total, [acc], node.requant, node.output, what)

    def clip(self, node: Node, what: str) -> Val:
        assert node.requant is not None
        x = self.vals[node.inputs[0]]
        return requantize(self.b, x, [self.ranges[node.inputs[0]]], node.requant, node.output, what)

    def avgpool(self, node: Node, what: str) -> Val:
        """The window sum as a depthwise convolution with a kernel of ones (exact in float32;
        qonnx's channels-last conversion, which hls4ml needs, takes it, not AveragePool)."""
        op = node.op
        assert isinstance(op, AvgPool) and node.requant is not None
        x, xr = self.vals[node.inputs[0]], self.ranges[node.inputs[0]]
        acc = ops.acc_range(node, [xr])
        if x.dtype != FLOAT or max(abs(acc[0]), abs(acc[1])) > F32_EXACT:
            raise QCompileError(f"{what}: window sums can pass 2^24 (onnxruntime pools in float32)")
        c = node.output.shape[0]
        pads = [*op.padding, *op.padding]
        out = self.shape(node.output)
        ones = self.b.const(f"{node.name}.ones", np.ones((c, 1, *op.kernel), np.float32))
        total = self.b.node(
            "Conv",
            [x, quant(self.b, ones, 2, True, "ROUND", f"{node.name}.window")],
            f"{node.name}.sum",
            shape=out,
            kernel_shape=list(op.kernel),
            strides=list(op.stride),
            pads=pads,
            dilations=[1, 1],
            group=c,
        )
        return requantize(self.b, total, [acc], node.requant, node.output, what)

    def maxpool(self, node: Node, what: str) -> Val:
        op = node.op
        assert isinstance(op, MaxPool)
        y = self.b.node(
            "MaxPool",
            [self.vals[node.inputs[0]]],
            node.name,
            shape=self.shape(node.output),
            kernel_shape=list(op.kernel),
            strides=list(op.stride),
            pads=[*op.padding, *op.padding],
        )
        return rename_last(self.b, y, node.output.name)

    def flatten(self, node: Node, what: str) -> Val:
        y = self.b.node(
            "Flatten", [self.vals[node.inputs[0]]], node.name, shape=self.shape(node.output), axis=1
        )
        return rename_last(self.b, y, node.output.name)


def _chunks(per: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive input-channel ranges whose partial sums each stay within 2^24 (``per``:
    ``[O, C]`` bounds of each input channel's contribution, each within 2^24)."""
    chunks, start, run = [], 0, np.zeros(per.shape[0], dtype=np.int64)
    for ch in range(per.shape[1]):
        if ch > start and np.any(run + per[:, ch] > F32_EXACT):
            chunks.append((start, ch))
            start, run = ch, np.zeros_like(run)
        run += per[:, ch]
    return [*chunks, (start, per.shape[1])]


EMIT: dict[type[Op], Callable[[_Exporter, Node, str], Val]] = {
    Conv2d: _Exporter.weighted,
    Dense: _Exporter.weighted,
    Add: _Exporter.add,
    Clip: _Exporter.clip,
    AvgPool: _Exporter.avgpool,
    MaxPool: _Exporter.maxpool,
    Flatten: _Exporter.flatten,
}
