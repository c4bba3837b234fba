"""Min-max quantization at several widths at once: the fused form of DQA's and SDQ's
min-max members.

A DQA weight mixture quantizes every weight at each member's width on every training step,
and SDQ's search does it at two widths. Computing the members together, stacked along a new
first dimension, takes one op per step of the formula instead of one per member and step.
Every element goes through the same operations as in :class:`~qcompile.quant.uniform.MinMax`
(the grid of :func:`~qcompile.quant.uniform.minmax_grid`, then
``lo + clamp(round((x - lo) / step), 0, 2^b - 1) * step``), so each row of the stack equals
that quantizer's output bit for bit (``tests/quant/test_fused.py``): the trained model,
freeze and the simulator see the same levels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from qcompile.quant.base import channel_rows
from qcompile.quant.fused import row_extremes
from qcompile.quant.ste import safe_step
from qcompile.quant.uniform import minmax_grid

# minmax_grid treats these widths apart (symmetric 1-bit levels, int8's 8-bit grid)
_OWN_GRID = (1, 8)


def minmax_grids(lo: Tensor, hi: Tensor, widths: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``(start, step)``, each ``[K, *lo.shape]``: row ``k`` is ``minmax_grid(lo, hi,
    widths[k])`` bit for bit. The nudged grids of 2..7 bits come from one op per step of
    the formula for all of them; 1 and 8 bits, each its own formula, from ``minmax_grid``.

    >>> start, step = minmax_grids(torch.tensor([-1.0]), torch.tensor([2.0]), [2, 8])
    >>> start[0].tolist(), step[0].tolist(), (start[1] / step[1]).tolist()
    ([-1.0], [1.0], [-128.0])
    """
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    nudged = [b for b in widths if b not in _OWN_GRID]
    rows: dict[int, tuple[Tensor, Tensor]] = {}
    if nudged:
        n = _top_codes(tuple(nudged), lo.dtype, lo.dim())
        step = safe_step((hi - lo).unsqueeze(0) / n)
        start = torch.maximum(torch.round(lo.unsqueeze(0) / step), -n).clamp_(max=0) * step
        rows.update(zip(nudged, zip(start.unbind(), step.unbind(), strict=True), strict=True))
    for b in widths:
        if b in _OWN_GRID:
            rows[b] = minmax_grid(lo, hi, b)
    starts, steps = zip(*(rows[b] for b in widths), strict=True)
    return torch.stack(starts), torch.stack(steps)


def minmax_stack(x: Tensor, widths: Sequence[int], per_channel: bool) -> Tensor:
    """``[K, *x.shape]``: what ``MinMax(b, per_channel)(x)`` gives for each ``b`` in
    ``widths``, computed together (``x - start`` and the rounding once for all K). No
    gradient."""
    with torch.no_grad():
        lo, hi = row_extremes(channel_rows(x, per_channel))
        start, step = minmax_grids(lo, hi, widths)
        tail = [1] * (x.dim() - 1)
        start = start.reshape(len(widths), -1, *tail)
        step = step.reshape(len(widths), -1, *tail)
        top = _top_codes(tuple(widths), x.dtype, x.dim())
        q = (x.unsqueeze(0) - start).div_(step).round_().clamp_min_(0).clamp_max_(top)
        return q.mul_(step).add_(start)


@functools.cache
def _top_codes(bits: tuple[int, ...], dtype: torch.dtype, dims: int) -> Tensor:
    """``[2^b - 1 for b in bits]`` shaped to stack K results ahead of a ``dims``-d tensor
    (built once per shape)."""
    return torch.tensor([2.0**b - 1 for b in bits], dtype=dtype).reshape(-1, *([1] * dims))
