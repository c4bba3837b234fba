"""The ddq stage: config, memory constraint, gradient correction, fixing bits under the budget,
determinism, resume, and lenet on digits end to end through freeze and the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qcompile.checkpoint import load_checkpoint
from qcompile.errors import QCompileError
from qcompile.freeze import freeze_checkpoint
from qcompile.quant import MinMax
from qcompile.quant.ddq import LearnedLevels
from qcompile.recipe import load_recipe
from qcompile.report import summary
from qcompile.sim import quantize_input
from qcompile.simulate import implementations
from qcompile.stages import QuantModel, make_stage, quantize, stage_class
from qcompile.stages.budget import average_bits, layer_sizes
from qcompile.stages.ddq import DDQConfig, DDQStage
from qcompile.train import train

QUIET = {"progress": False, "log": lambda msg: None}


def net() -> nn.Module:
    """Weights: 128 (first, 8-bit), 512 and 4096 (learned), 256 (last, 8-bit)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 64), nn.ReLU(),
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4),
    )  # fmt: skip


def ddq(**options) -> QuantModel:
    return quantize(net(), method="ddq", **{"wbits": 4, "target_bits": 2.0, **options})


def learned(model: QuantModel) -> dict[str, LearnedLevels]:
    return {
        n: m.weight_quant
        for n, m in model.weight_layers().items()
        if isinstance(m.weight_quant, LearnedLevels)
    }


def set_logits(q: LearnedLevels, values: list[float]) -> None:
    with torch.no_grad():
        q.logits.copy_(torch.tensor(values))


def avg_bits(model: QuantModel) -> float:
    return average_bits(model.weight_bits(), layer_sizes(model))


def test_registered_and_no_longer_planned() -> None:
    assert stage_class("ddq") is DDQStage


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lam", -1.0, "lam must be >= 0"),
        ("correction_weight", 0.0, "correction_weight must be > 0"),
        ("gate_init", 0.0, "gate_init must be > 0"),
        ("fix_bits_at", 0.0, "fix_bits_at must be in"),
        ("fix_bits_at", 1.5, "fix_bits_at must be in"),
        ("target_bits", 0.5, "target_bits must be 1..8"),
        ("wbits", 9, "wbits must be 1..8 or 32"),
    ],
)
def test_bad_config_is_one_clear_error(option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DDQConfig(**{option: value})
    with pytest.raises(QCompileError, match=f"method 'ddq': {message}"):
        make_stage("ddq", **{option: value})


def test_recipe_type_errors_and_unmeetable_targets() -> None:
    with pytest.raises(QCompileError, match="'grad_correction' must be true or false"):
        load_recipe(None, {"stage.method": "ddq", "stage.grad_correction": "yes"})
    # Raised by the budget base (a QCompileError since it changed; a ValueError before).
    with pytest.raises((QCompileError, ValueError), match=r"target_bits 1\.2 cannot be met"):
        ddq(target_bits=1.2)  # 8-bit first/last layers and 1 bit elsewhere average 1.54
    with pytest.raises((QCompileError, ValueError), match=r"wbits must be 1\.\.8"):
        ddq(wbits=32)


def test_first_and_last_layers_stay_plain_even_at_eight_bits() -> None:
    m = ddq(wbits=8)
    quantizers = [layer.weight_quant for layer in m.weight_layers().values()]
    assert [type(q) for q in quantizers] == [MinMax, LearnedLevels, LearnedLevels, MinMax]
    assert list(m.weight_bits().values()) == [8, 8, 8, 8]
    assert set(learned(m)) == {"3", "5"}
    same = ddq(first_last_wbits="same", target_bits=3.0)
    assert len(learned(same)) == 4


def test_memory_penalty_is_a_hinge_on_the_average_bits() -> None:
    m = ddq(lam=2.0, grad_correction=False)
    reg = m.stage.regularizer(m)
    assert avg_bits(m) == pytest.approx((384 * 8 + 4608 * 4) / 4992)
    assert float(reg.detach()) == pytest.approx(2.0 * (avg_bits(m) - 2.0), rel=1e-6)
    reg.backward()
    for name, q in learned(m).items():
        size = m.weight_layers()[name].weight.numel()
        assert torch.allclose(q.logits.grad, torch.full((3,), 2.0 * size / 4992))
    under = ddq(lam=2.0, grad_correction=False)
    for q in learned(under).values():
        set_logits(q, [-0.1, -0.1, -0.1])  # 1 bit everywhere: under budget
    reg = under.stage.regularizer(under)
    assert float(reg.detach()) == 0.0
    reg.backward()
    assert all(torch.all(q.logits.grad == 0) for q in learned(under).values())


def gradients(model: QuantModel) -> dict[str, torch.Tensor]:
    x = torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 4
    loss = nn.functional.cross_entropy(model(x), y)
    extra = model.stage.regularizer(model)
    (loss if extra is None else loss + extra).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_grad_correction_changes_the_level_gradient_only() -> None:
    on = gradients(ddq(lam=0.0, grad_correction=True, correction_weight=5.0))
    off = gradients(ddq(lam=0.0, grad_correction=False))
    assert on.keys() == off.keys()
    levels = [k for k in on if k.endswith("levels_flat")]
    assert len(levels) == 2
    for k in on:
        if k in levels:
            assert not torch.allclose(on[k], off[k]), k
        else:
            assert torch.equal(on[k], off[k]), k  # weights and gates: untouched by the term


def test_grad_correction_lowers_the_quantization_error() -> None:
    m = ddq(lam=0.0, grad_correction=True)
    with torch.no_grad():  # bell-shaped weights: the initial uniform grid is not the best fit
        for layer in m.weight_layers().values():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=torch.Generator()))
    stage: DDQStage = m.stage
    before = stage.quant_errors(m)
    levels = [q.levels_flat for q in learned(m).values()]
    opt = torch.optim.Adam(levels, lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        stage.regularizer(m).backward()
        opt.step()
    after = stage.quant_errors(m)
    assert all(after[n] < 0.9 * before[n] for n in before), (before, after)


def test_report_has_the_quantization_error_per_layer() -> None:
    m = ddq()
    rep = m.stage.report(m)
    assert set(rep["quant_error"]) == {"3", "5"} and rep["bits_fixed"] is False
    layer = m.weight_layers()["5"]
    with torch.no_grad():
        w = layer.weight
        expected = float(((w - layer.weight_quant(w)) ** 2).sum() / (w**2).sum())
    assert rep["quant_error"]["5"] == pytest.approx(expected, abs=1e-6)
    sizes = {"3": 512, "5": 4096}
    avg = sum(sizes[n] * e for n, e in rep["quant_error"].items()) / 4608
    assert rep["quant_error_avg"] == pytest.approx(avg, abs=1e-5)
    assert rep["wbits"] == {"1": 8.0, "3": 4.0, "5": 4.0, "7": 8.0}


def test_fixing_bits_meets_the_budget_dropping_the_least_confident_bits() -> None:
    m = ddq(fill_budget=False)
    qs = learned(m)
    set_logits(qs["3"], [0.5, 0.5, 0.5])
    set_logits(qs["5"], [0.03, 0.02, 0.01])
    out = m.stage.finalize(m, lambda: 0.5)
    # "5" loses its bits first (smallest logits); at 1 bit the average is 1.85 <= 2.0.
    assert m.weight_bits() == {"1": 8, "3": 4, "5": 1, "7": 8}
    assert avg_bits(m) <= 2.0
    assert out == {
        "bits_fixed_at_end": True, "bits_dropped": 3, "bits_added": 0, "test_acc_unfixed": 0.5
    }  # fmt: skip
    assert all(q.fixed for q in qs.values())
    set_logits(qs["5"], [0.9, 0.9, 0.9])  # fixed: the logits no longer decide
    assert m.weight_bits()["5"] == 1
    assert m.stage.finalize(m, lambda: 0.0) == {}  # already fixed: nothing to do or save
    other = ddq(fill_budget=False)
    qs = learned(other)
    set_logits(qs["3"], [0.01, 0.01, 0.01])
    set_logits(qs["5"], [0.5, 0.5, 0.5])
    other.stage.finalize(other, lambda: 0.0)
    assert other.weight_bits() == {"1": 8, "3": 1, "5": 1, "7": 8}


def test_within_budget_bits_are_kept_as_learned_without_filling() -> None:
    m = ddq(target_bits=3.5, fill_budget=False)  # 3.28 bits used
    qs = learned(m)
    set_logits(qs["3"], [0.5, -0.5, 0.5])  # 2 bits
    set_logits(qs["5"], [0.5, 0.5, -0.5])  # 3 bits
    assert m.stage.finalize(m, lambda: 0.0)["bits_dropped"] == 0
    assert m.weight_bits() == {"1": 8, "3": 2, "5": 3, "7": 8}


@pytest.mark.parametrize(
    ("logits_5", "expected", "added"),
    [
        ([-0.05, -0.06, -0.07], {"3": 4, "5": 1}, 3),  # "3" wants its bits more: it fills
        ([-0.005, -0.06, -0.07], {"3": 2, "5": 2}, 2),  # "5" first, then what still fits
    ],
)
def test_filling_spends_the_budget_left_on_the_bits_closest_to_open(
    logits_5: list[float], expected: dict[str, int], added: int
) -> None:
    m = ddq(target_bits=(7680 + 4700) / 4992)  # 1 bit everywhere leaves room for 4700 bits
    qs = learned(m)
    set_logits(qs["3"], [-0.01, -0.02, -0.03])
    set_logits(qs["5"], logits_5)
    out = m.stage.finalize(m, lambda: 0.0)
    assert (out["bits_dropped"], out["bits_added"]) == (0, added)
    assert {n: m.weight_bits()[n] for n in ("3", "5")} == expected
    assert avg_bits(m) <= m.stage.config.target_bits


def test_bits_are_fixed_after_the_given_fraction_of_steps() -> None:
    m = ddq(fix_bits_at=0.5)
    m.stage.on_step(m, 4, 10)
    assert not m.stage.all_fixed(m)
    m.stage.on_step(m, 5, 10)
    assert m.stage.all_fixed(m) and avg_bits(m) <= 2.0
    to_end = ddq(fix_bits_at=1.0)
    to_end.stage.on_step(to_end, 9, 10)
    assert not to_end.stage.all_fixed(to_end)


def test_bits_and_levels_survive_a_checkpoint_round_trip() -> None:
    m = ddq()
    qs = learned(m)
    set_logits(qs["3"], [0.5, -0.5, 0.5])
    with torch.no_grad():
        qs["5"].levels_flat.mul_(0.5)
    m.stage.finalize(m, lambda: 0.0)
    fresh = ddq()
    fresh.load_state_dict(m.state_dict())
    assert fresh.weight_bits() == m.weight_bits() != {"1": 8, "3": 4, "5": 4, "7": 8}
    x = torch.randn(8, 1, 4, 4)
    assert torch.equal(fresh.eval()(x), m.eval()(x))
    for name, layer in fresh.weight_layers().items():
        a, b = layer.export(), m.weight_layers()[name].export()
        assert a.bits == b.bits and torch.equal(a.weight.levels, b.weight.levels)


def recipe(**over):
    base = {
        "model.name": "lenet", "data.name": "digits", "stage.method": "ddq",
        "stage.target_bits": 2.0, "train.epochs": 2,
    }  # fmt: skip
    return load_recipe(None, {**base, **over})


def states_equal(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_training_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    a = train(recipe(), tmp_path / "a", **QUIET)
    b = train(recipe(), tmp_path / "b", **QUIET)
    train(recipe(**{"train.seed": 1}), tmp_path / "c", **QUIET)
    assert a["test_acc"] == b["test_acc"] and a["bits"] == b["bits"]
    assert states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "b/checkpoint.pt")
    assert not states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "c/checkpoint.pt")
    # The run draws papers/000 Fig. 1, 3, 4/6 and 5.
    names = {Path(p).name for p in a["plots"]}
    assert names == {"bits.png", "bits_evolution.png", "levels.png", "quant_error.png"}
    assert all((tmp_path / "a" / n).stat().st_size > 1000 for n in names)


class Killed(Exception):
    pass


def kill_after(epoch: int):
    def log(msg: str) -> None:  # train logs an epoch after writing its checkpoint
        if msg.startswith(f"epoch {epoch}/"):
            raise Killed

    return log


@pytest.mark.slow
@pytest.mark.parametrize("fix_bits_at", [0.3, 0.6])  # bits fixed before / after the kill
def test_resume_after_a_kill_matches_the_uninterrupted_run(tmp_path: Path, fix_bits_at) -> None:
    r = recipe(**{"train.epochs": 4, "stage.fix_bits_at": fix_bits_at})
    full = train(r, tmp_path / "full", **QUIET)
    with pytest.raises(Killed):
        train(r, tmp_path / "killed", progress=False, log=kill_after(2))
    fixed_at_kill = load_checkpoint(tmp_path / "killed/checkpoint.pt")["model"]
    assert any(k.endswith("fixed_bits") and int(v) > 0 for k, v in fixed_at_kill.items()) == (
        fix_bits_at < 0.5
    )
    resumed = train(r, tmp_path / "killed", resume=True, **QUIET)
    assert states_equal(tmp_path / "full/checkpoint.pt", tmp_path / "killed/checkpoint.pt")
    assert resumed["test_acc"] == full["test_acc"] and resumed["bits"] == full["bits"]


@pytest.mark.slow
def test_lenet_digits_trains_freezes_and_simulates_exactly(tmp_path: Path) -> None:
    target = 2.0
    run = train(recipe(**{"train.epochs": 8, "stage.wbits": 8}), tmp_path / "run", **QUIET)
    assert run["test_acc"] >= 0.9
    assert run["quant_error_avg"] > 0 and run["bits_fixed"] is True
    graph = freeze_checkpoint(tmp_path / "run/checkpoint.pt")
    s = summary(graph)
    assert s["avg_weight_bits"] <= target
    nodes = list(graph.weighted())
    assert [n.weights.bits for n in nodes] == list(run["bits"].values())
    assert [n.weights.uniform for n in nodes] == [True, False, False, False, True]
    for node in nodes[1:-1]:  # the learned LUTs are really uneven, not just rounded unevenly
        steps = np.diff(node.weights.level_table(), axis=1).astype(float)
        if steps.shape[1] > 1:
            spread = (steps.max(1) - steps.min(1)) / np.abs(steps).mean(1).clip(1e-9)
            assert spread.max() > 0.1, node.name
    from qcompile.data import load_dataset

    data = load_dataset("digits")
    x = quantize_input(graph, data.test_x.numpy())
    impls = implementations(graph)
    sim, frozen = impls["sim"](x), impls["frozen"](x)
    assert np.array_equal(sim, frozen)
    acc = float((sim.reshape(len(sim), -1).argmax(1) == data.test_y.numpy()).mean())
    assert acc >= 0.9 and abs(acc - run["test_acc"]) <= 0.01
