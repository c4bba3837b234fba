"""``reuse_factor = "auto"`` (qcompile/backends/hls4ml/reuse.py): per-layer reuse factors
chosen to fit the part, against hand-computed estimates for one and two dense layers; the
demo-sized lenet fits the pynq-z2 and its C simulation stays bit exact with them."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from qcompile.backends.estimates import FpgaEstimate
from qcompile.backends.hls4ml import CSim, parts
from qcompile.backends.hls4ml.estimate import Estimator, estimate
from qcompile.backends.hls4ml.export import options
from qcompile.backends.hls4ml.reuse import candidates
from qcompile.backends.registry import deploy, describe
from qcompile.backends.targets import FpgaTarget, load_target
from qcompile.freeze import freeze_model
from qcompile.ir import (
    Affine,
    Dense,
    Graph,
    InputQuant,
    Node,
    QType,
    Requant,
    TensorInfo,
    Weights,
    qir,
)
from qcompile.passes import pipelines, run_pipeline
from qcompile.sim import Simulator
from qcompile.stages import quantize
from qcompile.zoo import build_model
from tests.backends.helpers import random_inputs
from tests.backends.hls4ml.test_fpga_estimate import BIAS, MULT, SHIFT, W
from tests.bad_inputs import run_main
from tests.conftest import NEEDS_GXX, last_json

# The one-layer model of test_fpga_estimate.py (hand-computed there at R = 1 and R = 2): int4
# x[4] -> 3 rows of 3-bit affine codes, acc_bits 8, requantized products of 19 bits.
INT4 = QType(4, True)


def dense(name: str, rows: int) -> Node:
    """W's rows ``rows // 3`` times over on x, int4 out: the same accumulator and product
    widths as the one-layer model's, 8 and 19 bits."""
    k = rows // 3
    codes = (np.tile(W, (k, 1)) + 4).astype(np.uint8)
    w = Weights(3, (rows, 4), codes, False, Affine(1, np.full(rows, -4, dtype=np.int64))).pack()
    out = TensorInfo(name, (rows,), INT4, 0.1)
    rq = Requant(SHIFT, -8, 7, 8, MULT * k, BIAS * k)
    return Node(name, Dense(), ("x",), out, w, rq)


def model(*layers: int) -> Graph:
    """Dense layers ``d0, d1, ...`` of the given row counts, side by side on one input
    (each an output: the estimate and the chooser see two layers whose figures are the
    one-layer model's, without a second input type to work out)."""
    x = TensorInfo("x", (4,), INT4, 0.1)
    nodes = tuple(dense(f"d{i}", rows) for i, rows in enumerate(layers))
    return Graph("m", x, InputQuant(4, -0.8, 0.1, -8), nodes, tuple(n.name for n in nodes))


@pytest.fixture
def tiny_part(tmp_path, monkeypatch):
    """A part table holding one made-up part, ``xctiny``, of the LUTs a test asks for."""

    def make(lut: int) -> FpgaTarget:
        (tmp_path / "tiny.toml").write_text(
            f'[xctiny]\nfamily = "test"\nlut = {lut}\nff = 1000000\ndsp = 100\nbram18 = 100\n'
            "dsp_a = 25\ndsp_b = 18\n"
        )
        monkeypatch.setattr(parts, "PARTS", tmp_path)
        return FpgaTarget("tiny", "xctiny", clock_period=10.0, strategy="Resource")

    return make


def test_candidates_are_the_smallest_reuse_for_each_lane_count():
    assert candidates(6) == [1, 2, 3, 6]  # 6, 3, 2 and 1 lanes; R = 4 or 5 gives 2 lanes too
    assert candidates(7) == [1, 2, 3, 4, 7]


def per_layer(e: FpgaEstimate | dict) -> dict[str, int]:
    """Each layer's reuse factor, from the typed estimate or its JSON."""
    rows = e["layers"] if isinstance(e, dict) else [asdict(r) for r in e.layers]
    return {r["name"]: r["reuse"] for r in rows}


def test_one_layer_takes_the_reuse_that_fits(tiny_part):
    """By hand (the estimate model, pynq-z2's 10 ns clock, rows of the estimate test):
    R = 1: 275 LUT (constant weights); R = 2: 386 (two shared lanes); R = 3, one lane:
    multipliers 4 * ceil(4 * 3 / 2) = 24, adder tree 3 * 8 = 24, zero points 4 * 3 = 12, code
    ROM 64 (two words, 3 deep), shifter 4 * 3 * 1 = 12 (rows at bits 0, 12, 24), bias and
    multiplier ROM 8 + 14 = 22, requantization 56 + 11 = 67: 225. A part of 300 LUTs has a
    budget of 240: R = 1 is over, R = 2 further over, R = 3 fits."""
    graph = model(3)
    target = tiny_part(300)
    e = estimate(graph, options(target, graph))
    assert per_layer(e) == {"d0": 3}
    assert e.total.lut == 24 + 24 + 12 + 64 + 12 + 22 + 67 == 225
    assert e.total.ff == (8 + 19) + 2 * 3 * 4 == 51  # one lane; ping-pong outputs
    # 3 iterations + depth 7 (read, adder tree, multiply, DSP stages 3, clip)
    assert e.total.latency_cycles == e.total.ii_cycles == 3 + 7
    assert e.reuse_factor == "auto" and e.budget == 0.8 and e.fits is True
    # an explicit integer is still the same for every layer
    fixed = estimate(graph, options(replace(target, reuse_factor=2), graph))
    assert per_layer(fixed) == {"d0": 2} and fixed.total.lut == 386


# Two layers: d0 as above (R 1 / 3: 275 / 225 LUT, 8 / 10 cycles) and d1, W twice over (6
# rows; R = 1, 2, 3, 6). d1 by hand: R = 1 doubles d0's constant logic: 2 * 275 = 550 LUT;
# R = 2, 3 lanes: 72 + 72 + 36 + 96 (3 words wide) + 72 (6 row offsets: 2 mux levels) + 66 +
# 201 = 615; R = 3, 2 lanes: 48 + 48 + 24 + 64 + 48 + 44 + 134 = 410; R = 6, one lane:
# 24 + 24 + 12 + 64 + 24 + 22 + 67 = 237. Cycles: R + 7. At (1, 1): 825 LUT, 16 cycles.
TWO = [
    # budget 700 (part 875): excess 125; per cycle added: d1 -> 3 removes 125 in 2 (62.5),
    # d1 -> 6 125 in 5, d0 -> 3 50 in 2: d1 -> 3, 685 LUT, fits; lower-back finds nothing.
    (875, {"d0": 1, "d1": 3}, 275 + 410, 8 + 10),
    # budget 560 (part 700): excess 265: d1 -> 3 (140 in 2 = 70) beats d1 -> 6 (265 in 5 = 53)
    # and d0 -> 3 (25); then 685 - 560 = 125 over: d1 -> 6 (125 in 3) beats d0 -> 3 (50 in
    # 2): 512 LUT, 21 cycles (d0 at 3 and d1 at 3, 635 LUT, would not fit)
    (700, {"d0": 1, "d1": 6}, 275 + 237, 8 + 13),
    # budget 625.6 (part 782): excess 199.4: d1 -> 3 (140 in 2) beats d1 -> 6 (199.4 in 5),
    # where the most saving alone would jump; 59.4 over: d0 -> 3 (50 in 2 = 25) beats d1 -> 6
    # (59.4 in 3); 9.4 over: d1 -> 6. (3, 6) fits at 462 LUT, 23 cycles; lowering back, d1
    # (slowest) fits at no smaller R, d0 fits at 1 again: (1, 6), 512 LUT, 21 cycles
    (782, {"d0": 1, "d1": 6}, 275 + 237, 8 + 13),
]


def test_two_layer_figures_are_the_hand_computed_ones(tiny_part):
    graph = model(3, 6)
    est = Estimator(graph, options(tiny_part(875), graph))
    d0, d1 = graph.nodes
    assert [est.layer(d0, r).lut for r in (1, 2, 3)] == [275, 386, 225]
    assert [est.layer(d1, r).lut for r in (1, 2, 3, 6)] == [550, 615, 410, 237]
    assert [est.layer(d1, r).cycles for r in (1, 2, 3, 6)] == [8, 9, 10, 13]


@pytest.mark.parametrize(("lut", "want", "lut_total", "latency"), TWO, ids=["875", "700", "782"])
def test_two_layers_take_the_steps_that_save_most_per_cycle(
    tiny_part, lut, want, lut_total, latency
):
    graph = model(3, 6)
    e = estimate(graph, options(tiny_part(lut), graph))
    assert per_layer(e) == want and e.fits is True
    assert e.total.lut == lut_total and e.total.latency_cycles == latency
    rows = {r.name: r for r in e.layers}
    assert rows["d1"].lut == {3: 410, 6: 237}[want["d1"]]


def test_a_part_too_small_says_so_and_by_how_much(tiny_part):
    graph = model(3)
    target = tiny_part(100)  # budget 80: even one lane (225 LUT) is over the part itself
    e = estimate(graph, options(target, graph))
    assert per_layer(e) == {"d0": 3} and e.fits is False and e.warning is not None
    assert "does not fit xctiny (LUT 225 > 100 (225%))" in e.warning
    assert "even at the reuse factors that save most (auto): use a larger part" in e.warning


def demo_lenet(wbits: int) -> Graph:
    """The demo's LeNet on 8x8 digits (W4A4 there), calibrated on noise: the same layers,
    widths and sizes as `make demo`'s (trained weights change the estimate a little)."""
    torch.manual_seed(0)
    q = quantize(build_model("lenet", (1, 8, 8), 10), wbits=wbits, abits=4)
    q.train()
    with torch.no_grad():
        q(torch.randn(16, 1, 8, 8))
    return freeze_model(q.eval(), (1, 8, 8), "lenet")


@NEEDS_GXX
def test_demo_lenet_fits_the_pynq_z2_and_stays_exact(tmp_path):
    graph = demo_lenet(4)
    target = load_target("fpga")  # pynq-z2: reuse_factor = "auto"
    fixed = estimate(
        run_pipeline(graph, pipelines.FPGA),
        options(replace(target, reuse_factor=4), run_pipeline(graph, pipelines.FPGA)),
    )
    assert fixed.fits is False  # what the profile's reuse factor 4 gave: 3x the LUTs
    info = deploy(graph, target, tmp_path / "art")
    e = info["estimate"]
    assert e["fits"] is True and e["warning"] is None
    assert all(e["total"][k] <= 0.8 * e["part"][k] for k in ("lut", "ff", "dsp", "bram18"))
    reuse = per_layer(e)
    assert len(set(reuse.values())) > 1  # really per layer
    assert "reuse factor auto (" in describe(info) and "warning" not in describe(info)
    # each layer's kernel is built for its own reuse factor (config structs), as recorded
    # in hls4ml_config.yml and the manifest
    defines = (tmp_path / "art" / "firmware" / "parameters.h").read_text()
    got = [int(m) for m in re.findall(r"static const unsigned reuse = (\d+);", defines)]
    assert got == list(reuse.values())
    on_disk = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert per_layer(on_disk["estimate"]) == reuse
    csim = CSim(tmp_path / "art", graph)
    try:
        x = random_inputs(graph, 300)
        assert np.array_equal(csim(x), Simulator(graph).run(x)[graph.outputs[0]])
    finally:
        csim.close()


def test_reuse_factor_option_overrides_the_profile(tmp_path):
    path = tmp_path / "one.qir"
    qir.save(model(3), path)
    base = ("inspect", str(path), "--target", "pynq-z2")
    r = run_main([*base, "--reuse-factor", "2", "--json"])
    assert r.code == 0, r.stderr
    e = last_json(r.stdout)["estimate"]
    assert e["reuse_factor"] == 2 and per_layer(e) == {"d0": 2} and e["total"]["lut"] == 386
    r = run_main(base)  # the profile's auto: the model is tiny, every layer at R = 1
    assert "reuse factor auto: chosen per layer to fit 80% of the part" in r.stdout
    for args, needle in [
        (("--reuse-factor", "0"), "--reuse-factor must be an integer >= 1 or \"auto\", got '0'"),
        (("--reuse-factor", "x4"), "--reuse-factor must be an integer >= 1"),
    ]:
        r = run_main([*base, *args])
        assert r.code == 2 and needle in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_main(["inspect", str(path), "--target", "cpu", "--reuse-factor", "2"])
    assert r.code == 2 and "--reuse-factor is for fpga profiles" in r.stderr
    r = run_main(["inspect", str(path), "--reuse-factor", "2"])
    assert r.code == 2 and "needs --target" in r.stderr
