"""``dmbq``: distribution-aware multi-bit quantization with Learned Bit Allocation
(papers/001; METHODS.md "DMBQ + LBA").

Every learned layer gets a :class:`~qcompile.quant.dmbq.DMBQ` quantizer starting at ``wbits``
(1..4, default 4). LBA measures, every step, the first-order loss change of quantizing each
group, ``d = |sum_group (w - w^) dL/dw^| / n`` (n = the group's weight count), sums it over the
epoch, and at each epoch end inside the tuning window lowers by one bit the least sensitive
groups while the average weight bits exceed ``target_bits``. Bits only go down.

Groups (``granularity``): ``global`` (one group: every learned layer moves together, GP),
``layer`` (one group per layer, LP) or ``channel`` (one per output channel, CP; the default,
the paper's best, now that the IR stores a width per channel: ``Weights.channel_bits``).

Choices where the sources are silent, or where this differs from the authors' code (DAMBQV2):

- The budget is inspect's ``avg_weight_bits`` (:mod:`qcompile.stages.budget`): first and last
  layers at ``first_last_wbits`` count, and every channel counts at its own width, as the IR
  stores it (``Weights.channel_bits``; see :meth:`DMBQStage.layer_bits`), and so does every
  backend: each channel's codes are packed and read at its own width.
- ``d`` takes the absolute value of every step's group sum before summing over the epoch, as
  the paper's formula reads; the authors' code sums the signed values.
- Per epoch the number of groups lowered is ``ceil(r * G)`` (G = all groups; the authors' code
  truncates, which lowers nothing with few layers), taken in ascending ``d`` among groups
  above 1 bit, one at a time, stopping as soon as the budget is met ("while the average
  exceeds the target"); the authors lower all of them at once.
- ``r`` rises linearly from ``ratio_start`` at the window's first epoch to ``ratio_end`` at its
  last. The window is ``[lba_start, lba_end)`` in epochs; values <= 1 are fractions of the run
  (as the step schedule's milestones), and it always holds at least one epoch.
- If the window ends above budget, the last window epoch keeps lowering until the budget is
  met, so the frozen model always meets ``target_bits``. Each move lowers one group by a bit.
  Moves go in passes (each group at most once per pass): if one move alone meets the budget,
  the one with the smallest first-order loss change ``d_g n_g`` ends it; otherwise the
  cheapest per bit saved (``d_g``) is made and the pass goes on. ``finalize``
  repeats the check in case a custom loop never reached the window's end.
- Sensitivities live in the stage and are reset at every epoch end, before the checkpoint is
  written: a checkpoint never holds a partial sum, and ``--resume`` re-runs the interrupted
  epoch from zero. Under DDP each rank sums ``|.|`` of its own shard's gradients and the
  ranks' totals are added at the epoch end, so every rank takes the same decision.
- Ties in ``d`` go to the earlier group (layers in definition order, then channel index).
- Activations use the shared PACT quantizer at ``abits`` (learned clip, one width per tensor);
  the paper's per-input-channel activation bits and their LBA are not implemented, since the
  IR has one activation width per tensor.
- ``init_from`` copies a finished run's weights, BatchNorm statistics and activation/input
  quantizer state (the paper starts LBA from a trained W4A4 model) before the first step; its
  weight quantizers are dropped, so ``A_c`` starts from the loaded weights.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from qcompile import distributed as D
from qcompile.quant import Quantizer, make_weight_quantizer
from qcompile.quant.dmbq import DMBQ, MAX_BITS
from qcompile.stages.base import CheckpointLoader
from qcompile.stages.budget import BudgetConfig, BudgetStage, layer_sizes
from qcompile.stages.layers import QuantModel

GRANULARITIES = ("global", "layer", "channel")
MIN_BITS = 1  # no 0-bit (pruned) groups: see qcompile.quant.dmbq


@dataclass(frozen=True)
class DMBQConfig(BudgetConfig):
    """DMBQ + LBA options: ``granularity`` (global | layer | channel), the tuning window
    ``lba_start``..``lba_end`` (fractions of the run if <= 1, else epochs), the lowered fraction
    ``ratio_start`` -> ``ratio_end``, ``momentum`` of the running clip ``A_c`` and
    ``init_from`` (a checkpoint of a finished run, relative to the working directory, whose
    weights start this one; empty: none)."""

    granularity: str = "channel"
    lba_start: float = 0.0
    lba_end: float = 0.5
    ratio_start: float = 0.01
    ratio_end: float = 0.3
    momentum: float = 0.99
    init_from: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.wbits <= MAX_BITS:
            raise ValueError(f"wbits must be 1..{MAX_BITS} (the DMBQ levels), got {self.wbits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity '{self.granularity}' is not one of {', '.join(GRANULARITIES)}"
            )
        if not 0 <= self.lba_start < self.lba_end:
            raise ValueError(
                f"need 0 <= lba_start < lba_end, got {self.lba_start} and {self.lba_end}"
            )
        if not 0 < self.ratio_start <= self.ratio_end <= 1:
            raise ValueError(
                f"need 0 < ratio_start <= ratio_end <= 1, got {self.ratio_start}, {self.ratio_end}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


def window(config: DMBQConfig, total_epochs: int) -> tuple[int, int]:
    """The tuning window ``[first, end)`` in 0-based epochs, at least one epoch long.

    >>> window(DMBQConfig(), 10)
    (0, 5)
    """

    def epochs(x: float) -> int:
        return round(x * total_epochs) if x <= 1 else int(x)

    first = min(epochs(config.lba_start), total_epochs - 1)
    return first, min(max(epochs(config.lba_end), first + 1), total_epochs)


def lowering_ratio(config: DMBQConfig, epoch: int, first: int, end: int) -> float:
    """``r`` at ``epoch``: ``ratio_start`` at the window's first epoch, ``ratio_end`` at its
    last (a one-epoch window uses ``ratio_end``)."""
    span = end - 1 - first
    t = 1.0 if span <= 0 else (epoch - first) / span
    return config.ratio_start + (config.ratio_end - config.ratio_start) * t


def lower_least_sensitive(
    bits: Tensor, d: Tensor, k: int, fits: Callable[[Tensor], bool]
) -> Tensor:
    """One LBA step: lower by one bit up to ``k`` groups above ``MIN_BITS``, least sensitive
    (smallest ``d``) first, stopping as soon as ``fits(bits)``. Returns new group bits.

    >>> lower_least_sensitive(torch.tensor([4, 4, 4]), torch.tensor([3.0, 1.0, 2.0]), 2,
    ...                       lambda b: False).tolist()
    [4, 3, 3]
    """
    bits = bits.clone()
    lowered = 0
    for g in torch.sort(d, stable=True).indices.tolist():
        if lowered >= k or fits(bits):
            break
        if bits[g] > MIN_BITS:
            bits[g] -= 1
            lowered += 1
    return bits


@dataclass(frozen=True)
class Move:
    """Lower ``groups`` by one bit; ``cost`` = first-order loss change ``sum_g d_g n_g``;
    ``index`` (the first group) breaks ties."""

    groups: Tensor
    cost: float
    index: int

    def apply(self, bits: Tensor) -> Tensor:
        out = bits.clone()
        out[self.groups] -= 1
        return out


@dataclass
class Groups:
    """The LBA groups of one model: ``group[i]`` is the group of the i-th channel of the
    learned layers laid end to end (``offsets`` into that vector per layer)."""

    names: list[str]
    quantizers: list[DMBQ]
    offsets: list[int]
    group: Tensor  # long [channels]
    size: Tensor  # float64 [groups]: weights per group (n)
    channel_size: Tensor  # float64 [channels]: weights per channel
    fixed_bits: float  # sum of N_l b_l over the layers that keep their width
    total: int  # weights in all quantized layers

    @property
    def count(self) -> int:
        return self.size.numel()

    def channel_bits(self) -> Tensor:
        return torch.cat([q.channel_bits for q in self.quantizers]).cpu()

    def group_bits(self) -> Tensor:
        """Bits per group (every channel of a group has the same)."""
        out = torch.zeros(self.count, dtype=torch.long)
        return out.scatter_reduce(0, self.group, self.channel_bits(), "amax", include_self=False)

    def average(self, group_bits: Tensor) -> float:
        """inspect's ``avg_weight_bits`` with these group bits: the IR stores every channel at
        its own width (``Weights.channel_bits``), so each channel counts its weights at it."""
        learned = float((self.channel_size * group_bits[self.group]).sum())
        return (self.fixed_bits + learned) / self.total

    def apply(self, group_bits: Tensor) -> None:
        """Give every quantizer its channels' bits."""
        chan = group_bits[self.group]
        for q, start in zip(self.quantizers, self.offsets, strict=True):
            new = chan[start : start + q.channels]
            if not torch.equal(new, q.channel_bits.cpu()):
                q.set_channel_bits(new)

    def moves(self, group_bits: Tensor, d: Tensor) -> list[Move]:
        """Lowering each group above 1 bit by one, cheapest per bit saved first (``d_g``:
        ``d_g n_g`` over the ``n_g`` bits it saves; ties: the earlier group)."""
        above = torch.nonzero(group_bits > MIN_BITS).flatten().tolist()
        moves = [Move(torch.tensor([g]), float(d[g] * self.size[g]), g) for g in above]
        return sorted(moves, key=lambda m: (float(d[m.index]), m.index))


def force_fit(g: Groups, bits: Tensor, d: Tensor, fits: Callable[[Tensor], bool]) -> Tensor:
    """Lower ``bits`` until ``fits`` with :meth:`Groups.moves`. In passes (each group at most
    once per pass, to spread the loss): when one remaining move alone meets the budget, the
    cheapest such move ends it; otherwise the cheapest move per bit saved is made and the pass
    goes on."""
    while not fits(bits):
        moves = g.moves(bits, d)
        if not moves:
            raise RuntimeError("the budget cannot be met with every layer at 1 bit")
        while moves:  # disjoint: one group per move
            enough = [m for m in moves if fits(m.apply(bits))]
            if enough:
                return min(enough, key=lambda m: (m.cost, m.index)).apply(bits)
            bits = moves.pop(0).apply(bits)
    return bits


class DMBQStage(BudgetStage):
    """DMBQ weights with bits learned by LBA under ``target_bits`` (see the module docstring).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32),
    ...                     nn.ReLU(), nn.Linear(32, 4))
    >>> DMBQStage(DMBQConfig(target_bits=4.0)).wrap(net).weight_bits()
    {'1': 8, '3': 4, '5': 8}
    """

    name = "dmbq"
    config_class = DMBQConfig

    def __init__(self, config: DMBQConfig) -> None:
        super().__init__(config)
        self._cache: tuple[weakref.ref, Groups] | None = None
        self._sens: Tensor | None = None
        self._last: dict[str, Any] = {}

    def weight_quantizer(self, name: str, layer: nn.Conv2d | nn.Linear, bits: int) -> Quantizer:
        c = self.config
        channels = layer.weight.shape[0]
        if bits != c.wbits:  # first/last layer kept at its own width: a plain quantizer
            return make_weight_quantizer(c.weight_quant, bits, channels, c.per_channel)
        return DMBQ(channels, bits, c.momentum)

    def layer_bits(self, model: QuantModel) -> dict[str, float]:
        """Bits per weight as the IR stores them: a DMBQ layer's channel widths' mean (every
        channel holds as many weights), what inspect reports for its ``channel_bits``."""
        bits = super().layer_bits(model)
        for name, m in model.weight_layers().items():
            if isinstance(m.weight_quant, DMBQ):
                bits[name] = float(m.weight_quant.channel_bits.double().mean())
        return bits

    # -- groups and sensitivity ----------------------------------------------------------------

    def groups(self, model: QuantModel) -> Groups:
        """The model's LBA groups (built once per model: hooks ask every step)."""
        if self._cache is not None and self._cache[0]() is model:
            return self._cache[1]
        found = self._build_groups(model)
        self._cache = (weakref.ref(model), found)
        self._sens = torch.zeros(found.count, dtype=torch.float64)
        return found

    def _build_groups(self, model: QuantModel) -> Groups:
        layers = model.weight_layers()
        sizes = layer_sizes(model)
        learned = {n: m.weight_quant for n, m in layers.items() if isinstance(m.weight_quant, DMBQ)}
        names = list(learned)
        quantizers = [learned[n] for n in names]
        counts = [q.channels for q in quantizers]
        offsets = [sum(counts[:i]) for i in range(len(counts))]
        layer_of = torch.repeat_interleave(torch.arange(len(names)), torch.tensor(counts))
        per_channel = torch.tensor(
            [sizes[n] / q.channels for n, q in zip(names, quantizers, strict=True)],
            dtype=torch.float64,
        )[layer_of]
        g = self.config.granularity
        group = {
            "global": torch.zeros_like(layer_of),
            "layer": layer_of,
            "channel": torch.arange(layer_of.numel()),
        }[g]
        size = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(
            0, group, per_channel
        )
        bits = model.weight_bits()
        fixed = sum(sizes[n] * bits[n] for n in sizes if n not in learned)
        return Groups(
            names, quantizers, offsets, group, size,
            per_channel, float(fixed), sum(sizes.values()),
        )  # fmt: skip

    def collect(self, model: QuantModel) -> None:
        """Fold the last step's per-channel ``sum (w - w^) dL/dw^`` into the groups'
        sensitivities: ``d_g += |sum over g| / n_g``."""
        g = self.groups(model)
        sums = [q.take_step_sum() for q in g.quantizers]
        if all(s is None for s in sums):
            return
        flat = torch.cat(
            [
                s.cpu() if s is not None else torch.zeros(q.channels, dtype=torch.float64)
                for s, q in zip(sums, g.quantizers, strict=True)
            ]
        )
        per_group = torch.zeros(g.count, dtype=torch.float64).index_add_(0, g.group, flat)
        assert self._sens is not None
        self._sens += per_group.abs() / g.size

    def sensitivity(self, model: QuantModel) -> Tensor:
        """The groups' ``d`` summed since the last epoch end (all ranks together)."""
        self.collect(model)
        assert self._sens is not None
        return D.all_reduce_sum(self._sens.clone())

    # -- training hooks ------------------------------------------------------------------------

    def prepare(self, model: QuantModel, checkpoints: CheckpointLoader, fresh: bool) -> None:
        """A new run starts from ``init_from``'s weights (a resumed one has its own)."""
        if fresh and self.config.init_from:
            checkpoints.copy_weights(model, self.config.init_from, "init_from")

    def on_step(self, model: QuantModel, step: int, total_steps: int) -> None:
        self.collect(model)

    def on_epoch_end(self, model: QuantModel, epoch: int, total_epochs: int) -> None:
        g = self.groups(model)
        d = self.sensitivity(model)
        first, end = window(self.config, total_epochs)
        self._last = {}
        if first <= epoch < end:
            before = g.group_bits()
            r = lowering_ratio(self.config, epoch, first, end)
            bits = lower_least_sensitive(before, d, math.ceil(r * g.count), self.fits(g))
            stepped = bits.clone()
            if epoch == end - 1:
                bits = force_fit(g, bits, d, self.fits(g))
            g.apply(bits)
            self._last = {
                "ratio": round(r, 4),
                "lowered": int((before - stepped).sum()),
                "forced": int((stepped - bits).sum()),
            }
        for q in g.quantizers:  # the next epoch needs sensitivities only inside the window
            q.track.fill_(first <= epoch + 1 < end)
        assert self._sens is not None
        self._sens.zero_()

    def fits(self, g: Groups) -> Callable[[Tensor], bool]:
        target = self.config.target_bits
        return lambda bits: g.average(bits) <= target + 1e-9

    def finalize(self, model: QuantModel, evaluate: Callable[[], float]) -> dict[str, Any]:
        g = self.groups(model)
        before = g.group_bits()
        if self.fits(g)(before):
            return {}
        bits = force_fit(g, before, self.sensitivity(model), self.fits(g))
        g.apply(bits)
        return {"lba_forced_after_training": int((before - bits).sum())}

    def report(self, model: QuantModel) -> dict[str, Any]:
        out = {**super().report(model), "granularity": self.config.granularity}
        if self._last:
            out["lba"] = self._last
        return out
