"""Quantizer library: levels, grids, idempotence, STE gradients, encode/decode identity."""

from __future__ import annotations

import pytest
import torch

from qcompile.quant import (
    BWN,
    LSQ,
    PACT,
    SAWB,
    TWN,
    Identity,
    InputQuant,
    MinMax,
    Quantizer,
    make_weight_quantizer,
)
from qcompile.quant.uniform import sawb_calibrate, sawb_closed_form, sawb_mse


def weights(seed: int = 0, shape: tuple[int, ...] = (6, 4, 3, 3)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def all_quantizers(bits: int, channels: int = 6) -> list[Quantizer]:
    qs: list[Quantizer] = [
        MinMax(bits),
        MinMax(bits, per_channel=False),
        SAWB(bits),
        PACT(bits),
        InputQuant(max(bits, 2)),
    ]
    if bits >= 2:
        qs.append(LSQ(bits, channels=channels))
    if bits in (2, 4, 8):
        qs.append(SAWB(bits, closed_form=True))
    return qs


@pytest.mark.parametrize("bits", range(1, 9))
def test_encode_decode_is_forward_bit_for_bit(bits: int) -> None:
    w = weights(bits)
    for q in [*all_quantizers(bits), BWN(), TWN()]:
        q(w)  # lets observers (input range) and lazy initialisers (LSQ step) settle
        e = q.encode(w)
        assert e.codes.dtype == torch.int64
        assert int(e.codes.min()) >= 0 and int(e.codes.max()) < 2**e.bits, q
        assert torch.equal(e.decode(), q(w)), q


@pytest.mark.parametrize("bits", [2, 3, 4, 7])
def test_minmax_uses_every_level_and_puts_zero_on_one(bits: int) -> None:
    """Levels ``step * (k + z)`` with an integer z (0 is a level: the code is the integer
    weight), every level used, both ends of the data within half a step of the end levels."""
    x = torch.linspace(-1.3, 2.1, 4096)
    q = MinMax(bits, per_channel=False)
    y = q(x)
    assert y.unique().numel() == 2**bits
    step = (2.1 + 1.3) / (2**bits - 1)
    assert abs(float(y.min()) + 1.3) <= step / 2 + 1e-6
    assert abs(float(y.max()) - 2.1) <= step / 2 + 1e-6
    k = y / step
    assert torch.allclose(k, k.round(), atol=1e-4)  # integer multiples of the step
    e = q.encode(x)
    g = e.grid
    assert g is not None and g.step == 1 and -(2**bits - 1) <= int(g.zero) <= 0
    assert torch.allclose(e.levels, g.levels(bits), atol=1e-6)


def test_minmax_8_bits_is_int8_and_1_bit_symmetric() -> None:
    x = torch.linspace(-1.3, 2.1, 4096)
    g8 = MinMax(8, per_channel=False).encode(x).grid
    assert g8 is not None and (g8.step, int(g8.zero)) == (1, -128)  # [-128, 127] * step
    y1 = MinMax(1, per_channel=False)(x)
    assert sorted(y1.unique().tolist()) == pytest.approx([-1.7, 1.7])
    g1 = MinMax(1, per_channel=False).encode(x).grid
    assert g1 is not None and (g1.step, int(g1.zero)) == (2, -1)  # a * (2 code - 1)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_level_counts_never_exceed_two_to_the_bits(bits: int) -> None:
    w = weights(1, (3, 500))
    for q in all_quantizers(bits, channels=3):
        y = q(w) if not isinstance(q, PACT) else q(w.abs())
        rows = y.reshape(3, -1) if getattr(q, "per_channel", False) else y.reshape(1, -1)
        for row in rows:
            assert row.unique().numel() <= 2**bits, q
    assert BWN()(w).reshape(3, -1)[0].unique().numel() == 2
    assert TWN()(w).reshape(3, -1)[0].unique().numel() == 3


def test_sawb_levels_are_symmetric_and_evenly_spaced() -> None:
    q = SAWB(2, per_channel=False)
    w = weights(2, (4000,))
    levels = q.encode(w).levels[0]
    assert torch.allclose(levels, -levels.flip(0))
    gaps = levels.diff()
    assert torch.allclose(gaps, gaps[0].expand_as(gaps))


def test_per_channel_rows_have_their_own_levels() -> None:
    w = weights(3, (4, 50)) * torch.tensor([[0.1], [1.0], [10.0], [100.0]])
    e = MinMax(2).encode(w)
    assert e.levels.shape == (4, 4)
    spans = e.levels[:, -1] - e.levels[:, 0]
    assert bool((spans[1:] > spans[:-1]).all())
    assert MinMax(2, per_channel=False).encode(w).levels.shape == (1, 4)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_idempotent(bits: int) -> None:
    """Q(Q(x)) == Q(x): statistic-driven quantizers reproduce their grid from quantized
    values; calibrated ones (SAWB, PACT, LSQ, input) keep it fixed in eval mode."""
    w = weights(4)
    for q in [*all_quantizers(bits), BWN(), TWN()]:
        if isinstance(q, SAWB) and q.closed_form:
            continue  # the closed form is a statistic of its input: covered below
        y = q(w)
        q.eval()
        if isinstance(q, MinMax) and bits == 8:
            # int8's step is max/127: re-derived from quantized values it can move by an ulp,
            # which moves no code (what deploys) and no value by more than rounding
            assert torch.equal(q.encode(y).codes, q.encode(w).codes), q
            torch.testing.assert_close(q(y), y, rtol=1e-6, atol=0)
            continue
        assert torch.equal(q(y), y), q


def test_sawb_closed_form_is_idempotent_for_its_own_clip() -> None:
    from qcompile.quant.ste import uniform_fake_quant

    w = weights(5, (1, 3000))
    alpha = sawb_closed_form(w, 2)
    step = 2 * alpha / 3
    y = uniform_fake_quant(w, -alpha, step, 3)
    assert torch.equal(uniform_fake_quant(y, -alpha, step, 3), y)


def laplace(u: torch.Tensor) -> torch.Tensor:
    """Unit Laplace samples from uniform ``u`` in [0, 1) (inverse CDF), as float32."""
    c = u - 0.5
    return (-torch.sign(c) * torch.log1p(-2 * c.abs())).float()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform"])
def test_sawb_calibrated_clip_matches_brute_force(bits: int, dist: str) -> None:
    g = torch.Generator().manual_seed(bits)
    x = {
        "normal": lambda: torch.randn(3, 4000, generator=g),
        # inverse CDF of the unit Laplace from the seeded generator: Laplace().sample() draws
        # from the global RNG, whose state depends on which tests ran before in the process
        "laplace": lambda: laplace(torch.rand(3, 4000, generator=g, dtype=torch.float64)),
        "uniform": lambda: torch.rand(3, 4000, generator=g) * 2 - 1,
    }[dist]()
    alpha = sawb_calibrate(x, bits)
    absmax = x.abs().amax(dim=1)
    grid = torch.linspace(1e-3, 1.0, 4000)
    brute = torch.stack([sawb_mse(x, r * absmax, bits) for r in grid], dim=1).amin(dim=1)
    found = sawb_mse(x, alpha, bits)
    assert bool((found <= brute * 1.01).all()), (found, brute)
    # The clip at max|x| (plain symmetric min-max) is clearly worse for peaked data.
    if dist != "uniform" and bits <= 4:
        assert bool((found < sawb_mse(x, absmax, bits) * 0.9).all())


@pytest.mark.parametrize("bits", [2, 4])
def test_sawb_closed_form_near_calibrated_optimum_for_gaussians(bits: int) -> None:
    x = torch.randn(1, 200_000, generator=torch.Generator().manual_seed(0))
    closed, calibrated = sawb_closed_form(x, bits), sawb_calibrate(x, bits)
    assert float(closed / calibrated) == pytest.approx(1.0, abs=0.06)


def test_sawb_closed_form_rejects_bits_without_constants() -> None:
    with pytest.raises(ValueError, match="calibrated"):
        SAWB(3, closed_form=True)


def test_twn_thresholds_follow_eq_15() -> None:
    w = torch.tensor([[-2.0, -0.1, 0.05, 0.3, 1.0, 3.0]])
    delta = 0.7 * w.abs().mean()
    big = w.abs()[w.abs() > delta]
    q = TWN()(w)
    assert torch.equal(q, torch.tensor([[-1.0, 0.0, 0.0, 0.0, 1.0, 1.0]]) * big.mean())
    assert TWN().encode(w).codes.tolist() == [[0, 1, 1, 1, 2, 2]]


def test_bwn_beta_is_mean_abs() -> None:
    w = torch.tensor([[-3.0, 1.0], [0.0, -2.0]])
    assert BWN()(w).tolist() == [[-2.0, 2.0], [1.0, -1.0]]


def _grad(q: Quantizer, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (q(x) * g).sum().backward()
    assert x.grad is not None
    return x.grad


def test_ste_identity_for_minmax_bwn_twn() -> None:
    x, g = weights(6), torch.randn(6, 4, 3, 3)
    for q in (MinMax(2), BWN(), TWN()):
        assert torch.equal(_grad(q, x, g), g), q


def test_ste_clipped_for_sawb() -> None:
    x, g = weights(7, (1, 1000)) * 3, torch.randn(1, 1000)
    q = SAWB(2)
    grad = _grad(q, x, g)
    inside = x.abs() <= q.alpha[0]
    assert 0 < int(inside.sum()) < x.numel()
    assert torch.equal(grad, g * inside)


def test_pact_gradients() -> None:
    q = PACT(2, init=1.0)
    x = torch.tensor([-0.5, 0.2, 0.7, 1.0, 2.0], requires_grad=True)
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (q(x) * g).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 0.0, 0.0]
    assert q.alpha.grad.tolist() == [9.0]  # x >= alpha: 4 + 5


def test_lsq_step_gradient_matches_the_paper() -> None:
    q = LSQ(2, signed=True)
    x = torch.tensor([-5.0, -0.6, 0.2, 0.9, 5.0])
    q(x)  # initialises the step
    q.step.data.fill_(0.5)
    q.step.grad = None
    xr = x.clone().requires_grad_(True)
    q(xr).sum().backward()
    v = x / 0.5
    qn, qp = 2, 1
    expected = torch.where(v <= -qn, -qn, torch.where(v >= qp, qp, v.round() - v))
    scale = 1 / (x.numel() * qp) ** 0.5
    assert q.step.grad is not None
    assert float(q.step.grad) == pytest.approx(float(expected.sum()) * scale, rel=1e-5)
    assert xr.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]


def test_lsq_initial_step() -> None:
    x = weights(8, (1000,))
    q = LSQ(4, signed=True)
    q(x)
    assert float(q.step.detach()) == pytest.approx(float(2 * x.abs().mean() / 7**0.5), rel=1e-5)


def test_input_quant_tracks_the_largest_input() -> None:
    q = InputQuant(8)
    q(torch.tensor([0.5, -2.0]))
    q(torch.tensor([1.0]))
    assert float(q.max_abs) == 2.0
    y = q.eval()(torch.tensor([-2.0, 2.0, 5.0]))
    assert y.tolist() == pytest.approx([-2.0, 2.0, 2.0])  # +127 steps is the top level
    assert q.encode(torch.tensor([0.0])).codes.tolist() == [128]


def test_identity_is_float() -> None:
    x = weights(9)
    assert Identity()(x) is x
    with pytest.raises(ValueError, match="float"):
        Identity().encode(x)


def test_registry_names() -> None:
    assert isinstance(make_weight_quantizer("sawb", 3, 4), SAWB)
    assert isinstance(make_weight_quantizer("minmax", 32), Identity)
    # BWN/TWN layers asked for other widths (first/last at 8 bits) fall back to min-max.
    assert isinstance(make_weight_quantizer("bwn", 8), MinMax)
    assert isinstance(make_weight_quantizer("twn", 2), TWN)


def test_calibrated_sawb_state_loads_into_a_fresh_quantizer() -> None:
    # A trained model's checkpoint loads into one rebuilt from its recipe: the cached clip
    # must have its final shape before the first forward.
    w = torch.randn(6, 3, 3, 3)
    trained = make_weight_quantizer("sawb", 2, 6, True)
    trained(w)  # calibrates (training mode)
    fresh = make_weight_quantizer("sawb", 2, 6, True)
    fresh.load_state_dict(trained.state_dict())
    fresh.eval()
    assert torch.equal(fresh.alpha, trained.alpha) and bool((fresh.alpha > 0).all())
    assert torch.equal(fresh(w * 1.5), trained.eval()(w * 1.5))  # the cached clip, not a new one
    never_trained = make_weight_quantizer("sawb", 2, 6, True).eval()
    assert torch.equal(never_trained(w), trained(w))  # uncalibrated: calibrates on first use
