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

from qcompile.quant.base import Encoded, Identity, Quantizer, channel_rows, expand_rows
from qcompile.quant.ste import uniform_codes
from qcompile.quant.uniform import MinMax, minmax_grid

MODES = ("attention", "relax")


class _MinMaxMix(torch.autograd.Function):
    """``sum_k a_k Q_k(x)`` for min-max members (``bits[k]``; None = float) sharing one
    min/max: the same values as mixing the members one by one, in one autograd node.

    Gradients: ``x`` gets ``sum_k a_k`` (each member is straight-through), ``a_k`` gets
    ``sum(grad * Q_k(x))``. Per-member autograd cost DQA ~40% of a W2 epoch on lenet.
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, lo: Tensor, hi: Tensor, bits: tuple) -> Tensor:  # type: ignore[override]
        qs, out = [], None
        for k, b in enumerate(bits):
            if b is None:
                q = x
            else:
                start, step = minmax_grid(lo, hi, b)
                q = start + uniform_codes(x, start, step, 2**b - 1) * step
            qs.append(q)
            out = a[k] * q if out is None else out + a[k] * q
        ctx.save_for_backward(a, *qs)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a, *qs = ctx.saved_tensors
        gx = grad * a.sum() if ctx.needs_input_grad[0] else None
        ga = torch.stack([(grad * q).sum() for q in qs]) if ctx.needs_input_grad[1] else None
        return gx, ga, None, None, None


def _minmax_bits(members: Sequence[Quantizer]) -> tuple[tuple[int | None, ...], bool] | None:
    """Member widths (None for float) when every member is MinMax or Identity, sharing one
    per-channel setting; None when the mixture cannot take the fused path."""
    grids = [m for m in members if type(m) is MinMax]
    if not grids or any(type(m) not in (MinMax, Identity) for m in members):
        return None
    if len({m.per_channel for m in grids}) != 1:
        return None
    return tuple(m.bits if type(m) is MinMax else None for m in members), grids[0].per_channel


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

    @property
    def member_bits(self) -> list[int]:
        return [m.bits for m in self.members]

    def weights(self) -> Tensor:
        """The mixing vector ``a`` (sums to 1)."""
        if self.mode == "attention":
            return torch.softmax(self.alpha / self.temperature, dim=0)
        ones = torch.ones_like(self.alpha)
        w = torch.cat([self.omega.reshape(1), ones[1:]])
        return w / w.sum()

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
        a = self.weights()
        if self._fused is not None:
            bits, per_channel = self._fused
            lo, hi = torch.aminmax(channel_rows(x.detach(), per_channel), dim=1)
            return _MinMaxMix.apply(x, a, expand_rows(lo, x), expand_rows(hi, x), bits)
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
