"""Graphs and inputs shared by the backend tests."""

from __future__ import annotations

import numpy as np
import torch

from qcompile.freeze import freeze_model
from qcompile.ir import (
    Conv2d,
    Dense,
    Flatten,
    Graph,
    InputQuant,
    Node,
    QType,
    Requant,
    TensorInfo,
    Weights,
    ops,
)
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
]


def random_inputs(graph: Graph, n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 1.3, (n, *graph.input.shape)).astype(np.float32)
    xi = quantize_input(graph, x)
    lo, hi = graph.input.qtype.range
    xi[0], xi[1] = lo, hi  # the extremes: where a narrow accumulator would wrap
    return xi


def zoo_graph(name: str, shape: tuple[int, ...], opts: dict) -> Graph:
    torch.manual_seed(0)
    q = quantize(build_model(name, shape, 10, **opts), wbits=2, abits=4)
    q.train()
    with torch.no_grad():
        q(torch.randn(16, *shape))
    return freeze_model(q.eval(), shape, name)


def _lut(rng: np.random.Generator, levels: str, bits: int, rows: int) -> np.ndarray:
    n = 1 << bits
    if levels == "uniform":
        return (np.arange(n) - n // 2) * rng.integers(1, 40, (rows, 1))
    if bits <= 2:  # the tables hls4ml's own dense would misread as binary/ternary weights
        return np.tile([-1, 1] if bits == 1 else [-1, 0, 1, 0], (rows, 1))
    return np.sort(rng.integers(-3000, 3000, (rows, n)), axis=1)


def chain(levels: str) -> Graph:
    """Eight 3x3 convs at 1..8 weight bits, flatten, eight dense layers at 1..8 bits; LUTs
    per channel: ``uniform`` grids or hand-made ``nonuniform`` levels."""
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
        lut = _lut(rng, levels, bits, shape[0]).astype(np.int64)
        codes = rng.integers(0, 1 << bits, shape).astype(np.uint8)
        bias = rng.integers(-500, 500, shape[0]).astype(np.int64)
        w = Weights(bits, shape, codes, False, lut, bias, levels == "uniform")
        op = Conv2d((1, 1), (1, 1)) if conv else Dense()
        name = f"{'conv' if conv else 'dense'}{bits}"
        out_shape = (4, 6, 6) if conv else (24,)
        probe = Node(name, op, (src.name,), src, w, Requant(9, 0, 0, 64))
        need = ops.acc_bits_needed(probe, [src.qtype.range])
        out = TensorInfo(name, out_shape, QType(6, True), 0.1)
        nodes.append(Node(name, op, (src.name,), out, w, Requant(9, -20, 31, need)))
        src = out
    return Graph("chain", x, InputQuant(8, -6.4, 0.05, -128), tuple(nodes), (src.name,))


def mixed_chain(levels: str) -> Graph:
    """A conv and a dense layer whose output channels have different widths (``channel_bits``):
    conv rows at 3, 1, 4, 2 bits (widest 4), dense rows cycling 1..8 bits (widest 8). Each
    row's codes use its whole range; LUT entries past a row's width are 0, as DMBQ leaves them."""
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
        lut = _lut(rng, levels, bits, shape[0]).astype(np.int64)
        codes = np.zeros(shape, dtype=np.uint8)
        for r, b in enumerate(widths):
            lut[r, 1 << b :] = 0
            codes[r] = rng.integers(0, 1 << b, shape[1:])
        bias = rng.integers(-500, 500, shape[0]).astype(np.int64)
        w = Weights(bits, shape, codes, False, lut, bias, levels == "uniform", widths)
        # a shift that keeps most outputs of random inputs inside the clip (not saturated)
        probe = Node(name, op, (src.name,), src, w, Requant(0, 0, 0, 64))
        shift = max(0, ops.acc_bits_needed(probe, [src.qtype.range]) - 10)
        probe = Node(name, op, (src.name,), src, w, Requant(shift, 0, 0, 64))
        need = ops.acc_bits_needed(probe, [src.qtype.range])
        out = TensorInfo(name, out_shape, QType(6, True), 0.1)
        nodes.append(Node(name, op, (src.name,), out, w, Requant(shift, -20, 31, need)))
        src = out
    return Graph("mixed", x, InputQuant(8, -6.4, 0.05, -128), tuple(nodes), (src.name,))
