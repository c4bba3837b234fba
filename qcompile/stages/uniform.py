"""``uniform``: fixed-bitwidth quantization-aware training with any library quantizer."""

from __future__ import annotations

from torch import nn

from qcompile.quant import Quantizer, make_weight_quantizer
from qcompile.stages.base import Stage, StageConfig


class UniformStage(Stage):
    """Every quantized layer uses ``weight_quant`` at its fixed bitwidth for the whole run.

    >>> import torch
    >>> from qcompile.stages.base import StageConfig
    >>> m = UniformStage(StageConfig(wbits=2, abits=4)).wrap(torch.nn.Sequential(
    ...     torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)))
    >>> m.weight_bits()
    {'0': 8, '2': 2, '3': 8}
    """

    name = "uniform"
    config_class = StageConfig

    def weight_quantizer(self, name: str, layer: nn.Conv2d | nn.Linear, bits: int) -> Quantizer:
        c = self.config
        return make_weight_quantizer(c.weight_quant, bits, layer.weight.shape[0], c.per_channel)
