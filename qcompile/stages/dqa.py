"""``dqa`` (DNN Quantization with Attention, papers/003) and ``br`` (Binary-Relax, eq. 8).

Both put a :class:`~qcompile.quant.dqa.Mixture` of quantizers on every quantized layer and
deploy its lowest-bit member. Choices where the paper is silent, and measured in BENCHMARKS.md:

- Eq. 6 divides each layer's penalty ``lambda g^T a`` by S, the network's weight count, and says
  this makes lambda independent of the network size. Read literally (no per-layer size) the
  penalty would shrink as networks grow, so each layer is weighted by its own weight count:
  ``r = lambda * sum_l (N_l / S) g^T a_l``. Activation mixtures share one more such unit.
- ``g`` defaults to ``[1, 4, 16]`` (``4^(k-1)`` for other K).
- The schedule is per optimizer step: ``T(b) = T0 psi^b``, b = 1..B over the whole run, so the
  last step runs at exactly ``T_B``.
- Schedules scale with the run (``t0 = 0`` and ``omega_growth = 0``, the defaults; a number
  fixes them). The papers' constants belong to 300 CIFAR-10 epochs at batch 128 (117,300
  steps): with ``T0 = 100`` the attention stays near uniform until ``T`` falls to about 1,
  57% into any run, which on a 15-epoch run leaves six epochs for the deployed member (the
  ablation in BENCHMARKS.md: 97.00% with ``T0 = 100``, 97.70% with ``T0 = 1``). So ``T0``
  is proportional to the run's optimizer steps B, ``T0 = 100 B / 117,300``, kept within
  [1, 100] (at or below 1 the normalised logits decide the attention from the first step;
  never hotter than the paper): 100 at the paper's length, 1 for lenet on mnist5k at 15
  epochs (945 steps). Binary-Relax's ``omega x1.02`` per epoch reaches ``1.02^300 ~ 380``
  after the paper's 300 epochs, where the relaxed mixture has all but become ``Q_1``; at 15
  epochs it reaches 1.35 and the deployed member is mixed half and half with full precision
  to the end. The scaled growth ``1.02^(300 / E)`` per epoch ends every E-epoch run at that
  same ``omega``.
- First and last layers kept at ``first_last_wbits`` use a plain quantizer, not a mixture.
- At the end of training every mixture snaps to its first member; ``test_acc`` is that
  deployed model's accuracy and ``test_acc_mixture`` the accuracy just before the snap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qcompile.quant import (
    FLOAT_BITS,
    WEIGHT_QUANTIZERS,
    Identity,
    Quantizer,
    make_act_quantizer,
    make_weight_quantizer,
)
from qcompile.quant.dqa import Mixture
from qcompile.stages.base import Stage, StageConfig, per_model
from qcompile.stages.layers import QuantAct, QuantModel

IMPLIED_BITS = {"bwn": 1, "twn": 2, "fp": FLOAT_BITS}


def parse_member(spec: str) -> tuple[str, int]:
    """``"minmax:4"`` -> ``("minmax", 4)``; ``"bwn"``, ``"twn"``, ``"fp"`` carry their width."""
    name, _, bits = spec.partition(":")
    if name not in WEIGHT_QUANTIZERS and name != "fp":
        valid = ", ".join(sorted([*WEIGHT_QUANTIZERS, "fp"]))
        raise ValueError(f"mixture member '{spec}': unknown quantizer '{name}' (valid: {valid})")
    if not bits:
        if name not in IMPLIED_BITS:
            raise ValueError(f"mixture member '{spec}' needs a bitwidth, e.g. '{name}:2'")
        return name, IMPLIED_BITS[name]
    if not bits.isdigit() or not 1 <= int(bits) <= 8:
        raise ValueError(f"mixture member '{spec}': bits must be 1..8")
    if name in IMPLIED_BITS and int(bits) != IMPLIED_BITS[name]:
        raise ValueError(f"mixture member '{spec}': {name} is {IMPLIED_BITS[name]}-bit")
    return name, int(bits)


def ladder(bits: int, factors: tuple[int, ...]) -> list[int]:
    """``[b, 2b, 4b]``-style widths; anything over 8 bits becomes float, duplicates dropped."""
    out: list[int] = []
    for f in factors:
        n = bits * f if bits * f <= 8 else FLOAT_BITS
        if n not in out:
            out.append(n)
    return out


@dataclass(frozen=True)
class MixtureConfig(StageConfig):
    """``mixture``: member specs lowest-bit first, e.g. ``["bwn", "twn", "minmax:8"]``; empty
    derives it from ``wbits`` and ``weight_quant``. ``act_mixture`` also mixes PACT activation
    quantizers at ``[abits, 2 abits, 4 abits]``."""

    mixture: tuple[str, ...] = ()
    act_mixture: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        members = [parse_member(m) for m in self.mixture]
        if members and [b for _, b in members] != sorted({b for _, b in members}):
            raise ValueError(f"mixture {list(self.mixture)} must be sorted by strictly rising bits")
        if members and self.wbits not in (members[0][1], FLOAT_BITS):
            raise ValueError(
                f"the mixture deploys its first member ({self.mixture[0]}); "
                f"set wbits = {members[0][1]}"
            )


class MixtureStage(Stage):
    """What DQA and BR share: mixtures on layers, snapping at the end, reporting weights."""

    mode = "attention"
    factors: tuple[int, ...] = (1, 2, 4)

    def members(self, bits: int) -> list[tuple[str, int]]:
        c = self.config
        if c.mixture:
            return [parse_member(m) for m in c.mixture]
        return [
            ("fp" if n == FLOAT_BITS else c.weight_quant, n) for n in ladder(bits, self.factors)
        ]

    def weight_quantizer(self, name: str, layer: nn.Conv2d | nn.Linear, bits: int) -> Quantizer:
        c = self.config
        channels = layer.weight.shape[0]
        qs = [
            Identity() if q == "fp" else make_weight_quantizer(q, n, channels, c.per_channel)
            for q, n in self.members(bits)
        ]
        return Mixture(qs, self.mode)

    def act_quantizer(self, name: str, bits: int) -> Quantizer:
        c = self.config
        if not c.act_mixture:
            return super().act_quantizer(name, bits)
        qs = [
            make_act_quantizer(c.act_quant, n, c.pact_init) if n != FLOAT_BITS else Identity()
            for n in ladder(bits, self.factors)
        ]
        return Mixture(qs, self.mode)

    @per_model
    def mixtures(self, model: QuantModel) -> dict[str, Mixture]:
        """Every mixture by the name of the layer that holds it, weights first."""
        return self.find_mixtures(model)

    @staticmethod
    def find_mixtures(model: QuantModel) -> dict[str, Mixture]:
        found: dict[str, Mixture] = {}
        for name, m in model.net.named_modules():
            q = getattr(m, "weight_quant", None) or (m.quant if isinstance(m, QuantAct) else None)
            if isinstance(q, Mixture):
                found[name] = q
        return found

    def finalize(self, model: QuantModel, evaluate: Callable[[], float]) -> dict[str, Any]:
        mixtures = self.mixtures(model)
        if all(bool(m.snapped) for m in mixtures.values()):
            return {}
        before = evaluate()
        for m in mixtures.values():
            m.snap()
        after = evaluate()
        return {"test_acc_mixture": before, "snap_drop": before - after}

    def report(self, model: QuantModel) -> dict[str, Any]:
        with torch.no_grad():
            weights = {
                n: [round(float(v), 6) for v in m.weights()]
                for n, m in self.mixtures(model).items()
            }
        return {"attention": weights, **self.quantizer_curve(model)}

    def quantizer_curve(self, model: QuantModel, points: int = 96) -> dict[str, Any]:
        """The effective quantization function of the first mixed weight layer, sampled at
        channel 0's weights (for the paper's Fig. 3b)."""
        layers = model.weight_layers()
        for name, m in self.mixtures(model).items():
            if name in layers:
                w = layers[name].weight.detach()
                with torch.no_grad():
                    q = m(w)[0].flatten()
                w0 = w[0].flatten()
                order = w0.argsort()
                pick = order[torch.linspace(0, len(order) - 1, min(points, len(order))).long()]
                return {"qfunc": {"layer": name, "w": w0[pick].tolist(), "q": q[pick].tolist()}}
        return {}

    def plots(self, out: Path, history: list[dict[str, Any]]) -> list[Path]:
        from qcompile.stages.plots import plot_attention, plot_quantizer

        return [p for p in (plot_attention(out, history), plot_quantizer(out, history)) if p]


# The papers' schedule constants and the run they were set for (papers/003 sec. 4.1: 300
# CIFAR-10 epochs at batch 128, 391 steps an epoch).
PAPER_T0 = 100.0
PAPER_STEPS = 300 * 391
PAPER_EPOCHS = 300
PAPER_OMEGA_GROWTH = 1.02


def scaled_t0(total_steps: int, t_end: float) -> float:
    """The default ``T0`` for a run of ``total_steps``: ``100 B / 117,300`` within [1, 100]
    (and at least ``t_end``); see the module docstring.

    >>> scaled_t0(117_300, 0.03), scaled_t0(945, 0.03), scaled_t0(23_460, 0.03)
    (100.0, 1.0, 20.0)
    """
    return max(t_end, min(PAPER_T0, max(1.0, PAPER_T0 * total_steps / PAPER_STEPS)))


def scaled_omega_growth(total_epochs: int) -> float:
    """The default Binary-Relax growth per epoch: ``1.02^(300 / E)``, so every run ends at
    the paper's final ``omega = 1.02^300``.

    >>> round(scaled_omega_growth(300), 6), round(scaled_omega_growth(15), 4)
    (1.02, 1.4859)
    """
    return PAPER_OMEGA_GROWTH ** (PAPER_EPOCHS / max(1, total_epochs))


@dataclass(frozen=True)
class DQAConfig(MixtureConfig):
    """DQA hyper-parameters: ``t0``/``t_end`` (temperature schedule, eq. 5; ``t0 = 0``:
    scaled to the run, :func:`scaled_t0`), ``lam`` and ``penalty`` (eq. 6; empty =
    ``4^(k-1)``), ``normalize_alpha`` (Algorithm 1)."""

    t0: float = 0.0
    t_end: float = 0.03
    lam: float = 5.0
    penalty: tuple[float, ...] = ()
    normalize_alpha: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.t_end > 0 or (self.t0 != 0 and not self.t_end <= self.t0):
            raise ValueError(
                f"need 0 < t_end <= t0 (t0 = 0: scaled), got t0={self.t0}, t_end={self.t_end}"
            )
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


def temperature(t0: float, t_end: float, step: int, total: int) -> float:
    """``T(b) = T0 psi^b`` with ``psi = (T_B / T0)^(1/B)``, b = ``step + 1`` (papers/003 eq. 5).

    >>> temperature(100.0, 0.03, 999, 1000)
    0.03
    """
    return t0 * (t_end / t0) ** ((step + 1) / total) if step + 1 < total else t_end


class DQAStage(MixtureStage):
    """Attention over ``[b, 2b, 4b]``-bit quantizers, cooled to one-hot on the ``b``-bit one."""

    name = "dqa"
    config_class = DQAConfig

    def penalty_vector(self, k: int) -> Tensor:
        g = self.config.penalty or tuple(4.0**i for i in range(k))
        if len(g) != k:
            raise ValueError(f"penalty has {len(g)} entries for a {k}-quantizer mixture")
        return torch.tensor(g, dtype=torch.float32)

    def t0(self, total_steps: int) -> float:
        """``T0`` of a run of ``total_steps``: the configured one, or :func:`scaled_t0`."""
        return self.config.t0 or scaled_t0(total_steps, self.config.t_end)

    def on_step(self, model: QuantModel, step: int, total_steps: int) -> None:
        self._t0 = self.t0(total_steps)
        t = temperature(self._t0, self.config.t_end, step, total_steps)
        for m in self.mixtures(model).values():
            m.temperature.fill_(t)
            if self.config.normalize_alpha:
                m.normalize_alpha()

    def regularizer(self, model: QuantModel) -> Tensor | None:
        if self.config.lam == 0:
            return None
        mixtures, coeff = self.penalty_terms(model)
        if not mixtures:
            return None
        return torch.dot(coeff, torch.cat([m.weights() for m in mixtures]))

    @per_model
    def penalty_terms(self, model: QuantModel) -> tuple[list[Mixture], Tensor]:
        """The mixtures and one vector ``c`` with ``regularizer = <c, cat(a_l)>``: block l of
        ``c`` is ``g * (lam * share_l)``, exactly the gradient autograd gives ``a_l`` through
        ``lam * sum_l share_l * g^T a_l``, so one dot product replaces a handful of ops per
        mixture each step (built once per model, like :meth:`mixtures`)."""
        layers = model.weight_layers()
        total = sum(m.weight.numel() for m in layers.values())
        mixtures = self.mixtures(model)
        acts = [m for n, m in mixtures.items() if n not in layers]
        blocks = []
        for name, m in mixtures.items():
            share = layers[name].weight.numel() / total if name in layers else 1.0 / len(acts)
            scale = torch.tensor(self.config.lam, dtype=torch.float32) * share
            blocks.append(self.penalty_vector(len(m.members)) * scale)
        coeff = torch.cat(blocks) if blocks else torch.zeros(0)
        return list(mixtures.values()), coeff

    def report(self, model: QuantModel) -> dict[str, Any]:
        ms = self.mixtures(model).values()
        t = float(next(iter(ms)).temperature) if ms else None
        return {**super().report(model), "temperature": t, "t0": getattr(self, "_t0", None)}


@dataclass(frozen=True)
class BRConfig(MixtureConfig):
    """Binary-Relax: ``omega_growth`` per epoch (0, the default: scaled to the run,
    :func:`scaled_omega_growth`, 1.02 at the DQA paper's 300 epochs; the original code used
    1.05) and ``hard_epoch``, after which the first member is used alone (0: never)."""

    omega_growth: float = 0.0
    hard_epoch: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.omega_growth != 0 and self.omega_growth < 1:
            raise ValueError(f"omega_growth must be >= 1 (0: scaled), got {self.omega_growth}")


class BRStage(MixtureStage):
    """``q = (omega Q_1 + Q_2 + ... + Q_K) / (omega + K - 1)``, omega = growth^epoch (eq. 8).

    Without ``mixture`` the members are ``[b, float]``, the original two-quantizer form.
    """

    name = "br"
    config_class = BRConfig
    mode = "relax"
    factors = (1, 16)  # b and float

    def growth(self, total_epochs: int) -> float:
        """``omega``'s factor per epoch: the configured one, or :func:`scaled_omega_growth`."""
        return self.config.omega_growth or scaled_omega_growth(total_epochs)

    def on_epoch_end(self, model: QuantModel, epoch: int, total_epochs: int) -> None:
        omega = self.growth(total_epochs) ** (epoch + 1)
        hard = 0 < self.config.hard_epoch <= epoch + 1
        for m in self.mixtures(model).values():
            m.omega.fill_(omega)
            if hard:
                m.snap()

    def report(self, model: QuantModel) -> dict[str, Any]:
        ms = list(self.mixtures(model).values())
        return {**super().report(model), "omega": float(ms[0].omega) if ms else None}
