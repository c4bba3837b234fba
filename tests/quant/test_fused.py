"""The training hot path's fused forms against the plain formulas they replace.

Values are compared with ``torch.equal`` (bit for bit). Gradients too, except where a fused
form sums in another order than autograd did: the PACT mixture's gradients of its attention
and clips (sums over the activation), the gradient of a mixture's attention logits when the
forward pass and the penalty share one softmax (the two contributions are added before the
softmax's backward instead of after), and the compiled kernels' sums; those are compared
with a relative tolerance of 1e-5 and say so.
"""

from __future__ import annotations

import pytest
import torch

from qcompile.quant import BWN, PACT, TWN, Identity, MinMax
from qcompile.quant.activation import _PACTMix, mix_grads, mix_values, pact_grads, pact_values
from qcompile.quant.ddq import LearnedLevels
from qcompile.quant.ddq_fused import gated_average_grads
from qcompile.quant.dmbq import DMBQ, _midpoints, unit_table
from qcompile.quant.dqa import Mixture
from qcompile.quant.fused import abs_max, row_extremes
from qcompile.quant.minmax_stack import minmax_grids, minmax_stack
from qcompile.quant.sdq import SDQQuantizer, gumbel_weight
from qcompile.quant.ste import straight_through, uniform_fake_quant
from qcompile.quant.uniform import minmax_grid

ROUNDING = {"rtol": 1e-5, "atol": 1e-6}


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_fake_quant(x, lo, step, qmax):
    return lo + torch.clamp(torch.round((x - lo) / step), 0, qmax) * step


@pytest.mark.parametrize("clip_grad", [False, True])
def test_uniform_fake_quant_is_the_formula_and_its_ste(clip_grad: bool) -> None:
    x = (randn(6, 40) * 2).requires_grad_(True)
    lo, step = torch.full((6, 1), -1.5), torch.full((6, 1), 0.2)
    y = uniform_fake_quant(x, lo, step, 15, clip_grad)
    assert torch.equal(y, reference_fake_quant(x.detach(), lo, step, 15))
    g = randn(6, 40, seed=1)
    y.backward(g)
    hi = lo + 15 * step
    inside = (x.detach() >= lo) & (x.detach() <= hi)  # bounds included
    assert 0 < int(inside.sum()) < x.numel() if clip_grad else True
    assert torch.equal(x.grad, g * inside if clip_grad else g)
    with torch.no_grad():  # and without a graph
        assert torch.equal(uniform_fake_quant(x, lo, step, 15, clip_grad), y.detach())


def test_clipped_ste_passes_the_range_bounds_themselves() -> None:
    lo, step = torch.tensor(-1.0), torch.tensor(0.5)
    x = torch.tensor([-1.0, 0.0, 0.5, -1.2, 0.6]).requires_grad_(True)
    uniform_fake_quant(x, lo, step, 3, clip_grad=True).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_straight_through_is_q_forward_and_identity_backward() -> None:
    x, q = randn(5, 7).requires_grad_(True), randn(5, 7, seed=3)
    y = straight_through(x, q)
    assert torch.equal(y, q)
    g = randn(5, 7, seed=4)
    y.backward(g)
    assert torch.equal(x.grad, g)
    assert q.data_ptr() != y.data_ptr()  # a copy: nothing downstream writes into q


@pytest.mark.parametrize("shape", [(6, 25), (120, 400), (1, 301056), (4, 3, 5, 5)])
def test_row_extremes_and_abs_max(shape: tuple[int, ...]) -> None:
    x = randn(*shape)
    rows = x.reshape(shape[0], -1)
    lo, hi = row_extremes(rows)
    expected = torch.aminmax(rows, dim=1)
    assert torch.equal(lo, expected.min) and torch.equal(hi, expected.max)
    assert torch.equal(abs_max(x), x.abs().amax())


@pytest.mark.parametrize("per_channel", [True, False])
def test_minmax_stack_rows_are_each_minmax(per_channel: bool) -> None:
    w = randn(8, 3, 3, 3)
    w[2] = 0.75  # a constant channel: the safe step
    w[3] = w[3].abs()  # all >= 0: the nudged zero point at the bottom
    w[4] = -w[4].abs()  # all <= 0: at the top
    widths = [1, 2, 3, 4, 5, 7, 8]
    stack = minmax_stack(w, widths, per_channel)
    for row, bits in zip(stack, widths, strict=True):
        assert torch.equal(row, MinMax(bits, per_channel)(w))


def test_minmax_grids_rows_are_each_minmax_grid() -> None:
    """The stacked grids against the one-width contract (numeric contract v1's nudged zero
    point), over ranges straddling zero, one-sided, tiny and empty."""
    lo = torch.cat([-randn(200).abs(), torch.zeros(3), -torch.full((2,), 1e-30)])
    hi = torch.cat([randn(200, seed=1).abs(), torch.tensor([0.0, 2.0, 1e-30]), torch.zeros(2)])
    widths = [1, 2, 3, 4, 5, 6, 7, 8]
    start, step = minmax_grids(lo, hi, widths)
    for k, bits in enumerate(widths):
        expected = minmax_grid(lo, hi, bits)
        assert torch.equal(start[k], expected[0]) and torch.equal(step[k], expected[1])


def pact_reference(x, a, members):
    """The member-by-member mixture: each PACT's own autograd Function, then the sum."""
    out = a[0] * members[0](x)
    for k in range(1, len(members)):
        out = out + a[k] * members[k](x)
    return out


def mixture_grads(fn, members, x, a, g):
    x = x.clone().requires_grad_(True)
    a = a.clone().requires_grad_(True)
    for m in members:
        m.zero_grad()
    y = fn(x, a, members)
    y.backward(g)
    clips = [m.alpha.grad.clone() for m in members if isinstance(m, PACT)]
    return y.detach(), x.grad, a.grad, clips


def fused(x, a, members):
    qmaxes = tuple(2**m.bits - 1 if isinstance(m, PACT) else None for m in members)
    return _PACTMix.apply(x, a, qmaxes, *[m.alpha for m in members if isinstance(m, PACT)])


@pytest.mark.parametrize(
    "make", [lambda: [PACT(2), PACT(4), PACT(8)], lambda: [PACT(4, 1.5), PACT(8, 2.0), Identity()]]
)
def test_pact_mixture_equals_member_by_member(make) -> None:
    """Eager fused path (small tensors never take the compiled one): values bit for bit,
    gradients to float rounding (sums in another order)."""
    members = make()
    x = randn(4, 6, 9, 9) * 2  # both sides of 0 and of every clip
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.5, 2.0])  # exactly on the bounds
    a = torch.softmax(torch.tensor([0.3, -0.2, 0.5])[: len(members)], 0)
    g = randn(4, 6, 9, 9, seed=5)
    y1, gx1, ga1, gc1 = mixture_grads(fused, members, x, a, g)
    y2, gx2, ga2, gc2 = mixture_grads(pact_reference, members, x, a, g)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(gx1, gx2, **ROUNDING)
    torch.testing.assert_close(ga1, ga2, **ROUNDING)
    for c1, c2 in zip(gc1, gc2, strict=True):
        torch.testing.assert_close(c1, c2, **ROUNDING)


def test_pact_mixture_clip_gradient_with_a_non_positive_clip() -> None:
    members = [PACT(2, 1.0), PACT(4, 1.0)]
    with torch.no_grad():
        members[0].alpha.fill_(-0.5)  # (0, alpha) empty: the direct count x >= alpha
    x, a, g = randn(3, 50), torch.tensor([0.6, 0.4]), randn(3, 50, seed=6)
    _, gx1, _, gc1 = mixture_grads(fused, members, x, a, g)
    _, gx2, _, gc2 = mixture_grads(pact_reference, members, x, a, g)
    torch.testing.assert_close(gx1, gx2, **ROUNDING)
    torch.testing.assert_close(gc1[0], gc2[0], **ROUNDING)


def test_mix_kernel_sources_match_the_eager_function() -> None:
    """mix_values / mix_grads (what the compiled kernels are built from) agree with the eager
    Function: values and dx bit for bit, the sums to rounding."""
    members = [PACT(2, 1.0), PACT(4, 2.0), Identity()]
    x, a, g = randn(2000) * 2, torch.tensor([0.5, 0.3, 0.2]), randn(2000, seed=7)
    clips = torch.cat([members[0].alpha, members[1].alpha]).detach()
    y, gx, ga, gc = mixture_grads(fused, members, x, a, g)
    assert torch.equal(mix_values(x, a, clips, (3, 15, None)), y)
    dx, dclips, da = mix_grads(g, x, a, clips, (3, 15, None))
    assert torch.equal(dx, gx)
    torch.testing.assert_close(da, ga, **ROUNDING)
    torch.testing.assert_close(dclips, torch.cat(gc), **ROUNDING)


def test_pact_kernel_sources_match_the_eager_function() -> None:
    """pact_values / pact_grads (what the compiled PACT kernels are built from) agree with
    the eager PACT: values and dx bit for bit (points on 0 and on the clip included), the
    clip's gradient to rounding (a sum in another order)."""
    q = PACT(2, 1.5)
    x = randn(3000) * 2
    x[:3] = torch.tensor([0.0, 1.5, -0.0])
    g = randn(3000, seed=8)
    xg = x.clone().requires_grad_(True)
    y = q(xg)
    y.backward(g)
    assert torch.equal(pact_values(x, q.alpha.detach(), 3), y.detach())
    dx, dalpha = pact_grads(g, x, q.alpha.detach())
    assert torch.equal(dx, xg.grad)
    torch.testing.assert_close(dalpha, q.alpha.grad, **ROUNDING)


def test_dmbq_cell_search_is_bucketize_exactly() -> None:
    unit = unit_table()
    q = DMBQ(4, 4)
    for bits in ([1, 2, 3, 4], [4, 4, 4, 4], [2, 2, 2, 2], [3, 1, 4, 2]):
        q.channel_bits.copy_(torch.tensor(bits))
        u = torch.rand(4, 6000, generator=torch.Generator().manual_seed(sum(bits))) * 2 - 1
        for c, b in enumerate(bits):  # the decision points and their neighbours, the ends
            m = _midpoints(unit, b)
            up, down = torch.nextafter(m, torch.tensor(2.0)), torch.nextafter(m, torch.tensor(-2.0))
            edges = torch.arange(2048) / 1024 - 1
            special = torch.cat([m, up, down, torch.tensor([-1.0, 1.0, 0.0, -0.0]), edges])
            u[c, : special.numel()] = special
        codes = q._codes_of(u)
        expected = torch.stack(
            [torch.bucketize(u[c], _midpoints(unit, b)) for c, b in enumerate(bits)]
        )
        assert torch.equal(codes, expected), bits


def test_sdq_pick_is_the_relaxed_mixture_exactly() -> None:
    """The fused pick against straight_through(s hi + (1 - s) lo, hard) through the members:
    output, weight gradient and beta gradient bit for bit."""
    w, g = randn(6, 20).requires_grad_(True), randn(6, 20, seed=2)
    q = SDQQuantizer([MinMax(1), MinMax(2), MinMax(3)]).train()
    q.beta.fill_(0.6)
    for seed in range(6):
        torch.manual_seed(seed)
        out = q(w)
        (out * g).sum().backward()
        w2 = w.detach().clone().requires_grad_(True)
        torch.manual_seed(seed)
        beta = torch.tensor(0.6, requires_grad=True)
        s = gumbel_weight(beta, torch.rand(()), 1.0)
        hi, lo = MinMax(3)(w2), MinMax(2)(w2)
        ref = straight_through(s * hi + (1 - s) * lo, (hi if bool(s > 0.5) else lo).detach())
        (ref * g).sum().backward()
        assert torch.equal(out, ref)
        assert torch.equal(w.grad, w2.grad)
        assert torch.equal(q.leaf.grad, beta.grad)
        w.grad = None


def test_ddq_reuses_the_forward_pass_with_the_same_results() -> None:
    w = randn(6, 3, 3, 3)
    fresh, reused = LearnedLevels(4, 6), LearnedLevels(4, 6)
    with torch.no_grad():
        fresh.levels_flat.copy_(torch.rand(fresh.levels_flat.shape))
        fresh.logits.copy_(torch.tensor([0.2, 0.1, -0.3]))
    reused.load_state_dict(fresh.state_dict())
    reused(w)  # keeps the row range, grid indices and gates
    assert reused._kept_index is not None and reused._kept_gates is not None
    for q in (fresh, reused):
        _, err = q.range_and_error(w.detach())
        (err.sum() + q.gate_sum() * 3.0).backward()
    assert torch.equal(fresh.levels_flat.grad, reused.levels_flat.grad)
    assert torch.equal(fresh.logits.grad, reused.logits.grad)
    assert reused._kept_gates is None  # the gates are taken once
    with torch.no_grad():
        w.add_(0.1)  # other weights: nothing stale is reused
    assert torch.equal(reused.squared_error(w), fresh.squared_error(w))


class _GatedAverage(torch.autograd.Function):
    """The unfused DDQ graph's averaging node (as it was before LearnedStep)."""

    @staticmethod
    def forward(ctx, q, gates, bits):
        ctx.save_for_backward(q)
        ctx.bits = bits
        block = q.shape[1] >> bits
        return q.reshape(q.shape[0], 1 << bits, block).mean(-1).repeat_interleave(block, dim=1)

    @staticmethod
    def backward(ctx, grad):
        (q,) = ctx.saved_tensors
        return (*gated_average_grads(q, grad, ctx.bits, *ctx.needs_input_grad[:2]), None)


class _Lookup(torch.autograd.Function):
    """The unfused DDQ graph's lookup node."""

    @staticmethod
    def forward(ctx, x, table, idx):
        ctx.save_for_backward(idx)
        ctx.table_shape = table.shape
        return torch.gather(table, 1, idx).reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        gt = grad.new_zeros(ctx.table_shape).scatter_add_(1, idx, grad.reshape(idx.shape))
        return grad, gt, None


@pytest.mark.parametrize("fixed", [False, True])
def test_ddq_step_and_its_error_equal_the_unfused_graph(fixed: bool) -> None:
    """One node for the lookup and the correction's error against the graph it replaced (two
    nodes, table arithmetic, the error recomputed with autograd ops): values and the
    gradients of the weights, levels and logits bit for bit."""
    w, g = randn(6, 3, 3, 3, seed=10), randn(6, 3, 3, 3, seed=11)
    results = []
    for fused in (True, False):
        q = LearnedLevels(4, 6)
        with torch.no_grad():
            q.levels_flat.copy_(torch.rand(q.levels_flat.shape, generator=torch.Generator()))
            q.logits.copy_(torch.tensor([0.2, -0.1, 0.3]))
        if fixed:
            q.fix(3)
        x = w.clone().requires_grad_(True)
        if fused:
            y = q(x)
            span, err = q.training_error(x.detach())
        else:
            gates, bits = q._gates_and_bits()
            lo, span = q.row_range(x)
            averaged = _GatedAverage.apply(q.levels, gates, bits)
            if fixed:
                averaged = averaged + 0 * q.logits.sum()
            y = _Lookup.apply(x, lo + span * averaged, q._index(x, lo, span).reshape(6, -1))
            span, err = q.range_and_error(x.detach())
        ((y * g).sum() + (err / span[:, 0] ** 2).sum()).backward()
        results.append((y.detach(), err.detach(), x.grad, q.levels_flat.grad, q.logits.grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_mixture_weights_shared_by_forward_and_penalty() -> None:
    m = Mixture([MinMax(2), MinMax(4), MinMax(8)])
    m.temperature.fill_(2.0)
    w, g = randn(5, 12), randn(5, 12, seed=9)
    y = m(w)
    assert m._kept is not None
    kept = m._kept[0]
    a = m.weights()
    assert a is kept and torch.equal(a, torch.softmax(m.alpha / 2.0, 0))
    again = m.weights()  # taken once: then a fresh one, with the same values
    assert again is not a and torch.equal(again, a)
    ((y * g).sum() + (a * torch.tensor([1.0, 4.0, 16.0])).sum()).backward()
    shared = m.alpha.grad.clone()
    # Separate softmaxes (what the penalty did before): the same gradient up to rounding,
    # the two contributions now meet before the softmax's backward instead of after it.
    ref = Mixture([MinMax(2), MinMax(4), MinMax(8)])
    ref.temperature.fill_(2.0)
    y2 = ref(w)
    penalty = (ref._weights() * torch.tensor([1.0, 4.0, 16.0])).sum()
    ((y2 * g).sum() + penalty).backward()
    torch.testing.assert_close(shared, ref.alpha.grad, **ROUNDING)
    m(w)
    with torch.no_grad():
        m.alpha.add_(0.5)  # changed logits: never the stale one
    assert torch.equal(m.weights(), torch.softmax(m.alpha / 2.0, 0))


@pytest.mark.parametrize("quantizer", [BWN, TWN])
def test_binary_quantizers_keep_their_values_and_identity_gradient(quantizer) -> None:
    q = quantizer()
    w = randn(6, 30).requires_grad_(True)
    y = q(w)
    assert torch.equal(y, q.encode(w.detach()).decode())
    g = randn(6, 30, seed=8)
    y.backward(g)
    assert torch.equal(w.grad, g)
