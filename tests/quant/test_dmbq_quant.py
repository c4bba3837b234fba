"""DMBQ quantizer: Laplace-optimal constants, levels, encode/decode identity, running clip,
clipped STE, the sensitivity sink and checkpoint round trips."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from qcompile.quant.dmbq import (
    DMBQ,
    LAPLACE_CONSTANTS,
    laplace_error,
    multibit_levels,
    solve_laplace,
    unit_table,
)

MIXED = torch.tensor([1, 2, 3, 4, 4, 3, 2, 1])


def weights(seed: int = 0, shape: tuple[int, ...] = (8, 3, 3, 3)) -> torch.Tensor:
    """Laplace(0, 0.1) weights (what the constants were fitted to), by inverse CDF."""
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) - 0.5
    return -0.1 * u.sign() * torch.log1p(-2 * u.abs())


def beta(bits: int) -> np.ndarray:
    c, alpha = LAPLACE_CONSTANTS[bits]
    return c * np.asarray(alpha)


def test_closed_form_error_matches_numerical_integration() -> None:
    x = np.linspace(-40, 40, 800_001)
    f = 0.5 * np.exp(-np.abs(x))
    for bits in (1, 2, 3):
        levels = multibit_levels(beta(bits))
        q = levels[np.abs(x[:, None] - levels[None, :]).argmin(1)]
        numeric = np.trapezoid(f * (x - q) ** 2, x)
        assert laplace_error(beta(bits)) == pytest.approx(numeric, rel=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_resolved_constants_match_the_table(bits: int) -> None:
    c, alpha = solve_laplace(bits)
    c_ref, alpha_ref = LAPLACE_CONSTANTS[bits]
    assert c == pytest.approx(c_ref, abs=1e-3)
    assert alpha.tolist() == pytest.approx(list(alpha_ref), abs=1e-4)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_table_constants_minimise_the_laplace_error(bits: int) -> None:
    c, alpha = solve_laplace(bits)
    best = laplace_error(c * alpha)
    table = laplace_error(beta(bits))
    assert best <= table
    # The table is the optimum up to its printed digits (1-bit: 0.98 against E|X| = 1).
    assert table <= best * (1 + (5e-4 if bits == 1 else 1e-5))
    for k in range(bits):  # and the optimum is a minimum: nudging any alpha_k costs error
        for step in (-0.01, 0.01):
            nudged = c * alpha
            nudged[k] *= 1 + step
            assert laplace_error(nudged) > best


def test_one_bit_optimum_is_the_mean_absolute_value() -> None:
    c, alpha = solve_laplace(1)
    assert c == pytest.approx(1.0, abs=1e-9) and alpha.tolist() == [1.0]
    assert laplace_error([0.98]) == pytest.approx(1.0 + 0.02**2)


def test_unit_levels_are_symmetric_multibit_sums_with_top_level_one() -> None:
    table = unit_table()
    for bits in range(1, 5):
        row = table[bits, : 2**bits]
        assert torch.all(row[1:] > row[:-1]), bits
        assert float(row[-1]) == pytest.approx(1.0, abs=1e-7)
        assert torch.allclose(row, -row.flip(0))
        assert torch.all(table[bits, 2**bits :] == 0)
    a1, a2 = LAPLACE_CONSTANTS[2][1]
    assert table[2].tolist()[:4] == pytest.approx([-1.0, a2 - a1, a1 - a2, 1.0], abs=1e-6)


def quantizer(bits: torch.Tensor = MIXED, w: torch.Tensor | None = None) -> DMBQ:
    q = DMBQ(bits.numel(), 4)
    q.set_channel_bits(bits)
    q(weights() if w is None else w)  # initialises the clip
    return q


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_encode_decode_is_forward_bit_for_bit_per_channel(mode: str) -> None:
    w = weights(1)
    q = quantizer()
    q.train(mode == "train")
    y = q(w)
    e = q.encode(w)
    assert e.bits == 4 and not q.uniform
    assert torch.equal(e.decode(), y)
    for c, b in enumerate(MIXED.tolist()):
        assert int(e.codes[c].max()) < 2**b, c  # only the channel's own 2^b levels
        assert e.levels[c, : 2**b].unique().numel() == 2**b
        assert torch.all(e.levels[c, 2**b :] == 0)
        assert y[c].unique().numel() <= 2**b


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_forward_is_the_nearest_level_of_the_clipped_ratio(bits: int) -> None:
    w = weights(bits, (6, 200))
    q = quantizer(torch.full((6,), bits), w).eval()
    y = q(w)
    unit = unit_table()[bits, : 2**bits]
    u = (w / q.clip[:, None]).clamp(-1, 1)
    nearest = unit[(u[..., None] - unit).abs().argmin(-1)] * q.clip[:, None]
    assert torch.allclose(y, nearest, rtol=0, atol=1e-7)
    assert float((y.abs() - q.clip[:, None]).max()) <= 1e-7  # the clip is the top level


def test_running_clip_update() -> None:
    w1, w2, w3 = weights(1, (2, 50)), weights(2, (2, 50)), weights(3, (2, 50))
    q = DMBQ(2, bits=2).train()
    q(w1)
    a1 = 2.594 * w1.abs().mean(1)
    assert torch.allclose(q.clip, a1)
    q(w2)
    a2 = 0.99 * a1 + 0.01 * 2.594 * w2.abs().mean(1)
    assert torch.allclose(q.clip, a2)
    q.encode(w3)  # encoding never moves the clip
    q.eval()(w3)  # nor does an evaluation pass
    assert torch.allclose(q.clip, a2)
    q.set_channel_bits(torch.tensor([1, 2]))
    assert torch.allclose(q.clip, a2 * torch.tensor([0.98 / 2.594, 1.0]))


def test_clipped_straight_through_gradient() -> None:
    w = weights(4, (2, 40))
    q = quantizer(torch.tensor([2, 3]), w)
    w = w.clone()
    w[0, 0], w[1, 5] = 10.0, -10.0  # far outside the clip
    w.requires_grad_(True)
    g = torch.randn(2, 40)
    (q(w) * g).sum().backward()
    inside = (w.detach().abs() <= q.clip[:, None]).float()
    assert inside[0, 0] == 0 and inside[1, 5] == 0 and 0 < inside.sum() < inside.numel()
    assert torch.equal(w.grad, g * inside)


def test_sensitivity_sink_sums_error_times_gradient_per_channel() -> None:
    w = weights(5, (3, 30))
    q = quantizer(torch.tensor([1, 2, 4]), w).train()
    w = w.clone().requires_grad_(True)
    g = torch.randn(3, 30)
    y = q(w)
    (y * g).sum().backward()
    expected = ((w.detach() - y.detach()).double() * g.double()).sum(1)
    got = q.take_step_sum()
    assert got is not None and torch.allclose(got, expected)
    assert q.take_step_sum() is None  # taking it resets it
    q.track.fill_(False)
    (q(w) * g).sum().backward()
    assert q.take_step_sum() is None
    q.track.fill_(True)
    q.eval()
    (q(w) * g).sum().backward()
    assert q.take_step_sum() is None  # evaluation passes never count


def test_bits_and_levels_survive_a_state_dict_round_trip() -> None:
    w = weights(6)
    q = quantizer(torch.tensor([1, 1, 2, 2, 3, 3, 2, 1]), w)
    q.train()(w)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = DMBQ(8, 4)
    assert fresh.bits == 4
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.bits == 3 and torch.equal(fresh.channel_bits, q.channel_bits)
    q.eval(), fresh.eval()
    assert torch.equal(fresh(w), q(w))
    assert torch.equal(fresh.encode(w).levels, q.encode(w).levels)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match=r"1\.\.4 bits"):
        DMBQ(4, bits=5)
    with pytest.raises(ValueError, match="momentum"):
        DMBQ(4, momentum=1.0)
    q = DMBQ(4)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        q.set_channel_bits(torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        q.set_channel_bits(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="bits must be"):
        solve_laplace(5)
