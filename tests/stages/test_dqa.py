"""DQA and Binary-Relax: schedule, initialisation, normalisation, penalty, snapping."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from qcompile.errors import QCompileError
from qcompile.quant import PACT, Identity, MinMax
from qcompile.quant.dqa import Mixture, dqa_init
from qcompile.recipe import load_recipe
from qcompile.stages import make_stage, quantize
from qcompile.stages.dqa import (
    DQAStage,
    ladder,
    parse_member,
    scaled_omega_growth,
    scaled_t0,
    temperature,
)
from qcompile.train import train


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 4),
    )  # fmt: skip


def test_temperature_schedule_endpoints() -> None:
    steps = 500
    assert temperature(100.0, 0.03, -1, steps) == pytest.approx(100.0)  # T(0)
    assert temperature(100.0, 0.03, steps - 1, steps) == 0.03  # T(B)
    psi = math.exp(math.log(0.03 / 100.0) / steps)
    assert temperature(100.0, 0.03, 9, steps) == pytest.approx(100.0 * psi**10)
    ts = [temperature(100.0, 0.03, s, steps) for s in range(steps)]
    assert all(a > b for a, b in itertools.pairwise(ts))


def test_eq7_initialisation() -> None:
    assert dqa_init([2, 4, 8]) == pytest.approx([12 / 14, 10 / 14, 6 / 14])
    m = quantize(net(), method="dqa", wbits=2).net[3].weight_quant
    assert isinstance(m, Mixture) and m.member_bits == [2, 4, 8]
    assert m.alpha.tolist() == pytest.approx([12 / 14, 10 / 14, 6 / 14])


def test_alpha_normalised_by_its_std() -> None:
    m = Mixture([MinMax(2), MinMax(4), MinMax(8)])
    m.alpha.data = torch.tensor([3.0, 1.0, -2.0])
    m.normalize_alpha()
    assert float(m.alpha.detach().std()) == pytest.approx(1.0)
    assert m.alpha.tolist() == pytest.approx(
        (torch.tensor([3.0, 1.0, -2.0]) / 2.516611).tolist(), rel=1e-5
    )
    m.alpha.data = torch.ones(3)
    m.normalize_alpha()  # all equal: nothing to divide by
    assert m.alpha.tolist() == [1.0, 1.0, 1.0]


def test_attention_is_one_hot_on_the_lowest_bitwidth_at_the_final_temperature() -> None:
    m = Mixture([MinMax(2), MinMax(4), MinMax(8)])
    m.normalize_alpha()
    m.temperature.fill_(100.0)
    a_hot = m.weights().detach()
    assert float(a_hot.max() - a_hot.min()) < 0.02  # nearly uniform at T0
    m.temperature.fill_(0.03)
    assert float(m.weights().detach()[0]) >= 0.99


def test_penalty_gradient_pushes_attention_toward_low_bits() -> None:
    model = quantize(net(), method="dqa", wbits=2, lam=10.0, first_last_wbits="same")
    stage: DQAStage = model.stage
    stage.on_step(model, 0, 100)
    mixtures = stage.mixtures(model)
    before = {n: m.weights().detach().clone() for n, m in mixtures.items()}
    reg = stage.regularizer(model)
    assert reg is not None
    reg.backward()
    with torch.no_grad():
        for m in mixtures.values():
            m.alpha -= 1000.0 * m.alpha.grad
    for n, m in mixtures.items():
        after = m.weights().detach()
        assert float(after[0]) > float(before[n][0]), n
        assert float(after[-1]) < float(before[n][-1]), n


@torch.no_grad()
def test_penalty_weights_layers_by_size() -> None:
    model = quantize(net(), method="dqa", wbits=2, lam=1.0, first_last_wbits="same")
    stage: DQAStage = model.stage
    stage.on_step(model, 0, 10)
    layers = model.weight_layers()
    total = sum(m.weight.numel() for m in layers.values())
    g = torch.tensor([1.0, 4.0, 16.0])
    expected = sum(
        layers[n].weight.numel() / total * float(g @ m.weights())
        for n, m in stage.mixtures(model).items()
    )
    assert float(stage.regularizer(model)) == pytest.approx(expected, rel=1e-6)


def test_penalty_gradient_is_the_formula_s_bit_for_bit() -> None:
    """The penalty is one dot product with precomputed coefficients; the attention logits get
    exactly the gradient of lam * sum_l share_l * g^T a_l (activation mixtures included)."""
    grads = []
    for literal in (False, True):
        model = quantize(net(), method="dqa", wbits=2, abits=2, act_mixture=True, lam=3.0)
        stage: DQAStage = model.stage
        stage.on_step(model, 5, 50)
        if literal:
            layers = model.weight_layers()
            total = sum(m.weight.numel() for m in layers.values())
            mixtures = stage.mixtures(model)
            acts = [n for n in mixtures if n not in layers]
            terms = [
                (layers[n].weight.numel() / total if n in layers else 1.0 / len(acts))
                * torch.dot(torch.tensor([1.0, 4.0, 16.0]), m.weights())
                for n, m in mixtures.items()
            ]
            reg = 3.0 * torch.stack(terms).sum()
        else:
            reg = stage.regularizer(model)
        reg.backward()
        grads.append({n: m.alpha.grad for n, m in stage.mixtures(model).items()})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 3
    for n in grads[0]:
        assert torch.equal(grads[0][n], grads[1][n]), n


def test_mixture_exports_and_snaps_to_its_first_member() -> None:
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    m = Mixture([MinMax(2), MinMax(4), Identity()])
    q1 = MinMax(2)
    assert torch.equal(m.encode(w).decode(), q1(w))
    assert not torch.equal(m(w), q1(w))
    m.snap()
    assert torch.equal(m(w), q1(w))
    assert m.bits == 2


def test_br_mixing_weight_per_epoch() -> None:
    model = quantize(
        net(), method="br", wbits=2, mixture=["minmax:2", "minmax:4", "minmax:8"], omega_growth=1.02
    )
    stage = model.stage
    m = next(iter(stage.mixtures(model).values()))
    assert m.weights().tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    for epoch in range(5):
        stage.on_epoch_end(model, epoch, 10)
    omega = 1.02**5
    assert m.weights().tolist() == pytest.approx(
        [omega / (omega + 2), 1 / (omega + 2), 1 / (omega + 2)]
    )
    two = quantize(net(), method="br", wbits=2).net[3].weight_quant
    assert two.member_bits == [2, 32]  # the original two-quantizer form [Q(w;2), FP]


def test_schedules_scale_with_the_run_by_default() -> None:
    """t0 = 0 and omega_growth = 0 (the defaults): the papers' constants at the papers'
    length (300 epochs, 117,300 steps), T0 proportional to the steps within [1, 100], and
    every Binary-Relax run ending at the paper's final omega."""
    assert scaled_t0(117_300, 0.03) == 100.0 and scaled_t0(10 * 117_300, 0.03) == 100.0
    assert scaled_t0(58_650, 0.03) == pytest.approx(50.0)
    assert scaled_t0(945, 0.03) == 1.0 and scaled_t0(945, 2.0) == 2.0
    assert scaled_omega_growth(300) == pytest.approx(1.02)
    for epochs in (15, 40, 300):
        assert scaled_omega_growth(epochs) ** epochs == pytest.approx(1.02**300)
    dqa = quantize(net(), method="dqa", wbits=2)
    dqa.stage.on_step(dqa, 0, 945)
    m = next(iter(dqa.stage.mixtures(dqa).values()))
    assert float(m.temperature) == pytest.approx(temperature(1.0, 0.03, 0, 945))
    fixed = quantize(net(), method="dqa", wbits=2, t0=100.0)
    fixed.stage.on_step(fixed, 0, 945)
    m = next(iter(fixed.stage.mixtures(fixed).values()))
    assert float(m.temperature) == pytest.approx(temperature(100.0, 0.03, 0, 945))
    br = quantize(net(), method="br", wbits=2)
    m = next(iter(br.stage.mixtures(br).values()))
    for epoch in range(15):
        br.stage.on_epoch_end(br, epoch, 15)
    assert float(m.omega) == pytest.approx(1.02**300, rel=1e-5)
    assert float(m.weights()[0]) > 0.99  # all but snapped at the end, as after 300 epochs


def test_br_hard_switch() -> None:
    model = quantize(net(), method="br", wbits=2, hard_epoch=3)
    stage = model.stage
    m = next(iter(stage.mixtures(model).values()))
    stage.on_epoch_end(model, 1, 10)
    assert not bool(m.snapped)
    stage.on_epoch_end(model, 2, 10)
    assert bool(m.snapped)


def test_mixture_recipes() -> None:
    assert ladder(2, (1, 2, 4)) == [2, 4, 8]
    assert ladder(4, (1, 2, 4)) == [4, 8, 32]
    assert parse_member("bwn") == ("bwn", 1) and parse_member("fp") == ("fp", 32)
    m = (
        quantize(net(), method="dqa", wbits=1, mixture=["bwn", "twn", "minmax:8"])
        .net[3]
        .weight_quant
    )
    assert m.member_bits == [1, 2, 8]
    s = quantize(net(), method="dqa", wbits=2, weight_quant="sawb").net[3].weight_quant
    assert [type(q).__name__ for q in s.members] == ["SAWB", "SAWB", "SAWB"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mixture": ["minmax:4", "minmax:2"]}, "sorted"),
        ({"mixture": ["foo:2", "minmax:4"]}, "unknown quantizer 'foo'"),
        ({"mixture": ["minmax:4", "minmax:8"]}, "set wbits = 4"),
        ({"mixture": ["twn:3", "minmax:8"]}, "twn is 2-bit"),
        ({"t0": 0.01}, "t_end <= t0"),
    ],
)
def test_bad_mixture_options(options: dict, message: str) -> None:
    with pytest.raises(QCompileError, match=message):
        make_stage("dqa", wbits=2, **options)


def test_activation_mixture() -> None:
    model = quantize(net(), method="dqa", wbits=2, abits=2, act_mixture=True)
    act = model.net[2].quant
    assert isinstance(act, Mixture) and act.member_bits == [2, 4, 8]
    assert all(isinstance(q, PACT) for q in act.members)
    assert model.net[2].export().bits == 2
    assert {"2", "4"} <= set(model.stage.mixtures(model))  # both ReLUs


def test_dqa_run_writes_attention_and_plots(tmp_path: Path) -> None:
    r = load_recipe(
        None, {"model.name": "mlp", "stage.method": "dqa", "stage.wbits": 2, "train.epochs": 2}
    )
    s = train(r, tmp_path / "r", progress=False, log=lambda m: None)
    assert set(s["attention"]) == {"4"}  # first/last layers stay plain 8-bit
    assert {"test_acc_mixture", "snap_drop"} <= set(s)
    assert (tmp_path / "r/attention.png").stat().st_size > 0
    assert (tmp_path / "r/quantizer.png").stat().st_size > 0
    rows = [json.loads(x) for x in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert all(len(r["attention"]["4"]) == 3 for r in rows)
    assert rows[-1]["temperature"] == pytest.approx(0.03)


@pytest.mark.slow
def test_dqa_lenet_digits_acceptance(tmp_path: Path) -> None:
    r = load_recipe(
        None,
        {"model.name": "lenet", "data.name": "digits", "stage.method": "dqa", "stage.wbits": 2,
         "train.epochs": 15, "train.seed": 0},
    )  # fmt: skip
    s = train(r, tmp_path / "r", progress=False, log=lambda m: None)
    assert s["test_acc"] >= 0.90
    assert s["attention"] and all(a[0] >= 0.99 for a in s["attention"].values())
