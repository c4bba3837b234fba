"""Uniform weight quantizers: min-max, SAWB (calibrated and closed form) and LSQ.

Levels for min-max (papers/003 eq. 10) are ``x_min + i (x_max - x_min) / (2^n - 1)``; SAWB
(eq. 11) puts them on ``[-a, a]`` with ``a`` minimising the mean squared error (eq. 12); LSQ
learns the step. Each rounds to the nearest level (eq. 9/13).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from qcompile.quant.base import Encoded, IntGrid, Quantizer, channel_rows, expand_rows
from qcompile.quant.fused import row_extremes
from qcompile.quant.ste import grad_scale, round_ste, safe_step, uniform_codes, uniform_fake_quant


def grid_levels(lo: Tensor, step: Tensor, bits: int) -> Tensor:
    """``[C, 2**bits]`` table ``lo + k * step`` (same arithmetic as the fake-quant forward)."""
    k = torch.arange(2**bits, dtype=lo.dtype, device=lo.device)
    return lo.reshape(-1, 1) + k.reshape(1, -1) * step.reshape(-1, 1)


class GridQuantizer(Quantizer):
    """A uniform quantizer whose grid ``(lo, step)`` per row is a statistic of the input.

    Subclasses implement ``grid``; forward and encode follow from it.
    """

    clip_grad: bool = False

    def __init__(self, bits: int, per_channel: bool = True) -> None:
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"{type(self).__name__} supports 1..8 bits, got {bits}")
        self.bits = bits
        self.per_channel = per_channel

    def grid(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(lo, step)``, each ``[C]`` (or ``[1]``), detached from the graph."""
        raise NotImplementedError

    def int_grid(self, lo: Tensor, step: Tensor) -> IntGrid:
        """The grid as integers: ``lo`` is an integer multiple of ``step`` (the zero point)."""
        return IntGrid(step, 1, torch.round(lo / step).long())

    def forward(self, x: Tensor) -> Tensor:
        lo, step = self.grid(x)
        return uniform_fake_quant(
            x, expand_rows(lo, x), expand_rows(step, x), 2**self.bits - 1, self.clip_grad
        )

    def encode(self, x: Tensor) -> Encoded:
        lo, step = self.grid(x)
        codes = uniform_codes(x, expand_rows(lo, x), expand_rows(step, x), 2**self.bits - 1)
        levels = grid_levels(lo, step, self.bits)
        return Encoded(self.bits, codes.long(), levels, self.int_grid(lo, step))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


def minmax_grid(lo: Tensor, hi: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """``(lo, step)`` of the min-max grid for data spanning ``[lo, hi]`` (any shape,
    elementwise), one of its levels exactly 0 (see :class:`MinMax`)."""
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    if bits == 1:
        a = safe_step((hi - lo) / 2)
        return -a, 2 * a
    if bits == 8:
        step = safe_step(torch.maximum(-lo / 128, hi / 127))
        return -128 * step, step
    n = 2**bits - 1
    step = safe_step((hi - lo) / n)
    return torch.round(lo / step).clamp(-n, 0) * step, step


class MinMax(GridQuantizer):
    """``2^n`` evenly spaced levels from the minimum to the maximum of the weights, one of
    them exactly 0 (TFLite's nudged zero point), so each level is ``step * (code + z)`` with
    an integer ``z`` and the code itself deploys as the integer weight (b + 1 bits). The range
    covers every weight but for at most half a step at one end (the nudge); the
    straight-through gradient is never clipped. 8-bit levels are int8's ``[-128, 127] * step``;
    1-bit levels are ``{-a, a}`` with ``a`` half the range.

    >>> MinMax(2, per_channel=False)(torch.tensor([0.0, 0.4, 3.0])).tolist()
    [0.0, 0.0, 3.0]
    >>> MinMax(2, per_channel=False).grid(torch.tensor([-1.0, 2.0]))
    (tensor([-1.]), tensor([1.]))
    """

    def grid(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = row_extremes(channel_rows(x.detach(), self.per_channel))
        return minmax_grid(lo, hi, self.bits)

    def int_grid(self, lo: Tensor, step: Tensor) -> IntGrid:
        if self.bits == 1:
            return IntGrid(step / 2, 2, torch.full_like(step, -1, dtype=torch.long))
        return super().int_grid(lo, step)


def sawb_mse(rows: Tensor, alpha: Tensor, bits: int) -> Tensor:
    """Mean squared error per row of the symmetric uniform quantizer on ``[-alpha, alpha]``."""
    step = safe_step(2 * alpha / (2**bits - 1)).unsqueeze(1)
    lo = -alpha.unsqueeze(1)
    q = lo + uniform_codes(rows, lo, step, 2**bits - 1) * step
    return ((rows - q) ** 2).mean(dim=1)


def sawb_calibrate(rows: Tensor, bits: int, grid: int = 48, refine: int = 14) -> Tensor:
    """MSE-optimal clip ``a*`` per row (papers/003 eq. 12).

    The error is evaluated on ``grid`` clips evenly spread over ``(0, max|x|]``, then the best
    bracket is refined by golden-section search (``refine`` steps). The error curve is only
    piecewise smooth, so the coarse grid is what keeps the search out of poor local minima.
    """
    absmax = rows.abs().amax(dim=1).clamp_min(1e-12)
    ratios = torch.linspace(1.0 / grid, 1.0, grid, dtype=rows.dtype, device=rows.device)
    errors = torch.stack([sawb_mse(rows, r * absmax, bits) for r in ratios], dim=1)
    best = errors.argmin(dim=1)
    lo = ratios[(best - 1).clamp_min(0)] * absmax
    hi = ratios[(best + 1).clamp_max(grid - 1)] * absmax
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    ea, eb = sawb_mse(rows, a, bits), sawb_mse(rows, b, bits)
    for _ in range(refine):
        left = ea < eb
        hi = torch.where(left, b, hi)
        lo = torch.where(left, lo, a)
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        ea, eb = sawb_mse(rows, a, bits), sawb_mse(rows, b, bits)
    candidates = torch.stack([ratios[best] * absmax, a, b], dim=1)
    errs = torch.stack([errors.gather(1, best[:, None])[:, 0], ea, eb], dim=1)
    return candidates.gather(1, errs.argmin(dim=1, keepdim=True))[:, 0]


# (c1, c0) in a = c1 * rms(x) + c0 * mean|x|. METHODS.md lists the pair without saying which
# statistic each multiplies; this order reproduces the MSE-optimal clip for Gaussian weights
# (2-bit: 1.47 sigma vs the optimum 1.49; 4-bit: 2.47 vs 2.51), the other order does not.
SAWB_CLOSED_FORM = {2: (3.12, -2.064), 4: (12.68, -12.80), 8: (31.76, -35.04)}


def sawb_closed_form(rows: Tensor, bits: int) -> Tensor:
    """SAWB clip from the fitted closed form, falling back to ``max|x|`` where it is <= 0."""
    if bits not in SAWB_CLOSED_FORM:
        raise ValueError(
            f"closed-form SAWB has constants for {sorted(SAWB_CLOSED_FORM)} bits, not {bits}; "
            "use the calibrated 'sawb' quantizer"
        )
    c1, c0 = SAWB_CLOSED_FORM[bits]
    alpha = c1 * rows.pow(2).mean(dim=1).sqrt() + c0 * rows.abs().mean(dim=1)
    return torch.where(alpha > 0, alpha, rows.abs().amax(dim=1))


class SAWB(GridQuantizer):
    """Symmetric uniform levels on ``[-a, a]`` (papers/003 eq. 11-12), clipped STE.

    ``closed_form=False`` calibrates ``a`` by minimising the quantization MSE on the current
    weights at every training step (cached for evaluation); ``closed_form=True`` uses the
    fitted formula ``a = c1 rms(w) + c0 mean|w|`` (2, 4 and 8 bits).

    The cached clip is a buffer of its final shape (``channels`` rows, or 1 per tensor) from
    the start, so a freshly built model loads a trained one's state dict; 0 means "not
    calibrated yet" (a calibrated clip is > 0), and is calibrated even in eval mode.
    """

    clip_grad = True

    def __init__(
        self, bits: int, per_channel: bool = True, closed_form: bool = False, channels: int = 1
    ) -> None:
        super().__init__(bits, per_channel)
        if closed_form and bits not in SAWB_CLOSED_FORM:
            sawb_closed_form(torch.zeros(1, 1), bits)  # raises the explanatory error
        self.closed_form = closed_form
        self.register_buffer("alpha", torch.zeros(channels if per_channel else 1))

    def clip(self, x: Tensor) -> Tensor:
        rows = channel_rows(x.detach(), self.per_channel)
        if self.closed_form:
            return sawb_closed_form(rows, self.bits)
        stale = self.alpha.numel() != rows.shape[0] or not bool((self.alpha > 0).all())
        if self.training or stale:
            self.alpha = sawb_calibrate(rows, self.bits)
        return self.alpha

    def grid(self, x: Tensor) -> tuple[Tensor, Tensor]:
        alpha = self.clip(x)
        step = safe_step(2 * alpha / (2**self.bits - 1))
        # symmetric levels are half-integers times the step; at 8 bits that needs 9-bit
        # integers, so the 8-bit grid is int8's [-128, 127] * step instead
        return (-128 * step if self.bits == 8 else -alpha), step

    def int_grid(self, lo: Tensor, step: Tensor) -> IntGrid:
        if self.bits == 8:
            return super().int_grid(lo, step)
        zero = torch.full_like(step, 1 - 2**self.bits, dtype=torch.long)
        return IntGrid(step / 2, 2, zero)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, closed_form={self.closed_form}"


class LSQ(Quantizer):
    """Learned Step Size Quantization (Esser et al. 2019).

    Levels ``s * (k - Qn)`` for ``k = 0..2^b - 1``: signed ``Qn = 2^(b-1)``, unsigned ``Qn = 0``.
    ``s`` (one per channel when ``channels > 1``) is initialised from the first input as
    ``2 mean|x| / sqrt(Qp)``, averaged across DDP ranks, and its gradient is scaled by
    ``1 / sqrt(N Qp)``: N = weights per step for weights, features per sample for activations.
    """

    def __init__(
        self, bits: int, signed: bool = True, channels: int = 1, activation: bool = False
    ) -> None:
        super().__init__()
        if not (2 if signed else 1) <= bits <= 8:
            raise ValueError(f"LSQ supports {2 if signed else 1}..8 bits, got {bits}")
        self.bits, self.signed, self.activation = bits, signed, activation
        self.per_channel = channels > 1
        self.qn = 2 ** (bits - 1) if signed else 0
        self.qp = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        self.step = nn.Parameter(torch.ones(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _init_step(self, x: Tensor) -> None:
        from qcompile.distributed import all_reduce_mean

        rows = channel_rows(x.detach(), self.per_channel)
        step = all_reduce_mean(2 * rows.abs().mean(dim=1) / math.sqrt(self.qp))
        with torch.no_grad():
            self.step.copy_(step.clamp_min(1e-8).expand_as(self.step))
        self.initialized.fill_(True)

    def _scaled_step(self, x: Tensor) -> Tensor:
        if not bool(self.initialized):
            self._init_step(x)
        n = x[0].numel() if self.activation else x.numel() // self.step.numel()
        return expand_rows(grad_scale(self.step, 1.0 / math.sqrt(n * self.qp)), x)

    def forward(self, x: Tensor) -> Tensor:
        s = self._scaled_step(x)
        return round_ste(torch.clamp(x / s, -self.qn, self.qp)) * s

    def grid(self) -> tuple[Tensor, Tensor]:
        """``(lo, step)`` of the learned levels (what freeze needs for activations)."""
        step = self.step.detach()
        return -self.qn * step, step

    def encode(self, x: Tensor) -> Encoded:
        s = self._scaled_step(x).detach()
        codes = torch.round(torch.clamp(x / s, -self.qn, self.qp)) + self.qn
        k = torch.arange(2**self.bits, dtype=x.dtype, device=x.device)
        step = self.step.detach()
        levels = (k.reshape(1, -1) - self.qn) * step.reshape(-1, 1)
        zero = torch.full_like(step, -self.qn, dtype=torch.long)
        return Encoded(self.bits, codes.long(), levels, IntGrid(step, 1, zero))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, channels={self.step.numel()}"
