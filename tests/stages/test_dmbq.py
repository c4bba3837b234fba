"""DMBQ + LBA: config, sensitivity, bit allocation, budget (as inspect counts it), round trips,
determinism, resume, init_from, and lenet on digits from training to the integer simulator."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qcompile.builder import RunCheckpoints
from qcompile.checkpoint import load_checkpoint, save_checkpoint
from qcompile.errors import QCompileError
from qcompile.freeze import freeze_checkpoint, freeze_model
from qcompile.ir import qir
from qcompile.quant import MinMax
from qcompile.quant.dmbq import DMBQ
from qcompile.recipe import load_recipe
from qcompile.report import summary
from qcompile.sim import Simulator, quantize_input
from qcompile.sim.reference import FrozenTorch
from qcompile.stages import QuantModel, make_stage, quantize, stage_class
from qcompile.stages.dmbq import (
    DMBQConfig,
    DMBQStage,
    Groups,
    force_fit,
    lower_least_sensitive,
    lowering_ratio,
    window,
)
from qcompile.train import train

QUIET = {"progress": False, "log": lambda msg: None}


def net() -> nn.Module:
    torch.manual_seed(0)
    # 256 weights in the 8-bit first/last layers, 2,560 learned: 1 bit everywhere averages
    # 1.64, 4 bits 4.36.
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Linear(8, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4),
    )  # fmt: skip


def dmbq(**options) -> QuantModel:
    return quantize(net(), method="dmbq", **options)


def fit_steps(model: QuantModel, epochs: int, steps: int = 3, seed: int = 0) -> list[dict]:
    """A miniature training loop calling the hooks as qcompile.train does."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = []
    model.train()
    for epoch in range(epochs):
        for i in range(steps):
            model.stage.on_step(model, epoch * steps + i, epochs * steps)
            x, y = torch.randn(32, 1, 4, 4, generator=g), torch.randint(0, 4, (32,), generator=g)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.stage.on_epoch_end(model, epoch, epochs)
        history.append(model.stage.report(model))
    return history


def learned(model: QuantModel) -> dict[str, DMBQ]:
    return {n: m.weight_quant for n, m in model.weight_layers().items() if n in ("4", "7")}


# ---- configuration ---------------------------------------------------------------------------


def test_registered_and_no_longer_planned() -> None:
    assert stage_class("dmbq") is DMBQStage


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wbits": 8}, r"wbits must be 1\.\.4"),
        ({"granularity": "kernel"}, "granularity 'kernel'"),
        ({"lba_start": 0.5, "lba_end": 0.5}, "lba_start < lba_end"),
        ({"lba_start": -1.0}, "lba_start < lba_end"),
        ({"ratio_start": 0.0}, "0 < ratio_start"),
        ({"ratio_start": 0.4, "ratio_end": 0.3}, "ratio_start <= ratio_end"),
        ({"ratio_end": 1.5}, "ratio_end <= 1"),
        ({"momentum": 1.0}, "momentum"),
        ({"target_bits": 0.5}, "target_bits must be"),
    ],
)
def test_bad_options_raise_one_line(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DMBQConfig(**options)
    with pytest.raises(QCompileError, match=message) as e:
        make_stage("dmbq", **options)
    assert "\n" not in str(e.value)


def test_unreachable_budget_is_refused() -> None:
    with pytest.raises(QCompileError, match="cannot be met"):
        dmbq(target_bits=1.5)  # the 8-bit first/last layers alone need more


def test_learned_layers_start_at_wbits_and_first_last_stay_plain() -> None:
    model = dmbq(target_bits=3.0)
    layers = model.weight_layers()
    assert isinstance(layers["1"].weight_quant, MinMax) and layers["1"].weight_quant.bits == 8
    assert isinstance(layers["10"].weight_quant, MinMax)
    assert all(isinstance(q, DMBQ) and q.bits == 4 for q in learned(model).values())
    assert set(model.stage.groups(model).names) == {"4", "7"}


def test_window_and_ratio_schedule() -> None:
    c = DMBQConfig()
    assert window(c, 10) == (0, 5)
    assert window(DMBQConfig(lba_start=2, lba_end=150), 300) == (2, 150)
    assert window(DMBQConfig(lba_end=150), 20) == (0, 20)  # clipped to the run
    assert window(c, 1) == (0, 1)  # never empty
    assert lowering_ratio(c, 0, 0, 5) == pytest.approx(0.01)
    assert lowering_ratio(c, 2, 0, 5) == pytest.approx(0.155)
    assert lowering_ratio(c, 4, 0, 5) == pytest.approx(0.3)


# ---- sensitivity -----------------------------------------------------------------------------


def one_layer(granularity: str) -> QuantModel:
    torch.manual_seed(3)
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0, 0.2], [2.0, 0.1, -0.3]]))
    return quantize(
        nn.Sequential(layer), method="dmbq", abits=32, first_last_wbits="same", wbits=2,
        granularity=granularity,
    )  # fmt: skip


@pytest.mark.parametrize("granularity", ["channel", "layer", "global"])
def test_sensitivity_by_hand(granularity: str) -> None:
    """d = sum over steps of |sum_group (w - w^) dL/dw^| / n, for L = sum(y), y = x W^T:
    dL/dW^[o, i] = sum_batch x[b, i]."""
    model = one_layer(granularity).train()
    stage: DMBQStage = model.stage
    layer = model.net[0]
    q: DMBQ = layer.weight_quant
    batches = [
        torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0]]),
        torch.tensor([[-2.0, 0.5, 1.5], [-1.0, -1.5, -0.5]]),
    ]
    expected = torch.zeros(2 if granularity == "channel" else 1, dtype=torch.float64)
    per_step = []
    for i, x in enumerate(batches):
        stage.on_step(model, i, 2)
        model(x).sum().backward()
        xq = model.input_quant(x).detach()
        w = layer.weight.detach()
        w_hat = q.encode(w).decode()  # the w^ of this forward pass (the clip moved before it)
        s = ((w - w_hat) * xq.sum(0)).sum(1).double()  # per output channel
        per_step.append(s)
        if granularity == "channel":
            expected += s.abs() / 3
        else:
            expected += s.sum().abs() / 6
    stage.collect(model)
    assert torch.allclose(stage.sensitivity(model), expected, rtol=1e-6)
    if granularity != "channel":  # abs per step, not of the epoch's sum
        assert not torch.allclose(expected, (per_step[0] + per_step[1]).sum().abs() / 6)


def test_sensitivity_resets_at_epoch_end_and_stops_after_the_window() -> None:
    model = dmbq(target_bits=3.2, lba_end=2).train()
    stage: DMBQStage = model.stage
    for epoch in range(4):
        stage.on_step(model, epoch, 4)
        model(torch.randn(8, 1, 4, 4)).sum().backward()
        tracked = float(stage.sensitivity(model).sum())
        assert (tracked > 0) == (epoch < 2), epoch  # the window is epochs 0 and 1
        stage.on_epoch_end(model, epoch, 4)
        assert float(stage.sensitivity(model).abs().sum()) == 0.0
        assert all(bool(q.track) == (epoch + 1 < 2) for q in learned(model).values())


# ---- allocation ------------------------------------------------------------------------------


def test_lower_least_sensitive_first_and_stop_when_it_fits() -> None:
    bits = torch.tensor([4, 4, 1, 4, 4])
    d = torch.tensor([0.5, 0.1, 0.0, 0.3, 0.2])
    never = lambda b: False  # noqa: E731
    assert lower_least_sensitive(bits, d, 2, never).tolist() == [4, 3, 1, 4, 3]  # 1-bit skipped
    assert lower_least_sensitive(bits, d, 10, never).tolist() == [3, 3, 1, 3, 3]
    budget = lambda b: int(b.sum()) <= 15  # noqa: E731
    assert lower_least_sensitive(bits, d, 10, budget).tolist() == [4, 3, 1, 4, 3]
    assert bits.tolist() == [4, 4, 1, 4, 4]  # input untouched


def widths_case(d4: float) -> tuple[DMBQStage, Groups, torch.Tensor, torch.Tensor]:
    """Channel groups: layer 4 (64 channels x 8 weights, every other one already at 3 bits)
    and layer 7 (32 x 64) at 4 bits; d = d4 on layer 4's channels, 1 on layer 7's."""
    model = dmbq(target_bits=4.2, granularity="channel")
    stage: DMBQStage = model.stage
    start = torch.tensor([4, 3] * 32 + [4] * 32)
    d = torch.cat([torch.full((64,), d4), torch.ones(32)]).double()
    return stage, stage.groups(model), start, d


@pytest.mark.parametrize(
    ("d4", "order"), [(1.0, [*range(1, 96)]), (3.0, [*range(64, 96), *range(1, 64)])]
)
def test_moves_lower_one_group_each_cheapest_per_bit_first(d4: float, order: list[int]) -> None:
    """The IR credits every channel at its own width: each group above 1 bit is a move, by
    ``d`` (its cost ``d n`` over the ``n`` bits it saves); ties go to the earlier group."""
    _, g, start, d = widths_case(d4)
    start[0] = 1  # at the floor: no move
    moves = g.moves(start, d)
    assert [m.index for m in moves] == order
    assert all(m.groups.tolist() == [m.index] for m in moves)
    by_group = {m.index: m for m in moves}
    assert by_group[1].cost == pytest.approx(d4 * 8)  # layer 4: 8 weights a channel
    assert by_group[64].cost == pytest.approx(64.0)  # layer 7: 64


def test_average_counts_every_channel_at_its_own_width() -> None:
    _, g, start, _ = widths_case(1.0)
    # 2,048 bits in the 8-bit first/last layers; layer 4: 32 x 8 at 4 and 32 x 8 at 3 bits;
    # layer 7: 32 x 64 at 4 bits; 2,816 weights
    assert g.average(start) == pytest.approx((2048 + 256 * 4 + 256 * 3 + 2048 * 4) / 2816)
    lowered = start.clone()
    lowered[1] = 2  # one 8-weight channel, one bit: 8 bits fewer
    assert g.average(lowered) == pytest.approx(g.average(start) - 8 / 2816)


@pytest.mark.parametrize(("d4", "lowered"), [(1.0, [*range(18), 64]), (10.0, [64, 65, 66, 67])])
def test_force_fit_takes_the_cheapest_move_that_meets_the_budget(d4: float, lowered: list[int]):
    """4.2 is 0.073 bits below the start (4.273): 205 weight-bits. By ``d``: with d4 = 1 the
    8-weight channels of layer 4 go first (index order) until one 64-weight channel of layer 7
    alone meets the budget and is the cheapest move that does; with d4 = 10 layer 7's
    channels go first and four of them (256 bits) meet it."""
    stage, g, start, d = widths_case(d4)
    bits = force_fit(g, start, d, stage.fits(g))
    assert torch.nonzero(start - bits).flatten().tolist() == lowered
    assert torch.all(start - bits <= 1)
    assert g.average(bits) <= 4.2 < g.average(start)
    assert force_fit(g, bits, d, stage.fits(g)).tolist() == bits.tolist()  # fits: no-op


def test_force_fit_goes_on_in_passes_until_it_fits() -> None:
    _, g, start, d = widths_case(1.0)
    fits = lambda b: g.average(b) <= 2.8  # noqa: E731
    bits = force_fit(g, start, d, fits)
    # Pass 1 lowers every group once (4.27 -> 3.27); pass 2 lowers them again in index order
    # until one more layer-7 channel alone meets 2.8 and the cheapest such move ends it.
    assert bits.tolist() == [2, 1] * 32 + [2] * 17 + [3] * 15
    assert fits(bits) and not fits(bits + (torch.arange(96) == 80).long())


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_lba_lowers_the_least_sensitive_groups_and_only_goes_down(granularity: str) -> None:
    model = dmbq(target_bits=2.6, granularity=granularity, lba_end=4)
    stage: DMBQStage = model.stage
    g = stage.groups(model)
    gen = torch.Generator().manual_seed(0)
    previous = g.group_bits()
    for epoch in range(4):
        d = torch.rand(g.count, generator=gen, dtype=torch.float64)
        stage._sens = d.clone()
        stage.on_epoch_end(model, epoch, 6)
        bits = g.group_bits()
        assert torch.all(bits <= previous), epoch
        lowered = bits < previous
        kept = ~lowered & (previous > 1)
        if epoch < 3 and lowered.any() and kept.any():  # epoch 3 also forces the fit
            assert float(d[lowered].max()) <= float(d[kept].min()), epoch
        previous = bits
    assert g.average(g.group_bits()) <= 2.6


@pytest.mark.parametrize("granularity", ["global", "layer", "channel"])
def test_every_granularity_meets_the_budget_as_inspect_counts_it(granularity: str) -> None:
    target = 2.6
    model = dmbq(target_bits=target, granularity=granularity, lba_end=3)
    history = fit_steps(model, 4)
    final = model.stage.report(model)["avg_wbits"]
    assert history[0]["avg_wbits"] > target  # the window had work to do
    graph = freeze_model(model.eval(), (1, 4, 4))
    s = summary(graph)
    assert s["avg_weight_bits"] <= target
    assert s["avg_weight_bits"] == pytest.approx(final, abs=1e-4)
    stored = {r["name"]: r["weight_bits"] for r in s["layers"] if "weights" in r}
    for name, q in learned(model).items():
        # inspect counts each channel at its own width: the layer's mean
        assert stored[f"_{name}"] == pytest.approx(float(q.channel_bits.double().mean()))
        node = next(n for n in graph.nodes if n.name == f"_{name}")
        mixed = int(q.channel_bits.min()) != int(q.channel_bits.max())
        assert (node.weights.channel_bits is not None) == mixed
        assert node.weights.bits == int(q.channel_bits.max())
    x = np.random.default_rng(0).normal(0, 1, (200, 1, 4, 4)).astype(np.float32)
    xq = quantize_input(graph, x)
    out = graph.outputs[0]
    assert np.array_equal(Simulator(graph).run(xq)[out], FrozenTorch(graph)(xq)[out])


def test_channel_layer_with_mixed_widths_deploys_bit_exact() -> None:
    model = dmbq(target_bits=3.0, granularity="channel")
    fit_steps(model, 1)
    q = learned(model)["4"]
    bits = torch.tensor([1, 2, 3, 4] * 16)
    q.set_channel_bits(bits)
    assert q.bits == 4 and model.stage.layer_bits(model)["4"] == 2.5  # the channels' mean
    graph = freeze_model(model.eval(), (1, 4, 4))
    node = next(n for n in graph.nodes if n.name == "_4")
    assert node.weights.bits == 4 and not node.weights.uniform
    assert node.weights.channel_bits == tuple(bits.tolist())
    assert node.weights.words == 16 * (1 + 1 + 1 + 1)  # 8 codes a row: one word at any width
    back = qir.loads(qir.to_onnx(graph).SerializeToString())
    assert next(n for n in back.nodes if n.name == "_4").weights.channel_bits == tuple(bits)
    lut = node.weights.level_table()
    for c, b in enumerate(bits.tolist()):
        assert np.all(lut[c, 2**b :] == 0), c  # only the channel's own 2^b levels
    x = np.random.default_rng(1).normal(0, 1, (300, 1, 4, 4)).astype(np.float32)
    xq = quantize_input(graph, x)
    out = graph.outputs[0]
    assert np.array_equal(Simulator(graph).run(xq)[out], FrozenTorch(graph)(xq)[out])
    report = model.stage.report(model)
    assert report["wbits"]["4"] == pytest.approx(2.5)
    assert summary(graph)["avg_weight_bits"] == pytest.approx(report["avg_wbits"], abs=1e-4)


def test_finalize_enforces_the_budget_when_the_window_was_never_closed() -> None:
    model = dmbq(target_bits=2.6)
    fit_steps(model, 0)
    stage: DMBQStage = model.stage
    out = stage.finalize(model, lambda: 0.0)
    g = stage.groups(model)
    assert out["lba_forced_after_training"] > 0 and g.average(g.group_bits()) <= 2.6
    assert stage.finalize(model, lambda: 0.0) == {}


# ---- state -----------------------------------------------------------------------------------


def test_bits_survive_a_checkpoint_round_trip() -> None:
    model = dmbq(target_bits=2.6, granularity="channel")
    fit_steps(model, 4)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = dmbq(target_bits=2.6, granularity="channel")
    assert fresh.weight_bits() != model.weight_bits()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.weight_bits() == model.weight_bits()
    for name, q in learned(model).items():
        assert torch.equal(learned(fresh)[name].channel_bits, q.channel_bits)
    x = torch.randn(16, 1, 4, 4)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def channel_recipe(**over):
    """mlp on digits, every layer learned, channel LBA over the whole run (decisions fall on
    both sides of the interruption in the resume test)."""
    base = {
        "model.name": "mlp", "data.name": "digits", "stage.method": "dmbq",
        "stage.first_last_wbits": "same", "stage.target_bits": 2.0, "train.epochs": 4,
        "stage.granularity": "channel", "stage.lba_end": 1.0,
    }  # fmt: skip
    return load_recipe(None, {**base, **over})


def test_channel_lba_on_digits_freezes_channel_widths(tmp_path: Path) -> None:
    """Channel LBA trained a few epochs on digits: the .qir stores each channel at its own
    width, and inspect's average is the channels' weight-count mean, within the target."""
    s = train(channel_recipe(), tmp_path / "r", **QUIET)
    graph = freeze_checkpoint(tmp_path / "r/checkpoint.pt")
    qir.save(graph, tmp_path / "m.qir")
    graph = qir.load(tmp_path / "m.qir")
    figures = summary(graph)
    mixed = [n for n in graph.weighted() if n.weights.channel_bits is not None]
    assert mixed, "channel LBA left every layer at one width"
    total = sum(n.weights.count for n in graph.weighted())
    bits = sum(n.weights.count * np.mean(n.weights.row_bits()) for n in graph.weighted())
    assert figures["avg_weight_bits"] == round(bits / total, 4)
    assert figures["avg_weight_bits"] <= 2.0
    assert figures["avg_weight_bits"] == pytest.approx(s["avg_wbits"], abs=1e-4)
    # at the widest channel the model would not meet the budget: the channel widths count
    widest = sum(n.weights.count * n.weights.bits for n in graph.weighted()) / total
    assert widest > figures["avg_weight_bits"]
    from qcompile.data import load_dataset

    xq = quantize_input(graph, load_dataset("digits").test_x.numpy())
    out = graph.outputs[0]
    assert np.array_equal(Simulator(graph).run(xq)[out], FrozenTorch(graph)(xq)[out])


def states_equal(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_deterministic_under_seed_and_resume_matches(tmp_path: Path) -> None:
    a = train(channel_recipe(), tmp_path / "a", **QUIET)
    b = train(channel_recipe(), tmp_path / "b", **QUIET)
    assert a["bits"] == b["bits"] and a["test_acc"] == b["test_acc"]
    assert states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "b/checkpoint.pt")
    c = train(channel_recipe(**{"train.seed": 1}), tmp_path / "c", **QUIET)
    assert not states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "c/checkpoint.pt")
    assert c["avg_wbits"] <= 2.0

    class Killed(Exception):
        pass

    def kill_after_two(msg: str) -> None:
        if msg.startswith("epoch 2/"):
            raise Killed

    with pytest.raises(Killed):
        train(channel_recipe(), tmp_path / "k", progress=False, log=kill_after_two)
    assert load_checkpoint(tmp_path / "k/checkpoint.pt")["epoch"] == 2
    resumed = train(channel_recipe(), tmp_path / "k", resume=True, **QUIET)
    assert states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "k/checkpoint.pt")
    assert resumed["bits"] == a["bits"] and resumed["test_acc"] == a["test_acc"]
    rows = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    avg = [r["avg_wbits"] for r in rows]
    assert avg == sorted(avg, reverse=True) and avg[-1] < avg[0]  # lowered, never raised
    assert avg[-1] <= 2.0


def test_init_from_copies_a_trained_run(tmp_path: Path) -> None:
    source = quantize(net(), method="uniform", wbits=4)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    path = tmp_path / "w4a4.pt"
    save_checkpoint(path, {"recipe": {}, "epoch": 1, "model": source.state_dict()})
    model = dmbq(target_bits=2.6, init_from=str(path))
    assert not torch.equal(model.state_dict()["net.4.weight"], source.state_dict()["net.4.weight"])
    runs = RunCheckpoints((1, 4, 4), 10)
    model.stage.prepare(model, runs, fresh=True)  # a new run loads
    for key, value in source.state_dict().items():
        if ".weight_quant." not in key:
            assert torch.equal(model.state_dict()[key], value), key
    model.train()(torch.randn(8, 1, 4, 4))  # the clip starts from the loaded weights
    w = source.state_dict()["net.4.weight"]
    assert torch.allclose(learned(model)["4"].clip, 5.686 * w.abs().mean(1))
    with torch.no_grad():
        model.net[4].weight.zero_()
    model.stage.prepare(model, runs, fresh=False)  # a resumed run keeps its own weights
    model.stage.on_step(model, 1, 10)
    assert float(model.net[4].weight.detach().abs().sum()) == 0.0
    other = tmp_path / "other.pt"
    small = quantize(nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), method="uniform", wbits=4)
    save_checkpoint(other, {"recipe": {}, "epoch": 1, "model": small.state_dict()})
    bad = dmbq(target_bits=2.6, init_from=str(other))
    with pytest.raises(QCompileError, match=r"init_from .*another architecture"):
        bad.stage.prepare(bad, runs, fresh=True)


# ---- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_lenet_digits_trains_freezes_and_simulates_exactly(tmp_path: Path) -> None:
    r = load_recipe(
        None,
        {"model.name": "lenet", "data.name": "digits", "stage.method": "dmbq",
         "stage.target_bits": 2.0, "train.epochs": 6, "train.seed": 0},
    )  # fmt: skip
    s = train(r, tmp_path / "r", **QUIET)
    assert s["test_acc"] >= 0.85
    assert s["avg_wbits"] <= 2.0
    graph = freeze_checkpoint(tmp_path / "r/checkpoint.pt")
    figures = summary(graph)
    assert figures["avg_weight_bits"] <= 2.0
    assert figures["avg_weight_bits"] == pytest.approx(s["avg_wbits"], abs=1e-4)
    rows = {row["name"]: row for row in figures["layers"] if "weights" in row}
    inner = [rows[n] for n in ("features_2_0", "classifier_0", "classifier_3")]
    assert all(row["levels"] == "non-uniform" for row in inner)
    assert [row["weight_bits"] for row in inner] == [
        s["bits"][n] for n in ("features.2.0", "classifier.0", "classifier.3")
    ]
    multi = next(n for n in graph.nodes if n.weights is not None and 2 <= n.weights.bits <= 4)
    gaps = np.diff(np.sort(multi.weights.level_table()[0]))
    assert not np.all(gaps == gaps[0])  # really non-uniform
    from qcompile.data import load_dataset

    data = load_dataset("digits")
    xq = quantize_input(graph, data.test_x.numpy())
    out = graph.outputs[0]
    sim, ref = Simulator(graph).run(xq)[out], FrozenTorch(graph)(xq)[out]
    assert np.array_equal(sim, ref)
    assert float((sim.argmax(1) == data.test_y.numpy()).mean()) >= 0.85
