"""``qcompile import`` on hand-written QONNX graphs: every rounding mode the integer contract
represents imports exactly (checked against qonnx's executor); everything it cannot represent
exactly is refused with one line naming the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompile.errors import QCompileError
from qcompile.interop.qonnx_import import import_qonnx
from qcompile.interop.qonnx_run import integers, run_qonnx
from tests.interop.helpers import float_inputs, simulated

DOMAIN = "qonnx.custom_op.general"
RNG = np.random.default_rng(5)


class Model:
    """input [1, 6] -> Quant (signed 8-bit, 2^-4) -> Gemm (4-bit weights, Int32-style bias)
    -> Relu -> Quant (``act``) -> output, with hooks to change any part."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value: np.ndarray | float) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name, domain=domain, **attrs))
        return name

    def quant(self, x: str, scale, zero, bits, name: str, signed=1, narrow=0, mode="ROUND") -> str:
        ins = [x, self.const(scale), self.const(zero), self.const(bits)]
        return self.node(
            "Quant", ins, name, DOMAIN, signed=signed, narrow=narrow, rounding_mode=mode
        )

    def save(self, path: Path, out: str, n_in: int = 6, n_out: int = 5) -> Path:
        graph = helper.make_graph(
            self.nodes, "m",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, n_out])],
            self.inits,
        )  # fmt: skip
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
        onnx.save(helper.make_model(graph, opset_imports=opsets), path)
        return path


def mlp(
    path: Path,
    w_scale: float | np.ndarray = 0.25,
    w_bits: int = 4,
    bias: str = "quant",
    act: dict | None = None,
    between: str | None = None,
    x_zero: float = 0.0,
) -> Path:
    """The :class:`Model` MLP; ``between``: an op inserted between Gemm and Relu."""
    m = Model()
    xq = m.quant("x", 2.0**-4, x_zero, 8, "in_q")
    w = RNG.normal(0, 1, (5, 6)).astype(np.float32)
    wq = m.quant(m.const(w), w_scale, 0.0, w_bits, "w_q", narrow=1)
    b = RNG.normal(0, 1, 5).astype(np.float32)
    acc_scale = 2.0**-4 * np.asarray(w_scale).reshape(-1)
    if bias == "quant":
        bq = [m.quant(m.const(b), acc_scale, 0.0, 32, "b_q")]
    elif bias == "float":
        bq = [m.const(b)]
    else:
        bq = []
    y = m.node("Gemm", [xq, wq, *bq], "gemm", transB=1)
    if between == "BatchNormalization":
        ps = [m.const(np.full(5, v, np.float32)) for v in (1.1, 0.2, 0.3, 1.7)]
        y = m.node("BatchNormalization", [y, *ps], "bn")
    elif between:
        y = m.node(between, [y], "extra")
    y = m.node("Relu", [y], "relu")
    a = {"scale": 0.5, "zero": 0.0, "bits": 4, "signed": 0, "mode": "FLOOR", **(act or {})}
    m.quant(y, a["scale"], a["zero"], a["bits"], "act_q", signed=a["signed"], mode=a["mode"])
    return m.save(path, "act_q")


def assert_imports_exactly(path: Path) -> None:
    graph, _ = import_qonnx(path)
    x = float_inputs(graph.input.shape, 512, spread=4.0)
    source = run_qonnx(onnx.load(path), x)[0]
    unit = graph.tensors()[graph.outputs[0]].unit
    assert np.array_equal(integers(source, unit), simulated(graph, x)[0])


@pytest.mark.parametrize(
    "act",
    [
        {"mode": "FLOOR"},
        {"mode": "CEIL"},
        {"mode": "HALF_UP"},  # unsigned: half away from zero is half up
        {"mode": "HALF_DOWN"},
        {"mode": "DOWN"},
        {"mode": "UP"},
        {"mode": "FLOOR", "signed": 1, "bits": 5},
        {"mode": "FLOOR", "zero": 3.0},  # an integer zero point
        {"mode": "ROUND", "scale": 2.0**-6},  # no ties: the rescale is an integer
    ],
    ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()),
)
def test_representable_rounding_imports_exactly(tmp_path, act) -> None:
    assert_imports_exactly(mlp(tmp_path / "m.onnx", act=act))


def test_per_channel_weight_scales_and_no_bias_import_exactly(tmp_path) -> None:
    scales = (2.0 ** -RNG.integers(1, 5, (5, 1))).astype(np.float32)
    assert_imports_exactly(mlp(tmp_path / "m.onnx", w_scale=scales, bias="none"))


REFUSED = [
    ({"w_scale": 0.1}, r"node w_q .*round in float32"),
    ({"act": {"scale": 0.3}}, r"node act_q .*not an integer times 2\^-k"),
    ({"act": {"mode": "ROUND"}}, r"node act_q .*half to even"),
    ({"act": {"mode": "FLOOR", "signed": 1, "bits": 5, "zero": 0.0, "scale": 0.5}}, None),
    ({"act": {"mode": "DOWN", "signed": 1, "bits": 5}}, r"node act_q .*DOWN"),
    ({"act": {"scale": np.full((1, 5), 0.5)}}, r"node act_q .*per-channel"),
    ({"act": {"zero": 0.5}}, r"node act_q .*integer zero point"),
    ({"w_bits": 10}, r"node gemm .*10-bit weights"),
    ({"between": "Sigmoid"}, r"node extra \(Sigmoid\): unsupported"),
    ({"between": "BatchNormalization"}, r"node bn \(BatchNormalization\).*fold"),
    ({"x_zero": 3.0}, r"node in_q .*input quantizer"),
]


@pytest.mark.parametrize(("kwargs", "match"), REFUSED, ids=[m or "ok" for _, m in REFUSED])
def test_unrepresentable_models_are_refused_naming_the_node(tmp_path, kwargs, match) -> None:
    path = mlp(tmp_path / "m.onnx", **kwargs)
    if match is None:  # a control: signed FLOOR output is fine
        assert_imports_exactly(path)
        return
    with pytest.raises(QCompileError, match=match) as e:
        import_qonnx(path)
    assert "\n" not in str(e.value)


def test_float_weights_and_unquantized_inputs_are_refused(tmp_path) -> None:
    m = Model()
    xq = m.quant("x", 2.0**-4, 0.0, 8, "in_q")
    m.node("Gemm", [xq, m.const(np.ones((5, 6)))], "gemm", transB=1)
    with pytest.raises(QCompileError, match=r"node gemm .*float \(no Quant"):
        import_qonnx(m.save(tmp_path / "w.onnx", "gemm"))
    m = Model()
    wq = m.quant(m.const(np.ones((5, 6))), 1.0, 0.0, 2, "w_q", narrow=1)
    m.node("Gemm", ["x", wq], "gemm", transB=1)
    with pytest.raises(QCompileError, match="graph input x must go straight into one Quant"):
        import_qonnx(m.save(tmp_path / "x.onnx", "gemm"))


def test_unreadable_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(QCompileError, match="no such file"):
        import_qonnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not a model")
    with pytest.raises(QCompileError, match="not a readable ONNX model"):
        import_qonnx(tmp_path / "junk.onnx")


def test_float_bias_imports_exactly_and_notes_where_float32_rounds(tmp_path) -> None:
    """A float bias is an exact dyadic value: it imports (at a finer requant shift), and the
    notes say qonnx's float32 Gemm rounds when it adds it."""
    graph, notes = import_qonnx(mlp(tmp_path / "m.onnx", bias="float"))
    assert graph.nodes[0].requant.shift > 20
    assert len(notes) == 1 and notes[0].startswith("node gemm (Gemm): qonnx computes it in float32")
