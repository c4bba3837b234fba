"""The .qir file format: exact round trips, onnx.checker, one clear error for every bad file,
and fuzzing of ``qir.loads`` (every input either is one QCompileError or loads a verified
graph).

Files with a deliberately bad structure are re-signed the way ``qir.to_onnx`` signs them
(hash of the model without the hash property, appended last), so that their errors come from
the version check, ``_from_onnx`` or ``verify`` rather than from the content hash.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.defs import OpSchema

from qcompile.errors import QCompileError, clip
from qcompile.freeze import freeze_model
from qcompile.ir import (
    Add,
    AvgPool,
    Clip,
    Flatten,
    Graph,
    InputQuant,
    MaxPool,
    Node,
    QType,
    Requant,
    TensorInfo,
    qir,
    verify,
)
from qcompile.ir.weights import Affine
from qcompile.sim import Simulator, quantize_input
from qcompile.stages import quantize
from qcompile.zoo import build_model

META = {"arch": "lenet", "recipe": '{"wbits": 2, "abits": 4}', "note": "ünïcödé ✓"}


@pytest.fixture(scope="module")
def lenet() -> Graph:
    """A real frozen graph: conv2d, maxpool, flatten and dense nodes, 2- and 8-bit codes."""
    torch.manual_seed(0)
    q = quantize(build_model("lenet", (1, 8, 8), 10), wbits=2, abits=4)
    q.train()
    q(torch.randn(8, 1, 8, 8))
    q.eval()
    return verify(freeze_model(q, (1, 8, 8), "lenet", metadata=META))


@pytest.fixture(scope="module")
def mini() -> Graph:
    """A hand-made graph with the ops lenet lacks: clip, avgpool, add (negative multiplier),
    and two graph outputs."""
    u3 = QType(3, signed=False)
    s5 = QType(5, signed=True)
    nodes = (
        Node("c", Clip(), ("x",), TensorInfo("c", (2, 4, 4), u3, 0.2), None, Requant(1, 0, 7, 6)),
        Node(
            "p",
            AvgPool((2, 2), (2, 2)),
            ("c",),
            TensorInfo("p", (2, 2, 2), u3, 0.2),
            None,
            Requant(2, 0, 7, 6),
        ),
        Node("m", MaxPool((2, 2), (2, 2)), ("c",), TensorInfo("m", (2, 2, 2), u3, 0.2)),
        Node(
            "a",
            Add((1, -2)),
            ("p", "m"),
            TensorInfo("a", (2, 2, 2), s5, 0.2),
            None,
            Requant(0, -14, 7, 5),
        ),
        Node("f", Flatten(), ("a",), TensorInfo("f", (8,), s5, 0.2)),
    )
    x = TensorInfo("x", (2, 4, 4), QType(4, signed=False), 0.1)
    return verify(Graph("mini", x, InputQuant(4, 0.0, 0.1, 0), nodes, ("f", "m"), (("k", "v"),)))


@pytest.fixture(params=["lenet", "mini"])
def graph(request: pytest.FixtureRequest) -> Graph:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def qir_bytes(lenet: Graph) -> bytes:
    return qir.to_onnx(lenet).SerializeToString()


# ---------------------------------------------------------------------------------------------
# helpers


def _parse(data: bytes) -> onnx.ModelProto:
    return onnx.load_model_from_string(data)


def _resign(model: onnx.ModelProto) -> bytes:
    """``model`` with its hash recomputed exactly as ``qir.to_onnx`` computes it."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    assert m.metadata_props[len(m.metadata_props) - 1].key == qir.KEY_HASH
    del m.metadata_props[len(m.metadata_props) - 1]
    m.metadata_props.add(key=qir.KEY_HASH, value=hashlib.sha256(m.SerializeToString()).hexdigest())
    return m.SerializeToString()


def _prop(model: onnx.ModelProto, key: str) -> onnx.StringStringEntryProto:
    return next(p for p in model.metadata_props if p.key == key)


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _set_init(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(array, name))


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto:
    return next(a for a in node.attribute if a.name == name)


def _first(model: onnx.ModelProto, kind: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == kind)


def _padded(model: onnx.ModelProto) -> onnx.NodeProto:
    """A weighted node whose last code word has unused bits."""
    for n in model.graph.node:
        if n.op_type in ("conv2d", "dense"):
            bits = _attr(n, "bits").i
            count = int(np.prod(_attr(n, "weight_shape").ints))
            if count * bits % 32:
                return n
    raise AssertionError("the fixture has no weighted node with padding bits")


def _inputs(graph: Graph, n: int = 16) -> np.ndarray:
    """Integer inputs: quantized normal floats (clipping included) and the code range ends."""
    rng = np.random.default_rng(0)
    iq, shape = graph.input_quant, graph.input.shape
    floats = quantize_input(graph, rng.normal(scale=2.0, size=(n, *shape)))
    ends = np.stack([np.full(shape, iq.zero), np.full(shape, iq.zero + (1 << iq.bits) - 1)]).astype(
        np.int64
    )
    return np.concatenate([floats, ends])


def _assert_same_graph(a: Graph, b: Graph) -> None:
    assert (b.name, b.input, b.input_quant, b.outputs, b.metadata) == (
        a.name,
        a.input,
        a.input_quant,
        a.outputs,
        a.metadata,
    )
    for m, n in zip(a.nodes, b.nodes, strict=True):
        assert (n.name, n.kind, n.op, n.inputs, n.output, n.requant) == (
            m.name,
            m.kind,
            m.op,
            m.inputs,
            m.output,
            m.requant,
        )
    for m, n in zip(a.nodes, b.nodes, strict=True):
        assert (m.weights is None) == (n.weights is None), m.name
        if m.weights is None or n.weights is None:
            continue
        w, v = m.weights, n.weights
        assert (v.bits, v.shape, v.uniform) == (w.bits, w.shape, w.uniform), m.name
        assert type(v.levels) is type(w.levels), m.name
        if isinstance(w.levels, Affine):
            assert v.levels.step == w.levels.step, m.name
        assert np.array_equal(v.level_table(), w.level_table()), m.name
        assert np.array_equal(v.codes(), w.codes()), m.name


def _load_error(path: Path, data: bytes | None = None) -> str:
    """The message of the QCompileError that loading ``path`` raises (any other exception
    fails the test); it names the file and is one line."""
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(QCompileError) as info:
        qir.load(path)
    msg = str(info.value)
    assert clip(str(path)) in msg and "\n" not in msg, msg  # long paths are clipped
    return msg


def _outcome(data: bytes, where: str = "<fuzz>") -> tuple[str, Graph | None]:
    """("rejected", None) for a clean QCompileError, ("loaded", graph) for a verified graph;
    any other exception propagates and fails the calling test."""
    try:
        graph = qir.loads(data, where)
    except QCompileError as e:
        msg = str(e)
        assert where in msg and "\n" not in msg, msg
        return "rejected", None
    verify(graph)
    return "loaded", graph


# ---------------------------------------------------------------------------------------------
# round trip


def test_round_trip_is_exact(graph: Graph, tmp_path: Path) -> None:
    path = tmp_path / "model.qir"
    qir.save(graph, path)
    loaded = qir.load(path)
    _assert_same_graph(graph, loaded)
    assert [n.name for n in loaded.nodes] == [n.name for n in graph.nodes]
    assert [n.kind for n in loaded.nodes] == [n.kind for n in graph.nodes]
    assert loaded.meta() == graph.meta() and loaded.meta()
    x = _inputs(graph)
    want, got = Simulator(graph).run(x, keep=True), Simulator(loaded).run(x, keep=True)
    assert want.keys() == got.keys()
    for t in want:
        assert np.array_equal(want[t], got[t]), t
    out = want[graph.outputs[0]]
    assert len(np.unique(out.reshape(len(x), -1), axis=0)) > 1, "inputs do not exercise it"
    # the format is canonical: saving what was loaded gives the same bytes
    assert qir.to_onnx(loaded).SerializeToString() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.qir"]


def test_resign_matches_to_onnx(qir_bytes: bytes) -> None:
    """The helper the error tests rely on signs exactly as ``to_onnx`` does."""
    assert _resign(_parse(qir_bytes)) == qir_bytes
    assert _outcome(_resign(_parse(qir_bytes)))[0] == "loaded"


def test_save_is_atomic(lenet: Graph, mini: Graph, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.qir"
    qir.save(mini, path)
    qir.save(lenet, path)  # overwrite
    old = path.read_bytes()
    assert old == qir.to_onnx(lenet).SerializeToString()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.qir"]

    def torn(self: Path, data: bytes) -> int:  # the disk fills up halfway through
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", torn)
        with pytest.raises(OSError):
            qir.save(mini, path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.qir"]

    # an unverifiable graph is refused before anything is written
    dup = lenet.replace_nodes([*lenet.nodes, lenet.nodes[-1]])
    with pytest.raises(QCompileError, match="duplicate"):
        qir.save(dup, tmp_path / "dup.qir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.qir"]


# ---------------------------------------------------------------------------------------------
# onnx.checker

A = OpSchema.AttrType
_OUT = {"out_bits": A.INT, "out_signed": A.INT, "out_frac": A.INT, "out_scale": A.STRING}
_REQ = {"shift": A.INT, "clip": A.INTS, "acc_bits": A.INT}
_W = {"bits": A.INT, "weight_shape": A.INTS}
# absent where an initializer holds the value (per-channel multipliers, table levels) or the
# layer has one width
_OPTIONAL = {"multiplier": A.INT, "level_step": A.INT, "channel_bits": A.INTS}
_POOL = {"kernel": A.INTS, "strides": A.INTS, "pads": A.INTS}
_CONV = {"strides": A.INTS, "pads": A.INTS, "dilations": A.INTS, "group": A.INT}


def _schemas() -> list[OpSchema]:
    """The ai.qcompile ops as ONNX schemas: inputs, output, required attributes and types."""
    fp, opt = OpSchema.FormalParameter, OpSchema.FormalParameterOption
    x, y = [fp("X", "tensor(int64)")], [fp("Y", "tensor(int64)")]
    # codes, then zero points or table, bias, per-channel multipliers: all int64
    weighted = [
        *x,
        fp("codes", "tensor(uint32)"),
        fp("arrays", "tensor(int64)", param_option=opt.Variadic, min_arity=1),
    ]
    rescale = [*x, fp("mult", "tensor(int64)", param_option=opt.Optional)]
    variadic = [fp("X", "tensor(int64)", param_option=opt.Variadic, min_arity=2)]
    ops: dict[str, tuple[list, dict]] = {
        "conv2d": (weighted, {**_CONV, **_W, **_REQ}),
        "dense": (weighted, {**_W, **_REQ}),
        "add": (variadic, {"multipliers": A.INTS, **_REQ}),
        "maxpool": (x, _POOL),
        "avgpool": (rescale, {**_POOL, **_REQ}),
        "clip": (rescale, _REQ),
        "flatten": (x, {}),
    }
    assert set(ops) == set(qir.OPS)
    return [
        OpSchema(
            kind,
            qir.DOMAIN,
            1,
            inputs=ins,
            outputs=y,
            attributes=[
                *(OpSchema.Attribute(k, t, "", required=True) for k, t in {**a, **_OUT}.items()),
                *(OpSchema.Attribute(k, t, "", required=False) for k, t in _OPTIONAL.items()),
            ],
        )
        for kind, (ins, a) in ops.items()
    ]


@pytest.fixture
def qcompile_schemas() -> Iterator[None]:
    schemas = _schemas()
    for s in schemas:
        onnx.defs.register_schema(s)
    try:
        yield
    finally:
        for s in schemas:
            onnx.defs.deregister_schema(s.name, s.since_version, s.domain)


def test_onnx_checker_accepts(graph: Graph, tmp_path: Path) -> None:
    """By default the checker checks the model's structure (IR version, opset imports, graph
    topology, initializers, value infos) and skips ops of a domain it has no schemas for."""
    onnx.checker.check_model(qir.to_onnx(graph), full_check=True)
    path = tmp_path / "model.qir"
    qir.save(graph, path)
    onnx.checker.check_model(str(path), full_check=True)


def test_onnx_checker_checks_the_graph(lenet: Graph) -> None:
    """... and that check is real: an undefined input or a missing opset import fails it."""
    model = qir.to_onnx(lenet)
    model.graph.node[1].input[0] = "ghost"
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    model = qir.to_onnx(lenet)
    del model.opset_import[:]
    with pytest.raises(onnx.checker.ValidationError, match="opset_import"):
        onnx.checker.check_model(model)


def test_onnx_checker_strict_with_schemas(graph: Graph, qcompile_schemas: None) -> None:
    """``check_custom_domain=True`` refuses unregistered custom ops; with schemas for the
    ai.qcompile ops registered, every node's inputs and attributes (names, types, required)
    are checked too."""
    onnx.checker.check_model(qir.to_onnx(graph), full_check=True, check_custom_domain=True)


def test_onnx_checker_strict_catches_bad_nodes(lenet: Graph, qcompile_schemas: None) -> None:
    model = qir.to_onnx(lenet)
    model.graph.node[0].attribute.append(helper.make_attribute("bogus", 1))
    with pytest.raises(onnx.checker.ValidationError, match="Unrecognized attribute: bogus"):
        onnx.checker.check_model(model, check_custom_domain=True)
    model = qir.to_onnx(lenet)
    node = _first(model, "dense")
    node.attribute.remove(_attr(node, "shift"))
    with pytest.raises(onnx.checker.ValidationError, match="'shift' is missing"):
        onnx.checker.check_model(model, check_custom_domain=True)


def test_onnx_checker_strict_needs_schemas(lenet: Graph) -> None:
    with pytest.raises(onnx.checker.ValidationError, match="No Op registered for"):
        onnx.checker.check_model(qir.to_onnx(lenet), check_custom_domain=True)


# ---------------------------------------------------------------------------------------------
# one clear error per bad file


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _load_error(tmp_path / "absent.qir")
    assert "no such file" in _load_error(tmp_path)  # a directory


def test_unreadable_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.qir"
    path.write_bytes(b"x")

    def denied(self: Path) -> bytes:  # chmod 000 does not stop root, so fake it
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert "Permission denied" in _load_error(path)


def test_unusable_path(tmp_path: Path) -> None:
    _load_error(tmp_path / ("a" * 5000 + ".qir"))  # ENAMETOOLONG from stat()


def test_cut_before_hash(qir_bytes: bytes, tmp_path: Path) -> None:
    """A cut exactly at a field boundary parses: the missing hash is what gives it away."""
    model = _parse(qir_bytes)
    del model.metadata_props[len(model.metadata_props) - 1]
    unsigned = model.SerializeToString()
    assert qir_bytes.startswith(unsigned)
    assert "no content hash" in _load_error(tmp_path / "cut.qir", unsigned)


def test_empty_file(tmp_path: Path) -> None:
    assert "not a .qir file" in _load_error(tmp_path / "empty.qir", b"")


@pytest.mark.parametrize("cut", [1, 2, 10, 100, 0.25, 0.5, 0.9, -100, -66, -65, -64, -2, -1])
def test_truncated_file(qir_bytes: bytes, tmp_path: Path, cut: float) -> None:
    n = len(qir_bytes)
    end = int(cut * n) if isinstance(cut, float) else cut % n
    assert 0 < end < n
    msg = _load_error(tmp_path / "cut.qir", qir_bytes[:end])
    assert any(s in msg for s in ("truncated", "not a .qir", "content hash")), msg


@pytest.mark.parametrize("size", [1, 7, 100, 10_000])
def test_random_bytes(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    _load_error(tmp_path / "noise.qir", data)


def _add_model() -> onnx.ModelProto:
    x, y = (helper.make_tensor_value_info(t, TensorProto.FLOAT, ["N", 2]) for t in "xy")
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_foreign_onnx_model(tmp_path: Path) -> None:
    msg = _load_error(tmp_path / "add.onnx", _add_model().SerializeToString())
    assert "not a .qir file" in msg and qir.KEY_VERSION in msg


def test_foreign_onnx_model_dressed_as_qir(qir_bytes: bytes, tmp_path: Path) -> None:
    """Right properties and hash, but ONNX's own Add op and float tensors."""
    model = _add_model()
    model.metadata_props.extend(_parse(qir_bytes).metadata_props)
    msg = _load_error(tmp_path / "add.qir", _resign(model))
    assert "malformed" in msg and "unknown op" in msg and "Add" in msg


@pytest.mark.parametrize("version", ["99", "4", "9" * 9])
def test_future_version(qir_bytes: bytes, tmp_path: Path, version: str) -> None:
    model = _parse(qir_bytes)
    _prop(model, qir.KEY_VERSION).value = version
    msg = _load_error(tmp_path / "future.qir", _resign(model))
    assert f"format version {version!r}" in msg and "upgrade qcompile" in msg
    assert "hash" not in msg


@pytest.mark.parametrize("version", ["1", "2"])
def test_contract_v0_refused(qir_bytes: bytes, tmp_path: Path, version: str) -> None:
    """Formats 1 and 2 held numeric contract v0 (16-bit LUTs): one line with the way out."""
    model = _parse(qir_bytes)
    _prop(model, qir.KEY_VERSION).value = version
    msg = _load_error(tmp_path / "v0.qir", _resign(model))
    assert f"format version {version}" in msg and "contract v0" in msg
    assert "qcompile freeze" in msg


@pytest.mark.parametrize("version", ["0", "²", "9" * 5000, "", "1.0", "-1", " 1", "v1"])
def test_invalid_version(qir_bytes: bytes, tmp_path: Path, version: str) -> None:
    model = _parse(qir_bytes)
    _prop(model, qir.KEY_VERSION).value = version
    msg = _load_error(tmp_path / "bad.qir", _resign(model))
    assert f"invalid .qir format version {clip(repr(version), 40)}" in msg  # clipped
    assert "hash" not in msg and "upgrade" not in msg


def test_hash_not_last(qir_bytes: bytes, tmp_path: Path) -> None:
    model = _parse(qir_bytes)
    model.metadata_props.add(key="added.later", value="x")
    msg = _load_error(tmp_path / "appended.qir", model.SerializeToString())
    assert "no content hash as its last property" in msg


def test_tampered_multiplier(qir_bytes: bytes, tmp_path: Path) -> None:
    model = _parse(qir_bytes)
    name = f"{_first(model, 'dense').name}.mult"
    mult = _init(model, name).copy()
    mult[0] += 1
    _set_init(model, name, mult)
    msg = _load_error(tmp_path / "tampered.qir", model.SerializeToString())
    assert "does not match its content hash" in msg
    assert _outcome(_resign(model))[0] == "loaded"  # the change itself is harmless


def _zero_size(m: onnx.ModelProto) -> str:
    n = _first(m, "dense")
    zero = _init(m, f"{n.name}.zero")
    _set_init(m, f"{n.name}.zero", np.resize(zero, 2 if zero.size != 2 else 3))
    return n.name


def _code_range(m: onnx.ModelProto) -> str:
    n = _padded(m)
    codes = _init(m, f"{n.name}.codes").copy()
    codes[-1] |= np.uint32(0x80000000)
    _set_init(m, f"{n.name}.codes", codes)
    return n.name


def _zero_magnitude(m: onnx.ModelProto) -> str:
    n = _first(m, "dense")
    zero = _init(m, f"{n.name}.zero").copy()
    zero[0] = 1 << 40
    _set_init(m, f"{n.name}.zero", zero)
    return n.name


def _bias_size(m: onnx.ModelProto) -> str:
    n = _first(m, "conv2d")
    _set_init(m, f"{n.name}.bias", _init(m, f"{n.name}.bias")[1:].copy())
    return n.name


def _acc_bits(m: onnx.ModelProto) -> str:
    n = _first(m, "dense")
    _attr(n, "acc_bits").i = 4
    return n.name


def _clip(m: onnx.ModelProto) -> str:
    n = _first(m, "conv2d")
    _attr(n, "clip").ints[1] = 1 << _attr(n, "out_bits").i
    return n.name


def _undefined_input(m: onnx.ModelProto) -> str:
    n = _first(m, "maxpool")
    n.input[0] = "ghost"
    return n.name


def _output_shape(m: onnx.ModelProto) -> str:
    n = _first(m, "maxpool")
    v = next(v for v in m.graph.value_info if v.name == n.output[0])
    v.type.tensor_type.shape.dim[1].dim_value += 1
    return n.name


def _duplicate_node(m: onnx.ModelProto) -> str:
    n = _first(m, "flatten")
    m.graph.node.append(n)
    return n.name


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (_zero_size, "levels have"),
        (_code_range, "bits set outside any code"),
        (_zero_magnitude, "beyond int8"),
        (_bias_size, "bias has"),
        (_acc_bits, "accumulator needs"),
        (_clip, "exceeds the output type"),
        (_undefined_input, "ghost is not defined"),
        (_output_shape, "output shape"),
        (_duplicate_node, "duplicate node name"),
    ],
)
def test_bad_graph_with_valid_hash(
    qir_bytes: bytes, tmp_path: Path, mutate: Callable[[onnx.ModelProto], str], expect: str
) -> None:
    model = _parse(qir_bytes)
    node = mutate(model)
    msg = _load_error(tmp_path / "bad.qir", _resign(model))
    assert "fails verification" in msg and f"node {node}" in msg and expect in msg, msg


def _missing_attr(m: onnx.ModelProto) -> None:
    n = _first(m, "dense")
    n.attribute.remove(_attr(n, "acc_bits"))


def _codes_dtype(m: onnx.ModelProto) -> None:
    n = _first(m, "dense")
    _set_init(m, f"{n.name}.codes", _init(m, f"{n.name}.codes").astype(np.int64))


def _missing_codes(m: onnx.ModelProto) -> None:
    n = _first(m, "dense")
    m.graph.initializer.remove(next(t for t in m.graph.initializer if t.name == n.input[1]))


def _input_spec(m: onnx.ModelProto) -> None:
    _prop(m, qir.KEY_INPUT).value = '{"bits": 8'


def _input_spec_type(m: onnx.ModelProto) -> None:
    p = _prop(m, qir.KEY_INPUT)
    p.value = json.dumps({**json.loads(p.value), "bits": 8.0})


def _meta(m: onnx.ModelProto) -> None:
    _prop(m, qir.KEY_META).value = '{"epochs": 3}'


def _scale(m: onnx.ModelProto) -> None:
    _attr(_first(m, "dense"), "out_scale").s = b"nan"


def _unknown_op(m: onnx.ModelProto) -> None:
    _first(m, "maxpool").op_type = "minpool"


def _no_value_info(m: onnx.ModelProto) -> None:
    del m.graph.value_info[:]


@pytest.mark.parametrize(
    "mutate",
    [
        _missing_attr,
        _codes_dtype,
        _missing_codes,
        _input_spec,
        _input_spec_type,
        _meta,
        _scale,
        _unknown_op,
        _no_value_info,
    ],
)
def test_malformed_with_valid_hash(
    qir_bytes: bytes, tmp_path: Path, mutate: Callable[[onnx.ModelProto], None]
) -> None:
    model = _parse(qir_bytes)
    mutate(model)
    assert "is malformed" in _load_error(tmp_path / "bad.qir", _resign(model))


def _zero_int64_min(m: onnx.ModelProto) -> None:
    # np.abs(int64 min) is negative, and an even number of -2^63 terms sums to 0 in int64:
    # bounds must be computed on Python ints
    n = _first(m, "dense")
    assert _attr(n, "weight_shape").ints[1] % 2 == 0
    zero = _init(m, f"{n.name}.zero")
    _set_init(m, f"{n.name}.zero", np.full_like(zero, np.iinfo(np.int64).min))


def _input_step(m: onnx.ModelProto) -> None:
    p = _prop(m, qir.KEY_INPUT)
    p.value = json.dumps({**json.loads(p.value), "step": 0.0})


@pytest.mark.parametrize(
    "mutate",
    [
        _zero_int64_min,
        _input_step,
    ],
)
def test_closed_verify_gaps(
    qir_bytes: bytes, tmp_path: Path, mutate: Callable[[onnx.ModelProto], None]
) -> None:
    """Re-hashed files whose graph could not run correctly (zero points of int64 min, whose
    abs() wraps negative; an input step of 0) are refused."""
    model = _parse(qir_bytes)
    mutate(model)
    _load_error(tmp_path / "bad.qir", _resign(model))


# ---------------------------------------------------------------------------------------------
# fuzzing


def _mutate(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    """One to three random edits of ``data``: byte and bit flips, truncation, insertion,
    deletion, duplicated or swapped chunks, protobuf-significant bytes."""
    out = bytearray(data)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        n = len(out)
        if n == 0:
            out += b"\x00"
            continue
        kind = str(rng.choice(["flip", "bit", "cut", "insert", "delete", "dup", "swap", "magic"]))
        at = int(rng.integers(0, n))
        span = int(rng.integers(1, 65))
        if kind == "flip":
            for i in rng.integers(0, n, int(rng.integers(1, 9))):
                out[i] ^= int(rng.integers(1, 256))
        elif kind == "bit":
            out[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
        elif kind == "delete":
            del out[at : at + span]
        elif kind == "dup":
            src = int(rng.integers(0, n))
            out[at:at] = out[src : src + span]
        elif kind == "swap":
            b = int(rng.integers(0, n))
            lo, hi = sorted((at, b))
            if hi - lo >= span:
                out[lo : lo + span], out[hi : hi + span] = out[hi : hi + span], out[lo : lo + span]
        else:
            out[at] = int(rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        done.append(f"{kind}@{at}+{span}")
    return bytes(out), ", ".join(done)


def test_fuzz_1000_mutated_files(qir_bytes: bytes, lenet: Graph) -> None:
    """The acceptance figure: 1000 mutated copies of a real .qir (fixed seed), each a clean
    QCompileError or a verified graph. Thanks to the content hash, a mutant that loads can
    only be one that re-encodes the same model, so it must also be the same graph."""
    rng = np.random.default_rng(20240611)
    seen: Counter[str] = Counter()
    start = time.perf_counter()
    for case in range(1000):
        data, how = _mutate(rng, qir_bytes)
        if data == qir_bytes:
            seen["unchanged"] += 1
            continue
        where = f"fuzz-case-{case}"
        try:
            result, graph = _outcome(data, where)
        except Exception as e:  # anything but QCompileError is a bug: say which mutant
            raise AssertionError(f"case {case} ({how}): {type(e).__name__}: {e}") from e
        seen[result] += 1
        if graph is not None:
            _assert_same_graph(lenet, graph)
    elapsed = time.perf_counter() - start
    print(f"1000 mutants in {elapsed:.2f}s: {dict(seen)}")
    assert seen["rejected"] >= 900, seen
    assert elapsed < 15


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _outcome(data)


@FUZZ
@given(data=st.data())
def test_fuzz_edits(qir_bytes: bytes, lenet: Graph, data: st.DataObject) -> None:
    """Byte-level edits of a real file (hypothesis shrinks a failure to the smallest edit)."""
    out = bytearray(qir_bytes)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, max(len(out) - 1, 0)))
        kind = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if kind == "replace":
            b = data.draw(st.binary(min_size=1, max_size=8))
            out[at : at + len(b)] = b
        elif kind == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=32))
        elif kind == "delete":
            del out[at : at + data.draw(st.integers(1, 64))]
        else:
            del out[at:]
    _, graph = _outcome(bytes(out))
    if graph is not None:
        _assert_same_graph(lenet, graph)


INT64 = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([1 << 31, 1 << 32, 1 << 53, 1 << 62, -(1 << 31), -(1 << 63), (1 << 63) - 1]),
    st.integers(-(1 << 63), (1 << 63) - 1),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_resigned_edits(qir_bytes: bytes, data: st.DataObject) -> None:
    """Edits of attributes, initializers, shapes and properties, re-signed so that they reach
    ``_from_onnx`` and ``verify``: each file still is a QCompileError or a verified graph."""
    model = _parse(qir_bytes)
    g = model.graph
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["attr", "init", "dim", "spec", "node"]))
        if kind == "attr":
            node = data.draw(st.sampled_from(list(g.node)))
            a = data.draw(st.sampled_from(list(node.attribute)))
            if a.type == onnx.AttributeProto.INT:
                a.i = data.draw(INT64)
            elif a.type == onnx.AttributeProto.INTS and len(a.ints):
                a.ints[data.draw(st.integers(0, len(a.ints) - 1))] = data.draw(INT64)
            elif a.type == onnx.AttributeProto.STRING:
                a.s = data.draw(st.sampled_from([b"0", b"-1", b"inf", b"nan", b"1e400", b"\xff"]))
        elif kind == "init":
            t = data.draw(st.sampled_from(list(g.initializer)))
            arr = numpy_helper.to_array(t).copy()
            flat = arr.reshape(-1)
            i = data.draw(st.integers(0, flat.size - 1))
            if arr.dtype == np.uint32:
                flat[i] = data.draw(st.integers(0, (1 << 32) - 1))
            else:
                flat[i] = data.draw(INT64)
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
        elif kind == "dim":
            v = data.draw(st.sampled_from([*g.input, *g.output, *g.value_info]))
            dims = v.type.tensor_type.shape.dim
            dims[data.draw(st.integers(0, len(dims) - 1))].dim_value = data.draw(INT64)
        elif kind == "spec":
            p = _prop(model, qir.KEY_INPUT)
            spec = json.loads(p.value)
            key = data.draw(st.sampled_from(sorted(spec)))
            spec[key] = data.draw(
                st.one_of(INT64, st.floats(), st.none(), st.booleans(), st.text(max_size=3))
            )
            p.value = json.dumps(spec)
        else:
            i = data.draw(st.integers(0, len(g.node) - 1))
            what = data.draw(st.sampled_from(["drop", "copy", "op", "input"]))
            if what == "drop":
                del g.node[i]
            elif what == "copy":
                g.node.append(g.node[i])
            elif what == "op":
                g.node[i].op_type = data.draw(st.sampled_from([*qir.OPS, "Add", ""]))
            elif len(g.node[i].input):
                names = [o for n in g.node for o in n.output] + [t.name for t in g.initializer]
                g.node[i].input[0] = data.draw(st.sampled_from([*names, "input", "ghost"]))
    _outcome(_resign(model))
