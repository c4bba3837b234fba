"""SDQ's weight quantizer and losses (the stage is :mod:`qcompile.stages.sdq`, whose docstring
says what each choice means): candidate grids, the straight-through Gumbel choice between two
adjacent widths, the Entropy-aware Bin Regulariser and the distillation loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcompile.quant.base import Encoded, Quantizer
from qcompile.quant.minmax_stack import minmax_stack
from qcompile.quant.ste import straight_through
from qcompile.quant.uniform import SAWB, MinMax

CANDIDATE_QUANTIZERS = ("minmax", "sawb")
BETA_EPS = 1e-3  # keeps logit(beta) finite in the Gumbel logits


def candidate(kind: str, bits: int, rows: int, per_channel: bool) -> Quantizer:
    """A ``kind`` (``minmax`` or ``sawb``) weight quantizer at ``bits`` for ``rows`` channels."""
    return MinMax(bits, per_channel) if kind == "minmax" else SAWB(bits, per_channel, channels=rows)


def gumbel_weight(beta: Tensor, u: Tensor, tau: float) -> Tensor:
    """Relaxed weight of the higher width: ``softmax((log[beta, 1-beta] + g) / tau)[0]`` with
    Gumbel noise ``g``, which for two choices is ``sigmoid((logit(beta) + logit(u)) / tau)``
    for one uniform ``u``. It exceeds 0.5 with probability ``beta``.

    >>> float(gumbel_weight(torch.tensor(0.5), torch.tensor(0.5), 1.0))
    0.5
    """
    # Clamped in value only: at beta = 1 (where every layer starts) a plain clamp would cut
    # the task gradient, and only the size penalty could ever move beta.
    b = beta + (beta.clamp(BETA_EPS, 1 - BETA_EPS) - beta).detach()
    logits = torch.log(b) - torch.log1p(-b) + torch.log(u) - torch.log1p(-u)
    return torch.sigmoid(logits / tau)


class SDQQuantizer(Quantizer):
    """A layer's bitwidth search over ``members`` (one quantizer per candidate width, rising).

    The state that decides the deployed width lives in fixed-shape buffers, so it survives a
    checkpoint round trip: ``index`` (current width ``b_i``), ``beta``, ``frozen`` (phase 2)
    and ``forced`` (steps taken by budget enforcement). ``bits`` is ``b_i``. Outside the search
    (eval mode, phase 2, or at the lowest width) the forward pass is ``Q_bi`` alone, so
    ``encode(x).decode() == forward(x)`` holds bit for bit; a search-phase training forward is
    a sample between ``b_i`` and ``b_(i-1)``.

    >>> q = SDQQuantizer([MinMax(1), MinMax(2)])
    >>> q.bits, q.step_down(), q.bits
    (2, None, 1)
    """

    uniform = True

    def __init__(self, members: Sequence[Quantizer], tau: float = 1.0) -> None:
        super().__init__()
        widths = [m.bits for m in members]
        if len(members) < 2 or widths != sorted(set(widths)):
            raise ValueError(f"need >= 2 candidates with strictly rising bits, got {widths}")
        self.members = nn.ModuleList(members)
        self.candidates = tuple(widths)
        self.tau = tau
        self.register_buffer("index", torch.tensor(len(members) - 1))
        self.register_buffer("beta", torch.tensor(1.0))
        self.register_buffer("frozen", torch.tensor(False))
        self.register_buffer("forced", torch.tensor(0))
        # The beta of the last sampled forward, a leaf collecting dL/dbeta for the stage.
        self.leaf: Tensor | None = None

    @property
    def bits(self) -> int:  # type: ignore[override]
        return self.candidates[int(self.index)]

    @property
    def active(self) -> Quantizer:
        return self.members[int(self.index)]

    @property
    def searching(self) -> bool:
        """Whether a forward pass samples between ``b_i`` and ``b_(i-1)``."""
        return self.training and not bool(self.frozen) and int(self.index) > 0

    def forward(self, x: Tensor) -> Tensor:
        if not self.searching:  # a pending gradient survives evaluation between steps
            return self.active(x)
        i = int(self.index)
        upper, lower = self.members[i], self.members[i - 1]
        self.leaf = self.beta.detach().clone().requires_grad_(True)
        s = gumbel_weight(self.leaf, torch.rand((), device=x.device), self.tau)
        pair = _minmax_pair(upper, lower)
        if pair is not None:  # both straight-through: one node for the pick and its gradient
            lo, hi = minmax_stack(x, (lower.bits, upper.bits), pair).unbind()
            return _Pick.apply(x, s, hi, lo, bool(s > 0.5))
        hi, lo = upper(x), lower(x)
        hard = hi if bool(s > 0.5) else lo
        # Exactly the hard choice forward; the relaxed mixture's gradient backward.
        return straight_through(s * hi + (1 - s) * lo, hard.detach())

    def encode(self, x: Tensor) -> Encoded:
        return self.active.encode(x)

    def expected_bits(self) -> Tensor:
        """``beta b_i + (1 - beta) b_(i-1)`` through the last sample's beta (the constant
        ``b_i`` when the last forward did not sample)."""
        if self.leaf is None:
            return torch.tensor(float(self.bits))
        i = int(self.index)
        hi, lo = self.candidates[i], self.candidates[i - 1]
        return lo + self.leaf * (hi - lo)

    def take_grad(self) -> Tensor:
        """The pending ``dL/dbeta`` (0 when there is none); forgets the sample."""
        leaf, self.leaf = self.leaf, None
        if leaf is None or leaf.grad is None:
            return torch.zeros(())
        return leaf.grad.detach().reshape(())

    @torch.no_grad()
    def update(self, grad: Tensor, lr: float, threshold: float) -> None:
        """One SGD step on beta, kept in [0, 1]; steps down when beta < ``threshold``."""
        self.beta.sub_(lr * grad.to(self.beta)).clamp_(0.0, 1.0)
        if float(self.beta) < threshold and int(self.index) > 0:
            self.step_down()

    @torch.no_grad()
    def step_down(self, forced: bool = False) -> None:
        """Move to the next lower width; beta resets to 1 (the layer sits there for certain)."""
        if int(self.index) == 0:
            raise ValueError(f"already at the lowest candidate width {self.candidates[0]}")
        self.index.sub_(1)
        self.beta.fill_(1.0)
        if forced:
            self.forced.add_(1)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, candidates={list(self.candidates)}, beta={float(self.beta):.3f}"


def _minmax_pair(upper: Quantizer, lower: Quantizer) -> bool | None:
    """The shared ``per_channel`` when both candidates are min-max quantizers (identity STE,
    so :class:`_Pick` applies); None otherwise."""
    if type(upper) is MinMax and type(lower) is MinMax and upper.per_channel == lower.per_channel:
        return upper.per_channel
    return None


class _Pick(torch.autograd.Function):
    """``straight_through(s * hi + (1 - s) * lo, hard)`` for two identity-STE candidates
    ``hi = Q_bi(x)``, ``lo = Q_b(i-1)(x)`` (values, no graph), in one node: forward, the hard
    choice; backward, what autograd gives through the relaxed mixture and the candidates:
    ``x`` gets ``g s + g (1 - s)``, ``s`` gets ``<g, hi> + (-<g, lo>)``, the same products
    and the same two-term sums, so the same values bit for bit."""

    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, hi: Tensor, lo: Tensor, take_hi: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(s, hi, lo)
        return (hi if take_hi else lo).clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        s, hi, lo = ctx.saved_tensors
        gx = grad * s + grad * (1 - s) if ctx.needs_input_grad[0] else None
        gs = (grad * hi).sum() + (-(grad * lo).sum()) if ctx.needs_input_grad[1] else None
        return gx, gs, None, None, None


def bin_regularizer(w: Tensor, enc: Encoded) -> Tensor:
    """EBR of one layer: per channel, ``sum_k mean_{w in bin k} ((w - level_k) / step)^2``
    over the ``2^b`` bins, divided by ``2^b`` (each bin at the maximum-entropy usage);
    averaged over channels. Empty bins add nothing.

    >>> enc = Encoded(1, torch.tensor([[0, 0, 1]]), torch.tensor([[-1.0, 1.0]]))
    >>> float(bin_regularizer(torch.tensor([[-1.0, -2.0, 1.0]]), enc))  # bin 0: (0 + 0.25) / 2
    0.0625
    """
    rows, k = enc.levels.shape
    flat = w.reshape(rows, -1)
    codes = enc.codes.reshape(rows, -1)
    levels = enc.levels.to(w.dtype)
    step = (levels[:, 1] - levels[:, 0]).abs().clamp_min(torch.finfo(w.dtype).tiny)
    err = ((flat - levels.gather(1, codes)) / step[:, None]) ** 2
    sums = torch.zeros(rows, k, dtype=w.dtype, device=w.device).scatter_add(1, codes, err)
    counts = torch.zeros(rows, k, dtype=w.dtype, device=w.device).scatter_add(
        1, codes, torch.ones_like(err)
    )
    return ((sums / counts.clamp_min(1)).sum(dim=1) / k).mean()


def distillation(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = temperature
    log_s = F.log_softmax(student / t, dim=1)
    log_t = F.log_softmax(teacher / t, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * t * t
