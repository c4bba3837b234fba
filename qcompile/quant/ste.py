"""Straight-through estimators: the forward pass quantizes, the backward pass does not."""

from __future__ import annotations

import torch
from torch import Tensor


class _UniformFakeQuant(torch.autograd.Function):
    """``lo + clamp(round((x - lo) / step), 0, qmax) * step`` in one fused op.

    The gradient passes straight through to ``x``; with ``clip_grad`` it is zero where ``x`` lies
    outside ``[lo, lo + qmax * step]`` (the clipped STE). ``lo`` and ``step`` get no gradient:
    quantizers that learn them (LSQ, PACT) use their own formulation.
    """

    @staticmethod
    def forward(ctx, x: Tensor, lo: Tensor, step: Tensor, qmax: int, clip_grad: bool) -> Tensor:  # type: ignore[override]
        code = uniform_codes(x, lo, step, qmax)
        ctx.clip_grad = clip_grad and ctx.needs_input_grad[0]
        if ctx.clip_grad:
            ctx.save_for_backward((x >= lo) & (x <= lo + qmax * step))
        return lo + code * step

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if ctx.clip_grad:
            (inside,) = ctx.saved_tensors
            grad = grad * inside
        return grad, None, None, None, None


def uniform_codes(x: Tensor, lo: Tensor | None, step: Tensor, qmax: int) -> Tensor:
    """Codes of ``x`` on the grid ``lo + k * step``, k = 0..qmax, as floats (exact integers).

    ``lo=None`` means a grid starting at 0 (unsigned activations); ``x - 0`` is exactly ``x``,
    so the codes are the same as with ``lo=0``, one pass cheaper.
    """
    t = (x if lo is None else x - lo) / step
    return t.round_().clamp_(0, qmax)


def uniform_fake_quant(
    x: Tensor, lo: Tensor, step: Tensor, qmax: int, clip_grad: bool = False
) -> Tensor:
    """Round ``x`` to the nearest of ``qmax + 1`` evenly spaced levels starting at ``lo``.

    >>> uniform_fake_quant(torch.tensor([0.2, 0.9]), torch.tensor(0.0), torch.tensor(0.5), 1)
    tensor([0.0000, 0.5000])
    """
    return _UniformFakeQuant.apply(x, lo, step, qmax, clip_grad)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor) -> Tensor:  # type: ignore[override]
        return q.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


def straight_through(x: Tensor, q: Tensor) -> Tensor:
    """Exactly ``q`` forward, identity gradient to ``x`` backward.

    ``x + (q - x).detach()`` is the common spelling, but it rounds: its value can differ from
    ``q`` in the last bit, and the frozen model must reproduce the trained one exactly.
    """
    return _StraightThrough.apply(x, q)


def round_ste(x: Tensor) -> Tensor:
    """round(x) forward, identity backward.

    Here the ``x + (round(x) - x)`` spelling is exact: ``round(x) - x`` is exact by Sterbenz's
    lemma and the sum is the representable ``round(x)``.
    """
    return x + (torch.round(x) - x).detach()


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


def grad_scale(x: Tensor, scale: float) -> Tensor:
    """Exactly ``x`` forward, gradient times ``scale`` backward (LSQ's step gradient).

    The usual ``x * s + (x - x * s).detach()`` trick can differ from ``x`` in the last bit,
    which would break the bit-exact ``encode(x).decode() == forward(x)`` identity.
    """
    return _GradScale.apply(x, scale)


def safe_step(step: Tensor) -> Tensor:
    """A zero range (a constant channel) would divide by zero; any positive step encodes it."""
    return torch.where(step > 0, step, torch.ones_like(step))
