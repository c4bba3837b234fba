"""Freeze every zoo model and check the simulator against the PyTorch frozen model, bit for
bit, and the frozen model against the fake-quant model it came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qcompile.errors import QCompileError
from qcompile.freeze import freeze_model
from qcompile.ir import verify
from qcompile.ir.graph import Graph
from qcompile.sim import Simulator, quantize_input
from qcompile.simulate import compare, implementations
from qcompile.stages import QuantModel, quantize
from qcompile.zoo import build_model


def prepared(net: nn.Module, shape: tuple[int, ...], seed: int = 0, **stage) -> QuantModel:
    """A quantized model with realistic, non-trivial state: BN statistics from data, random
    affine BN parameters (some negative gains), a calibrated input quantizer."""
    torch.manual_seed(seed)
    q = quantize(net, **stage)
    for m in q.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    q.train()
    with torch.no_grad():
        for _ in range(3):
            q(torch.randn(32, *shape))
        for m in q.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    return q.eval()


ZOO = [
    ("mlp", (1, 8, 8), {}),
    ("lenet", (1, 8, 8), {}),
    ("lenet", (1, 28, 28), {}),
    ("resnet20", (3, 16, 16), {"width": 0.5}),
    ("resnet18", (3, 16, 16), {"width": 0.125}),
    ("resnet18", (3, 72, 72), {"width": 0.125}),  # ImageNet stem: 7x7/2 conv, padded max-pool
    ("vgg_small", (3, 16, 16), {"width": 0.125}),
    ("mobilenetv2", (3, 16, 16), {"width": 0.25}),  # depthwise, ReLU6, residual adds
]


def exactness(graph: Graph, n: int, seed: int = 1) -> dict:
    x = np.random.default_rng(seed).normal(0, 1.2, (n, *graph.input.shape)).astype(np.float32)
    return compare(graph, implementations(graph), quantize_input(graph, x), None)


@pytest.mark.parametrize(("name", "shape", "opts"), ZOO, ids=[f"{z[0]}-{z[1][1]}" for z in ZOO])
def test_zoo_model_frozen_is_bit_exact(name, shape, opts):
    q = prepared(build_model(name, shape, 10, **opts), shape, wbits=2, abits=4)
    graph = freeze_model(q, shape, name)
    n = 1000
    r = exactness(graph, n)
    assert r["n"] == n and r["exact"] == 1.0 and r["max_abs_diff"] == 0.0
    kinds = {node.kind for node in graph.nodes}
    if name == "mobilenetv2":
        assert any(nd.kind == "conv2d" and nd.op.groups > 1 for nd in graph.nodes)
        assert "add" in kinds
    if name.startswith("resnet"):
        assert {"add", "avgpool"} <= kinds


@pytest.mark.parametrize(
    "stage",
    [
        {"wbits": 3, "abits": 3, "weight_quant": "sawb", "per_channel": False},
        {"wbits": 1, "abits": 2, "weight_quant": "bwn", "first_last_wbits": "same"},
        {"wbits": 2, "abits": 4, "weight_quant": "twn"},
        {"wbits": 5, "abits": 8, "weight_quant": "lsq", "act_quant": "lsq"},
        {"method": "dqa", "wbits": 2, "abits": 4},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_quantizer_kinds_freeze_exactly(stage):
    shape = (1, 8, 8)
    q = prepared(build_model("lenet", shape, 10), shape, **stage)
    q.stage.finalize(q, lambda: 0.0)  # DQA: snap to the lowest-bit quantizer, as train does
    q.eval()
    graph = freeze_model(q, shape, "lenet")
    assert exactness(graph, 500)["exact"] == 1.0
    x = torch.randn(256, *shape)
    with torch.no_grad():
        fake = q(x).numpy()
    out = graph.tensors()[graph.outputs[0]]
    frozen = Simulator(graph).run(quantize_input(graph, x.numpy()))[out.name] * out.unit
    # One rounding of the folded scales: the typical sample's logits agree to 1e-3 of their
    # range (others had an activation that close to a rounding boundary); decisions agree.
    rel = np.abs(frozen - fake).max(1) / np.abs(fake).max()
    assert np.median(rel) <= 1e-3
    assert (frozen.argmax(1) == fake.argmax(1)).mean() >= 0.97


def test_weight_bits_and_codes_come_from_export():
    shape = (1, 8, 8)
    q = prepared(build_model("lenet", shape, 10), shape, wbits=3, abits=4)
    graph = freeze_model(q, shape, "lenet")
    layers = list(q.weight_layers().values())
    nodes = list(graph.weighted())
    assert [n.weights.bits for n in nodes] == [m.weight_quant.bits for m in layers]
    for n, m in zip(nodes, layers, strict=True):
        assert np.array_equal(n.weights.codes(), m.export().weight.codes.numpy())


def test_user_model_with_functional_relu_and_residual():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.act = nn.ReLU()

        def forward(self, x):
            y = self.bn(self.conv2(self.act(self.conv1(x))))
            return torch.relu(x + y)

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), Block(), nn.Flatten(),
                        nn.Linear(256, 10))  # fmt: skip
    q = prepared(net, (1, 8, 8), wbits=4, abits=4)
    graph = freeze_model(q, (1, 8, 8), "user")
    assert "clip" not in {n.kind for n in graph.nodes}  # the ReLU fused into the add
    assert exactness(graph, 300)["exact"] == 1.0


def test_unsupported_layer_is_named():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Sigmoid(), nn.Linear(8, 2))
    q = prepared(net, (1, 8, 8), wbits=4, abits=4)
    with pytest.raises(QCompileError, match=r"layer 2 .*unsupported layer Sigmoid"):
        freeze_model(q, (1, 8, 8))


def test_float_layers_are_refused():
    q = prepared(build_model("mlp", (1, 8, 8), 10), (1, 8, 8), wbits=4, first_last_wbits=32)
    with pytest.raises(QCompileError, match="float weights"):
        freeze_model(q, (1, 8, 8))
    float_model = quantize(build_model("mlp", (1, 8, 8), 10), wbits=32, abits=32)
    with pytest.raises(QCompileError, match="not quantized"):
        freeze_model(float_model, (1, 8, 8))


def test_accumulators_are_sized_and_verified():
    shape = (3, 16, 16)
    q = prepared(build_model("resnet20", shape, 10, width=0.5), shape, wbits=4, abits=4)
    graph = verify(freeze_model(q, shape, "resnet20"))
    for n in graph.nodes:
        if n.requant is not None:
            assert 2 <= n.requant.acc_bits <= 53
    assert graph.tensors()[graph.outputs[0]].qtype.frac > 0  # logits in fixed point
