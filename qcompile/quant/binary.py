"""Binary (BWN) and ternary (TWN) weight quantizers, papers/003 eq. 14-15.

Both use the identity straight-through estimator: clipping the gradient at the level range
(as SAWB does) would zero it for every weight above ``beta`` and stall training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qcompile.quant.base import Encoded, IntGrid, Quantizer, channel_rows, expand_rows
from qcompile.quant.ste import straight_through


class BWN(Quantizer):
    """``{-beta, +beta}`` with ``beta = E|w|``; ``w >= 0`` maps to ``+beta``. One bit per weight.

    >>> BWN(per_channel=False)(torch.tensor([-2.0, 0.0, 1.0])).tolist()
    [-1.0, 1.0, 1.0]
    """

    def __init__(self, per_channel: bool = True) -> None:
        super().__init__()
        self.bits = 1
        self.per_channel = per_channel

    def beta(self, x: Tensor) -> Tensor:
        # float64 makes the mean of equal values exact, so Q(Q(w)) == Q(w) bit for bit.
        rows = channel_rows(x.detach(), self.per_channel).double()
        return rows.abs().mean(dim=1).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        b = expand_rows(self.beta(x), x)
        return straight_through(x, torch.where(x >= 0, b, -b))

    def encode(self, x: Tensor) -> Encoded:
        b = self.beta(x)
        grid = IntGrid(b, 2, torch.full_like(b, -1, dtype=torch.long))  # b * (2 code - 1)
        return Encoded(1, (x >= 0).long(), torch.stack([-b, b], dim=1), grid)


class TWN(Quantizer):
    """``{-beta, 0, +beta}`` with threshold ``delta = 0.7 E|w|``, ``beta = E[|w| : |w| > delta]``.

    Stored in 2 bits: codes 0, 1, 2 are ``-beta, 0, +beta``; code 3 is unused (level 0).

    >>> TWN(per_channel=False)(torch.tensor([-3.0, 0.1, 3.0])).tolist()
    [-3.0, 0.0, 3.0]
    """

    def __init__(self, per_channel: bool = True) -> None:
        super().__init__()
        self.bits = 2
        self.per_channel = per_channel

    def thresholds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a = channel_rows(x.detach(), self.per_channel).abs().double()  # exact, as in BWN.beta
        delta = 0.7 * a.mean(dim=1)
        big = a > delta.unsqueeze(1)
        beta = (a * big).sum(dim=1) / big.sum(dim=1).clamp_min(1)
        return delta.to(x.dtype), beta.to(x.dtype)

    def _codes(self, x: Tensor, delta: Tensor) -> Tensor:
        d = expand_rows(delta, x)
        return torch.where(x > d, 2, torch.where(x <= -d, 0, 1))

    def forward(self, x: Tensor) -> Tensor:
        delta, beta = self.thresholds(x)
        code, b = self._codes(x, delta), expand_rows(beta, x)
        q = torch.where(code == 2, b, torch.where(code == 0, -b, torch.zeros_like(b)))
        return straight_through(x, q)

    def encode(self, x: Tensor) -> Encoded:
        delta, beta = self.thresholds(x)
        zero = torch.zeros_like(beta)
        levels = torch.stack([-beta, zero, beta, zero], 1)
        grid = IntGrid(beta, 1, torch.full_like(beta, -1, dtype=torch.long))  # beta * (code - 1)
        return Encoded(2, self._codes(x, delta).long(), levels, grid)
