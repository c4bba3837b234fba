"""A weighted mixture of quantizers: the mechanism behind DQA and Binary-Relax.

``q(x) = sum_k a_k Q_k(x)`` with the members sorted by bitwidth. The deployed quantizer is
always the first (lowest-bit) member: ``encode``, ``grid`` and ``bits`` are its own, and once
``snap()`` is called the forward pass uses it alone.

How the weights ``a`` come about is the stage's business:

- ``attention`` (DQA, papers/003 eq. 4): ``a = softmax(alpha / T)``, ``alpha`` trainable, ``T``
  set by the stage each step;
- ``relax`` (Binary-Relax, eq. 8): ``a = [omega, 1, ..., 1] / (omega + K - 1)``, ``omega`` set by
  the stage each epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from qcompile.quant.activation import PACT, pact_mixture
from qcompile.quant.base import Encoded, Identity, Quantizer
from qcompile.quant.minmax_stack import minmax_stack
from qcompile.quant.uniform import MinMax

MODES = ("attention", "relax")


class _MinMaxMix(torch.autograd.Function):
    """``sum_k a_k Q_k(x)`` for min-max members (``bits[k]``; None = float) sharing one
    min/max: the same values as mixing the members one by one, in one autograd node.

    Gradients: ``x`` gets ``sum_k a_k`` (each member is straight-through), ``a_k`` gets
    ``sum(grad * Q_k(x))``. Per-member autograd cost DQA ~40% of a W2 epoch on lenet. The
    quantized members are computed together, stacked along a new first dimension (one op
    for each step of the formula instead of one per member and step), from ``x - lo`` and
    ``hi - lo`` computed once; each element goes through the same operations as in its
    member, so the values are the same bit for bit, and so is the sum, taken in member order.
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, bits: tuple, per_channel: bool) -> Tensor:  # type: ignore[override]
        grids = [k for k, b in enumerate(bits) if b is not None]
        q = minmax_stack(x, [bits[k] for k in grids], per_channel)
        mix = a if len(grids) == len(bits) else a[grids]
        rows = dict(zip(grids, (q * mix.reshape(-1, *([1] * x.dim()))).unbind(), strict=True))
        terms = [rows[k] if k in rows else x * a[k] for k in range(len(bits))]
        out = terms[0] + terms[1]
        for term in terms[2:]:
            out.add_(term)
        ctx.save_for_backward(a, q, x)
        ctx.grids = grids
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a, q, x = ctx.saved_tensors
        gx = grad * a.sum() if ctx.needs_input_grad[0] else None
        ga = None
        if ctx.needs_input_grad[1]:
            # Row by row, as autograd sums each member's grad * Q_k(x): a sum over dim 1 of
            # the stack would add in another order.
            sums = dict(zip(ctx.grids, [p.sum() for p in (q * grad).unbind()], strict=True))
            ga = torch.stack([sums[k] if k in sums else (grad * x).sum() for k in range(len(a))])
        return gx, ga, None, None


def _minmax_bits(members: Sequence[Quantizer]) -> tuple[tuple[int | None, ...], bool] | None:
    """Member widths (None for float) when every member is MinMax or Identity, sharing one
    per-channel setting; None when the mixture cannot take the fused path."""
    grids = [m for m in members if type(m) is MinMax]
    if not grids or any(type(m) not in (MinMax, Identity) for m in members):
        return None
    if len({m.per_channel for m in grids}) != 1:
        return None
    return tuple(m.bits if type(m) is MinMax else None for m in members), grids[0].per_channel


def _pact_only(members: Sequence[Quantizer]) -> bool:
    """Whether every member is PACT or float (DQA's activation mixtures): the fused
    :func:`~qcompile.quant.activation.pact_mixture` path."""
    types = {type(m) for m in members}
    return PACT in types and types <= {PACT, Identity}


def dqa_init(bits: Sequence[int]) -> list[float]:
    """``alpha_k = sum_{j != k} n_j / sum_j n_j`` (papers/003 eq. 7): most attention on the
    lowest bitwidth.

    >>> [round(a, 4) for a in dqa_init([2, 4, 8])]
    [0.8571, 0.7143, 0.4286]
    """
    total = float(sum(bits))
    return [(total - n) / total for n in bits]


class Mixture(Quantizer):
    """Mix ``members`` (sorted by ``bits``, lowest first) with attention or relaxation weights."""

    def __init__(self, members: Sequence[Quantizer], mode: str = "attention") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mixture mode must be one of {MODES}, got {mode!r}")
        bits = [m.bits for m in members]
        if len(members) < 2 or bits != sorted(bits):
            raise ValueError(f"a mixture needs >= 2 members sorted by bitwidth, got bits {bits}")
        self.members = nn.ModuleList(members)
        self.mode = mode
        self.bits = members[0].bits
        self.uniform = members[0].uniform
        self.unsigned = all(m.unsigned for m in members)
        self.alpha = nn.Parameter(torch.tensor(dqa_init(bits)), requires_grad=mode == "attention")
        self.register_buffer("temperature", torch.tensor(1.0))
        self.register_buffer("omega", torch.tensor(1.0))
        self.register_buffer("snapped", torch.tensor(False))
        self._fused = _minmax_bits(members)
        self._pact = _pact_only(members)
        self._kept: tuple[Tensor, tuple[int, int, int]] | None = None

    @property
    def member_bits(self) -> list[int]:
        return [m.bits for m in self.members]

    def weights(self) -> Tensor:
        """The mixing vector ``a`` (sums to 1).

        A training forward pass keeps the ``a`` it used, and the first call after it returns
        that same tensor while ``alpha``, ``temperature`` and ``omega`` are unchanged, so
        the stage's penalty and the forward pass share one softmax (and one backward
        through it) per step.
        """
        kept, self._kept = self._kept, None
        if kept is not None and kept[1] == self._versions() and torch.is_grad_enabled():
            return kept[0]
        return self._weights()

    def _weights(self) -> Tensor:
        if self.mode == "attention":
            return torch.softmax(self.alpha / self.temperature, dim=0)
        ones = torch.ones_like(self.alpha)
        w = torch.cat([self.omega.reshape(1), ones[1:]])
        return w / w.sum()

    def _versions(self) -> tuple[int, int, int]:
        return self.alpha._version, self.temperature._version, self.omega._version

    def normalize_alpha(self) -> None:
        """``alpha <- alpha / std(alpha)`` (papers/003 Algorithm 1); skipped while all equal."""
        with torch.no_grad():
            std = self.alpha.std()
            if float(std) > 0:
                self.alpha.div_(std)

    def snap(self) -> None:
        """From now on the forward pass is the deployed (first) member alone."""
        self.snapped.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if bool(self.snapped):
            return self.members[0](x)
        a = self._weights()
        self._kept = (a, self._versions()) if torch.is_grad_enabled() else None
        if self._fused is not None:
            return _MinMaxMix.apply(x, a, *self._fused)
        if self._pact:
            return pact_mixture(x, a, self.members)
        out = a[0] * self.members[0](x)
        for k in range(1, len(self.members)):
            out = out + a[k] * self.members[k](x)
        return out

    def encode(self, x: Tensor) -> Encoded:
        return self.members[0].encode(x)

    def grid(self) -> tuple[Tensor, Tensor]:
        return self.members[0].grid()  # type: ignore[operator]

    def extra_repr(self) -> str:
        return f"mode={self.mode}, bits={self.member_bits}"
