"""Quantized layers: the modules every stage puts into a network.

A stage differs from another only in the quantizer modules it hands these layers (a fixed
grid for ``uniform``, an attention mixture for ``dqa``, ...). ``export()`` gives freeze what
it needs without knowing which stage trained the layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcompile.quant import Encoded, InputQuant, Quantizer


@dataclass(frozen=True)
class WeightExport:
    """A weight layer as freeze sees it: codes and levels for ``weight``, the float bias.

    ``channel_bits`` (None: every channel at ``bits``) is each output channel's width when the
    quantizer gives channels different widths (DMBQ at channel granularity)."""

    bits: int
    weight: Encoded
    bias: Tensor | None
    uniform: bool
    channel_bits: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ActExport:
    """An activation as freeze sees it: ``y = lo + code * step``, ``code`` in ``0..2^bits-1``.

    ``fn`` names the nonlinearity applied before quantizing (``relu``, ``relu6`` or ``none``).
    """

    bits: int
    lo: float
    step: float
    fn: str


class QuantLayer(ABC):
    """The interface shared by every quantized module, whatever stage trained it."""

    @abstractmethod
    def export(self) -> WeightExport | ActExport: ...


class QuantConv2d(nn.Conv2d, QuantLayer):
    """``nn.Conv2d`` whose weight passes through ``weight_quant`` on every forward."""

    def __init__(self, conv: nn.Conv2d, weight_quant: Quantizer) -> None:
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
        )  # fmt: skip
        self.weight, self.bias = conv.weight, conv.bias
        self.weight_quant = weight_quant

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight_quant(self.weight), self.bias)

    def export(self) -> WeightExport:
        return _export_weight(self.weight_quant, self.weight, self.bias)


class QuantLinear(nn.Linear, QuantLayer):
    """``nn.Linear`` whose weight passes through ``weight_quant`` on every forward."""

    def __init__(self, linear: nn.Linear, weight_quant: Quantizer) -> None:
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None)
        self.weight, self.bias = linear.weight, linear.bias
        self.weight_quant = weight_quant

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_quant(self.weight), self.bias)

    def export(self) -> WeightExport:
        return _export_weight(self.weight_quant, self.weight, self.bias)


def _export_weight(quant: Quantizer, weight: Tensor, bias: Tensor | None) -> WeightExport:
    with torch.no_grad():
        encoded = quant.encode(weight.detach())
    b = None if bias is None else bias.detach().clone()
    return WeightExport(quant.bits, encoded, b, quant.uniform, _channel_bits(quant))


def _channel_bits(quant: Quantizer) -> tuple[int, ...] | None:
    """The quantizer's per-channel widths where they differ (equal widths are one per-layer
    width, which the IR stores without ``channel_bits``)."""
    cb = getattr(quant, "channel_bits", None)
    if not isinstance(cb, Tensor) or cb.numel() == 0:
        return None
    widths = tuple(int(b) for b in cb.tolist())
    return widths if min(widths) != max(widths) else None


_ACT_NAMES = {nn.ReLU: "relu", nn.ReLU6: "relu6"}


class QuantAct(nn.Module, QuantLayer):
    """An activation function (or none, for the input) followed by an activation quantizer."""

    def __init__(self, fn: nn.Module | None, quant: Quantizer) -> None:
        super().__init__()
        self.fn = fn if fn is not None else nn.Identity()
        self.quant = quant
        # The quantizer clamps at 0 with no gradient below: ReLU would be a wasted pass.
        self._skip_fn = fn is None or (type(fn) is nn.ReLU and quant.unsigned)

    def forward(self, x: Tensor) -> Tensor:
        return self.quant(x if self._skip_fn else self.fn(x))

    def export(self) -> ActExport:
        grid = getattr(self.quant, "grid", None)
        if grid is None or self.quant.bits > 8:
            raise ValueError(f"activation quantizer {self.quant} has no integer grid")
        lo, step = grid()
        return ActExport(self.quant.bits, float(lo), float(step), self.fn_name)

    @property
    def fn_name(self) -> str:
        return _ACT_NAMES.get(type(self.fn), "none")


class QuantModel(nn.Module):
    """A user's network with quantized layers and an input quantizer in front.

    ``stage`` is the stage that wrapped it; its hooks (``regularizer``, ``on_step``) are what a
    custom training loop calls besides the usual loss.
    """

    def __init__(self, net: nn.Module, input_quant: QuantAct | None, stage: object) -> None:
        super().__init__()
        self.net = net
        self.input_quant = input_quant
        self.stage = stage

    def forward(self, x: Tensor) -> Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        return self.net(x)

    def weight_layers(self) -> dict[str, QuantConv2d | QuantLinear]:
        """Quantized weight layers by their name inside ``net``, in definition order."""
        return {
            name: m
            for name, m in self.net.named_modules()
            if isinstance(m, QuantConv2d | QuantLinear)
        }

    def weight_bits(self) -> dict[str, int]:
        """Storage bits per weight layer (32 where a layer stayed float)."""
        return {
            name: m.weight_quant.bits if isinstance(m, QuantConv2d | QuantLinear) else 32
            for name, m in self.net.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        }

    def stored_weight_bits(self) -> dict[str, float]:
        """Bits per weight per layer as the IR stores them (inspect's ``weight_bits``): a
        layer whose quantizer gives channels different widths counts their mean (every
        channel holds as many weights); others as :meth:`weight_bits`.

        >>> from qcompile.stages import quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> quantize(net, wbits=2, first_last_wbits="same").stored_weight_bits()
        {'1': 2}
        """
        out: dict[str, float] = dict(self.weight_bits())
        for name, m in self.weight_layers().items():
            widths = _channel_bits(m.weight_quant)
            if widths is not None:
                out[name] = sum(widths) / len(widths)
        return out

    def act_bits(self) -> dict[str, int]:
        bits = {n: m.quant.bits for n, m in self.net.named_modules() if isinstance(m, QuantAct)}
        if self.input_quant is not None:
            bits = {"input": self.input_quant.quant.bits, **bits}
        return bits


def make_input_quant(bits: int) -> QuantAct:
    return QuantAct(None, InputQuant(bits))
