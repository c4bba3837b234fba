"""The DDQ quantizer: learned levels, gates, averaging, gradients, export and state."""

from __future__ import annotations

import pytest
import torch

from qcompile.quant.ddq import (
    LearnedLevels,
    average_levels,
    descending_gates,
    kron_average,
)


def weights(seed: int = 0, shape: tuple[int, ...] = (6, 3, 3, 3)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def set_bits(q: LearnedLevels, bits: int) -> None:
    """Open the first ``bits - 1`` gates and close the rest."""
    with torch.no_grad():
        q.logits.copy_(torch.tensor([0.3 if i < bits - 1 else -0.3 for i in range(q.bmax - 1)]))


def shuffled_levels(q: LearnedLevels, seed: int = 1) -> None:
    """Non-uniform, unsorted levels, so averaging mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        q.levels_flat.copy_(torch.rand(q.levels_flat.shape, generator=g))


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bmax", [1, 3, 4, 8])
def test_encode_decode_equals_forward_for_every_bitwidth(bmax: int, per_channel: bool) -> None:
    w = weights()
    q = LearnedLevels(bmax, channels=w.shape[0], per_channel=per_channel)
    shuffled_levels(q)
    rows = w.shape[0] if per_channel else 1
    for s in range(1, bmax + 1):
        set_bits(q, s)
        assert q.bits == s
        enc = q.encode(w)
        assert enc.bits == s and enc.levels.shape == (rows, 2**s)
        assert enc.codes.shape == w.shape and enc.codes.dtype == torch.long
        assert int(enc.codes.min()) >= 0 and int(enc.codes.max()) <= 2**s - 1
        assert torch.equal(enc.decode(), q(w)), s
        with torch.no_grad():
            assert torch.equal(enc.decode(), q(w)), s  # the no-grad path too
        assert torch.equal(q.encode(w).decode(), q(w))  # and again: nothing drifts


def test_initial_levels_are_the_uniform_min_max_grid() -> None:
    w = weights()
    q = LearnedLevels(2, channels=6)
    rows = w.reshape(6, -1)
    lo, hi = rows.min(1).values, rows.max(1).values
    grid = lo[:, None] + (hi - lo)[:, None] * torch.tensor([0, 1 / 3, 2 / 3, 1])
    assert torch.allclose(q.encode(w).levels, grid, atol=1e-6)
    assert torch.allclose(q(w), q.encode(w).decode())
    err = (q(w) - w).abs().amax(dim=(1, 2, 3))
    assert torch.all(err <= (hi - lo) / 6 + 1e-6)  # nearest of 4 levels: half a step


def block_matrix(bmax: int, s: int) -> torch.Tensor:
    """The paper's U: block-diagonal, 2^s all-one blocks of size 2^(bmax - s)."""
    size = 2 ** (bmax - s)
    return torch.block_diag(*[torch.ones(size, size, dtype=torch.float64)] * 2**s)


@pytest.mark.parametrize("bmax", [2, 3, 5])
def test_averaging_matches_the_u_transpose_q_definition(bmax: int) -> None:
    g = torch.Generator().manual_seed(3)
    q = torch.rand(4, 2**bmax, generator=g, dtype=torch.float64)
    for s in range(1, bmax + 1):
        size = 2 ** (bmax - s)
        full = q @ block_matrix(bmax, s) / size  # (U^T q) / block size, one row per channel
        compact = average_levels(q, s, bmax)
        assert torch.allclose(compact.repeat_interleave(size, dim=1), full, rtol=0, atol=1e-12)
        gates = torch.tensor([1.0] * s + [0.0] * (bmax - s), dtype=torch.float64)
        assert torch.allclose(kron_average(q, gates), full, rtol=0, atol=1e-12)
    # A quantizer at s bits: element with grid index k outputs lo + range * full[k].
    w = weights(4)
    quant = LearnedLevels(bmax, channels=6)
    shuffled_levels(quant, 5)
    set_bits(quant, 2)
    lo, span = quant.row_range(w)
    levels = quant.levels.double() @ block_matrix(bmax, 2) / 2 ** (bmax - 2)
    expected = torch.gather(lo + span * levels, 1, quant.index(w).reshape(6, -1))
    assert torch.allclose(quant(w).reshape(6, -1).double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bmax", [1, 3, 5, 8])
def test_closed_form_gradient_equals_autograd_through_the_kronecker_product(bmax: int) -> None:
    w = weights(10)
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(11))
    for s in range(1, bmax + 1):
        q = LearnedLevels(bmax, channels=6)
        shuffled_levels(q, s)
        set_bits(q, s)
        (q(w) * up).sum().backward()
        ref = LearnedLevels(bmax, channels=6)
        ref.load_state_dict(q.state_dict())
        lo, span = ref.row_range(w)
        table = lo + span * kron_average(ref.levels, ref.gates())
        out = torch.gather(table, 1, ref.index(w).reshape(6, -1))
        (out * up.reshape(6, -1)).sum().backward()
        assert torch.allclose(q.levels_flat.grad, ref.levels_flat.grad, rtol=1e-5, atol=1e-6), s
        if bmax > 1:
            assert torch.allclose(q.logits.grad, ref.logits.grad, rtol=1e-4, atol=1e-5), s


def test_gates_stay_descending() -> None:
    assert descending_gates(torch.tensor([0.3, -0.1, 0.2])).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert descending_gates(torch.tensor([-0.3, 0.5, 0.2])).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert descending_gates(torch.tensor([0.1, 0.1, 0.1])).tolist() == [1.0] * 4
    q = LearnedLevels(4, channels=2)
    with torch.no_grad():
        q.logits.copy_(torch.tensor([0.2, -0.2, 0.9]))
    assert q.bits == 2  # the third gate's open logit is masked by the closed second one


def test_gradients_reach_weights_levels_and_gates() -> None:
    w = weights().requires_grad_(True)
    q = LearnedLevels(4, channels=6)
    shuffled_levels(q)
    set_bits(q, 3)
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(7))
    (q(w) * up).sum().backward()
    assert torch.equal(w.grad, up)  # straight through, nothing clipped: the range covers w
    assert q.levels_flat.grad is not None and q.levels_flat.grad.abs().sum() > 0
    assert q.logits.grad is not None and torch.all(q.logits.grad != 0)
    # Levels of one averaged block share its gradient equally (U^T's columns).
    blocks = q.levels_flat.grad.view(6, 8, 2)
    assert torch.allclose(blocks[..., 0], blocks[..., 1])


def test_gate_gradient_is_the_change_of_the_output_when_a_bit_opens() -> None:
    """Through the Kronecker factors, dL/dg_i is <dL/dQ, Q with bit i - Q without it>: for a
    linear loss <c, Q(w)> that is exact, for the last open gate and the first closed one."""
    w = weights(2, (4, 64))
    c = torch.randn(w.shape, generator=torch.Generator().manual_seed(8))
    q = LearnedLevels(4, channels=4)
    shuffled_levels(q, 9)
    out = {}
    with torch.no_grad():
        for s in range(1, 5):
            set_bits(q, s)
            out[s] = q(w)
    set_bits(q, 2)
    (c * q(w)).sum().backward()
    g = q.logits.grad.double()
    assert float(g[0]) == pytest.approx(float((c * (out[2] - out[1])).sum()), rel=1e-4)
    assert float(g[1]) == pytest.approx(float((c * (out[3] - out[2])).sum()), rel=1e-4)


def test_opening_a_closed_bit_has_a_gradient_toward_lower_error() -> None:
    w = weights(2, (4, 64))
    q = LearnedLevels(3, channels=4)
    set_bits(q, 1)
    ((q(w) - w) ** 2).sum().backward()
    assert float(q.logits.grad[0]) < 0  # gradient descent opens gate 2: the error falls


def test_fixed_bits_ignore_the_logits_and_stop_their_gradient() -> None:
    w = weights()
    q = LearnedLevels(4, channels=6)
    set_bits(q, 4)
    q.fix(2)
    assert q.bits == 2 and q.fixed
    assert q.gates().tolist() == [1.0, 1.0, 0.0, 0.0] and not q.gates().requires_grad
    (q(w) ** 2).sum().backward()
    assert torch.equal(q.logits.grad, torch.zeros(3))  # zero, not None (DDP)
    assert torch.equal(q.encode(w).decode(), q(w.detach()))
    with pytest.raises(ValueError, match=r"bits must be 1\.\.4"):
        q.fix(5)
    with pytest.raises(ValueError, match=r"1\.\.8 bits"):
        LearnedLevels(9, channels=2)


def test_bits_and_levels_survive_a_state_dict_round_trip() -> None:
    w = weights()
    trained = LearnedLevels(8, channels=6)
    shuffled_levels(trained)
    set_bits(trained, 3)
    fresh = LearnedLevels(8, channels=6, gate_init=0.7)
    shapes = {k: v.shape for k, v in fresh.state_dict().items()}
    assert fresh.bits == 8
    fresh.load_state_dict(trained.state_dict())
    assert fresh.bits == 3 and torch.equal(fresh(w), trained(w))
    trained.fix(5)
    assert {k: v.shape for k, v in trained.state_dict().items()} == shapes  # bits move no shape
    again = LearnedLevels(8, channels=6)
    again.load_state_dict(trained.state_dict())
    assert again.bits == 5 and again.fixed
    a, b = again.encode(w), trained.encode(w)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.levels, b.levels)


def test_constant_channel_quantizes_to_itself() -> None:
    w = weights()
    w[2] = 0.25
    q = LearnedLevels(3, channels=6)
    shuffled_levels(q)
    out = q(w)
    assert torch.isfinite(out).all() and torch.all(out[2] == 0.25)
    assert torch.equal(q.encode(w).decode(), out)


def test_squared_error_gradient_pulls_levels_to_their_bin_means() -> None:
    w = weights(6, (3, 40))
    q = LearnedLevels(3, channels=3)
    shuffled_levels(q)
    set_bits(q, 2)
    err = q.squared_error(w)
    assert err.shape == (3,)
    err.sum().backward()
    _, span = q.row_range(w)
    codes = q.encode(w).codes
    deployed = q.encode(w).levels
    grad = q.levels_flat.grad.view(3, 8)
    for c in range(3):
        for k in range(4):
            members = w[c][codes[c] == k]
            # d/dq_j sum (lo + span * mean(q_block) - w)^2 = 2 span / 2 * sum(level - w)
            expected = span[c, 0] * (deployed[c, k] - members).sum()
            assert torch.allclose(grad[c, 2 * k : 2 * k + 2], expected.expand(2), atol=1e-5)
    assert q.logits.grad is None  # the gates are held constant
