"""The .qir file: an ONNX ModelProto whose nodes are in the ``ai.qcompile`` op domain.

Weight arrays are initializers named after their node: ``NODE.codes`` (uint32 packed codes),
``NODE.zero`` (affine zero points) or ``NODE.table`` (non-uniform levels), and for
per-channel requantization ``NODE.mult`` and ``NODE.bias`` (all int64 but the codes); op
parameters, requant parameters and the output type are node attributes; the format version,
the input quantizer and a SHA-256 of everything else are in ``metadata_props``. Netron opens
it; ``onnx.checker`` checks its structure.

Format 3 is numeric contract v1 (int8 weights, per-channel requantization). Formats 1 and 2
held contract v0 (scales folded into 16-bit LUT entries); they are refused with the way out:
freeze the checkpoint again.

Loading trusts nothing: a truncated, tampered, foreign or future-version file is one
:class:`QCompileError`, never a traceback, and a loaded graph has passed ``verify``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qcompile.errors import QCompileError, clip
from qcompile.fileio import atomic_write, input_file
from qcompile.ir.graph import OPS, Affine, Graph, InputQuant, Node, Requant, Table, Weights
from qcompile.ir.types import QType, TensorInfo
from qcompile.ir.verify import verify

DOMAIN = "ai.qcompile"
FORMAT_VERSION = 3  # 3: numeric contract v1 (1, 2: contract v0, refused)
KEY_VERSION, KEY_INPUT, KEY_HASH, KEY_META = (
    "qcompile.format_version",
    "qcompile.input",
    "qcompile.sha256",
    "qcompile.meta",
)


def to_onnx(graph: Graph) -> onnx.ModelProto:
    """The graph as an ONNX model (codes packed), with its content hash."""
    nodes, inits = [], []
    for n in graph.nodes:
        inputs = list(n.inputs)
        attrs: dict[str, Any] = n.op.attrs()
        arrays: dict[str, np.ndarray] = {}
        if n.weights is not None:
            w = n.weights.pack()
            arrays["codes"] = w.data
            if isinstance(w.levels, Affine):
                arrays["zero"] = w.levels.zero
                attrs.update(level_step=w.levels.step)
            else:
                arrays["table"] = w.levels.entries
            attrs.update(bits=w.bits, weight_shape=list(w.shape))
            if w.channel_bits is not None:
                attrs.update(channel_bits=list(w.channel_bits))
        if n.requant is not None:
            r = n.requant
            attrs.update(shift=r.shift, clip=[r.lo, r.hi], acc_bits=r.acc_bits)
            if r.per_channel:
                arrays["mult"] = r.multipliers
            else:
                attrs.update(multiplier=r.multiplier)
            if r.bias is not None:
                arrays["bias"] = r.biases
        for key, a in arrays.items():
            inits.append(numpy_helper.from_array(a, f"{n.name}.{key}"))
            inputs.append(f"{n.name}.{key}")
        attrs.update(_type_attrs(n.output))
        nodes.append(
            helper.make_node(n.kind, inputs, [n.output.name], n.name, domain=DOMAIN, **attrs)
        )
    tensors = graph.tensors()
    g = helper.make_graph(
        nodes,
        graph.name,
        [_value_info(graph.input)],
        [_value_info(tensors[t]) for t in graph.outputs],
        inits,
        value_info=[
            _value_info(n.output) for n in graph.nodes if n.output.name not in graph.outputs
        ],
    )
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid(DOMAIN, 1)], producer_name="qcompile"
    )
    iq = graph.input_quant
    x = graph.input
    meta = {
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_INPUT: json.dumps(
            {
                "bits": x.qtype.bits,
                "signed": x.qtype.signed,
                "frac": x.qtype.frac,
                "scale": x.scale,
                "quant_bits": iq.bits,
                "lo": iq.lo,
                "step": iq.step,
                "zero": iq.zero,
                **({"quant_signed": True} if iq.signed else {}),
            }
        ),
        KEY_META: json.dumps(dict(graph.metadata)),
    }
    helper.set_model_props(model, meta)
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    model.metadata_props.add(key=KEY_HASH, value=digest)
    return model


def save(graph: Graph, path: str | Path) -> None:
    """Verify ``graph`` and write it atomically to ``path``."""
    data = to_onnx(verify(graph)).SerializeToString()
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def load(path: str | Path) -> Graph:
    """Read, check and verify a .qir file."""
    return read(path)[0]


def read(path: str | Path) -> tuple[Graph, bytes]:
    """The verified graph of a .qir file and the file's bytes (an export copies them)."""
    p = input_file(path, "model")
    try:
        data = p.read_bytes()
    except OSError as e:  # unreadable, removed since checked, ...
        raise QCompileError(f"{clip(str(p))}: cannot read: {e.strerror or e}") from None
    return loads(data, clip(str(p))), data


def loads(data: bytes, where: str = "<bytes>") -> Graph:
    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # protobuf raises DecodeError, RuntimeError, ... on garbage
        raise QCompileError(
            f"{where} is not a .qir file (not a readable ONNX model); it is truncated or corrupt"
        ) from None
    props = {p.key: p.value for p in model.metadata_props}
    version = props.get(KEY_VERSION)
    if version is None:
        raise QCompileError(
            f"{where} is an ONNX model but not a .qir file (no {KEY_VERSION}); "
            "write one with `qcompile freeze`"
        )
    # ASCII digits only, few enough for int(): "²" and 5000-digit strings raise ValueError
    known = version.isascii() and version.isdigit() and len(version) <= 9
    if not known or int(version) < 1:
        raise QCompileError(f"{where} has an invalid .qir format version {clip(repr(version), 40)}")
    if int(version) < FORMAT_VERSION:
        raise QCompileError(
            f"{where} has .qir format version {version} (numeric contract v0: scales folded "
            f"into 16-bit LUT entries); this qcompile reads format {FORMAT_VERSION} (int8 "
            "weights, per-channel requantization): freeze its checkpoint again with "
            "`qcompile freeze`"
        )
    if int(version) > FORMAT_VERSION:
        raise QCompileError(
            f"{where} has .qir format version {clip(repr(version), 40)}; this qcompile reads "
            f"up to {FORMAT_VERSION}: upgrade qcompile"
        )
    _check_hash(model, props.get(KEY_HASH), where)
    try:
        graph = _from_onnx(model, props)
    except QCompileError:
        raise
    except Malformed as e:
        raise QCompileError(
            f"{where} is malformed: {clip(str(e), 300)}; write it again with `qcompile freeze`"
        ) from None
    except Exception as e:  # any inconsistency in an intact-hash file: report, don't crash
        raise QCompileError(
            f"{where} is malformed: {type(e).__name__}: {clip(str(e), 300)}"
        ) from None
    try:
        return verify(graph)
    except QCompileError as e:
        raise QCompileError(f"{where} fails verification: {e}") from None


def _check_hash(model: onnx.ModelProto, digest: str | None, where: str) -> None:
    props = model.metadata_props
    if digest is None or not len(props) or props[len(props) - 1].key != KEY_HASH:
        raise QCompileError(f"{where} has no content hash as its last property; tampered?")
    del props[len(props) - 1]
    if hashlib.sha256(model.SerializeToString()).hexdigest() != digest:
        raise QCompileError(
            f"{where} does not match its content hash: it was modified or "
            "damaged after `qcompile freeze` wrote it"
        )


def _value_info(t: TensorInfo) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(t.name, TensorProto.INT64, ["N", *t.shape])


def _type_attrs(t: TensorInfo) -> dict[str, Any]:
    return {
        "out_bits": t.qtype.bits,
        "out_signed": int(t.qtype.signed),
        "out_frac": t.qtype.frac,
        "out_scale": repr(float(t.scale)),
    }


class Malformed(ValueError):
    """A .qir field that is missing or of the wrong type; the message names it."""


def _from_onnx(model: onnx.ModelProto, props: dict[str, str]) -> Graph:
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    spec = json.loads(props[KEY_INPUT])
    if not isinstance(spec, dict):
        raise Malformed(f"{KEY_INPUT} must be a JSON object")
    if len(g.input) != 1:
        raise Malformed(f"expected one graph input, found {len(g.input)}")
    field = lambda k: _spec(spec, k)  # noqa: E731
    x_in = TensorInfo(
        g.input[0].name,
        _shape(g.input[0]),
        QType(_int(field("bits")), bool(field("signed")), _int(field("frac"))),
        float(field("scale")),
    )
    signed = spec.get("quant_signed", False)
    if not isinstance(signed, bool):
        raise Malformed(f"quant_signed must be true or false, got {clip(repr(signed), 40)}")
    iq = InputQuant(
        _int(field("quant_bits")),
        float(field("lo")),
        float(field("step")),
        _int(field("zero")),
        signed,
    )
    shapes = {v.name: _shape(v) for v in (*g.value_info, *g.output)}
    nodes = tuple(_node(n, inits, shapes) for n in g.node)
    meta = json.loads(props.get(KEY_META, "{}"))
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise Malformed(f"{KEY_META} must map names to strings")
    outputs = tuple(o.name for o in g.output)
    return Graph(g.name, x_in, iq, nodes, outputs, tuple(sorted(meta.items())))


def _spec(spec: dict[str, Any], key: str) -> Any:
    if key not in spec:
        raise Malformed(f"{KEY_INPUT} lacks '{key}'")
    return spec[key]


def _int(v: object, what: str = "") -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise Malformed(f"{what or 'a field'} must be an integer, got {clip(repr(v), 40)}")
    return v


def _shape(v: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = v.type.tensor_type.shape.dim
    return tuple(_int(d.dim_value, f"a dimension of {clip(v.name, 40)!r}") for d in dims[1:])


class _Attrs:
    """A node's attributes, read by name and type; a missing or mistyped one is named with
    its node."""

    def __init__(self, n: onnx.NodeProto) -> None:
        self.where = f"node {clip(n.name, 60)!r} ({clip(n.op_type, 20)})"
        self.values = {x.name: helper.get_attribute_value(x) for x in n.attribute}

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str) -> Any:
        if key not in self.values:
            raise Malformed(f"{self.where}: missing attribute '{key}'")
        return self.values[key]

    def int(self, key: str) -> int:
        return _int(self.get(key), f"{self.where}: attribute '{key}'")

    def ints(self, key: str) -> tuple[int, ...]:
        v = self.get(key)
        if not isinstance(v, list):
            raise Malformed(f"{self.where}: attribute '{key}' must be a list of integers")
        return tuple(_int(x, f"{self.where}: attribute '{key}'") for x in v)

    def real(self, key: str) -> float:
        v = self.get(key)
        if not isinstance(v, bytes):
            raise Malformed(f"{self.where}: attribute '{key}' must be a number as a string")
        try:
            return float(v.decode())
        except (UnicodeDecodeError, ValueError):
            raise Malformed(
                f"{self.where}: attribute '{key}' is not a number: {clip(repr(v), 40)}"
            ) from None


def _node(
    n: onnx.NodeProto, inits: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]
) -> Node:
    if n.domain != DOMAIN or n.op_type not in OPS:
        raise Malformed(
            f"node {clip(n.name, 60)!r}: unknown op {clip(n.domain, 40)}:{clip(n.op_type, 40)}"
        )
    a = _Attrs(n)
    op_class = OPS[n.op_type]
    try:
        op = op_class.from_attrs(a.values)
    except ValueError as e:  # a missing or mistyped op attribute, or an invalid value
        raise Malformed(f"{a.where}: {e}") from None
    arrays = _node_arrays(n, inits, a)
    weights = None
    if op_class.weighted:
        if "codes" not in arrays or ("zero" in arrays) == ("table" in arrays):
            raise Malformed(f"{a.where}: needs codes and either zero or table initializers")
        levels: Affine | Table = (
            Affine(a.int("level_step"), arrays["zero"])
            if "zero" in arrays
            else Table(arrays["table"])
        )
        weights = Weights(
            a.int("bits"),
            a.ints("weight_shape"),
            arrays["codes"],
            True,
            levels,
            a.ints("channel_bits") if "channel_bits" in a else None,
        )
    requant = None
    if "shift" in a:
        lo, hi = a.ints("clip") if len(a.ints("clip")) == 2 else _bad_clip(a)
        mult = tuple(int(v) for v in arrays["mult"]) if "mult" in arrays else a.int("multiplier")
        bias = tuple(int(v) for v in arrays["bias"]) if "bias" in arrays else None
        requant = Requant(a.int("shift"), lo, hi, a.int("acc_bits"), mult, bias)
    if len(n.output) != 1 or n.output[0] not in shapes:
        raise Malformed(f"{a.where}: needs one output with a value_info shape")
    qtype = QType(a.int("out_bits"), bool(a.int("out_signed")), a.int("out_frac"))
    out = TensorInfo(n.output[0], shapes[n.output[0]], qtype, a.real("out_scale"))
    inputs = tuple(t for t in n.input if t not in inits)
    return Node(n.name, op, inputs, out, weights, requant)


ARRAYS = {"codes": "uint32", "zero": "int64", "table": "int64", "bias": "int64", "mult": "int64"}


def _node_arrays(
    n: onnx.NodeProto, inits: dict[str, np.ndarray], a: _Attrs
) -> dict[str, np.ndarray]:
    """The node's initializer inputs by role (``NODE.codes`` -> "codes"), type-checked; the
    tensor inputs are the others."""
    out: dict[str, np.ndarray] = {}
    for name in n.input:
        if name not in inits:
            continue
        role = name.removeprefix(f"{n.name}.")
        if role not in ARRAYS or role == name:
            raise Malformed(f"{a.where}: unexpected initializer input {clip(name, 60)!r}")
        arr = inits[name]
        if arr.dtype != np.dtype(ARRAYS[role]):
            raise Malformed(f"{a.where}: {clip(name, 60)} must be {ARRAYS[role]}, not {arr.dtype}")
        out[role] = arr
    return out


def _bad_clip(a: _Attrs) -> tuple[int, int]:
    raise Malformed(f"{a.where}: attribute 'clip' must hold two integers (lo, hi)")
