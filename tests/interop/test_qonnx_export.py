"""``qcompile export --target qonnx``: graphs built to reach every path of the exporter (each
op, tables, per-channel multipliers and widths, float64 requantization, saturation windows,
wide convolution inputs split into digits, channel groups) execute under qonnx's executor
exactly as the simulator computes them; qonnx's cleanup keeps them exact."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qcompile.errors import QCompileError
from qcompile.interop.qonnx_export import save_qonnx, to_qonnx
from qcompile.ir import (
    Add,
    Affine,
    AvgPool,
    Clip,
    Conv2d,
    Dense,
    Flatten,
    Graph,
    InputQuant,
    MaxPool,
    QType,
    Table,
    TensorInfo,
    Weights,
)
from tests.interop.helpers import (
    assert_export_exact,
    exported_ints,
    float_inputs,
    passthrough,
    simulated,
    sized,
)

RNG = np.random.default_rng(7)


def _affine(shape: tuple[int, ...], bits: int) -> Weights:
    codes = RNG.integers(0, 1 << bits, shape).astype(np.uint8)
    top = 1 << bits  # zero points keep every weight an int8
    zero = RNG.integers(max(-128, -top), min(0, 128 - top) + 1, shape[0]).astype(np.int64)
    return Weights(bits, shape, codes, False, Affine(1, zero)).pack()


def _bias(c: int, bits: int) -> tuple[int, ...]:
    return tuple(int(v) for v in RNG.integers(-(1 << bits), 1 << bits, c))


def _mlp_tables() -> Graph:
    """Non-uniform int8 tables per channel with per-channel widths, per-channel and negative
    multipliers, a 1-bit +-1 layer, a logits tensor wider than float32 holds."""
    x = TensorInfo("input", (12,), QType(8, True), 0.01)
    iq = InputQuant(8, -1.28, 0.01, -128)
    widths = tuple(int(b) for b in RNG.integers(1, 4, 6))
    widths = (3, *widths[1:-1], 1)
    codes = np.stack([RNG.integers(0, 1 << b, 12) for b in widths]).astype(np.uint8)
    table = RNG.integers(-127, 128, (6, 8)).astype(np.int64)
    w1 = Weights(3, (6, 12), codes, False, Table(table), widths)
    mults = tuple(int(m) for m in RNG.integers(1, 1 << 15, 6) * RNG.choice([-1, 1], 6))
    h = sized("h", Dense(), [x], w1.pack(), shift=20, mult=mults, out=QType(4, False),
              bias=_bias(6, 24))  # fmt: skip
    bwn = Weights(1, (5, 6), RNG.integers(0, 2, (5, 6)).astype(np.uint8), False,
                  Affine(2, np.array([-1])))  # fmt: skip
    y = sized("y", Dense(), [h.output], bwn.pack(), mult=(1 << 30) - 3, scale=0.5)
    assert max(abs(v) for v in y.output.qtype.range) > 1 << 24  # float64 path
    return Graph("tables", x, iq, (h, y), ("y",))


def _cnn() -> Graph:
    """Strided/padded/dilated/grouped convolutions, a padded max pool (padding never wins), a
    3x3 average pool (zero padding counted), a residual add with unequal multipliers, a
    ReLU6-style clip, flatten, dense."""
    x = TensorInfo("input", (3, 9, 9), QType(8, False), 1 / 64)
    iq = InputQuant(8, 0.0, 1 / 64, 0)
    c1 = sized("c1", Conv2d((2, 2), (1, 1), (1, 1), 1), [x], _affine((8, 3, 3, 3), 4),
               shift=9, mult=301, out=QType(4, False), bias=_bias(8, 9))  # fmt: skip
    dw = sized("dw", Conv2d((1, 1), (2, 2), (2, 2), 8), [c1.output], _affine((8, 1, 3, 3), 2),
               shift=3, mult=tuple(range(5, 13)), out=QType(5, True))  # fmt: skip
    mp = passthrough("mp", MaxPool((3, 3), (1, 1), (1, 1)), dw.output)
    av = sized("av", AvgPool((3, 3), (1, 1), (1, 1)), [c1.output], out=QType(8, False))
    add = sized("add", Add((3, -2)), [mp.output, av.output], shift=2, mult=5, out=QType(6, True),
                bias=_bias(8, 4))  # fmt: skip
    relu6 = sized("relu6", Clip(), [add.output], shift=1, mult=3, out=QType(6, True), clip=(0, 23))
    flat = passthrough("flat", Flatten(), relu6.output)
    fc = sized("fc", Dense(), [flat.output], _affine((10, flat.output.shape[0]), 3), scale=0.25,
               bias=_bias(10, 12))  # fmt: skip
    nodes = (c1, dw, mp, av, add, relu6, flat, fc)
    return Graph("cnn", x, iq, tuple(n for n in nodes), ("fc",))


def _wide_conv() -> Graph:
    """A convolution of a wide (26-bit) tensor, whose input is split into exact digits and
    whose ``acc * m`` passes 2^53 (clamped to its saturation window first); a 7x7 one of
    8-bit x int8 over 256 channels, split into channel groups."""
    x = TensorInfo("input", (4, 7, 7), QType(8, False), 1.0)
    iq = InputQuant(8, 0.0, 1.0, 0)
    wide = sized("wide", Conv2d(), [x], _affine((256, 4, 1, 1), 8), bias=_bias(256, 28),
                 mult=tuple(int(v) for v in RNG.integers(1000, 4000, 256)))  # fmt: skip
    assert wide.output.qtype.bits > 25
    extremes = RNG.choice(np.array([0, 255], np.uint8), (6, 256, 7, 7))  # |w| ~ 128
    big = Weights(8, (6, 256, 7, 7), extremes, False, Affine(1, np.array([-128]))).pack()
    ones = RNG.choice(np.array([0, 255], np.uint8), (6, 256, 1, 1))
    small = Weights(8, (6, 256, 1, 1), ones, False, Affine(1, np.array([-128]))).pack()
    c2 = sized("c2", Conv2d(), [wide.output], small, shift=44, mult=(1 << 14) + 7,
               out=QType(8, True))  # fmt: skip
    narrow = sized("narrow", Clip(), [wide.output], shift=14, out=QType(8, False))
    groups = sized("groups", Conv2d((1, 1), (3, 3)), [narrow.output], big, shift=24,
                   mult=1 << 10, out=QType(8, True))  # fmt: skip
    return Graph("wide", x, iq, (wide, c2, narrow, groups), ("c2", "groups"))


def _cleaned(model: onnx.ModelProto) -> onnx.ModelProto:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    return cleanup_model(ModelWrapper(model)).model


@pytest.mark.parametrize("build", [_mlp_tables, _cnn, _wide_conv], ids=["tables", "cnn", "wide"])
def test_export_executes_exactly_under_qonnx(build) -> None:
    graph = build()
    x = float_inputs(graph.input.shape, 24)
    model = assert_export_exact(graph, x)
    cleaned = _cleaned(model)  # qonnx's own cleanup (constant folding, renaming) keeps it exact
    for got, ref in zip(
        exported_ints(_with_units(cleaned, model), x), simulated(graph, x), strict=True
    ):
        assert np.array_equal(got, ref)


def _with_units(cleaned: onnx.ModelProto, model: onnx.ModelProto) -> onnx.ModelProto:
    del cleaned.metadata_props[:]
    cleaned.metadata_props.extend(model.metadata_props)
    return cleaned


def test_export_uses_quant_nodes_and_keeps_tables() -> None:
    model = to_qonnx(_mlp_tables())
    ops = [n.op_type for n in model.graph.node]
    assert {"Quant", "BipolarQuant", "GatherElements"} <= set(ops)
    wide = {n.op_type for n in to_qonnx(_wide_conv()).graph.node}
    assert {"Floor", "Slice", "Max", "Min"} <= wide  # digits, channel groups, window
    quant = [n for n in model.graph.node if n.op_type == "Quant"]
    assert all(n.domain == "qonnx.custom_op.general" for n in quant)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # batch 1 default


def test_save_refuses_existing_file_without_force(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    save_qonnx(_cnn(), path)
    with pytest.raises(QCompileError, match="already exists"):
        save_qonnx(_cnn(), path)
    save_qonnx(_cnn(), path, batch=2, force=True)
    assert onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    with pytest.raises(QCompileError, match="batch"):
        to_qonnx(_cnn(), batch=0)
    with pytest.raises(QCompileError, match="cannot write"):
        save_qonnx(_cnn(), path / "under_a_file.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # nothing half-written
