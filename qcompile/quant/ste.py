"""Straight-through estimators: the forward pass quantizes, the backward pass does not."""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_codes(x: Tensor, lo: Tensor | None, step: Tensor, qmax: int) -> Tensor:
    """Codes of ``x`` on the grid ``lo + k * step``, k = 0..qmax, as floats (exact integers).

    ``lo=None`` means a grid starting at 0 (unsigned activations); ``x - 0`` is exactly ``x``,
    so the codes are the same as with ``lo=0``, one pass cheaper.
    """
    t = (x if lo is None else x - lo) / step
    return t.round_().clamp_(0, qmax)


def fake_quant_(y: Tensor, lo: Tensor, step: Tensor, qmax: int) -> Tensor:
    """In place: ``y <- lo + clamp(round((y - lo) / step), 0, qmax) * step``.

    The arithmetic of :func:`uniform_codes` followed by ``lo + code * step``, operation for
    operation, so the values equal the unfused formula bit for bit; in place, because a
    training step runs it on every weight and on large activations, where each fresh
    tensor costs as much as the arithmetic.
    """
    return y.sub_(lo).div_(step).round_().clamp_(0, qmax).mul_(step).add_(lo)


def uniform_fake_quant(
    x: Tensor, lo: Tensor, step: Tensor, qmax: int, clip_grad: bool = False
) -> Tensor:
    """Round ``x`` to the nearest of ``qmax + 1`` evenly spaced levels starting at ``lo``.

    The gradient passes straight through to ``x``; with ``clip_grad`` it is zero where ``x``
    lies outside ``[lo, lo + qmax * step]`` (the clipped STE). ``lo`` and ``step`` get no
    gradient: quantizers that learn them (LSQ, PACT) use their own formulation.

    No Python autograd node: the graph records one built-in op whose backward is exactly
    the straight-through gradient (``clone``: identity; ``clamp`` to the level range: the
    gradient where ``lo <= x <= hi``, bounds included), then the fake-quantized values are
    written into that op's output under ``no_grad``. This is sound because neither op's
    backward reads its output (clone saves nothing, clamp saves its input ``x``, another
    tensor): the write changes the values downstream layers see, not the gradient. A Python
    ``autograd.Function`` costs ~40 us a call forward and backward, about a third of a
    min-max weight quantizer's time on lenet.

    >>> uniform_fake_quant(torch.tensor([0.2, 0.9]), torch.tensor(0.0), torch.tensor(0.5), 1)
    tensor([0.0000, 0.5000])
    """
    clipped = clip_grad and x.requires_grad and torch.is_grad_enabled()
    y = torch.clamp(x, lo, lo + qmax * step) if clipped else x.clone()
    with torch.no_grad():
        if clipped:
            y.copy_(x)  # the codes come from x, as in the unfused formula, not from the clamp
        fake_quant_(y, lo, step, qmax)
    return y


def straight_through_clone(x: Tensor) -> Tensor:
    """A copy of ``x`` whose backward is the identity, for a quantizer to overwrite in place
    under ``no_grad`` with its values (see :func:`uniform_fake_quant` for why that is sound).
    Without gradient it is a plain detached copy."""
    return x.clone() if x.requires_grad and torch.is_grad_enabled() else x.detach().clone()


def straight_through(x: Tensor, q: Tensor) -> Tensor:
    """Exactly ``q`` forward, identity gradient to ``x`` backward.

    ``x + (q - x).detach()`` is the common spelling, but it rounds: its value can differ from
    ``q`` in the last bit, and the frozen model must reproduce the trained one exactly. Here
    ``q`` is copied into :func:`straight_through_clone`'s identity-gradient copy of ``x``.
    """
    y = straight_through_clone(x)
    with torch.no_grad():
        y.copy_(q)
    return y


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
    return torch.where(step > 0, step, 1.0)
