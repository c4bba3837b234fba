"""DDQ's training step in one autograd node: the quantized weights and the per-row squared
error of the gradient correction (:mod:`qcompile.quant.ddq` says what each means).

Unfused, a DDQ layer was two Python autograd nodes (the gated average, the table lookup), a
handful of built-in ones for the table arithmetic, and, for the correction term, the whole
quantization again (row range, grid indices, table, gather) with its own backward; that was
most of a DDQ step on lenet. This node computes the lookup once, returns the error with it,
and in the backward pass reproduces what autograd did through those ops, operation for
operation, so values and gradients are the same bit for bit:

- the weights get the output gradient straight through;
- the table gets the output gradient summed per fine grid index (``scatter_add``), times
  the row's span, and the levels and gates what :func:`gated_average_grads` gives for that
  (the closed form of the Kronecker product's derivative);
- the error ``e_r = sum_i (x_i - q_i)^2`` sends ``-(g_e * (2 d))`` (``d = x - q``) to the
  looked-up table entries, ``scatter_add`` per code, times the span, divided by the block
  size over each averaged block (the backward of ``reshape(...).mean(-1)``); the levels'
  two contributions are added, as autograd added them; no gradient reaches the gates or
  the weights through the error.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gated_average_grads(
    q: Tensor, grad: Tensor, bits: int, need_q: bool, need_g: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of the levels ``q`` (``[R, 2^bmax]``) and the ``bmax`` gates given ``grad``,
    the gradient of every grid index's averaged level (``[R, 2^bmax]``), at hard descending
    gates with ``bits`` open.

    The factors are commuting projections (identity or a mean over one index bit), so the
    derivative is closed-form: ``q`` gets the block mean of ``grad``; an open gate ``i`` gets
    ``<G, T - M_i T>`` and a closed one ``<G, T^(+i) - T>`` (``T``: the table, ``M_i``: mean
    over bit ``i``, ``T^(+i)``: the table with bit ``i`` resolved).
    """
    bmax = q.shape[1].bit_length() - 1
    shape = (q.shape[0], *([2] * bmax))
    closed = tuple(range(bits + 1, bmax + 1))  # dims of the [R, 2, ..., 2] view
    g = grad.reshape(shape)
    gq = gg = None
    if need_q:
        gq = _mean(g, closed).expand(shape).reshape(q.shape)
    if need_g:
        v = q.reshape(shape)
        table, g_closed = _mean(v, closed), _sum(g, closed)
        terms = []
        for i in range(1, bmax + 1):
            if i <= bits:
                terms.append((g_closed * (table - table.mean(dim=i, keepdim=True))).sum())
            else:
                rest = tuple(d for d in closed if d != i)
                terms.append((_sum(g, rest) * (_mean(v, rest) - table)).sum())
        gg = torch.stack(terms)
    return gq, gg


def _mean(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return x.mean(dim=dims, keepdim=True) if dims else x


def _sum(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return x.sum(dim=dims, keepdim=True) if dims else x


class LearnedStep(torch.autograd.Function):
    """``(Q(x), e)``: the quantized weights and ``e_r = ||x_r - Q(x_r)||^2`` per row.

    Inputs: ``x`` (the weights), ``levels`` (``[R, 2^bmax]``, a view of the parameter),
    ``gates`` (``[bmax]``; constant once the bits are fixed), ``unused`` (the logits once the
    bits are fixed, which get a zero gradient so that DDP sees them used; else None), the
    open gates ``bits``, and without gradient the rows' ``lo`` and ``span`` (``[R, 1]``) and
    every weight's fine grid index ``idx`` (``[R, n]``, long).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, levels: Tensor, gates: Tensor, unused: Tensor | None, bits: int,
        lo: Tensor, span: Tensor, idx: Tensor,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        rows, full = levels.shape[0], levels.shape[1]
        block = full >> bits
        averaged = levels.reshape(rows, 1 << bits, block).mean(dim=-1)
        codes = idx >> (full.bit_length() - 1 - bits) if block > 1 else idx
        q = torch.gather(lo + span * averaged, 1, codes)
        diff = x.reshape(rows, -1) - q
        error = diff.pow(2).sum(dim=1)
        ctx.save_for_backward(levels, span, idx, codes, diff)
        ctx.bits, ctx.block, ctx.zero = bits, block, unused is not None
        ctx.set_materialize_grads(False)
        return q.reshape(x.shape), error

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_error: Tensor | None):  # type: ignore[override]
        levels, span, idx, codes, diff = ctx.saved_tensors
        rows, full = levels.shape
        need_x, need_levels, need_gates = ctx.needs_input_grad[:3]
        gx = grad if need_x else None
        gl = gg = None
        if grad is not None and (need_levels or need_gates):
            table = grad.new_zeros(rows, full).scatter_add_(1, idx, grad.reshape(rows, -1))
            gl, gg = gated_average_grads(levels, table * span, ctx.bits, need_levels, need_gates)
        if grad_error is not None and need_levels:
            step = -(grad_error.unsqueeze(1).expand_as(diff) * (2 * diff.pow(1)))
            table = step.new_zeros(rows, 1 << ctx.bits).scatter_add_(1, codes, step)
            spread = (table * span).unsqueeze(-1).expand(rows, 1 << ctx.bits, ctx.block)
            part = (spread / ctx.block).reshape(rows, full)
            gl = part if gl is None else gl + part
        zero = None
        if ctx.zero and ctx.needs_input_grad[3]:
            zero = levels.new_zeros(full.bit_length() - 2)  # the bmax - 1 logits
        return gx, gl, gg, zero, None, None, None, None
