"""``ddq``: Differentiable Dynamic Quantization (papers/000, ICML 2021; no public code).

Every learned layer gets a :class:`~qcompile.quant.ddq.LearnedLevels` quantizer: ``2^bmax``
trainable levels per output channel (``bmax = wbits``) and descending gates that average them
down to ``2^s`` levels. The first/last layers kept at ``first_last_wbits`` use the plain
``weight_quant`` quantizer (min-max by default) and count toward the budget at their width;
they stay fixed even when ``first_last_wbits == wbits`` (the paper's 8-bit ``bmax`` with 8-bit
first/last layers), where the budget base's default ``learned`` would let them learn.

Choices where the sources are silent (METHODS.md, DDQ):

- Memory constraint: ``lam * max(0, avg_bits - target_bits)``, ``avg_bits`` the hard
  ``sum_l N_l s_l / S`` over every quantized layer (fixed ones included, as ``inspect``
  counts them). Through the gates' identity straight-through gradient each gate of layer ``l``
  is pushed down by ``lam N_l / S`` while the model is over budget; a bit stays where the loss
  gradient through its Kronecker factor outweighs that.
- Gradient correction: ``correction_weight * sum_rows mean_i ((w_i - Q(w_i)) / range)^2`` over
  every row (output channel) of every learned layer, ``range`` the row's max - min, with the
  weights and gates held constant, so only the levels move: each deployed level is pulled to
  the mean of the weights it represents (a k-means step on the fixed index partition). In
  these units a level's gradient is ``2 (n_bin / n_row) (level - bin mean)`` in the levels'
  own normalised units, at most 2 x its distance: plain SGD at lr 0.1 contracts it instead of
  overshooting (dividing by ``||w||^2`` instead made it ~36x larger and SGD noisy), and with
  Adam the scale does not matter. ``grad_correction = false`` drops the term (the ablation of
  papers/000 Fig. 4/6).
- Bits are fixed after a fraction ``fix_bits_at`` of the optimizer steps; weights and levels
  keep training at those bits. Fixing meets the budget deterministically: while the average is
  over ``target_bits``, the learned layer whose last open gate has the smallest logit (the
  least confident bit; ties: the earliest layer) loses one bit. Then, with ``fill_budget``,
  while a layer's next bit still fits, the layer whose first closed gate has the largest logit
  (the bit closest to being kept) gains one. Why: the hinge only pushes down, and the
  straight-through value of a bit (first order in the change of the output) leaves out the
  curvature of the loss, so it undervalues bits; gates sit near 0 and the fixing step reads
  noise (lenet on digits ended at 1.71 of 2.0 bits with conv2, 864 weights, at 1 bit by a
  logit of -0.0007). ``fix_bits_at = 1`` learns bits to the end and fixes them the same way
  in ``finalize`` (the opened levels then carry their block's training: every level of a
  block gets the same gradient).
- ``report`` adds the relative quantization error ``||w - Q(w)||^2 / ||w||^2`` per learned
  layer and its weight-count-weighted mean (``quant_error``, ``quant_error_avg``: Fig. 4/6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qcompile.quant import Quantizer
from qcompile.quant.ddq import LearnedLevels
from qcompile.stages.base import per_model
from qcompile.stages.budget import BudgetConfig, BudgetStage, layer_sizes
from qcompile.stages.layers import QuantConv2d, QuantLinear, QuantModel


@dataclass(frozen=True)
class DDQConfig(BudgetConfig):
    """DDQ options: ``lam`` (memory hinge weight), ``grad_correction`` and
    ``correction_weight`` (the level-fitting term), ``gate_init`` (initial gate logits, > 0:
    every layer starts at ``wbits``), ``fix_bits_at`` (fraction of the steps after which the
    bits are fixed; 1 = at the end), ``fill_budget`` (when fixing, spend what the budget leaves
    on the next bits the gates were closest to keeping)."""

    lam: float = 1.0
    grad_correction: bool = True
    correction_weight: float = 1.0
    gate_init: float = 0.05
    fix_bits_at: float = 0.5
    fill_budget: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.correction_weight <= 0:
            raise ValueError(f"correction_weight must be > 0, got {self.correction_weight}")
        if self.gate_init <= 0:
            raise ValueError(f"gate_init must be > 0 (gates start open), got {self.gate_init}")
        if not 0 < self.fix_bits_at <= 1:
            raise ValueError(f"fix_bits_at must be in (0, 1], got {self.fix_bits_at}")


@dataclass(frozen=True)
class Layout:
    """What the hooks need every step, found once per model: the learned layers, their
    weight counts, and the bits the fixed layers spend."""

    learned: dict[str, QuantConv2d | QuantLinear]
    sizes: dict[str, int]
    fixed_bits: int
    total: int

    def quantizer(self, name: str) -> LearnedLevels:
        q = self.learned[name].weight_quant
        assert isinstance(q, LearnedLevels)
        return q

    def used_bits(self, bits: dict[str, int]) -> int:
        return self.fixed_bits + sum(self.sizes[n] * bits[n] for n in self.learned)


class DDQStage(BudgetStage):
    """Learned non-uniform levels per channel and a learned bitwidth per layer under
    ``target_bits``.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
    ...                           torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    >>> m = DDQStage(DDQConfig(wbits=4, target_bits=3.0)).wrap(net)
    >>> m.weight_bits()
    {'0': 8, '2': 4, '4': 8}
    >>> _ = m.stage.finalize(m, lambda: 0.0); m.weight_bits()
    {'0': 8, '2': 1, '4': 8}
    """

    name = "ddq"
    config_class = DDQConfig

    def weight_quantizer(self, name: str, layer: nn.Conv2d | nn.Linear, bits: int) -> Quantizer:
        c = self.config
        return LearnedLevels(bits, layer.weight.shape[0], c.per_channel, c.gate_init)

    def learned(self, model: QuantModel, name: str) -> bool:
        return isinstance(model.weight_layers()[name].weight_quant, LearnedLevels)

    @per_model
    def layout(self, model: QuantModel) -> Layout:
        sizes = layer_sizes(model)
        layers = model.weight_layers()
        learned = {n: m for n, m in layers.items() if isinstance(m.weight_quant, LearnedLevels)}
        fixed = sum(sizes[n] * layers[n].weight_quant.bits for n in sizes if n not in learned)
        return Layout(learned, sizes, fixed, sum(sizes.values()))

    def all_fixed(self, model: QuantModel) -> bool:
        lay = self.layout(model)
        return all(lay.quantizer(n).fixed for n in lay.learned)

    def regularizer(self, model: QuantModel) -> Tensor | None:
        lay = self.layout(model)
        terms = []
        if self.config.lam > 0 and lay.learned and not self.all_fixed(model):
            used = lay.fixed_bits + sum(
                lay.sizes[n] * lay.quantizer(n).gate_sum() for n in lay.learned
            )
            over = torch.relu(used / lay.total - self.config.target_bits)
            terms.append(self.config.lam * over)
        if self.config.grad_correction and lay.learned:
            terms.append(self.config.correction_weight * self.correction(model))
        return torch.stack(terms).sum() if terms else None

    def correction(self, model: QuantModel) -> Tensor:
        """The gradient-correction term (module docstring), differentiable in the levels only."""
        lay = self.layout(model)
        return torch.stack([self._range_error(m) for m in lay.learned.values()]).sum()

    @staticmethod
    def _range_error(layer: QuantConv2d | QuantLinear) -> Tensor:
        """``sum_rows mean_i ((w_i - Q(w_i)) / range)^2``; a constant row has no error."""
        w, q = layer.weight.detach(), layer.weight_quant
        assert isinstance(q, LearnedLevels)
        span, per_row = q.training_error(w)
        return (per_row / (span[:, 0] ** 2 * (w.numel() // len(per_row))).clamp_min(1e-30)).sum()

    @staticmethod
    def _relative_error(layer: QuantConv2d | QuantLinear) -> Tensor:
        """``||w - Q(w)||^2 / ||w||^2``: the figure reported per epoch."""
        w, q = layer.weight.detach(), layer.weight_quant
        assert isinstance(q, LearnedLevels)
        return q.squared_error(w).sum() / w.pow(2).sum().clamp_min(1e-30)

    def on_step(self, model: QuantModel, step: int, total_steps: int) -> None:
        due = self.config.fix_bits_at < 1 and step >= int(self.config.fix_bits_at * total_steps)
        if due and not self.all_fixed(model):
            self.fix_bits(model)

    def fix_bits(self, model: QuantModel) -> tuple[int, int]:
        """Meet the budget (see the module docstring) and fix every learned layer's bits;
        returns how many bits were taken away and how many were added to fill the budget."""
        lay = self.layout(model)
        bits = {n: lay.quantizer(n).bits for n in lay.learned}
        dropped = self._drop_to_budget(lay, bits)
        added = self._fill_budget(lay, bits) if self.config.fill_budget else 0
        for n in lay.learned:
            lay.quantizer(n).fix(bits[n])
        return dropped, added

    def _logit(self, lay: Layout, name: str, gate: int) -> float:
        """The logit of gate ``gate`` (2..bmax) of layer ``name``."""
        return float(lay.quantizer(name).logits.detach()[gate - 2])

    def _drop_to_budget(self, lay: Layout, bits: dict[str, int]) -> int:
        budget = self.config.target_bits * lay.total
        dropped = 0
        while lay.used_bits(bits) > budget:
            open_ = [
                (self._logit(lay, n, bits[n]), i, n)
                for i, n in enumerate(lay.learned)
                if bits[n] > 1
            ]
            if not open_:  # unreachable: wrap() checked that 1 bit everywhere fits
                break
            bits[min(open_)[2]] -= 1
            dropped += 1
        return dropped

    def _fill_budget(self, lay: Layout, bits: dict[str, int]) -> int:
        budget = self.config.target_bits * lay.total
        added = 0
        while True:
            room = budget - lay.used_bits(bits)
            closed = [
                (self._logit(lay, n, bits[n] + 1), -i, n)
                for i, n in enumerate(lay.learned)
                if bits[n] < lay.quantizer(n).bmax and lay.sizes[n] <= room
            ]
            if not closed:
                return added
            bits[max(closed)[2]] += 1
            added += 1

    def finalize(self, model: QuantModel, evaluate: Callable[[], float]) -> dict[str, Any]:
        if self.all_fixed(model):
            return {}
        before = evaluate()
        dropped, added = self.fix_bits(model)
        return {
            "bits_fixed_at_end": True,
            "bits_dropped": dropped,
            "bits_added": added,
            "test_acc_unfixed": before,
        }

    @torch.no_grad()
    def quant_errors(self, model: QuantModel) -> dict[str, float]:
        """``||w - Q(w)||^2 / ||w||^2`` of every learned layer at its current bits."""
        lay = self.layout(model)
        return {n: float(self._relative_error(m)) for n, m in lay.learned.items()}

    def report(self, model: QuantModel) -> dict[str, Any]:
        lay = self.layout(model)
        errors = self.quant_errors(model)
        learned = sum(lay.sizes[n] for n in errors)
        avg = sum(lay.sizes[n] * e for n, e in errors.items()) / learned if learned else 0.0
        out = {
            **super().report(model),
            "quant_error": {n: round(e, 6) for n, e in errors.items()},
            "quant_error_avg": round(avg, 6),
            "bits_fixed": self.all_fixed(model),
        }
        if not out["bits_fixed"]:  # once fixed, the logits no longer decide anything
            out["gate_logits"] = {
                n: [round(float(v), 5) for v in lay.quantizer(n).logits.detach()]
                for n in lay.learned
            }
        return out

    def plots(self, out: Path, history: list[dict[str, Any]]) -> list[Path]:
        from qcompile.stages.plots import plot_quant_error

        made = plot_quant_error(out, history)
        return [*super().plots(out, history), *([made] if made else [])]
