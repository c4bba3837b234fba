"""Activation quantizers: PACT (learned clip) and the model's input quantizer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from qcompile.quant import compiled
from qcompile.quant.base import Encoded, Quantizer
from qcompile.quant.fused import abs_max
from qcompile.quant.ste import safe_step, uniform_codes, uniform_fake_quant
from qcompile.quant.uniform import grid_levels

_hardtanh_backward = torch.ops.aten.hardtanh_backward
_threshold_backward = torch.ops.aten.threshold_backward


def pact_values(x: Tensor, alpha: Tensor, qmax: int) -> Tensor:
    """``clamp(round(x / s), 0, qmax) * s``, ``s = alpha / qmax``: :class:`_PACT`'s forward
    arithmetic, operation for operation (the compiled kernel's source)."""
    step = alpha / qmax
    return torch.clamp(torch.round(x / step), 0, qmax) * step


def pact_grads(g: Tensor, x: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """:class:`_PACT`'s gradients given ``g = dL/dy``: ``dx = g`` on ``(0, alpha)`` (both
    ends excluded, as ``hardtanh_backward``), ``dalpha = sum_{x >= alpha} g``. The compiled
    backward kernel's source: one pass over ``x`` and ``g``."""
    gx = torch.where((x > 0) & (x < alpha), g, 0.0)
    return gx, torch.where(x >= alpha, g, 0.0).sum().reshape(1)


_PACT_VALUES, _PACT_GRADS = compiled.Kernel(pact_values), compiled.Kernel(pact_grads)


class _PACT(torch.autograd.Function):
    """``clamp(round(x / s), 0, 2^b - 1) * s`` with ``s = alpha / (2^b - 1)``.

    Gradients as in the PACT paper: ``x`` gets 1 on ``(0, alpha)``, ``alpha`` gets 1 where
    ``x >= alpha`` (the rounding is straight-through). Activations of
    ``compiled.PACT_MIN_NUMEL`` elements or more go through the compiled kernels of
    :func:`pact_values` and :func:`pact_grads` (one read of ``x``
    forward, one of ``x`` and the gradient backward, where eager ATen needs four passes
    forward and four backward: on resnet20 the hardtanh-backward passes alone were half of
    a W+A step's extra time); the values and ``dx`` are the eager ones bit for bit, ``alpha``'s
    sum is taken in another order. Eagerly both gradients come from fused hardtanh-backward
    kernels: boolean masks cost about 20x more on CPU and made QAT epochs 1.5x slower.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, qmax: int) -> Tensor:  # type: ignore[override]
        ctx.compiled = compiled.enabled() and compiled.worth_it(x, compiled.PACT_MIN_NUMEL)
        if ctx.compiled:
            ctx.save_for_backward(x, alpha)
            return _PACT_VALUES(x.reshape(-1), alpha, qmax).view_as(x)
        step = alpha / qmax
        ctx.save_for_backward(x)
        ctx.alpha = float(alpha)
        y = uniform_codes(x, None, step, qmax)
        return y.mul_(step)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if ctx.compiled:
            x, alpha = ctx.saved_tensors
            gx, galpha = _PACT_GRADS(grad.reshape(-1), x.reshape(-1), alpha)
            return gx.view_as(x), galpha, None
        (x,) = ctx.saved_tensors
        gx = _hardtanh_backward(grad, x, 0.0, ctx.alpha)
        below_alpha = _hardtanh_backward(grad, x, float("-inf"), ctx.alpha)
        galpha = (grad.sum() - below_alpha.sum()).reshape(1)
        return gx, galpha, None


def mix_values(x: Tensor, a: Tensor, clips: Tensor, qmaxes: tuple) -> Tensor:
    """``sum_k a_k Q_k(x)``, ``Q_k`` PACT with clip ``clips[j]`` and top code ``qmaxes[k]``
    (None: a float member, ``Q_k(x) = x``), with :class:`_PACT`'s arithmetic. The compiled
    kernel's source; its values equal the eager path's bit for bit."""
    out, j = None, 0
    for k, qmax in enumerate(qmaxes):
        if qmax is None:
            q = x
        else:
            step = clips[j] / qmax
            q, j = torch.clamp(torch.round(x / step), 0, qmax) * step, j + 1
        out = q * a[k] if out is None else out + q * a[k]
    assert out is not None
    return out


def mix_grads(g: Tensor, x: Tensor, a: Tensor, clips: Tensor, qmaxes: tuple) -> tuple:
    """Gradients of :func:`mix_values` given ``g = dL/dout``: ``(dx, dclips, da)``.

    ``dx = sum_k a_k [0 < x < clip_k] g`` (a float member: ``a_k g``; PACT's STE),
    ``dclip_k = a_k sum_{x >= clip_k} g``, ``da_k = <g, Q_k(x)>``. The compiled backward
    kernel's source: one pass over ``x`` and ``g``."""
    gx, dclips, da, j = None, [], [], 0
    for k, qmax in enumerate(qmaxes):
        if qmax is None:
            part, q = g * a[k], x
        else:
            clip, step = clips[j], clips[j] / qmax
            part = torch.where((x > 0) & (x < clip), g, 0.0) * a[k]
            dclips.append(torch.where(x >= clip, g, 0.0).sum() * a[k])
            q, j = torch.clamp(torch.round(x / step), 0, qmax) * step, j + 1
        da.append((g * q).sum())
        gx = part if gx is None else gx + part
    return gx, torch.stack(dclips), torch.stack(da)


_MIX_VALUES, _MIX_GRADS = compiled.Kernel(mix_values), compiled.Kernel(mix_grads)


class _PACTMix(torch.autograd.Function):
    """``sum_k a_k PACT_k(x)`` in one node: DQA's activation mixture (``qmaxes[k]`` is member
    k's top code, None for a float member that passes ``x``; ``clips`` are the PACT members'
    ``alpha``, in order).

    Large activations go through the compiled kernels of :func:`mix_values` and
    :func:`mix_grads` (:mod:`qcompile.quant.compiled`); otherwise, eagerly: forward, each
    member's values exactly as :class:`_PACT` computes them, summed in member order as the
    member-by-member mixture does; backward, the same gradients in fewer passes over the
    activation than autograd through the members (which scaled the whole gradient by
    ``a_k`` and ran two hardtanh-backward passes per member): ``alpha_k``'s sum over
    ``x >= alpha_k`` is ``sum_{x > 0} g - sum_{0 < x < alpha_k} g``, the second sum taken on
    the masked gradient that ``x`` needs anyway. Every path gives the same values bit for
    bit and ``x`` the same gradient; sums over the tensor (the gradients of ``a`` and the
    clips) agree to float rounding.
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, qmaxes: tuple, *clips: Tensor) -> Tensor:  # type: ignore[override]
        ctx.qmaxes, ctx.compiled = qmaxes, compiled.enabled() and compiled.worth_it(x)
        if ctx.compiled:
            clip_t = torch.cat(clips)
            ctx.save_for_backward(x, a, clip_t)
            return _MIX_VALUES(x.reshape(-1), a, clip_t, qmaxes).view_as(x)
        alphas = iter(clips)
        qs, bounds, out = [], [], None
        for a_k, qmax in zip(a.unbind(), qmaxes, strict=True):
            if qmax is None:
                q, bound = x, None
            else:
                alpha = next(alphas)
                step = alpha / qmax
                q, bound = torch.div(x, step).round_().clamp_(0, qmax).mul_(step), float(alpha)
            qs.append(q)
            bounds.append(bound)
            out = q * a_k if out is None else out.add_(q * a_k)
        ctx.bounds = bounds
        ctx.save_for_backward(x, a, *qs)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if ctx.compiled:
            x, a, clip_t = ctx.saved_tensors
            gx, dclips, da = _MIX_GRADS(grad.reshape(-1), x.reshape(-1), a, clip_t, ctx.qmaxes)
            return gx.view_as(x), da, None, *(d.reshape(1) for d in dclips.unbind())
        x, a, *qs = ctx.saved_tensors
        gx: Tensor | None = None
        galphas: list[Tensor | None] = []
        positive: Tensor | None = None  # sum of grad where x > 0, shared by every member
        for a_k, bound in zip(a.unbind(), ctx.bounds, strict=True):
            if bound is None:
                part = grad * a_k
            else:
                part = _hardtanh_backward(grad, x, 0.0, bound)  # grad on (0, alpha_k)
                if ctx.needs_input_grad[3 + len(galphas)]:
                    if bound <= 0:  # an empty (0, alpha): count x >= alpha directly
                        below = _hardtanh_backward(grad, x, float("-inf"), bound).sum()
                        at_or_above = grad.sum() - below
                    else:
                        if positive is None:
                            positive = _threshold_backward(grad, x, 0.0).sum()
                        at_or_above = positive - part.sum()
                    galphas.append((at_or_above * a_k).reshape(1))
                else:
                    galphas.append(None)
                part = part.mul_(a_k)
            gx = part if gx is None else gx.add_(part)
        ga = None
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1)
            ga = torch.stack([torch.dot(flat, q.reshape(-1)) for q in qs])
        return (gx if ctx.needs_input_grad[0] else None), ga, None, *galphas


def pact_mixture(x: Tensor, a: Tensor, members: Sequence[Quantizer]) -> Tensor:
    """``sum_k a_k member_k(x)`` for PACT members (and float ones) in one autograd node."""
    qmaxes = tuple(2**m.bits - 1 if isinstance(m, PACT) else None for m in members)
    clips = [m.alpha for m in members if isinstance(m, PACT)]
    return _PACTMix.apply(x, a, qmaxes, *clips)


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

            seen = all_reduce_max(abs_max(x.detach()).reshape(1))
            self.max_abs = torch.maximum(self.max_abs, seen)
        lo, step = self.grid()
        return uniform_fake_quant(x, lo, step, 2**self.bits - 1, clip_grad=True)

    def encode(self, x: Tensor) -> Encoded:
        lo, step = self.grid()
        codes = uniform_codes(x, lo, step, 2**self.bits - 1).long()
        return Encoded(self.bits, codes, grid_levels(lo, step, self.bits))
