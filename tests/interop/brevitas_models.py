"""Small Brevitas models of the kind qcompile imports exactly, trained in the tests themselves.

What makes a Brevitas model exactly representable (README, "From Brevitas"): power-of-two
scales (the ``*FixedPoint`` quantizers), activations rounded with ``floor`` (the default,
half to even, has ties qcompile's half-up requantization cannot reproduce), and biases
quantized to their accumulator's scale (``Int32Bias``); pools truncate (``TruncTo8bit``). The
logits leave without a quantizer:
they are exact dyadic values, imported as a wide integer tensor.
"""

from __future__ import annotations

from pathlib import Path

import brevitas.nn as qnn
import torch
from brevitas.export import export_qonnx
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Int32Bias,
    TruncTo8bit,
    Uint8ActPerTensorFixedPoint,
)
from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint
from torch import nn

from qcompile.data import load_dataset


def weight_quant(bits: int, per_channel: bool = False) -> type:
    base = Int8WeightPerChannelFixedPoint if per_channel else Int8WeightPerTensorFixedPoint
    return type(f"W{bits}", (base,), {"bit_width": bits})


def act_quant(bits: int) -> type:
    return type(
        f"A{bits}",
        (Uint8ActPerTensorFixedPoint,),
        {"bit_width": bits, "float_to_int_impl_type": "floor"},
    )


class MLP(nn.Module):
    """8x8 image -> signed 8-bit input quantizer -> 64-32-10 with ``bits``-bit weights and
    activations."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.flat = nn.Flatten()
        self.fc1 = qnn.QuantLinear(64, 32, weight_quant=weight_quant(bits), bias_quant=Int32Bias,
                                   return_quant_tensor=True)  # fmt: skip
        self.act = qnn.QuantReLU(act_quant=act_quant(bits), return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(32, 10, weight_quant=weight_quant(bits), bias_quant=Int32Bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.flat(self.inp(x)))))


class ResCNN(nn.Module):
    """conv-relu-maxpool, a conv whose output adds to its input (a residual) before a ReLU
    quantizer, an average pool (Brevitas's TruncAvgPool2d) and a linear classifier;
    per-channel conv weights. ``trunc``: the pool's quantizer (Brevitas's default, RoundTo8bit,
    rounds half to even)."""

    def __init__(self, bits: int, width: int = 8, trunc: type = TruncTo8bit) -> None:
        super().__init__()
        w = width
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, w, 3, padding=1, weight_quant=weight_quant(bits, True),
                                     bias_quant=Int32Bias, return_quant_tensor=True)  # fmt: skip
        self.act1 = qnn.QuantReLU(act_quant=act_quant(bits), return_quant_tensor=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = qnn.QuantConv2d(w, w, 3, padding=1, weight_quant=weight_quant(bits, True),
                                     bias_quant=Int32Bias)  # fmt: skip
        self.act2 = qnn.QuantReLU(act_quant=act_quant(bits), return_quant_tensor=True)
        self.avg = qnn.TruncAvgPool2d(2, trunc_quant=trunc)
        self.fc = qnn.QuantLinear(w * 4, 10, weight_quant=weight_quant(bits), bias_quant=Int32Bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act1(self.conv1(self.inp(x))))
        y = self.act2(self.conv2(x) + x.value)  # the residual sum, then one quantizer
        return self.fc(torch.flatten(self.avg(y), 1))


def trained(kind: str, bits: int, epochs: int = 2, seed: int = 0) -> nn.Module:
    """``MLP`` or ``ResCNN`` trained on the 8x8 digits for ``epochs`` (a few seconds)."""
    torch.manual_seed(seed)
    net = MLP(bits) if kind == "mlp" else ResCNN(bits)
    data = load_dataset("digits")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.train_x))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(net(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def export(net: nn.Module, path: Path, batch: int = 1) -> Path:
    """Brevitas's own QONNX export (the TorchScript exporter: dynamo fails on Quant nodes)."""
    export_qonnx(net, torch.zeros(batch, 1, 8, 8), str(path), dynamo=False)
    return path


def accuracy(net: nn.Module) -> float:
    data = load_dataset("digits")
    with torch.no_grad():
        return float((net(data.test_x).argmax(1) == data.test_y).float().mean())
