"""Activation quantizers: PACT (learned clip) and the model's input quantizer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qcompile.quant.base import Encoded, Quantizer
from qcompile.quant.ste import safe_step, uniform_codes, uniform_fake_quant
from qcompile.quant.uniform import grid_levels

_hardtanh_backward = torch.ops.aten.hardtanh_backward


class _PACT(torch.autograd.Function):
    """``clamp(round(x / s), 0, 2^b - 1) * s`` with ``s = alpha / (2^b - 1)``.

    Gradients as in the PACT paper: ``x`` gets 1 on ``(0, alpha)``, ``alpha`` gets 1 where
    ``x >= alpha`` (the rounding is straight-through). Both come from fused hardtanh-backward
    kernels: boolean masks cost about 20x more on CPU and made QAT epochs 1.5x slower.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, qmax: int) -> Tensor:  # type: ignore[override]
        step = alpha / qmax
        ctx.save_for_backward(x)
        ctx.alpha = float(alpha)
        y = uniform_codes(x, None, step, qmax)
        return y.mul_(step)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        gx = _hardtanh_backward(grad, x, 0.0, ctx.alpha)
        below_alpha = _hardtanh_backward(grad, x, float("-inf"), ctx.alpha)
        galpha = (grad.sum() - below_alpha.sum()).reshape(1)
        return gx, galpha, None


class PACT(Quantizer):
    """Unsigned uniform levels on ``[0, alpha]`` with a learned clip ``alpha`` (Choi et al. 2018).

    ``init`` is the starting clip (3.0 as in the DMBQ authors' code; BN-normalised
    pre-activations rarely exceed it after a ReLU).

    >>> PACT(bits=2, init=3.0)(torch.tensor([-1.0, 0.9, 5.0])).tolist()
    [0.0, 1.0, 3.0]
    """

    unsigned = True

    def __init__(self, bits: int, init: float = 3.0) -> None:
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"PACT supports 1..8 bits, got {bits}")
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor([float(init)]))

    def forward(self, x: Tensor) -> Tensor:
        return _PACT.apply(x, self.alpha, 2**self.bits - 1)

    def grid(self) -> tuple[Tensor, Tensor]:
        step = self.alpha.detach() / (2**self.bits - 1)
        return torch.zeros_like(step), step

    def encode(self, x: Tensor) -> Encoded:
        lo, step = self.grid()
        codes = uniform_codes(x, None, step, 2**self.bits - 1).long()
        return Encoded(self.bits, codes, grid_levels(lo, step, self.bits))


class InputQuant(Quantizer):
    """Signed symmetric quantizer for the network input, scale from the largest |x| seen.

    Levels ``k * s`` for ``k = -2^(b-1) .. 2^(b-1) - 1`` with ``s = max|x| / (2^(b-1) - 1)``.
    The running maximum only grows while training and is saved with the model, so a resumed
    or re-loaded model quantizes its inputs exactly as during training.
    """

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("max_abs", torch.zeros(1))

    def grid(self) -> tuple[Tensor, Tensor]:
        step = safe_step(self.max_abs / (2 ** (self.bits - 1) - 1))
        return -(2 ** (self.bits - 1)) * step, step

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            from qcompile.distributed import all_reduce_max

            seen = all_reduce_max(x.detach().abs().amax().reshape(1))
            self.max_abs = torch.maximum(self.max_abs, seen)
        lo, step = self.grid()
        return uniform_fake_quant(x, lo, step, 2**self.bits - 1, clip_grad=True)

    def encode(self, x: Tensor) -> Encoded:
        lo, step = self.grid()
        codes = uniform_codes(x, lo, step, 2**self.bits - 1).long()
        return Encoded(self.bits, codes, grid_levels(lo, step, self.bits))
