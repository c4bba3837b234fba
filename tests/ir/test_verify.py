"""``qcompile.ir.verify`` and the IR constructors: a valid hand-made graph passes; each broken
rule is rejected with a message naming the node and the rule."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from qcompile.ir import (
    MAX_ACC_BITS,
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
    Node,
    QType,
    Requant,
    Table,
    TensorInfo,
    VerifyError,
    Weights,
    ops,
    verify,
)
from qcompile.ir.graph import Op
from qcompile.ir.packing import pack_codes
from qcompile.ir.verify import MAX_PRODUCT_BITS
from qcompile.sim import Simulator
from qcompile.sim.reference import FrozenTorch

INT8 = QType(8, True)
UINT8 = QType(8, False)
X = TensorInfo("x", (2, 6, 6), INT8, 0.1)
IQ = InputQuant(8, -12.8, 0.1, -128)


def _weights(shape: tuple[int, ...], bits: int, rows: int, seed: int) -> Weights:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << bits, shape, dtype=np.uint8)
    table = Table(rng.integers(-100, 101, (rows, 1 << bits), dtype=np.int64))
    return Weights(bits, shape, codes, False, table)


class _Net:
    """Builds nodes in order, sizing each accumulator from its inputs' ranges as freeze does."""

    def __init__(self) -> None:
        self.known = {X.name: X}
        self.nodes: list[Node] = []

    def add(
        self,
        name: str,
        op: Op,
        inputs: tuple[str, ...],
        qtype: QType | None = None,
        w: Weights | None = None,
        shift: int = 0,
        mult: int | tuple[int, ...] = 1,
        clip: tuple[int, int] | None = None,
        bias: tuple[int, ...] | None = None,
    ) -> None:
        srcs = [self.known[i] for i in inputs]
        probe = Node(name, op, inputs, srcs[0], w, Requant(shift, 0, 0, 64, mult, bias))
        shape = ops.infer_shape(probe, [s.shape for s in srcs])
        if probe.kind in ("maxpool", "flatten"):
            out = TensorInfo(name, shape, srcs[0].qtype, srcs[0].scale)
            node = Node(name, probe.op, inputs, out)
        else:
            ranges = [s.qtype.range for s in srcs]
            if qtype is None:  # wide: the whole shifted range
                qtype = QType.fitting(*ops.shifted_range(probe, ranges))
            lo, hi = clip or qtype.range
            bits = ops.acc_bits_needed(probe, ranges)
            out = TensorInfo(name, shape, qtype)
            node = Node(name, probe.op, inputs, out, w, Requant(shift, lo, hi, bits, mult, bias))
        self.known[name] = node.output
        self.nodes.append(node)


def valid_graph() -> Graph:
    """x int8 [2,6,6] -> conv 3x3 (4-bit per-channel table, bias, per-channel multipliers)
    -> maxpool -> depthwise conv (2-bit per-layer table) -> residual add -> avgpool -> clip ->
    flatten -> dense (3-bit, packed) -> logits."""
    n = _Net()
    conv = _weights((4, 2, 3, 3), 4, 4, 0)
    bias = (-30000, 500000, 70, -1)
    n.add(
        "conv", Conv2d(padding=(1, 1)), ("x",), UINT8, conv, 16, (700, 9000, 1, 40000), None, bias
    )
    n.add("pool", MaxPool((2, 2), (2, 2)), ("conv",))
    dw = _weights((4, 1, 3, 3), 2, 1, 1)
    n.add("dw", Conv2d(padding=(1, 1), groups=4), ("pool",), UINT8, dw, 7, clip=(0, 200))
    n.add("res", Add((1, 3)), ("pool", "dw"))
    n.add("avg", AvgPool((3, 3), (3, 3)), ("res",))
    n.add("relu", Clip(), ("avg",), QType(12, False), shift=2, mult=3)
    n.add("flat", Flatten(), ("relu",))
    n.add("fc", Dense(), ("flat",), None, _weights((3, 4), 3, 1, 2).pack(), bias=(5, -700, 0))
    return Graph("hand", X, IQ, tuple(n.nodes), ("fc",))


def node_of(g: Graph, name: str) -> Node:
    return next(n for n in g.nodes if n.name == name)


def with_node(g: Graph, name: str, /, **changes: object) -> Graph:
    """``g`` with node ``name``'s fields replaced."""
    return g.replace_nodes(
        [dataclasses.replace(n, **changes) if n.name == name else n for n in g.nodes]
    )


def with_requant(g: Graph, name: str, /, **changes: object) -> Graph:
    return with_node(g, name, requant=dataclasses.replace(node_of(g, name).requant, **changes))


def with_weights(g: Graph, name: str, /, **changes: object) -> Graph:
    return with_node(g, name, weights=dataclasses.replace(node_of(g, name).weights, **changes))


def with_output(g: Graph, name: str, /, **changes: object) -> Graph:
    return with_node(g, name, output=dataclasses.replace(node_of(g, name).output, **changes))


def rejects(g: Graph, node: str | None, fragment: str) -> str:
    """verify(g) raises, naming ``node`` (the message's subject) and ``fragment``."""
    with pytest.raises(VerifyError) as e:
        verify(g)
    msg = str(e.value)
    if node is not None:
        kind = node_of(g, node).kind
        assert msg.startswith(f"node {node} ({kind}): ") or msg.startswith(f"node {node}: "), msg
    assert fragment in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# the valid graph


def test_valid_graph_passes_and_runs() -> None:
    g = valid_graph()
    assert verify(g) is g
    kinds = [n.kind for n in g.nodes]
    assert kinds == [
        "conv2d", "maxpool", "conv2d", "add", "avgpool", "clip", "flatten", "dense",
    ]  # fmt: skip
    assert node_of(g, "fc").weights.packed
    assert all(n.requant.acc_bits <= MAX_ACC_BITS for n in g.nodes if n.requant)
    lo, hi = INT8.range
    x = np.random.default_rng(0).integers(lo, hi + 1, (5, *X.shape))
    x[0], x[1] = lo, hi
    a, b, c = Simulator(g).run(x), Simulator(g, blas=False).run(x), FrozenTorch(g)(x)
    assert a["fc"].shape == (5, 3)
    assert np.array_equal(a["fc"], b["fc"]) and np.array_equal(a["fc"], c["fc"])


def test_declared_width_exactly_the_need_passes() -> None:
    g = valid_graph()
    for n in g.nodes:
        if n.requant is not None:
            need = ops.acc_bits_needed(n, [g.tensors()[t].qtype.range for t in n.inputs])
            assert n.requant.acc_bits == need
    # one bit wider than needed is fine too
    verify(with_requant(g, "conv", acc_bits=node_of(g, "conv").requant.acc_bits + 1))


# ---------------------------------------------------------------------------------------------
# accumulators


@pytest.mark.parametrize("name", ["conv", "dw", "res", "avg", "relu", "fc"])
def test_accumulator_one_bit_too_narrow(name: str) -> None:
    g = valid_graph()
    bits = node_of(g, name).requant.acc_bits
    msg = rejects(with_requant(g, name, acc_bits=bits - 1), name, "(it could overflow)")
    assert f"accumulator needs {bits} bits for inputs in range, declared {bits - 1}" in msg


def test_accumulator_too_narrow_for_a_wider_input_range() -> None:
    """Same weights, same declared width: a 12-bit input makes the conv overflow-prone."""
    g = valid_graph()
    wide_in = TensorInfo("x", X.shape, QType(12, True), 0.1)
    g2 = Graph(g.name, wide_in, InputQuant(12, -204.8, 0.1, -2048), g.nodes, g.outputs)
    msg = rejects(g2, "conv", "(it could overflow)")
    assert f"declared {node_of(g, 'conv').requant.acc_bits}" in msg


def test_multiplier_and_rounding_count_towards_the_product() -> None:
    g = valid_graph()
    relu = node_of(g, "relu")
    ranges = [g.tensors()["avg"].qtype.range]
    acc = ops.acc_bits_needed(relu, ranges)
    bigger = dataclasses.replace(relu.requant, multiplier=1 << 20)
    assert ops.acc_bits_needed(dataclasses.replace(relu, requant=bigger), ranges) == acc
    assert ops.product_bits_needed(dataclasses.replace(relu, requant=bigger), ranges) > acc + 19
    rounder = dataclasses.replace(relu.requant, shift=50)
    assert ops.product_bits_needed(dataclasses.replace(relu, requant=rounder), ranges) == 51


def test_accumulator_above_max_acc_bits() -> None:
    g = valid_graph()
    msg = rejects(with_requant(g, "conv", acc_bits=MAX_ACC_BITS + 1), "conv", "exceeds")
    assert f"accumulator of {MAX_ACC_BITS + 1} bits exceeds {MAX_ACC_BITS}" in msg


def _widen(bits: int) -> tuple[InputQuant, TensorInfo, Node]:
    """A 16-bit input and a clip node that scales it into a ``bits``-bit tensor ``w``."""
    x = TensorInfo("x", (512,), QType(16, True))
    mult = 1 << (bits - 16)
    r = Requant(0, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, 17, mult)
    wide = Node("w", Clip(), ("x",), TensorInfo("w", (512,), QType(bits, True)), None, r)
    return InputQuant(16, 0.0, 1.0, -(1 << 15)), x, wide


def test_accumulator_needing_more_than_max_acc_bits() -> None:
    """512 weights of 127 on a 40-bit tensor need 56 bits: declaring the true need is still
    rejected."""
    iq, x, wide = _widen(40)
    levels = Affine(1, np.array([126], dtype=np.int64))
    w = Weights(1, (1, 512), np.ones((1, 512), dtype=np.uint8), False, levels)
    probe = Node("fc", Dense(), ("w",), wide.output, w, Requant(0, 0, 0, 64))
    need = ops.acc_bits_needed(probe, [wide.output.qtype.range])
    assert need == 56
    out = TensorInfo("fc", (1,), QType(8, True))
    node = Node("fc", Dense(), ("w",), out, w, Requant(0, -128, 127, need))
    g = Graph("g", x, iq, (wide, node), ("fc",))
    rejects(g, "fc", f"accumulator of {need} bits exceeds {MAX_ACC_BITS}")


def test_product_beyond_int64() -> None:
    """A 49-bit accumulator times a 2^20 multiplier needs more than MAX_PRODUCT_BITS."""
    iq, x, wide = _widen(32)
    w = Weights(2, (2, 512), np.ones((2, 512), np.uint8), False, Affine(1, np.array([100])))
    probe = Node("fc", Dense(), ("w",), wide.output, w, Requant(0, 0, 0, 64))
    acc = ops.acc_bits_needed(probe, [wide.output.qtype.range])
    assert acc <= MAX_ACC_BITS
    node = Node("fc", Dense(), ("w",), TensorInfo("fc", (2,), INT8), w,
                Requant(0, -128, 127, acc, (1 << 20, 3)))  # fmt: skip
    g = Graph("g", x, iq, (wide, node), ("fc",))
    bad = rejects(g, "fc", "acc * multiplier + bias + rounding needs")
    assert f"beyond {MAX_PRODUCT_BITS}" in bad


def test_per_channel_multipliers_one_per_channel() -> None:
    g = valid_graph()
    rejects(with_requant(g, "conv", multiplier=(1, 2, 3)), "conv", "3 requant multipliers for 4")
    verify(with_requant(g, "conv", multiplier=(0, 2, 3, 5)))  # a dead channel may have m = 0


# ---------------------------------------------------------------------------------------------
# weights


def test_code_out_of_range() -> None:
    g = valid_graph()
    codes = node_of(g, "conv").weights.data.copy()
    codes[1, 0, 2, 2] = 16  # 4-bit codes are 0..15
    rejects(with_weights(g, "conv", data=codes), "conv", "a code is 16, beyond 4-bit codes")
    codes[1, 0, 2, 2] = 15
    verify(with_weights(g, "conv", data=codes))


def test_packed_words_with_stray_bits() -> None:
    g = valid_graph()
    w = node_of(g, "fc").weights  # 12 3-bit codes, 36 bits: word 0, then bits 0-3 of word 1
    assert w.packed and w.data.shape == (2,)
    for bit in (4, 5, 31):
        data = w.data.copy()
        data[1] |= np.uint32(1 << bit)
        rejects(
            with_weights(g, "fc", data=data), "fc", "packed codes have bits set outside any code"
        )
    for word, bit in [(0, 31), (1, 0), (1, 3)]:  # code 10 straddles words 0-1; code 11
        data = w.data.copy()
        data[word] ^= np.uint32(1 << bit)
        verify(with_weights(g, "fc", data=data))


def test_table_with_wrong_number_of_levels() -> None:
    g = valid_graph()
    table = Table(np.zeros((4, 8), dtype=np.int64))
    rejects(
        with_weights(g, "conv", levels=table),
        "conv",
        "table is [4, 8], must be [1 or 4, 16] for 4-bit codes",
    )


def test_levels_with_wrong_number_of_rows() -> None:
    g = valid_graph()
    table = Table(np.zeros((3, 16), dtype=np.int64))
    rejects(with_weights(g, "conv", levels=table), "conv", "levels have 3 rows, must be 1 or 4")
    verify(with_weights(g, "conv", levels=Table(np.zeros((1, 16), dtype=np.int64))))  # per layer
    zero = Affine(1, np.zeros(2, dtype=np.int64))
    rejects(with_weights(g, "conv", levels=zero), "conv", "levels have 2 rows, must be 1 or 4")


@pytest.mark.parametrize(
    ("levels", "span"),
    [
        (Table(np.array([[0, 1, 2, 128]], dtype=np.int64)), "[0, 128]"),
        (Table(np.array([[-129, 1, 2, 3]], dtype=np.int64)), "[-129, 3]"),
        (Affine(1, np.array([125])), "[125, 128]"),  # 2-bit codes 0..3 + 125
        (Affine(2, np.array([-129])), "[-129, -123]"),
    ],
)
def test_integer_weights_beyond_int8(levels: object, span: str) -> None:
    g = valid_graph()
    rejects(with_weights(g, "dw", levels=levels), "dw", f"integer weights span {span}, beyond int8")
    verify(with_weights(g, "dw", levels=Affine(2, np.array([-3]))))  # -3, -1, 1, 3


def test_wrong_bias_length() -> None:
    g = valid_graph()
    rejects(with_requant(g, "conv", bias=(0, 0, 0)), "conv", "bias has 3 entries for 4 channels")


def test_weighted_op_without_weights() -> None:
    rejects(with_node(valid_graph(), "fc", weights=None), "fc", "dense needs weights")


def test_weights_on_an_op_that_takes_none() -> None:
    g = valid_graph()
    w = node_of(g, "fc").weights
    rejects(with_node(g, "relu", weights=w), "relu", "has weights but its op takes none")


# ---------------------------------------------------------------------------------------------
# shapes, names, wiring


def test_output_shape_mismatch() -> None:
    g = valid_graph()
    rejects(
        with_output(g, "pool", shape=(4, 2, 2)),
        "pool",
        "output shape (4, 2, 2) should be (4, 3, 3)",
    )
    rejects(with_output(g, "fc", shape=(4,)), "fc", "output shape (4,) should be (3,)")


def test_dense_weights_not_matching_the_input() -> None:
    g = valid_graph()
    w = _weights((3, 5), 3, 1, 0)
    rejects(with_node(g, "fc", weights=w), "fc", "dense weights must be [out, 4]")


def test_dense_on_an_image() -> None:
    g = valid_graph()
    rejects(
        with_node(g, "fc", inputs=("relu",)), "fc", "dense needs a flat input, got shape (4, 1, 1)"
    )


def test_window_larger_than_the_input() -> None:
    g = valid_graph()
    rejects(with_node(g, "avg", op=AvgPool((4, 4), (1, 1))), "avg", "a 4-wide window does not fit")


def test_add_of_different_shapes() -> None:
    g = valid_graph()
    rejects(with_node(g, "res", inputs=("pool", "conv")), "res", "add inputs have different shapes")


def test_undefined_input_tensor() -> None:
    g = valid_graph()
    rejects(
        with_node(g, "fc", inputs=("nope",)), "fc", "input nope is not defined before this node"
    )


def test_input_used_before_it_is_defined() -> None:
    g = valid_graph()
    nodes = list(g.nodes)
    nodes[1], nodes[2] = nodes[2], nodes[1]  # dw before the pool it reads
    rejects(g.replace_nodes(nodes), "dw", "input pool is not defined before this node")


def test_duplicate_node_name() -> None:
    g = valid_graph()
    msg = rejects(with_node(g, "dw", name="pool"), None, "duplicate node name")
    assert msg == "node pool: duplicate node name"


def test_tensor_defined_twice() -> None:
    g = valid_graph()
    msg = rejects(with_output(g, "dw", name="pool"), "dw", "tensor pool is defined twice")
    assert msg.startswith("node dw: ")
    rejects(with_output(g, "conv", name="x"), "conv", "tensor x is defined twice")


def test_output_no_node_produces() -> None:
    g = valid_graph()
    bad = Graph(g.name, g.input, g.input_quant, g.nodes, ("fc", "logits"))
    with pytest.raises(VerifyError, match=r"^graph output logits is not produced by any node$"):
        verify(bad)
    none = Graph(g.name, g.input, g.input_quant, g.nodes, ())
    with pytest.raises(VerifyError, match=r"^graph has no outputs$"):
        verify(none)
    # an intermediate tensor, or the input itself, may be an output
    verify(Graph(g.name, g.input, g.input_quant, g.nodes, ("fc", "res", "x")))


def test_graph_input_type_must_hold_the_input_codes() -> None:
    g = valid_graph()
    for iq in [InputQuant(8, 0.0, 0.1, 0), InputQuant(7, -6.4, 0.1, -64)]:
        bad = Graph(g.name, g.input, iq, g.nodes, g.outputs)
        with pytest.raises(VerifyError, match=r"^graph input: type int8 does not hold"):
            verify(bad)


# ---------------------------------------------------------------------------------------------
# ops and types


def test_clip_range_outside_the_output_type() -> None:
    g = valid_graph()
    rejects(with_requant(g, "conv", hi=256), "conv", "clip [0, 256] exceeds the output type uint8")
    rejects(with_requant(g, "conv", lo=-1), "conv", "clip [-1, 255] exceeds the output type uint8")
    rejects(with_requant(g, "relu", hi=4096), "relu", "exceeds the output type uint12")


def test_maxpool_that_changes_type() -> None:
    g = valid_graph()
    rejects(
        with_output(g, "pool", qtype=INT8), "pool", "must keep its input's type uint8 and scale"
    )
    rejects(
        with_output(g, "pool", qtype=QType(8, False, frac=1)), "pool", "must keep its input's type"
    )
    rejects(with_output(g, "pool", scale=0.5), "pool", "must keep its input's type uint8 and scale")


def test_flatten_that_changes_type() -> None:
    g = valid_graph()
    rejects(
        with_output(g, "flat", qtype=QType(13, True)), "flat", "must keep its input's type uint12"
    )


def test_requant_on_a_pass_through_op() -> None:
    g = valid_graph()
    r = Requant(0, 0, 255, 10)
    rejects(
        with_node(g, "pool", requant=r),
        "pool",
        "has requant parameters but its op does not requantize",
    )


def test_requantizing_op_without_requant() -> None:
    rejects(with_node(valid_graph(), "avg", requant=None), "avg", "needs requant parameters")


def test_wrong_arity_of_add() -> None:
    g = valid_graph()
    rejects(with_node(g, "res", op=Add((1, 3, 1))), "res", "takes 3 inputs, got 2")
    rejects(with_node(g, "res", inputs=("pool",) * 3), "res", "takes 2 inputs, got 3")
    rejects(with_node(g, "relu", inputs=("avg", "avg")), "relu", "takes 1 inputs, got 2")


def test_conv_groups_not_dividing_channels() -> None:
    g = valid_graph()
    rejects(
        with_node(g, "dw", op=Conv2d(padding=(1, 1), groups=3)),
        "dw",
        "conv2d weights (4, 1, 3, 3) do not fit 4 input channels in 3 groups",
    )
    # groups divide the input channels, but not the output channels
    w = _weights((6, 1, 3, 3), 2, 1, 1)
    rejects(
        with_node(g, "dw", op=Conv2d(padding=(1, 1), groups=4), weights=w),
        "dw",
        "conv2d weights (6, 1, 3, 3) do not fit 4 input channels in 4 groups",
    )
    # groups divide the channels, but the weights' in/groups is wrong
    rejects(with_node(g, "dw", op=Conv2d(padding=(1, 1), groups=2)), "dw", "in 2 groups")


def test_conv_on_a_flat_input() -> None:
    g = valid_graph()
    rejects(with_node(g, "dw", inputs=("flat",)), "dw", "input flat is not defined")
    nodes = list(g.nodes)
    dw = node_of(g, "dw")
    nodes.append(
        dataclasses.replace(
            dw, name="late", inputs=("flat",), output=dataclasses.replace(dw.output, name="late")
        )
    )
    rejects(g.replace_nodes(nodes), "late", "conv2d needs a [C, H, W] input, got shape (4,)")


# ---------------------------------------------------------------------------------------------
# constructor validation


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"bits": 0, "signed": False}, "QType bits must be 1..64, got 0"),
        ({"bits": 65, "signed": True}, "QType bits must be 1..64, got 65"),
        ({"bits": 8.0, "signed": True}, "QType bits must be 1..64, got 8.0"),
        ({"bits": 1, "signed": True}, "a signed QType needs at least 2 bits"),
        ({"bits": 8, "signed": True, "frac": 65}, "QType frac must be an integer within +-64"),
        ({"bits": 8, "signed": True, "frac": 1.5}, "QType frac must be an integer"),
    ],
)
def test_qtype_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        QType(**kwargs)


def test_qtype_valid_edges() -> None:
    assert QType(1, False).range == (0, 1)
    assert QType(2, True).range == (-2, 1)
    assert QType(64, True).range == (-(1 << 63), (1 << 63) - 1)
    assert QType(8, True, frac=-64).frac == -64
    assert QType.fitting(-1, 0) == QType(2, True)  # the narrowest signed type has 2 bits
    assert QType.fitting(0, 0) == QType(1, False)
    assert QType.fitting(-128, 127, 3) == QType(8, True, 3)
    assert QType.fitting(-129, 0) == QType(9, True)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("", (1,), INT8), "a tensor needs a"),
        (("t", (), INT8), "tensor t: bad shape ()"),
        (("t", (3, 0), INT8), "tensor t: bad shape (3, 0)"),
        (("t", (3, 2.0), INT8), "tensor t: bad shape (3, 2.0)"),
        (("t", (3,), INT8, 0.0), "tensor t: scale must be finite and > 0"),
        (("t", (3,), INT8, -1.0), "tensor t: scale must be finite and > 0"),
        (("t", (3,), INT8, float("inf")), "tensor t: scale must be finite and > 0"),
        (("t", (3,), INT8, float("nan")), "tensor t: scale must be finite and > 0"),
    ],
)
def test_tensor_info_validation(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        TensorInfo(*args)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((-1, 0, 1, 8), "requant shift must be 0..62, got -1"),
        ((63, 0, 1, 8), "requant shift must be 0..62, got 63"),
        ((0, 2, 1, 8), "requant clip needs integers lo <= hi, got 2..1"),
        ((0, 0.0, 1, 8), "requant clip needs integers lo <= hi"),
        ((0, 0, 1, 1), "acc_bits must be 2..64, got 1"),
        ((0, 0, 1, 65), "acc_bits must be 2..64, got 65"),
        ((0, 0, 1, 8, 0), "requant multiplier must be a non-zero integer"),
        ((0, 0, 1, 8, 2.0), "requant multiplier must be a non-zero integer"),
        ((0, 0, 1, 8, 1 << 63), "requant multiplier must be a non-zero integer within 32 bits"),
        ((0, 0, 1, 8, ()), "per-channel requant multipliers must be integers within 32 bits"),
        ((0, 0, 1, 8, (1, 1 << 31)), "per-channel requant multipliers must be integers"),
        ((0, 0, 1, 8, (1, 2.0)), "per-channel requant multipliers must be integers"),
        ((0, 0, 1, 8, 1, ()), "requant bias must be integers within 62 bits"),
        ((0, 0, 1, 8, 1, (1 << 61,)), "requant bias must be integers within 62 bits"),
        ((0, 0, 1, 8, 1, [1, 2]), "requant bias must be integers"),
    ],
)
def test_requant_validation(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Requant(*args)


def test_requant_rounding() -> None:
    assert Requant(0, 0, 1, 8).rounding == 0
    assert Requant(1, 0, 1, 8).rounding == 1
    assert Requant(62, 0, 1, 64).rounding == 1 << 61


def _codes(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


LUT2 = Table(np.zeros((1, 4), dtype=np.int64))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((0, (2, 3), _codes((2, 3)), False, LUT2), "weight bits must be 1..8, got 0"),
        ((9, (2, 3), _codes((2, 3)), False, LUT2), "weight bits must be 1..8, got 9"),
        ((2, (2, 3), _codes((3, 2)), False, LUT2), "codes must be uint8 shaped (2, 3)"),
        ((2, (2, 3), np.zeros((2, 3), np.int64), False, LUT2), "codes must be uint8"),
        ((2, (2, 3), _codes((2, 3)), True, LUT2), "packed codes must be 1 uint32 words"),
        ((2, (2, 3), np.zeros(2, np.uint32), True, LUT2), "packed codes must be 1 uint32"),
        ((2, (20,), np.zeros(1, np.uint32), True, LUT2), "packed codes must be 2 uint32"),
        ((2, (2, 3), _codes((2, 3)), False, np.zeros((1, 4))), "Affine or Table"),
    ],
)
def test_weights_validation(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Weights(*args)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: Table(np.zeros(4, np.int64)), "table entries must be a 2-D array"),
        (lambda: Table(np.zeros((1, 4))), "table entries must be an int64 array"),
        (lambda: Affine(3, np.zeros(1, np.int64)), "affine levels step must be 1 or 2, got 3"),
        (lambda: Affine(1, np.zeros((1, 1), np.int64)), "affine zero points must be a 1-D"),
        (lambda: Affine(1, np.zeros(0, np.int64)), "affine zero points must be a 1-D"),
        (lambda: Affine(1, np.zeros(2)), "affine zero points must be an int64 array"),
    ],
)
def test_levels_validation(make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=re.escape(fragment)):
        make()


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: Conv2d(stride=(0, 1)), "stride must be two integers >= 1, got (0, 1)"),
        (lambda: Conv2d(padding=(-1, 0)), "padding must be two integers >= 0"),
        (lambda: Conv2d(dilation=(1,)), "dilation must be two integers >= 1, got (1,)"),
        (lambda: Conv2d(groups=0), "groups must be >= 1, got 0"),
        (lambda: Add((1,)), "add needs a 32-bit integer multiplier for each of >= 2 inputs"),
        (lambda: Add((1, 0.5)), "add needs a 32-bit integer multiplier"),
        (lambda: Add((1, 1 << 31)), "add needs a 32-bit integer multiplier"),
        (lambda: MaxPool((0, 2), (1, 1)), "kernel must be two integers >= 1"),
        (lambda: AvgPool((3, 3), (1, 1), (2, 1)), "pool padding must be at most half the kernel"),
        (lambda: pack_codes(np.zeros(3, np.uint8), 9), "codes must be 1..8 bits, got 9"),
        (lambda: pack_codes(np.array([0, 4], np.uint8), 2), "a code exceeds 2 bits"),
    ],
)
def test_op_validation(make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=re.escape(fragment)):
        make()
