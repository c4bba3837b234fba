"""Import a QONNX model (as Brevitas's ``export_qonnx`` writes it) into a verified IR graph,
exactly or not at all.

The model is read with qonnx (shapes inferred, constants folded, Quant nodes kept) and walked
in order, tracking each tensor as :mod:`qcompile.interop.qonnx_values` describes. Supported:
``Quant``/``BipolarQuant`` on weights and biases; ``Quant``/``Trunc`` on activations (each
one requantization); ``Conv``, ``Gemm``, ``MatMul`` (+ ``Add`` of a bias), ``Relu``, ``Clip``,
``Add`` (residual sums), ``MaxPool``, ``AveragePool``/``GlobalAveragePool`` (power-of-two
windows), ``Flatten``/``Reshape`` to flat, ``Mul``/``Div`` by a positive constant,
``Identity``/``Dropout``. The graph input must go straight into a ``Quant`` (the input
quantizer: zero point 0, rounding ROUND).

What the integer contract cannot represent exactly is refused with one line naming the node:
a rescale that is not an integer times 2^-k (float scales: Brevitas ``*FixedPoint``
quantizers give power-of-two ones), rounding half to even where a tie can occur, weights over
8 bits, biases off their accumulator grid, per-channel activation scales, BatchNorm (its
float arithmetic rounds). Everything else becomes the integers the model means: qonnx's own
float32 execution equals them whenever its sums stay within float32's 24 bits, which the
notes returned beside the graph report where they might not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.errors import QCompileError
from qcompile.interop.qonnx_emit import Emitter, Landing
from qcompile.interop.qonnx_read import (
    attr_value,
    bias_of,
    bit_width,
    domain_mode,
    quant_const,
    round_as,
    sanitize,
    scalar_of,
    term_of,
    transposed,
    weights_of,
    window_of,
)
from qcompile.interop.qonnx_values import (
    Act,
    Lin,
    QConst,
    Term,
    Value,
    as_lin,
    unit_gcd,
)
from qcompile.ir.graph import (
    AvgPool,
    Conv2d,
    Dense,
    Flatten,
    Graph,
    InputQuant,
    MaxPool,
    Node,
    Requant,
)
from qcompile.ir.types import QType, TensorInfo
from qcompile.passes import run_pipeline

QUANT_OPS = ("Quant", "BipolarQuant", "Trunc")
PASS_THROUGH = ("Identity", "Dropout")


def import_qonnx(path: str | Path) -> tuple[Graph, list[str]]:
    """The verified IR graph of the QONNX model at ``path``, and notes (float32 sums in the
    source that qonnx's executor might round)."""
    model = _load(Path(path))
    imp = _Importer(model, Path(path).stem)
    graph = imp.run()
    return run_pipeline(graph), imp.notes


def _load(path: Path) -> Any:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.infer_shapes import InferShapes

    if not path.is_file():
        raise QCompileError(f"{path}: no such file")
    try:
        model = ModelWrapper(str(path))
    except Exception as e:  # protobuf raises several kinds on garbage
        raise QCompileError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None
    try:
        model = model.transform(InferShapes())
        model = model.transform(FoldConstants(exclude_op_types=list(QUANT_OPS)))
        model = model.transform(InferShapes())
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise QCompileError(f"{path}: qonnx cannot read it ({type(e).__name__}: {first})") from None
    return model


class _Importer:
    def __init__(self, model: Any, name: str) -> None:
        self.m, self.name = model, name
        self.em = Emitter()
        self.vals: dict[str, Value] = {}
        self.notes: list[str] = []
        self.names: set[str] = set()
        for init in model.graph.initializer:
            self.vals[init.name] = np.asarray(model.get_initializer(init.name))

    # -- driver -------------------------------------------------------------------------------

    def run(self) -> Graph:
        g = self.m.graph
        inputs = [i for i in g.input if i.name not in self.vals]
        if len(inputs) != 1:
            raise QCompileError(f"the model has {len(inputs)} inputs; qcompile imports one")
        x_info, iq = self._input(inputs[0].name)
        for k, node in enumerate(g.node):
            name = node.name or f"{node.op_type}_{k}"
            if node.op_type == "Quant" and node.input[0] == inputs[0].name:
                continue  # the input quantizer (_input)
            what = f"node {name} ({node.op_type})"
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise QCompileError(
                    f"{what}: unsupported; qcompile imports {', '.join(sorted(HANDLERS))}"
                )
            args = [self.vals.get(t) if t else None for t in node.input]
            missing = [t for t, a in zip(node.input, args, strict=True) if t and a is None]
            if missing:
                raise QCompileError(f"{what}: input {missing[0]} is computed by no node before it")
            attrs = {a.name: attr_value(a) for a in node.attribute}
            self.vals[node.output[0]] = handler(self, node, name, what, args, attrs)
        outputs = [self._output(o.name) for o in g.output]
        meta = {"imported_from": "qonnx", "source": self.name}
        return Graph(
            self.name, x_info, iq, tuple(self.em.nodes), tuple(outputs), tuple(sorted(meta.items()))
        )

    def ir_name(self, onnx_name: str) -> str:
        """A unique identifier-like IR name (backends turn names into C identifiers)."""
        base = sanitize(onnx_name)
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.m.get_tensor_shape(tensor)
        if shape is None or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
            raise QCompileError(f"tensor {tensor} has no known shape")
        return tuple(shape[1:])

    def _input(self, name: str) -> tuple[TensorInfo, InputQuant]:
        users = self.m.find_consumers(name)
        if len(users) != 1 or users[0].op_type != "Quant" or users[0].input[0] != name:
            raise QCompileError(
                f"the graph input {name} must go straight into one Quant node (the input "
                "quantizer); it feeds " + ", ".join(f"{u.name} ({u.op_type})" for u in users)
            )
        q = users[0]
        what = f"node {q.name} (Quant, the input quantizer)"
        scale, zero, bits = (self._const(t, what) for t in q.input[1:4])
        attrs = {a.name: attr_value(a) for a in q.attribute}
        b, signed, narrow = (
            bit_width(bits, what),
            bool(attrs.get("signed", 1)),
            bool(attrs.get("narrow", 1)),
        )
        if scale.size != 1 or not float(scale.reshape(-1)[0]) > 0:
            raise QCompileError(f"{what}: needs one positive scale")
        if (
            np.any(zero != 0)
            or narrow
            or str(attrs.get("rounding_mode", "ROUND")).upper() != "ROUND"
        ):
            raise QCompileError(
                f"{what}: qcompile's input quantizer is round(x / scale) (half to even) clipped "
                "to the full signed or unsigned range; this one has a zero point, narrow range "
                "or another rounding mode"
            )
        if (signed and b < 2) or b > 16:
            raise QCompileError(
                f"{what}: {b}-bit input codes (qcompile takes 2..16 signed, 1..16 unsigned)"
            )
        step = float(scale.reshape(-1)[0])
        iq = InputQuant(b, 0.0, step, 0, signed)
        info = TensorInfo("input", self.shape(name), QType(b, signed), step)
        self.names.add("input")
        self.vals[q.output[0]] = Act(info, Fraction(step))
        return info, iq

    def _output(self, name: str) -> str:
        v = self.vals.get(name)
        if isinstance(v, Act):
            return v.info.name
        if isinstance(v, Lin):
            return self.land_wide(v, f"output {name}").info.name
        raise QCompileError(f"graph output {name} is a constant or not computed")

    # -- helpers ------------------------------------------------------------------------------

    def _const(self, tensor: str, what: str) -> np.ndarray:
        v = self.vals.get(tensor)
        if not isinstance(v, np.ndarray):
            raise QCompileError(f"{what}: {tensor} must be a constant")
        return v

    def act(self, v: Value | None, what: str) -> Act:
        """``v`` as an IR tensor (a pending sum lands exactly on a wide one)."""
        if isinstance(v, Act):
            return v
        if isinstance(v, Lin):
            return self.land_wide(v, what)
        raise QCompileError(f"{what}: needs a computed tensor, not a constant")

    def land_wide(self, v: Lin, what: str) -> Act:
        return self.em.land(v, Landing(Fraction(1), Fraction(1)), self.ir_name(v.name), what)

    def lin(self, v: Value | None, name: str, what: str) -> Lin:
        if isinstance(v, Act | Lin):
            return as_lin(v, name)
        raise QCompileError(f"{what}: needs a computed tensor, not a constant")

    # -- quantizers ---------------------------------------------------------------------------

    def quant(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        x, scale, zero, bits = args
        for a, role in ((scale, "scale"), (zero, "zero point"), (bits, "bit width")):
            if not isinstance(a, np.ndarray):
                raise QCompileError(f"{what}: its {role} must be a constant")
        b = bit_width(bits, what)
        signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 1))
        mode = str(attrs.get("rounding_mode", "ROUND")).upper()
        if isinstance(x, np.ndarray):
            return quant_const(x, scale, zero, b, signed, narrow, mode, name, what)
        if b == 1 and signed:
            raise QCompileError(f"{what}: bipolar (1-bit signed) activations are not representable")
        s, z = scalar_of(scale, "scale", what), scalar_of(zero, "zero point", what)
        if s <= 0 or z.denominator != 1:
            raise QCompileError(f"{what}: needs a positive scale and an integer zero point")
        from qonnx.custom_op.general.quant import max_int, min_int

        qmin, qmax = (
            int(min_int(signed, narrow, b)) - int(z),
            int(max_int(signed, narrow, b)) - int(z),
        )
        return self.requant(x, s, s, qmin, qmax, domain_mode(mode, qmin + int(z) >= 0), node, what)

    def requant(
        self,
        x: Value,
        scale: Fraction,
        unit: Fraction,
        qmin: int,
        qmax: int,
        mode: str,
        node: Any,
        what: str,
    ) -> Act:
        """``x`` rounded at ``scale`` (``mode``), saturated to ``[qmin, qmax]``, unit ``unit``."""
        v = self.lin(x, node.name, what)
        lo, hi = qmin, qmax
        if v.lo is not None:  # a ReLU/Clip before the quantizer: monotone, so it clips after
            lo = max(lo, round_as(mode, v.lo / scale))
        if v.hi is not None:
            hi = min(hi, round_as(mode, v.hi / scale))
        if lo > hi:
            raise QCompileError(f"{what}: its clip bounds leave no value")
        t = Landing(scale, unit, lo, hi, QType.fitting(qmin, qmax), mode)
        return self.em.land(v, t, self.ir_name(_landing_name(v, node)), what)

    def bipolar(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        x, scale = args
        if not isinstance(x, np.ndarray) or not isinstance(scale, np.ndarray):
            raise QCompileError(f"{what}: bipolar activations are not representable (weights only)")
        ints = np.where(x.astype(np.float32) >= 0, 1, -1).astype(np.int64)
        return QConst(ints, np.asarray(scale, np.float64), 1, True, False, np.zeros(1), name)

    def trunc(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        if len(args) != 6:
            raise QCompileError(f"{what}: only Trunc version 2 (6 inputs) is supported")
        x, scale, zero, _, out_scale, out_bits = args
        for a in (scale, zero, out_scale, out_bits):
            if not isinstance(a, np.ndarray):
                raise QCompileError(f"{what}: scales, zero point and bit widths must be constants")
        s, z = scalar_of(scale, "scale", what), scalar_of(zero, "zero point", what)
        out_s = scalar_of(out_scale, "output scale", what)
        if z != 0 or s <= 0 or out_s <= 0:
            raise QCompileError(f"{what}: needs positive scales and a zero point of 0")
        v = self.lin(x, node.name, what)
        for t in v.terms:  # round(x / scale) first: x must already be on that grid
            units = t.units() if isinstance(t, Term) else [t.src.unit * t.coef]
            if any((u / s).denominator != 1 for u in units):
                raise QCompileError(f"{what}: its input is not on the grid of its scale")
        trunc = Fraction(float(2.0 ** np.round(np.log2(float(out_s) / float(s)))))  # as qonnx
        b = bit_width(out_bits, what)
        signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 1))
        from qonnx.custom_op.general.quant import max_int, min_int

        qmin, qmax = int(min_int(signed, narrow, b)), int(max_int(signed, narrow, b))
        mode = domain_mode(str(attrs.get("rounding_mode", "FLOOR")).upper(), qmin >= 0)
        return self.requant(v, s * trunc, out_s, qmin, qmax, mode, node, what)

    # -- weighted layers ------------------------------------------------------------------

    def conv(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        x, w, bias = [*args, None][:3]
        src = self.act(x, what)
        if len(src.shape) != 3:
            raise QCompileError(f"{what}: only 2-D convolutions over [C, H, W] are supported")
        q = weights_of(w, what, 4)
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise QCompileError(f"{what}: auto_pad {attrs['auto_pad']} is not supported; give pads")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or pads[:2] != pads[2:]:
            raise QCompileError(f"{what}: pads {pads} are not symmetric")
        op = Conv2d(
            tuple(attrs.get("strides", [1, 1])),
            (pads[0], pads[1]),
            tuple(attrs.get("dilations", [1, 1])),
            int(attrs.get("group", 1)),
        )
        term = term_of(sanitize(name), src, op, q, what)
        b = bias_of(bias, q.ints.shape[0], what)
        self._float32_note(term, b, what)
        return Lin((term,), b, self.shape(node.output[0]), name)

    def gemm(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        a, w, bias = [*args, None][:3]
        if (
            attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
            or attrs.get("transA", 0)
        ):
            raise QCompileError(f"{what}: only alpha = beta = 1 and transA = 0 are supported")
        q = weights_of(w, what, 2)
        if not attrs.get("transB", 0):
            q = transposed(q)
        return self._dense(node, name, what, a, q, bias)

    def matmul(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        a, w = args
        return self._dense(node, name, what, a, transposed(weights_of(w, what, 2)), None)

    def _dense(self, node: Any, name: str, what: str, a: Value, q: QConst, bias: Any) -> Lin:
        src = self.act(a, what)
        if len(src.shape) != 1 or src.shape[0] != q.ints.shape[1]:
            raise QCompileError(
                f"{what}: input {list(src.shape)} does not fit weights {list(q.ints.shape)}"
            )
        term = term_of(sanitize(name), src, Dense(), q, what)
        b = bias_of(bias, q.ints.shape[0], what)
        self._float32_note(term, b, what)
        return Lin((term,), b, (q.ints.shape[0],), name)

    def _float32_note(self, t: Term, bias: tuple[Fraction, ...], what: str) -> None:
        """Note where qonnx's float32 execution of the source could round: its products and
        sums are exact while they need at most 24 significant bits, counted in the finest unit
        they hold (the accumulator's, or a float bias's lowest bit)."""
        top = max(abs(v) for v in t.src.info.qtype.range)
        mass = np.abs(t.w.reshape(t.w.shape[0], -1)).sum(axis=1)
        worst = 0
        for u, m, b in zip(t.units(), mass, bias, strict=True):
            finest = unit_gcd([u, abs(b)]) if b else u
            worst = max(worst, math.ceil((top * int(m) * u + abs(b)) / finest))
        if worst > 1 << 24:
            self.notes.append(
                f"{what}: qonnx computes it in float32 and its sums need up to "
                f"{worst.bit_length()} significant bits, so the source's own execution may "
                "round there (the imported model keeps the exact values)"
            )

    # -- element-wise ---------------------------------------------------------------------

    def add(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        a, b = args
        if isinstance(a, np.ndarray | QConst):
            a, b = b, a
        v = self.lin(a, name, what)
        if isinstance(b, np.ndarray | QConst):
            v = self.settled(v, what)
            bias = bias_of(b, v.shape[0], what, v.shape)
            return Lin(
                v.terms, tuple(x + y for x, y in zip(v.bias, bias, strict=True)), v.shape, v.name
            )
        w = self.lin(b, name, what)
        if v.shape != w.shape:
            raise QCompileError(f"{what}: adds shapes {list(v.shape)} and {list(w.shape)}")
        return self.settled(v, what) + self.settled(w, what)

    def settled(self, v: Lin, what: str) -> Lin:
        """``v`` with its clamp applied (a ReLU before an add happens before it)."""
        return as_lin(self.land_wide(v, what), v.name) if v.clamped else v

    def relu(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        return self.lin(args[0], name, what).bounded(Fraction(0), None)

    def clip(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        lo = attrs.get("min") if len(args) < 2 or args[1] is None else args[1]
        hi = attrs.get("max") if len(args) < 3 or args[2] is None else args[2]
        bound = lambda v: None if v is None else Fraction(float(np.asarray(v).reshape(-1)[0]))  # noqa: E731
        return self.lin(args[0], name, what).bounded(bound(lo), bound(hi))

    def scale(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        a, c = args
        if node.op_type == "Mul" and isinstance(a, np.ndarray):
            a, c = c, a
        if not isinstance(c, np.ndarray) or c.size != 1 or not float(c.reshape(-1)[0]) > 0:
            raise QCompileError(f"{what}: only scaling by one positive constant is supported")
        f = Fraction(float(c.reshape(-1)[0]))
        f = 1 / f if node.op_type == "Div" else f
        if f.numerator & (f.numerator - 1) or f.denominator & (f.denominator - 1):
            self.notes.append(
                f"{what}: qonnx multiplies by {float(f):g} in float32, which can round"
            )
        v = self.lin(a, name, what)
        terms = tuple(
            replace(t, scale=tuple(s * f for s in t.scale))
            if isinstance(t, Term)
            else replace(t, coef=t.coef * f)
            for t in v.terms
        )
        lo = None if v.lo is None else v.lo * f
        hi = None if v.hi is None else v.hi * f
        return Lin(terms, tuple(x * f for x in v.bias), v.shape, v.name, lo, hi)

    def pass_through(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        return args[0]

    # -- shapes and pools -----------------------------------------------------------------

    def flatten(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        out = self.shape(node.output[0])
        if (node.op_type == "Flatten" and attrs.get("axis", 1) != 1) or len(out) != 1:
            raise QCompileError(
                f"{what}: only flattening each sample to one dimension is supported"
            )
        x = self.act(args[0], what)
        if len(x.shape) == 1:
            return x
        info = TensorInfo(self.ir_name(name), out, x.info.qtype, x.info.scale)
        return self.em.add(Node(info.name, Flatten(), (x.info.name,), info), x.unit)

    def maxpool(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        x = self.act(args[0], what)
        k, s, p = window_of(attrs, x.shape, what, node.op_type)
        info = TensorInfo(
            self.ir_name(name), self.shape(node.output[0]), x.info.qtype, x.info.scale
        )
        return self.em.add(Node(info.name, MaxPool(k, s, p), (x.info.name,), info), x.unit)

    def avgpool(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        x = self.act(args[0], what)
        k, s, p = window_of(attrs, x.shape, what, node.op_type)
        n = k[0] * k[1]
        if n & (n - 1):
            raise QCompileError(
                f"{what}: averages {n} values; float division by a non-power of two rounds, so "
                "only 2x2, 4x4, ... (or 2^k-element global) windows import exactly"
            )
        if any(p) and not attrs.get("count_include_pad", 0):
            raise QCompileError(
                f"{what}: padded windows must count the padding (count_include_pad=1)"
            )
        lo, hi = x.info.qtype.range
        qt = QType.fitting(min(0, n * lo), max(0, n * hi), x.info.qtype.frac)
        r = Requant(0, *qt.range, qt.bits + (0 if qt.signed else 1))
        info = TensorInfo(self.ir_name(name), self.shape(node.output[0]), qt, x.info.scale / n)
        return self.em.add(
            Node(info.name, AvgPool(k, s, p), (x.info.name,), info, None, r), x.unit / n
        )

    def batchnorm(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        raise QCompileError(
            f"{what}: BatchNorm's float gain and shift make qonnx round in float32, which no "
            "integer model reproduces; fold it into the convolution before quantizing "
            "(e.g. brevitas.graph.calibrate / merge_bn) and export again"
        )

    def constant(self, node: Any, name: str, what: str, args: list, attrs: dict) -> Value:
        if "value" not in attrs:
            raise QCompileError(f"{what}: only tensor constants are supported")
        return np.asarray(attrs["value"])


def _landing_name(v: Lin, node: Any) -> str:
    """A lone weight layer keeps its own name; anything else is named after the quantizer."""
    t = v.terms
    return t[0].name if len(t) == 1 and isinstance(t[0], Term) else node.name


Handler = Callable[[_Importer, Any, str, str, list, dict], Value]
HANDLERS: dict[str, Handler] = {
    "Quant": _Importer.quant,
    "BipolarQuant": _Importer.bipolar,
    "Trunc": _Importer.trunc,
    "Conv": _Importer.conv,
    "Gemm": _Importer.gemm,
    "MatMul": _Importer.matmul,
    "Add": _Importer.add,
    "Relu": _Importer.relu,
    "Clip": _Importer.clip,
    "Mul": _Importer.scale,
    "Div": _Importer.scale,
    "MaxPool": _Importer.maxpool,
    "AveragePool": _Importer.avgpool,
    "GlobalAveragePool": _Importer.avgpool,
    "Flatten": _Importer.flatten,
    "Reshape": _Importer.flatten,
    "BatchNormalization": _Importer.batchnorm,
    "Constant": _Importer.constant,
    **{op: _Importer.pass_through for op in PASS_THROUGH},
}
