"""SDQ: Gumbel straight-through search, step-down, budget, EBR, distillation, end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qcompile.builder import RunCheckpoints
from qcompile.checkpoint import load_checkpoint
from qcompile.data import load_dataset
from qcompile.errors import QCompileError
from qcompile.freeze import freeze_checkpoint
from qcompile.quant import Encoded, MinMax
from qcompile.quant.sdq import SDQQuantizer, bin_regularizer, distillation, gumbel_weight
from qcompile.quant.uniform import SAWB
from qcompile.recipe import load_recipe
from qcompile.report import summary
from qcompile.sim import Simulator, quantize_input
from qcompile.sim.reference import FrozenTorch
from qcompile.stages import QuantModel, make_stage, quantize
from qcompile.stages.sdq import SDQStage
from qcompile.train import train
from qcompile.zoo import build_model

QUIET = {"progress": False, "log": lambda msg: None}
SHAPE = (1, 8, 8)


def lenet(**options) -> QuantModel:
    torch.manual_seed(0)
    return quantize(build_model("lenet", SHAPE, 10), method="sdq", **options)


def searchers(model: QuantModel) -> dict[str, SDQQuantizer]:
    return model.stage.searchers(model)


def avg_bits(model: QuantModel) -> float:
    sizes = {n: m.weight.numel() for n, m in model.weight_layers().items()}
    bits = model.weight_bits()
    return sum(sizes[n] * bits[n] for n in sizes) / sum(sizes.values())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Other work shares the cores: two threads contending made training ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weights(seed: int = 1, shape: tuple[int, ...] = (6, 20)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weight_quant": "sawb_closed"}, "cannot be stepped between widths"),
        ({"weight_quant": "lsq"}, "sdq takes minmax or sawb"),
        ({"wbits": 32}, "must be 2..8, got 32"),
        ({"wbits": 1}, "must be 2..8, got 1"),
        ({"candidates": (2, 1, 4)}, "distinct rising widths"),
        ({"candidates": (4,)}, ">= 2 distinct"),
        ({"candidates": (1, 2)}, "must end at wbits = 4"),
        ({"search_fraction": 0.0}, "search_fraction must be in"),
        ({"search_fraction": 1.5}, "search_fraction must be in"),
        ({"step_down_at": 1.0}, "step_down_at must be in"),
        ({"tau": 0.0}, "tau must be positive"),
        ({"beta_lr": -1.0}, "beta_lr must be positive"),
        ({"lam_ebr": -0.1}, "lam_ebr must be >= 0"),
        ({"kd_temperature": 0.0}, "kd_temperature must be positive"),
        ({"target_bits": 0.5}, "target_bits must be 1..8"),
    ],
)
def test_bad_config_is_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(QCompileError, match=message) as e:
        make_stage("sdq", **options)
    assert "\n" not in str(e.value) and str(e.value).startswith("method 'sdq': ")


def test_recipe_and_wrap_errors() -> None:
    with pytest.raises(QCompileError, match="tau must be positive"):
        load_recipe(None, {"stage.method": "sdq", "stage.tau": 0})
    with pytest.raises(QCompileError, match="cannot be met"):
        lenet(target_bits=1.0)  # the 8-bit first/last layers alone exceed it
    with pytest.raises(QCompileError, match=r"lowest width \(2\) the average is 2\.275"):
        lenet(candidates=(2, 3, 4), target_bits=2.0)
    assert make_stage("sdq").config.bit_choices == (1, 2, 3, 4)


def test_layers_learn_from_wbits_and_first_last_stay_fixed() -> None:
    model = lenet()
    assert model.weight_bits() == {
        "features.0.0": 8, "features.2.0": 4, "classifier.0": 4, "classifier.3": 4,
        "classifier.6": 8,
    }  # fmt: skip
    assert list(searchers(model)) == ["features.2.0", "classifier.0", "classifier.3"]
    assert all(q.candidates == (1, 2, 3, 4) for q in searchers(model).values())
    assert isinstance(model.net.features[0][0].weight_quant, MinMax)
    sawb = lenet(weight_quant="sawb")
    assert isinstance(sawb.net.classifier[6].weight_quant, SAWB)
    assert all(type(m) is SAWB for m in searchers(sawb)["classifier.0"].members)


# -- the quantizer ---------------------------------------------------------------------------
def make_quantizer(kind: str, rows: int = 6) -> SDQQuantizer:
    if kind == "minmax":
        return SDQQuantizer([MinMax(b) for b in (1, 2, 3)])
    return SDQQuantizer([SAWB(b, channels=rows) for b in (1, 2, 3)])


@pytest.mark.parametrize("kind", ["minmax", "sawb"])
def test_encode_decode_equals_forward_bit_for_bit(kind: str) -> None:
    w = weights()
    q = make_quantizer(kind)
    for state in ("eval", "stepped", "frozen-train", "lowest-train"):
        if state == "stepped":
            q.step_down()
        if state == "frozen-train":
            q.frozen.fill_(True)
        if state == "lowest-train":
            q.frozen.fill_(False)
            q.step_down()
        q.train(state != "eval")
        assert torch.equal(q.encode(w).decode(), q(w)), state
        assert q.encode(w).bits == q.bits
    assert q.bits == 1 and not q.searching


@pytest.mark.parametrize("kind", ["minmax", "sawb"])
def test_search_forward_is_exactly_one_candidate(kind: str) -> None:
    w = weights()
    q = make_quantizer(kind).train()
    q.beta.fill_(0.5)
    hi, lo = q.members[2](w), q.members[1](w)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = q(w)
        seen.add("hi" if torch.equal(out, hi) else "lo" if torch.equal(out, lo) else "other")
    assert seen == {"hi", "lo"}


def test_gumbel_straight_through_gradient_reaches_beta() -> None:
    w = weights().requires_grad_(True)
    g = weights(seed=2)
    q = SDQQuantizer([MinMax(1), MinMax(2)]).train()
    q.beta.fill_(0.7)
    hi, lo = MinMax(2)(w.detach()), MinMax(1)(w.detach())
    for seed in range(8):
        torch.manual_seed(seed)
        out = q(w)
        (out * g).sum().backward()
        # The same draw by hand: forward is the hard choice, backward the relaxed mixture.
        torch.manual_seed(seed)
        beta = torch.tensor(0.7, requires_grad=True)
        s = gumbel_weight(beta, torch.rand(()), 1.0)
        assert torch.equal(out, hi if float(s.detach()) > 0.5 else lo)
        (s * ((hi - lo) * g).sum()).backward()
        assert q.leaf is not None and q.leaf.grad is not None
        assert float(q.leaf.grad) != 0.0
        assert float(q.leaf.grad) == pytest.approx(float(beta.grad), rel=1e-5)
        assert torch.allclose(w.grad, g)  # min-max STE: the weights get the gradient whole
        w.grad = None


def test_task_gradient_reaches_beta_at_one() -> None:
    """Every layer starts at beta = 1, where a plain clamp in the logits would cut it off."""
    w, g = weights(), weights(seed=2)
    q = SDQQuantizer([MinMax(1), MinMax(2)]).train()
    torch.manual_seed(0)
    (q(w) * g).sum().backward()
    assert float(q.beta) == 1.0 and q.leaf is not None and float(q.leaf.grad) != 0.0


def test_gumbel_choice_has_probability_beta() -> None:
    torch.manual_seed(0)
    u = torch.rand(20000)
    for p in (0.2, 0.5, 0.9):
        picks = (gumbel_weight(torch.tensor(p), u, 1.0) > 0.5).float().mean()
        assert float(picks) == pytest.approx(p, abs=0.01)


def test_beta_update_clamps_and_steps_down() -> None:
    q = SDQQuantizer([MinMax(1), MinMax(2), MinMax(3)])
    q.update(torch.tensor(-5.0), 1.0, 0.5)
    assert float(q.beta) == 1.0 and q.bits == 3  # clamped at 1
    q.update(torch.tensor(0.4), 1.0, 0.5)
    assert float(q.beta) == pytest.approx(0.6) and q.bits == 3
    q.update(torch.tensor(0.2), 1.0, 0.5)  # 0.4 < 0.5: one width down, beta back to 1
    assert q.bits == 2 and float(q.beta) == 1.0 and int(q.forced) == 0
    q.update(torch.tensor(0.9), 1.0, 0.5)
    assert q.bits == 1
    q.update(torch.tensor(5.0), 1.0, 0.5)  # the lowest width stays; beta floors at 0
    assert q.bits == 1 and float(q.beta) == 0.0
    with pytest.raises(ValueError, match="lowest candidate"):
        q.step_down()


# -- size pressure and budget ----------------------------------------------------------------
def test_size_penalty_gradient_per_layer_and_off_within_budget() -> None:
    model = lenet(lam_size=3.0).train()
    stage: SDQStage = model.stage
    model(torch.randn(16, *SHAPE))
    reg = stage.regularizer(model)
    assert reg is not None
    reg.backward()
    sizes = {n: m.weight.numel() for n, m in model.weight_layers().items()}
    total = sum(sizes.values())
    for name, q in searchers(model).items():
        # d/dbeta of lam * sum_l N_l (beta b_i + (1 - beta) b_(i-1)) / S, with b_i - b_(i-1) = 1
        assert float(q.leaf.grad) == pytest.approx(3.0 * sizes[name] / total), name
    for q in searchers(model).values():
        while q.bits > 1:
            q.step_down()
    assert avg_bits(model) <= 2.0
    model(torch.randn(16, *SHAPE))
    assert stage.regularizer(model) is None


def test_end_search_steps_lowest_beta_first_until_within_budget() -> None:
    model = lenet(target_bits=2.0)
    qs = searchers(model)
    qs["features.2.0"].beta.fill_(0.6)
    qs["classifier.3"].beta.fill_(0.7)
    qs["classifier.0"].beta.fill_(0.9)
    assert avg_bits(model) > 4.0
    forced = model.stage.end_search(model)
    # features.2.0 (0.6), classifier.3 (0.7), classifier.0 (0.9); then all at beta 1: the
    # largest layer first (classifier.3 twice, down to 1 bit), then classifier.0.
    assert {n: q.bits for n, q in qs.items()} == {
        "features.2.0": 3, "classifier.0": 2, "classifier.3": 1,
    }  # fmt: skip
    assert forced == 6 == sum(int(q.forced) for q in qs.values())
    assert avg_bits(model) <= 2.0
    assert all(bool(q.frozen) for q in qs.values()) and not model.stage.searching(model)


def test_end_search_within_budget_forces_nothing() -> None:
    model = lenet(target_bits=3.9)
    qs = searchers(model)
    qs["classifier.3"].step_down()
    assert avg_bits(model) <= 3.9
    assert model.stage.end_search(model) == 0
    assert [q.bits for q in qs.values()] == [4, 4, 3]


def test_finalize_meets_the_budget_when_the_search_did_not_end() -> None:
    model = lenet(target_bits=2.5)
    out = model.stage.finalize(model, lambda: 0.0)
    assert out["forced_steps"] > 0 and avg_bits(model) <= 2.5
    assert model.stage.finalize(model, lambda: 0.0) == {}


@pytest.mark.parametrize("kind", ["minmax", "sawb"])
def test_bits_and_search_state_survive_a_state_dict_round_trip(kind: str) -> None:
    model = lenet(weight_quant=kind).train()
    model(torch.randn(32, *SHAPE))  # calibrate the SAWB clips
    qs = searchers(model)
    qs["classifier.0"].beta.fill_(0.3)
    model.stage.end_search(model)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = lenet(weight_quant=kind)
    assert fresh.weight_bits() != model.weight_bits()
    fresh.load_state_dict(state)
    assert fresh.weight_bits() == model.weight_bits()
    assert all(type(b) is int for b in fresh.weight_bits().values())
    for name, q in searchers(fresh).items():
        assert float(q.beta) == float(qs[name].beta) and bool(q.frozen)
        assert int(q.forced) == int(qs[name].forced)
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model.eval()(x))


# -- EBR and distillation --------------------------------------------------------------------
def test_bin_regularizer_weights_every_bin_evenly() -> None:
    levels = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])
    # Bin 0 holds nine weights with squared errors 0.01, bin 3 one with 0.25; bins 1-2 empty.
    w = torch.tensor([[-1.1] * 9 + [1.5]])
    enc = Encoded(2, torch.tensor([[0] * 9 + [3]]), levels)
    assert float(bin_regularizer(w, enc)) == pytest.approx((0.01 + 0.25) / 4)
    on_levels = torch.tensor([[-1.0, 0.0, 2.0, 2.0]])
    assert float(bin_regularizer(on_levels, Encoded(2, torch.tensor([[0, 1, 3, 3]]), levels))) == 0


def test_bin_regularizer_pulls_weights_to_their_levels() -> None:
    w = weights(shape=(4, 50)).requires_grad_(True)
    enc = MinMax(2).encode(w.detach())
    bin_regularizer(w, enc).backward()
    off = w.detach() - enc.decode()
    # Descent moves every weight that is off its level toward it.
    assert torch.equal(torch.sign(w.grad)[off != 0], torch.sign(off)[off != 0])
    assert bool((off != 0).any())


def test_phase_two_uses_ebr_and_no_size_penalty() -> None:
    model = lenet().train()
    stage: SDQStage = model.stage
    stage.end_search(model)
    model(torch.randn(16, *SHAPE))
    reg = stage.regularizer(model)
    assert reg is not None and reg.requires_grad and float(reg.detach()) > 0
    sizes = {n: m.weight.numel() for n, m in model.weight_layers().items()}
    expected = sum(
        sizes[n]
        / sum(sizes.values())
        * float(bin_regularizer(m.weight.detach(), m.export().weight))
        for n, m in model.weight_layers().items()
    )
    assert float(reg.detach()) == pytest.approx(0.1 * expected, rel=1e-5)
    off = lenet(lam_ebr=0.0)
    off.stage.end_search(off)
    assert off.stage.regularizer(off) is None


def test_distillation_loss() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(distillation(s, s, 3.0)) == pytest.approx(0.0, abs=1e-7)
    t = torch.tensor([[0.0, 2.0, 0.0]])
    p = torch.softmax(t / 2, 1)
    kl = (p * (p.log() - torch.log_softmax(s / 2, 1))).sum()
    assert float(distillation(s, t, 2.0)) == pytest.approx(4 * float(kl), rel=1e-6)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A float mlp on digits (2 epochs): the distillation teacher."""
    out = tmp_path_factory.mktemp("teacher")
    r = load_recipe(
        None, {"model.name": "mlp", "data.name": "digits", "stage.wbits": 32, "stage.abits": 32,
               "train.epochs": 2},
    )  # fmt: skip
    train(r, out, **QUIET)
    return out / "checkpoint.pt"


def test_distillation_only_in_phase_two_with_a_float_teacher(teacher: Path, tmp_path) -> None:
    model = lenet(teacher=str(teacher)).train()
    stage: SDQStage = model.stage
    runs = RunCheckpoints(SHAPE, 10)
    stage.prepare(model, runs, fresh=True)  # loads and checks the teacher
    x = torch.randn(8, *SHAPE)
    assert stage.extra_loss(model, x, model(x)) is None  # phase 1: search only
    stage.end_search(model)
    logits = model(x)
    kd = stage.extra_loss(model, x, logits)
    assert kd is not None and float(kd.detach()) > 0
    kd.backward()
    assert model.net.classifier[6].weight.grad is not None
    assert "teacher" not in " ".join(model.state_dict())  # freeze never needs it
    quantized = tmp_path / "q"
    r = load_recipe(None, {"model.name": "mlp", "stage.wbits": 2, "train.epochs": 1})
    train(r, quantized, **QUIET)
    for path, message in [
        (quantized / "checkpoint.pt", "distill from a float run"),
        (tmp_path / "none.pt", "no such file"),
    ]:
        m = lenet(teacher=str(path))
        with pytest.raises(QCompileError, match=message):
            m.stage.prepare(m, runs, fresh=True)
    unprepared = lenet(teacher=str(teacher))
    unprepared.stage.end_search(unprepared)
    with pytest.raises(QCompileError, match="teacher is not loaded"):
        unprepared.stage.extra_loss(unprepared, x, unprepared(x))


# -- training runs ---------------------------------------------------------------------------
def lenet_recipe(**over):
    base = {"model.name": "lenet", "data.name": "digits", "stage.method": "sdq",
            "stage.target_bits": 2.0, "train.epochs": 4}  # fmt: skip
    return load_recipe(None, {**base, **over})


def states_equal(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Killed(Exception):
    pass


def test_seeded_runs_repeat_and_resume_after_a_kill(tmp_path: Path, monkeypatch) -> None:
    a = train(lenet_recipe(), tmp_path / "a", **QUIET)
    b = train(lenet_recipe(), tmp_path / "b", **QUIET)
    c = train(lenet_recipe(**{"train.seed": 1}), tmp_path / "c", **QUIET)
    assert states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "b/checkpoint.pt")
    assert a["test_acc"] == b["test_acc"] and a["beta"] == b["beta"]
    assert not states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "c/checkpoint.pt")
    assert a["avg_wbits"] <= 2.0 and c["avg_wbits"] <= 2.0
    # features.2.0 is still searching when epoch 1 ends: its last gradient is pending.
    first = history(tmp_path / "a")[0]
    assert first["wbits"]["features.2.0"] > 1 and first["beta"]["features.2.0"] < 1
    # Kill mid-way through epoch 2, before the search ends with it; resume from epoch 1.
    on_step = SDQStage.on_step

    def dying(self, model, step, total):
        if step == 33:
            raise Killed
        on_step(self, model, step, total)

    monkeypatch.setattr(SDQStage, "on_step", dying)
    with pytest.raises(Killed):
        train(lenet_recipe(), tmp_path / "k", **QUIET)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "k/checkpoint.pt")["epoch"] == 1
    resumed = train(lenet_recipe(), tmp_path / "k", resume=True, **QUIET)
    assert states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "k/checkpoint.pt")
    assert resumed["test_acc"] == a["test_acc"] and resumed["bits"] == a["bits"]


def test_lenet_digits_end_to_end_meets_budget_and_simulates_exactly(
    teacher: Path, tmp_path: Path
) -> None:
    """Train (with distillation), freeze, inspect, and simulate against the frozen model."""
    r = load_recipe(
        None, {"model.name": "lenet", "data.name": "digits", "stage.method": "sdq",
               "stage.target_bits": 2.0, "stage.teacher": str(teacher), "train.epochs": 6},
    )  # fmt: skip
    s = train(r, tmp_path / "run", **QUIET)
    # Widths freeze at the end of epoch 3 (search_fraction 0.5 of 6).
    assert [h["bits_frozen"] for h in history(tmp_path / "run")] == [False] * 2 + [True] * 4
    graph = freeze_checkpoint(tmp_path / "run/checkpoint.pt")
    report = summary(graph)
    assert report["avg_weight_bits"] <= 2.0
    assert [x["weight_bits"] for x in report["layers"] if "weight_bits" in x] == list(
        s["bits"].values()
    )
    assert s["bits"]["features.0.0"] == 8 and s["bits"]["classifier.6"] == 8
    data = load_dataset("digits")
    x = quantize_input(graph, data.test_x.numpy())
    out = graph.outputs[0]
    sim = Simulator(graph).run(x)[out]
    ref = FrozenTorch(graph)(x)[out]
    assert np.array_equal(sim, ref)
    acc = float((sim.argmax(1) == data.test_y.numpy()).mean())
    assert acc >= 0.9
    assert abs(acc - s["test_acc"]) <= 0.01  # one rounding of the folded scales


def test_sdq_module_swaps_in_for_a_user_network() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32),
                        nn.ReLU(), nn.Linear(32, 10))  # fmt: skip
    q = quantize(net, method="sdq", first_last_wbits="same", target_bits=2.0)
    assert set(searchers(q)) == {"1", "3", "5"}
    q.stage.end_search(q)
    assert avg_bits(q) <= 2.0
