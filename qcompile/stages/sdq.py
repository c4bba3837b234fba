"""``sdq``: Stochastic Differentiable Quantization (papers/002, ICML 2022; no public code).

Every learned layer holds uniform weight quantizers at its candidate bitwidths
``b_1 < ... < b_n`` (default ``1..wbits``), starts at ``b_n = wbits`` and carries a
Differentiable Bitwidth Parameter ``beta``: the probability of quantizing with its current
width ``b_i`` rather than the next lower ``b_(i-1)``. Training has two phases:

1. Bit search (the first ``search_fraction`` of the epochs). Each training forward draws the
   width by straight-through Gumbel-Softmax: the forward pass uses the hard choice, the
   backward pass the relaxed one, so ``dL/dbeta`` flows through ``s Q_bi(w) + (1-s) Q_b(i-1)(w)``.
   A size penalty on the expected bits pushes the betas down while the deployed model is over
   ``target_bits``; a layer steps down when its beta falls below ``step_down_at``.
2. Fine-tuning with the bitwidths frozen: the Entropy-aware Bin Regulariser (EBR, weight
   ``lam_ebr``) and, with ``teacher`` set, knowledge distillation from a float checkpoint.

Choices where the paper is silent (measured in the stage's tests and the run report):

- Gumbel noise: one uniform ``u`` per layer and forward from the global torch RNG (seeded and
  checkpointed by the training loop); ``s = sigmoid((logit(beta) + logit(u)) / tau)`` is the
  two-way Gumbel-Softmax weight of ``b_i``, and ``b_i`` is taken when ``s > 0.5``, i.e. with
  probability ``beta``. ``tau`` defaults to 1. Evaluation and export use ``b_i`` alone.
- ``beta`` is a buffer that the stage updates itself with plain SGD, not a parameter of the
  run's optimizer: Adam would move every beta by about its learning rate per step whatever
  its gradient, losing the size-versus-loss trade-off between layers that the gradient
  magnitudes carry, and a stateless update keeps ``--resume`` exact with nothing extra to
  checkpoint. ``beta_lr`` is per search phase: each step moves beta by
  ``beta_lr / (search_fraction * total_steps)`` times its gradient, so one recipe value fits
  runs of any length. The gradient of a step is applied before the next step's forward pass
  (and at the end of every epoch, before the checkpoint); under DDP it is averaged across
  ranks. beta is kept in [0, 1]; in the Gumbel logits its value is clamped to
  [1e-3, 1 - 1e-3] with the gradient passed straight through.
- Size penalty: ``lam_size * (E[avg bits] - target_bits)``, E taken with
  ``beta b_i + (1 - beta) b_(i-1)`` per learned layer and the fixed widths of the first/last
  layers, weighted by weight count (inspect's average). It is active only while the deployed
  average (every layer at its ``b_i``) exceeds the target: the expected bits never exceed the
  deployed ones, so a hinge on the expectation alone could stop short of the budget.
  Measured on lenet, the straight-through task gradient on beta is small and of unstable
  sign next to the penalty (batch means of about +-0.005..0.03 against ``lam_size N_l / S`` of
  0.1..3.5), so layers step down roughly largest first and the search stops as soon as the
  deployed average fits; it can undershoot the target by one step of the largest layer
  (lenet on mnist5k: 1.41 bits for a 2.0 target).
- Step-down: when ``beta < step_down_at`` (0.5: the sampled width is more often the lower one)
  the layer moves to ``b_(i-1)`` and beta resets to 1 (it sits at the new width for certain,
  as every layer does at the start). Widths only go down.
- Budget enforcement: when the search ends above ``target_bits`` (as inspect counts it, the
  8-bit first/last layers included), the learned layer with the lowest beta steps down, ties
  going to the larger layer and then to definition order, until the average fits. The count
  is reported as ``forced_steps``.
- EBR: per output channel of every quantized weight layer, the bin term of Bin
  Regularization, ``(mean_k - level_k)^2 + var_k`` (population variance), which equals the mean
  of ``(w - level_k)^2`` over the weights of bin k. Weighted by the observed usage ``p_k`` the
  sum would be the plain quantization MSE; EBR weights every bin by the maximum-entropy usage
  ``1 / 2^b`` instead, so sparsely used outer bins count as much as crowded ones and are kept
  sharp and in use. Errors are in units of the channel's step (scale-free across layers),
  levels are constants (no gradient to the quantizer's statistics), and layers are weighted
  by their share of all weights.
- Distillation (phase 2 only): ``kd_weight * T^2 * KL(teacher || student)`` at temperature
  ``kd_temperature``, added to the cross-entropy. The teacher is any ``--wbits 32`` run,
  rebuilt from its recipe and loaded with ``weights_only=True`` as freeze does; it is checked
  on the first training step and never enters the student's state dict, so freezing the
  student does not need it.
- Candidates are min-max (default) or calibrated SAWB grids (``weight_quant``). On lenet
  (digits, mnist5k; 10 epochs, target 2 bits) both reach the same widths; SAWB is 0.4-0.5
  points more accurate but, calibrated on every training step for two candidates, makes an
  epoch 4-7x slower. SAWB's cached clip is allocated at its final shape so checkpoints load
  into a rebuilt model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from qcompile import distributed as D
from qcompile.errors import QCompileError
from qcompile.quant import FLOAT_BITS, Quantizer
from qcompile.quant.sdq import (
    CANDIDATE_QUANTIZERS,
    SDQQuantizer,
    bin_regularizer,
    candidate,
    distillation,
)
from qcompile.stages.base import CheckpointLoader, per_model
from qcompile.stages.budget import BudgetConfig, BudgetStage, average_bits, layer_sizes
from qcompile.stages.layers import QuantModel


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class SDQConfig(BudgetConfig):
    """SDQ hyper-parameters (see the module docstring for what each choice means).

    ``wbits``: the width learned layers start at, the top candidate; ``candidates``: their
    widths, rising and ending at ``wbits`` (empty: ``1..wbits``); ``search_fraction``: share of
    the epochs spent searching; ``beta_lr``: DBP learning rate per search phase; ``lam_size``:
    size penalty; ``step_down_at``: beta threshold; ``tau``: Gumbel temperature;
    ``lam_ebr``: EBR weight (lambda_E); ``teacher``: a float run's checkpoint.pt for
    distillation (empty: none); ``kd_weight``, ``kd_temperature``: its loss.
    """

    candidates: tuple[int, ...] = ()
    search_fraction: float = 0.5
    beta_lr: float = 1.0
    lam_size: float = 4.0
    step_down_at: float = 0.5
    tau: float = 1.0
    lam_ebr: float = 0.1
    teacher: str = ""
    kd_weight: float = 1.0
    kd_temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight_quant not in CANDIDATE_QUANTIZERS:
            raise ValueError(
                f"weight_quant '{self.weight_quant}' cannot be stepped between widths: "
                f"sdq takes {' or '.join(CANDIDATE_QUANTIZERS)}"
            )
        if not 2 <= self.wbits <= 8:
            start = "wbits (the width learned layers start at)"
            raise ValueError(f"{start} must be 2..8, got {self.wbits}")
        bits = list(self.bit_choices)
        if bits != sorted(set(bits)) or not all(1 <= b <= 8 for b in bits) or len(bits) < 2:
            raise ValueError(f"candidates must be >= 2 distinct rising widths in 1..8, got {bits}")
        if bits[-1] != self.wbits:
            raise ValueError(f"candidates {bits} must end at wbits = {self.wbits}")
        if not 0 < self.search_fraction <= 1:
            raise ValueError(f"search_fraction must be in (0, 1], got {self.search_fraction}")
        if not 0 < self.step_down_at < 1:
            raise ValueError(f"step_down_at must be in (0, 1), got {self.step_down_at}")
        for name in ("beta_lr", "tau", "kd_temperature"):
            _positive(name, getattr(self, name))
        for name in ("lam_size", "lam_ebr", "kd_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def bit_choices(self) -> tuple[int, ...]:
        return self.candidates or tuple(range(1, self.wbits + 1))


class SDQStage(BudgetStage):
    """Bit search by straight-through Gumbel-Softmax over adjacent widths, then fine-tuning
    with EBR and optional distillation; the final widths meet ``target_bits``."""

    name = "sdq"
    config_class = SDQConfig
    config: SDQConfig

    def __init__(self, config: SDQConfig) -> None:
        super().__init__(config)
        self._beta_lr_step = 0.0
        self._teacher: QuantModel | None = None

    def min_bits(self) -> int:
        return self.config.bit_choices[0]

    def weight_quantizer(self, name: str, layer: nn.Conv2d | nn.Linear, bits: int) -> Quantizer:
        c = self.config
        rows = layer.weight.shape[0] if c.per_channel else 1
        members = [candidate(c.weight_quant, b, rows, c.per_channel) for b in c.bit_choices]
        return SDQQuantizer(members, c.tau)

    # -- state -------------------------------------------------------------------------------
    def searchers(self, model: QuantModel) -> dict[str, SDQQuantizer]:
        """The learned layers' quantizers by layer name (found once per model: hooks ask every
        step and walking the module tree costs about a millisecond)."""
        return self._lookup(model)[0]

    def _sizes(self, model: QuantModel) -> dict[str, int]:
        return self._lookup(model)[1]

    @per_model
    def _lookup(
        self, model: QuantModel
    ) -> tuple[dict[str, SDQQuantizer], dict[str, int], dict[str, Quantizer], dict[str, nn.Module]]:
        """The learned layers' quantizers, every layer's size, every layer's quantizer and
        every weight layer."""
        layers = model.weight_layers()
        quants = {n: m.weight_quant for n, m in layers.items()}
        found = {n: q for n, q in quants.items() if isinstance(q, SDQQuantizer)}
        return found, layer_sizes(model), quants, dict(layers)

    def searching(self, model: QuantModel) -> bool:
        """Phase 1 (bit search) until ``end_search`` froze the widths."""
        return not all(bool(q.frozen) for q in self.searchers(model).values())

    def search_epochs(self, total_epochs: int) -> int:
        """Epochs of phase 1: ``search_fraction`` of the run rounded half up, at least one."""
        return min(total_epochs, max(1, int(self.config.search_fraction * total_epochs + 0.5)))

    def deployed_average(self, model: QuantModel) -> float:
        """Average weight bits with every layer at its current width (inspect's figure).
        Read from the quantizers found once per model: walking the module tree for
        ``layer_bits`` every step cost more than the rest of the size penalty."""
        quants = self._lookup(model)[2]
        return average_bits({n: float(q.bits) for n, q in quants.items()}, self._sizes(model))

    # -- hooks -------------------------------------------------------------------------------
    def on_step(self, model: QuantModel, step: int, total_steps: int) -> None:
        self._beta_lr_step = self.config.beta_lr / max(
            1.0, self.config.search_fraction * total_steps
        )
        self.apply_beta_updates(model)

    def on_epoch_end(self, model: QuantModel, epoch: int, total_epochs: int) -> None:
        self.apply_beta_updates(model)  # the last step's gradient, before the checkpoint
        if epoch + 1 == self.search_epochs(total_epochs) and self.searching(model):
            self.end_search(model)

    def apply_beta_updates(self, model: QuantModel) -> None:
        """Apply every layer's pending ``dL/dbeta`` (averaged over DDP ranks)."""
        qs = list(self.searchers(model).values())
        pending = [q.leaf is not None for q in qs]
        grads = [q.take_grad() for q in qs]
        if not any(pending):
            return
        mean = D.all_reduce_mean(torch.stack(grads))
        for q, g in zip(qs, mean, strict=True):
            q.update(g, self._beta_lr_step, self.config.step_down_at)

    def end_search(self, model: QuantModel) -> int:
        """Meet ``target_bits`` and freeze every width; returns the forced step-downs."""
        qs = self.searchers(model)
        sizes = self._sizes(model)
        order = {n: i for i, n in enumerate(sizes)}
        forced = 0
        while self.deployed_average(model) > self.config.target_bits:
            lowerable = [n for n, q in qs.items() if int(q.index) > 0]
            if not lowerable:  # wrap checked that the lowest widths meet the budget
                raise RuntimeError("every learned layer is at its lowest width, over budget")
            pick = min(lowerable, key=lambda n: (float(qs[n].beta), -sizes[n], order[n]))
            qs[pick].step_down(forced=True)
            forced += 1
        for q in qs.values():
            q.leaf = None
            q.frozen.fill_(True)
        return forced

    def regularizer(self, model: QuantModel) -> Tensor | None:
        if self.searching(model):
            return self.size_penalty(model)
        return self.ebr(model) if self.config.lam_ebr > 0 else None

    def size_penalty(self, model: QuantModel) -> Tensor | None:
        """``lam_size * (E[avg bits] - target)`` while the deployed average is over budget."""
        c = self.config
        if c.lam_size == 0 or self.deployed_average(model) <= c.target_bits:
            return None
        qs, sizes = self.searchers(model), self._sizes(model)
        if not qs:  # nothing learns a width: the penalty would be a constant
            return None
        quants = self._lookup(model)[2]
        total = sum(sizes.values())
        # The fixed layers' bits are constants: a Python number, not a tensor per layer per
        # step. The gradient reaching each beta is the same product lam / S * N_l * (b_i -
        # b_(i-1)); only the loss value's rounding changes.
        fixed = sum(sizes[n] * float(quants[n].bits) for n in sizes if n not in qs)
        expected = sum(sizes[n] * qs[n].expected_bits() for n in qs)
        return c.lam_size * ((expected + fixed) / total - c.target_bits)

    def ebr(self, model: QuantModel) -> Tensor:
        """``lam_ebr`` times the weight-count-weighted EBR of every quantized weight layer."""
        sizes = self._sizes(model)
        total = sum(sizes.values())
        terms = []
        for name, layer in self._lookup(model)[3].items():  # found once: EBR runs every step
            with torch.no_grad():
                enc = layer.weight_quant.encode(layer.weight.detach())
            terms.append(sizes[name] / total * bin_regularizer(layer.weight, enc))
        return self.config.lam_ebr * torch.stack(terms).sum()

    def extra_loss(self, model: QuantModel, x: Tensor, logits: Tensor) -> Tensor | None:
        """Distillation from ``teacher`` in phase 2."""
        c = self.config
        if not c.teacher or c.kd_weight == 0 or self.searching(model):
            return None
        if self._teacher is None:
            raise QCompileError(
                "sdq: the distillation teacher is not loaded: the training loop calls "
                "stage.prepare(model, qcompile.builder.RunCheckpoints(in_shape, classes), "
                "fresh); a custom loop must too"
            )
        teacher = self._teacher.to(x.device)
        with torch.no_grad():
            target = teacher(x)
        return c.kd_weight * distillation(logits, target, c.kd_temperature)

    def prepare(self, model: QuantModel, checkpoints: CheckpointLoader, fresh: bool) -> None:
        """Load the distillation teacher (a float run's checkpoint), resumed runs too."""
        path = self.config.teacher
        if not path:
            return
        bits = checkpoints.recipe_wbits(path, "teacher")
        if bits != FLOAT_BITS:
            raise QCompileError(
                f"teacher {path} has {bits}-bit weights: distill from a float run "
                "(trained with --wbits 32)"
            )
        self._teacher = checkpoints.trained(path, "teacher")

    def finalize(self, model: QuantModel, evaluate: Callable[[], float]) -> dict[str, Any]:
        """A loop that stopped before the search ended still deploys within budget."""
        if not self.searching(model):
            return {}
        return {"forced_steps": self.end_search(model)}

    def report(self, model: QuantModel) -> dict[str, Any]:
        qs = self.searchers(model)
        return {
            **super().report(model),
            "bits_frozen": not self.searching(model),  # as of the end of this epoch
            "beta": {n: round(float(q.beta), 4) for n, q in qs.items()},
            "forced_steps": sum(int(q.forced) for q in qs.values()),
        }
