"""What the learned-bitwidth stages (``sdq``, ``ddq``, ``dmbq``) share: a weight-bit budget,
per-layer bit reports and the plots of papers/000 Fig. 1, 3 and 5.

The budget is ``target_bits``: the average weight bits weighted by each layer's weight count,
over every quantized weight layer, exactly as ``qcompile inspect`` computes
``avg_weight_bits``. The first and last layers kept at ``first_last_wbits`` count too (the
papers leave them out), so the frozen model meets the budget as inspect shows it, and the
learned layers share what those fixed layers leave.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qcompile.errors import QCompileError
from qcompile.quant import FLOAT_BITS
from qcompile.stages.base import Stage, StageConfig
from qcompile.stages.layers import QuantConv2d, QuantLinear, QuantModel


@dataclass(frozen=True)
class BudgetConfig(StageConfig):
    """``target_bits``: average weight bits over all quantized weight layers, weighted by
    weight count (inspect's ``avg_weight_bits``); ``wbits`` is where the learned layers start
    or the top of their range, depending on the stage."""

    target_bits: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1.0 <= self.target_bits <= 8.0:
            raise ValueError(f"target_bits must be 1..8, got {self.target_bits}")


def layer_sizes(model: QuantModel) -> dict[str, int]:
    """Weight count of every quantized weight layer, in definition order."""
    return {name: m.weight.numel() for name, m in model.weight_layers().items()}


def average_bits(bits: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """``sum(N_l b_l) / sum(N_l)`` over the layers of ``sizes``."""
    total = sum(sizes.values())
    return sum(sizes[n] * float(bits[n]) for n in sizes) / total if total else 0.0


class BudgetStage(Stage):
    """Base of the stages that learn bitwidths under ``target_bits``.

    Subclasses decide which layers learn (``learned``: the rest keep their fixed width) and
    how; this class reports per-layer bits every epoch and draws the plots.
    """

    config_class = BudgetConfig
    plotted_layers = 3

    def wrap(self, model: nn.Module) -> QuantModel:
        qmodel = super().wrap(model)
        if self.config.wbits == FLOAT_BITS:
            raise QCompileError(f"method '{self.name}' learns bitwidths: wbits must be 1..8")
        sizes = layer_sizes(qmodel)
        low = self.min_bits()
        floor = {
            n: (low if self.learned(qmodel, n) else b) for n, b in qmodel.weight_bits().items()
        }
        lowest = average_bits(floor, sizes)
        if lowest > self.config.target_bits + 1e-9:
            raise QCompileError(
                f"method '{self.name}': target_bits {self.config.target_bits} cannot be met: "
                f"with the first/last layers at {self.config.first_last_wbits} bits and every "
                f"other layer at its lowest width ({low}) the average is {lowest:.3f}; raise "
                "target_bits or lower first_last_wbits"
            )
        return qmodel

    def min_bits(self) -> int:
        """The lowest width a learned layer can reach."""
        return 1

    def learned(self, model: QuantModel, name: str) -> bool:
        """Whether layer ``name`` learns its bitwidth: every layer but the first and last,
        which keep ``first_last_wbits`` (all of them with ``first_last_wbits = "same"``)."""
        names = list(layer_sizes(model))
        inner = 0 < names.index(name) < len(names) - 1
        return inner or self.config.first_last_wbits == "same"

    def layer_bits(self, model: QuantModel) -> dict[str, float]:
        """Bits per weight layer as the frozen model stores them (a channel-wise stage may
        report a layer's mean)."""
        return {n: float(b) for n, b in model.weight_bits().items() if b != FLOAT_BITS}

    def budget_left(self, model: QuantModel) -> float:
        """Weight bits under budget now (negative: over it)."""
        sizes = layer_sizes(model)
        return (self.config.target_bits - average_bits(self.layer_bits(model), sizes)) * sum(
            sizes.values()
        )

    def report(self, model: QuantModel) -> dict[str, Any]:
        bits = self.layer_bits(model)
        return {
            "wbits": bits,
            "avg_wbits": round(average_bits(bits, layer_sizes(model)), 4),
            "levels": self.level_snapshot(model),
        }

    def level_snapshot(self, model: QuantModel, bins: int = 48) -> dict[str, Any]:
        """Channel 0's weights (histogram) and quantization levels for the largest learned
        layers: the data of papers/000 Fig. 1."""
        layers = model.weight_layers()
        names = sorted(
            (n for n in layers if self.learned(model, n)), key=lambda n: -layers[n].weight.numel()
        )[: self.plotted_layers]
        out: dict[str, Any] = {}
        for name in names:
            m: QuantConv2d | QuantLinear = layers[name]
            w = m.weight.detach()
            with torch.no_grad():
                enc = m.weight_quant.encode(w)
            w0 = w[0].flatten().float()
            hist = torch.histogram(w0, bins=bins)
            levels = enc.levels[0][enc.codes[0].flatten().unique()]  # those channel 0 uses
            out[name] = {
                "counts": hist.hist.tolist(),
                "edges": hist.bin_edges.tolist(),
                "levels": sorted(float(v) for v in levels),
                "bits": int(enc.bits),
            }
        return out

    def plots(self, out: Path, history: list[dict[str, Any]]) -> list[Path]:
        from qcompile.stages.plots import plot_bit_evolution, plot_layer_bits, plot_levels

        made = (plot_layer_bits(out, history), plot_bit_evolution(out, history))
        return [p for p in (*made, plot_levels(out, history)) if p]
