"""Graphs and inputs shared by the backend tests."""

from __future__ import annotations

import numpy as np
import torch

from qcompile.freeze import freeze_model
from qcompile.ir import (
    Affine,
    Conv2d,
    Dense,
    Flatten,
    Graph,
    InputQuant,
    Node,
    QType,
    Requant,
    Table,
    TensorInfo,
    Weights,
    ops,
)
from qcompile.ir.ops import Op
from qcompile.sim import quantize_input
from qcompile.stages import quantize
from qcompile.zoo import build_model

ZOO = [
    ("mlp", (1, 8, 8), {}),
    ("lenet", (1, 8, 8), {}),
    ("resnet20", (3, 16, 16), {"width": 0.5}),  # residual adds, global average pool
    ("resnet18", (3, 72, 72), {"width": 0.125}),  # 7x7/2 stem, padded max-pool
    ("vgg_small", (3, 16, 16), {"width": 0.125}),
    ("mobilenetv2", (3, 16, 16), {"width": 0.25}),  # depthwise, ReLU6, 4-input adds
    ("jet_mlp", (16, 1, 1), {}),  # hls4ml's jet-tagging MLP, 16-64-32-32-5
]


def random_inputs(graph: Graph, n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 1.3, (n, *graph.input.shape)).astype(np.float32)
    xi = quantize_input(graph, x)
    lo, hi = graph.input.qtype.range
    # the extremes: where a narrow accumulator would wrap (one image: alternating)
    if n == 1:
        xi[0].flat[::2], xi[0].flat[1::2] = lo, hi
    else:
        xi[0], xi[1] = lo, hi
    return xi


def zoo_graph(name: str, shape: tuple[int, ...], opts: dict) -> Graph:
    torch.manual_seed(0)
    q = quantize(build_model(name, shape, 10, **opts), wbits=2, abits=4)
    q.train()
    with torch.no_grad():
        q(torch.randn(16, *shape))
    return freeze_model(q.eval(), shape, name)


def levels(rng: np.random.Generator, kind: str, bits: int, rows: int) -> Affine | Table:
    """Per-channel integer weights: ``uniform`` affine grids (zero points anywhere the int8
    range allows, step 1, or step 2 for symmetric levels) or ``nonuniform`` int8 tables."""
    n = 1 << bits
    if kind == "uniform":
        step = 2 if bits < 8 and rng.random() < 0.5 else 1
        if step == 2:
            return Affine(2, np.full(rows, 1 - n, dtype=np.int64))
        lo = max(-n, -128)
        return Affine(1, rng.integers(lo, min(0, 128 - n) + 1, rows).astype(np.int64))
    return Table(np.sort(rng.integers(-127, 128, (rows, n)), axis=1).astype(np.int64))


def requantized(
    name: str,
    op: Op,
    src: TensorInfo,
    w: Weights,
    out_shape: tuple[int, ...],
    rng: np.random.Generator,
    clip: tuple[int, int] = (-20, 31),
    out_bits: int = 6,
) -> Node:
    """A weight node with random per-channel multipliers and biases (up to 8 output steps)
    and a shift that keeps most outputs of random inputs inside the clip (not saturated);
    its output a signed ``out_bits`` integer."""
    mult = tuple(int(m) for m in rng.integers(1 << 10, 1 << 15, w.shape[0]))
    probe = Node(name, op, (src.name,), src, w, Requant(0, 0, 0, 64, mult))
    lo, hi = ops.requant_range(probe, [src.qtype.range])
    shift = max(0, ops.signed_bits(lo, hi) - max(10, out_bits - 2))
    bias = tuple(int(b) for b in rng.integers(-(8 << shift), 8 << shift, w.shape[0]))
    acc = ops.acc_bits_needed(probe, [src.qtype.range])
    out = TensorInfo(name, out_shape, QType(out_bits, True), 0.1)
    return Node(name, op, (src.name,), out, w, Requant(shift, *clip, acc, mult, bias))


def chain(kind: str) -> Graph:
    """Eight 3x3 convs at 1..8 weight bits, flatten, eight dense layers at 1..8 bits; levels
    per channel: ``uniform`` affine grids or ``nonuniform`` int8 tables."""
    rng = np.random.default_rng(3)
    x = TensorInfo("x", (3, 6, 6), QType(8, True), 0.05)
    nodes: list[Node] = []
    src = x
    for i, bits in enumerate([*range(1, 9), *range(1, 9)]):
        conv = i < 8
        if not conv and len(src.shape) == 3:
            flat = TensorInfo("flat", (int(np.prod(src.shape)),), src.qtype, src.scale)
            nodes.append(Node("flat", Flatten(), (src.name,), flat))
            src = flat
        shape = (4, src.shape[0], 3, 3) if conv else (24, src.shape[0])
        codes = rng.integers(0, 1 << bits, shape).astype(np.uint8)
        w = Weights(bits, shape, codes, False, levels(rng, kind, bits, shape[0]))
        op = Conv2d((1, 1), (1, 1)) if conv else Dense()
        name = f"{'conv' if conv else 'dense'}{bits}"
        out_shape = (4, 6, 6) if conv else (24,)
        nodes.append(requantized(name, op, src, w, out_shape, rng))
        src = nodes[-1].output
    return Graph("chain", x, InputQuant(8, -6.4, 0.05, -128), tuple(nodes), (src.name,))


def mixed_chain(kind: str) -> Graph:
    """A conv and a dense layer whose output channels have different widths (``channel_bits``):
    conv rows at 3, 1, 4, 2 bits (widest 4), dense rows cycling 1..8 bits (widest 8). Each
    row's codes use its whole range; table entries past a row's width are 0, as DMBQ leaves
    them."""
    rng = np.random.default_rng(7)
    x = TensorInfo("x", (3, 6, 6), QType(8, True), 0.05)
    flat_info = TensorInfo("flat", (4 * 6 * 6,), QType(6, True), 0.1)
    specs = [
        ("conv", Conv2d((1, 1), (1, 1)), (4, 3, 3, 3), (3, 1, 4, 2), (4, 6, 6)),
        ("dense", Dense(), (24, flat_info.shape[0]), tuple(1 + i % 8 for i in range(24)), (24,)),
    ]
    nodes: list[Node] = []
    src = x
    for name, op, shape, widths, out_shape in specs:
        if name == "dense":
            nodes.append(Node("flat", Flatten(), (src.name,), flat_info))
            src = flat_info
        bits = max(widths)
        lv = levels(rng, kind, bits, shape[0])
        codes = np.zeros(shape, dtype=np.uint8)
        for r, b in enumerate(widths):
            if isinstance(lv, Table):
                lv.entries[r, 1 << b :] = 0
            codes[r] = rng.integers(0, 1 << b, shape[1:])
        if isinstance(lv, Affine):  # every row's grid inside int8 at its own width
            lv = Affine(1, np.array([-(1 << (b - 1)) for b in widths], dtype=np.int64))
        w = Weights(bits, shape, codes, False, lv, widths)
        nodes.append(requantized(name, op, src, w, out_shape, rng))
        src = nodes[-1].output
    return Graph("mixed", x, InputQuant(8, -6.4, 0.05, -128), tuple(nodes), (src.name,))


def one_channel_convs(kind: str) -> Graph:
    """Convolutions of one input channel, which the implicit GEMM packs as four neighbouring
    columns per pixel: a 5x5 kernel (two groups of columns, the second one column wide)
    with padding 2, then a 3x3 kernel with row stride 2, at 4 and 3 bits."""
    rng = np.random.default_rng(12)
    x = TensorInfo("x", (1, 9, 9), QType(8, True), 0.05)
    specs = [  # name, op, (out channels, kh, kw), out shape, bits
        ("k55", Conv2d((1, 1), (2, 2)), (1, 5, 5), (1, 9, 9), 4),
        ("s21", Conv2d((2, 1), (1, 0)), (6, 3, 3), (6, 5, 7), 3),
    ]
    return conv_stack("one_channel", x, specs, kind, rng)


def conv_geometries(kind: str) -> Graph:
    """Convolutions whose taps the implicit GEMM reads from stride phases: 3x3 stride 2 with
    padding 1 on an odd-sized input, 6 channels (not a multiple of four), a 3x3 dilation-2
    conv, a 5x3 kernel with stride (1, 2) and padding (2, 0), and a 1x1 conv, at 2-8 bits."""
    rng = np.random.default_rng(11)
    x = TensorInfo("x", (6, 9, 9), QType(8, True), 0.05)
    specs = [  # name, op, (out channels, kh, kw), out shape, bits
        ("s2", Conv2d((2, 2), (1, 1)), (8, 3, 3), (8, 5, 5), 2),
        ("d2", Conv2d((1, 1), (2, 2), (2, 2)), (5, 3, 3), (5, 5, 5), 4),
        ("k53", Conv2d((1, 2), (2, 0)), (12, 5, 3), (12, 5, 2), 3),
        ("pw", Conv2d(), (7, 1, 1), (7, 5, 2), 8),
    ]
    return conv_stack("geometries", x, specs, kind, rng)


def row_tiled_convs(kind: str) -> Graph:
    """Convolutions whose output rows are whole AVX2 vectors (widths 16 and 8), tiled by
    output row: an odd count of row vectors (the last tile repeats one), stride 2, dilation
    2 and channel counts off four."""
    rng = np.random.default_rng(12)
    x = TensorInfo("x", (6, 9, 16), QType(8, True), 0.05)
    specs = [  # name, op, (out channels, kh, kw), out shape, bits
        ("r1", Conv2d((1, 1), (1, 1)), (8, 3, 3), (8, 9, 16), 2),
        ("s2", Conv2d((2, 2), (1, 1)), (5, 3, 3), (5, 5, 8), 4),
        ("d2", Conv2d((1, 1), (2, 2), (2, 2)), (6, 3, 3), (6, 5, 8), 3),
    ]
    return conv_stack("rows", x, specs, kind, rng)


def conv_stack(
    name: str,
    x: TensorInfo,
    specs: list,
    kind: str,
    rng: np.random.Generator,
    iq: InputQuant | None = None,
) -> Graph:
    """Convolutions one after another from ``specs`` (name, op, (out channels, kh, kw),
    out shape, bits, and optionally the output's bits: then it clips to its whole signed
    range, else 6 bits clipped to -20..31), random codes and ``kind`` levels, on the input
    ``x`` quantized by ``iq`` (the 8-bit one unless given)."""
    nodes: list[Node] = []
    src = x
    for layer, op, (o, kh, kw), out_shape, bits, *out_bits in specs:
        shape = (o, src.shape[0] // op.groups, kh, kw)
        codes = rng.integers(0, 1 << bits, shape).astype(np.uint8)
        w = Weights(bits, shape, codes, False, levels(rng, kind, bits, o))
        if out_bits:
            half = 1 << (out_bits[0] - 1)
            clip = (-half, half - 1)
            nodes.append(requantized(layer, op, src, w, out_shape, rng, clip, out_bits[0]))
        else:
            nodes.append(requantized(layer, op, src, w, out_shape, rng))
        src = nodes[-1].output
    iq = iq or InputQuant(8, -6.4, 0.05, -128)
    return Graph(name, x, iq, tuple(nodes), (src.name,))


def grouped_geometries(kind: str) -> Graph:
    """Grouped convs on zero-padded copies of their inputs (``pad_rows``): depthwise 3x3
    stride 1 on an odd width, stride 2, a 5x3 kernel with stride (1, 2) and padding (2, 0),
    and two channels a group at stride 2 with padding 2 (past the image's last rows)."""
    rng = np.random.default_rng(23)
    x = TensorInfo("x", (16, 9, 11), QType(8, True), 0.05)
    specs = [  # name, op, (out channels, kh, kw), out shape, bits
        ("dw1", Conv2d((1, 1), (1, 1), groups=16), (16, 3, 3), (16, 9, 11), 4),
        ("dw2", Conv2d((2, 2), (1, 1), groups=16), (16, 3, 3), (16, 5, 6), 2),
        ("dw3", Conv2d((1, 2), (2, 0), groups=16), (16, 5, 3), (16, 5, 2), 3),
        ("g2", Conv2d((2, 2), (2, 2), groups=8), (16, 3, 3), (16, 4, 2), 4),
    ]
    return conv_stack("grouped", x, specs, kind, rng)


def wide_inputs(kind: str) -> Graph:
    """Convolutions on inputs wider than a byte (residual sums are 14-22 bits): a 3x3
    stride-2 padded conv on a 16-bit input, 8-bit weights, with a 20-bit output, read by a
    1x1 conv at 2 bits (three byte digits), then a 3x3 conv at 4 bits on its 12-bit output."""
    rng = np.random.default_rng(13)
    x = TensorInfo("x", (5, 9, 9), QType(16, True), 0.001)
    specs = [  # name, op, (out channels, kh, kw), out shape, bits, out bits
        ("s2", Conv2d((2, 2), (1, 1)), (6, 3, 3), (6, 5, 5), 8, 20),
        ("pw", Conv2d(), (9, 1, 1), (9, 5, 5), 2, 12),
        ("k3", Conv2d((1, 1), (1, 1)), (4, 3, 3), (4, 5, 5), 4, 6),
    ]
    iq = InputQuant(16, -32.768, 0.001, 0, signed=True)
    return conv_stack("wide", x, specs, kind, rng, iq)


def wide_one_channel_conv(kind: str) -> Graph:
    """A one-channel conv (four neighbouring columns per pixel) on a 16-bit input (byte
    digits): a padded 5x5 kernel to 12 bits, then a 3x3 conv at 3 bits on that."""
    rng = np.random.default_rng(21)
    x = TensorInfo("x", (1, 9, 9), QType(16, True), 0.001)
    specs = [  # name, op, (out channels, kh, kw), out shape, bits, out bits
        ("k55", Conv2d((1, 1), (2, 2)), (5, 5, 5), (5, 9, 9), 4, 12),
        ("k3", Conv2d((1, 1), (1, 1)), (3, 3, 3), (3, 9, 9), 3, 6),
    ]
    iq = InputQuant(16, -32.768, 0.001, 0, signed=True)
    return conv_stack("wide_one_channel", x, specs, kind, rng, iq)
