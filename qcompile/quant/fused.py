"""Cheap building blocks for the quantizers' training hot path.

A training step runs every weight quantizer once and every activation quantizer on a whole
batch, so on small networks (lenet: ~6 ms of float work per step) the fixed cost of each
tensor op dispatched from Python is what separates quantized from float training. The
helpers here compute the same values as the plain formulas with fewer, cheaper ops; each
says what it replaces and the tests in ``tests/quant/test_fused.py`` check them against it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from qcompile.quant.base import channel_rows, expand_rows


def row_extremes(rows: Tensor) -> tuple[Tensor, Tensor]:
    """``(min, max)`` of every row of a ``[R, n]`` tensor: ``torch.aminmax(rows, dim=1)``.

    Two vectorised reductions: ``aminmax`` over a dimension runs a scalar loop here, 6-8x
    slower on a 120x400 weight (79 us against 13 us) and 10x on a whole activation.
    """
    return torch.amin(rows, dim=1), torch.amax(rows, dim=1)


def abs_max(x: Tensor) -> Tensor:
    """``x.abs().amax()`` as ``max(-min(x), max(x))``: two reductions instead of a full
    ``abs`` pass (negation and ``abs`` are exact, so the value is the same)."""
    return torch.maximum(torch.amin(x).neg(), torch.amax(x))


def minmax_stack(x: Tensor, widths: Sequence[int], per_channel: bool) -> Tensor:
    """``[K, *x.shape]``: what ``MinMax(b, per_channel)(x)`` gives for each ``b`` in
    ``widths``, computed together (one op per step of the formula for all K, the shared
    ``x - lo`` and ``hi - lo`` once). Each element takes the same operations as in
    ``MinMax``, so every row equals that quantizer's values bit for bit. No gradient."""
    with torch.no_grad():
        lo, hi = row_extremes(channel_rows(x, per_channel))
        lo, hi = expand_rows(lo, x), expand_rows(hi, x)
        top = _top_codes(tuple(widths), x.dtype, x.dim())
        step = (hi - lo).unsqueeze(0) / top
        step = torch.where(step > 0, step, 1.0)  # safe_step
        q = (x - lo).unsqueeze(0).div(step).round_().clamp_min_(0).clamp_max_(top)
        return q.mul_(step).add_(lo)


@functools.cache
def _top_codes(bits: tuple[int, ...], dtype: torch.dtype, dims: int) -> Tensor:
    """``[2^b - 1 for b in bits]`` shaped to stack K results ahead of a ``dims``-d tensor
    (built once per shape)."""
    return torch.tensor([2.0**b - 1 for b in bits], dtype=dtype).reshape(-1, *([1] * dims))
