"""The fpga estimate (qcompile/backends/hls4ml/estimate.py) against figures computed by hand
from its documented model, for a one-layer model in both schedules; the manifest and
`inspect --target` carry it; a design that does not fit is flagged."""

from __future__ import annotations

import json

import numpy as np

from qcompile.backends.hls4ml.estimate import Cost, csd_digits, estimate
from qcompile.backends.hls4ml.export import options
from qcompile.backends.hls4ml.fit import fit
from qcompile.backends.hls4ml.parts import find_part
from qcompile.backends.registry import deploy
from qcompile.backends.targets import FpgaTarget, load_target
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
    ops,
    qir,
)
from tests.bad_inputs import run_main
from tests.conftest import last_json

# Integer weights (3-bit codes, w = code - 4): CSD digits 3 -> 2, 2 -> 1, 1 -> 1, -4 -> 1.
W = np.array([[3, 0, -3, -4], [1, 1, 1, 1], [2, -1, 3, 0]])
MULT, BIAS, SHIFT = (1000, 3000, 5000), (0, 100, -100), 12


def one_layer() -> Graph:
    """int4 x[4] -> dense 3 outputs, uint4 out: acc ranges by hand, for x in [-8, 7]:
    row 0 (pos 3, neg -7) [-73, 77], row 1 (pos 4) [-32, 28], row 2 (pos 5, neg -1) [-47, 43],
    so acc_bits = 8."""
    x = TensorInfo("x", (4,), QType(4, True), 0.1)
    codes = (W + 4).astype(np.uint8)
    w = Weights(3, (3, 4), codes, False, Affine(1, np.full(3, -4, dtype=np.int64))).pack()
    out = TensorInfo("y", (3,), QType(4, False), 0.1)
    probe = Node("y", Dense(), ("x",), out, w, Requant(SHIFT, 0, 15, 64, MULT, BIAS))
    acc = ops.acc_bits_needed(probe, [x.qtype.range])
    assert acc == 8
    node = Node("y", Dense(), ("x",), out, w, Requant(SHIFT, 0, 15, acc, MULT, BIAS))
    return Graph("one", x, InputQuant(4, -0.8, 0.1, -8), (node,), ("y",))


def test_csd_digits():
    values = (0, 1, 2, 3, 4, 5, 6, 7, 11, -3)
    assert [csd_digits(v) for v in values] == [0, 1, 1, 2, 1, 2, 2, 2, 3, 2]


def test_unrolled_estimate_matches_hand_computation():
    """Latency + io_parallel, 5 ns (zcu104): one pipeline, every weight a constant."""
    target = FpgaTarget("t", "xczu7ev-ffvc1156-2-e", clock_period=5.0, strategy="Latency")
    e = estimate(one_layer(), options(target, one_layer()))
    a, acc = 4, 8  # input bits, accumulator bits
    # constant multiplies: (csd - 1) * (a + bits(|w|)): only 3 and -3 (twice) and row 2's 3
    mult = 3 * (1 * (a + 2))  # = 18
    adders = ((3 - 1) + (4 - 1) + (3 - 1)) * acc  # non-zero terms per row, minus one: 56
    # requantization per lane: acc (8 bits) x m (signed 14 bits: 5000 < 2^13) is narrower than
    # DSP_MIN_BITS on one side: LUTs ceil(8 * 14 / 2) = 56; prod_bits: the widest
    # acc*m + b + 2^11 is row 2's -47 * 5000 - 100 + 2048 = -233052 -> 19 signed bits;
    # round/shift/clip prod - shift + out = 19 - 12 + 4 = 11
    requant = 3 * (56 + 11)
    assert e.total.lut == mult + adders + requant == 275
    assert e.total.ff == 3 * (acc + 19) + 3 * 4 == 93  # lanes' acc + product, outputs
    assert (e.total.dsp, e.total.bram18) == (0, 0)
    # depth: read 1 + adder tree ceil(log2 4 / floor(5 / 1.6)) = 1 + multiply 1 + DSP 3 + clip 1
    assert e.total.latency_cycles == 1 + 1 + 1 + 3 + 1 == 7
    assert e.total.ii_cycles == 1 and e.total.latency_ns == 35.0
    assert e.schedule == "unrolled" and e.fits is True and e.warning is None
    assert e.utilization.lut == round(275 / 230400, 4)


def test_dataflow_estimate_matches_hand_computation():
    """Resource, reuse factor 2, 10 ns (pynq-z2): 2 iterations of ceil(3 / 2) = 2 lanes."""
    target = FpgaTarget("t", "xc7z020clg400-1", clock_period=10.0, strategy="Resource",
                        reuse_factor=2)  # fmt: skip
    e = estimate(one_layer(), options(target, one_layer()))
    lanes, n_in, wb, b, acc = 2, 4, 3, 3, 8
    mults = lanes * n_in * 6  # int4 x int3 below DSP_MIN_BITS: ceil(4 * 3 / 2) LUTs each
    adders = lanes * (n_in - 1) * acc
    decode = lanes * n_in * wb  # + zero point
    code_rom = (1 + 1) * 32 * 1  # width (ceil(2 * 4 * 3 / 32) + 1) words, depth 2: LUT ROM
    shifter = lanes * n_in * b * 1  # rows start at bits 0, 12, 24: 3 offsets -> 1 mux level
    const_rom = (8 + 14) * lanes  # bias (8 bits) + multiplier (14 bits) per lane, depth 2
    requant = lanes * (56 + 11)
    assert e.total.lut == mults + adders + decode + code_rom + shifter + const_rom + requant
    assert e.total.lut == 48 + 48 + 24 + 64 + 24 + 44 + 134 == 386
    assert e.total.ff == lanes * (acc + 19) + 2 * 3 * 4 == 78  # ping-pong outputs
    # 2 iterations + depth (tree: ceil(2 / floor(10 / 1.6)) = 1): 2 + 1 + 1 + 1 + 3 + 1
    assert e.total.latency_cycles == e.total.ii_cycles == 9
    assert e.total.latency_ns == 90.0
    assert e.layers[0].lanes == 2 and e.layers[0].iterations == 2


def test_every_fpga_manifest_holds_the_estimate(tmp_path):
    graph = one_layer()
    for name in ("pynq-z2", "zcu104", "alveo-u250"):
        t = load_target(name)
        info = deploy(graph, t, tmp_path / name)
        on_disk = json.loads((tmp_path / name / "manifest.json").read_text())
        assert info.estimate == estimate(graph, options(t, graph))  # typed in the manifest
        assert on_disk["estimate"] == info["estimate"] == info.estimate.as_dict()
        assert on_disk["estimate"]["part"]["name"] == find_part(t.part).name
        assert on_disk["estimate"]["total"]["latency_ns"] > 0
        # the JSON keys (and their order) the typed estimate writes: as before it was typed
        assert list(on_disk["estimate"]) == ESTIMATE_KEYS
        assert list(on_disk["estimate"]["total"]) == TOTAL_KEYS
        assert list(on_disk["estimate"]["layers"][0]) == LAYER_KEYS
        assert list(on_disk["estimate"]["utilization"]) == ["lut", "ff", "dsp", "bram18"]
        assert list(on_disk["estimate"]["part"]) == ["name", "family", "lut", "ff", "dsp", "bram18"]


ESTIMATE_KEYS = [
    "note", "schedule", "reuse_factor", "budget", "clock_period", "layers", "total", "part",
    "utilization", "fits", "warning",
]  # fmt: skip
TOTAL_KEYS = ["lut", "ff", "dsp", "bram18", "ii_cycles", "latency_cycles", "latency_ns"]
LAYER_KEYS = [
    "name", "op", "reuse", "lanes", "iterations", "cycles", "lut", "ff", "dsp", "bram18"
]  # fmt: skip


def test_parts_table_is_the_data_sheets():
    z = find_part("xc7z020clg400-1")
    assert (z.lut, z.ff, z.dsp, z.bram18) == (53200, 106400, 220, 280)
    u = find_part("xczu7ev-ffvc1156-2-e")
    assert (u.lut, u.ff, u.dsp, u.bram18) == (230400, 460800, 1728, 624)
    a = find_part("xcu250-figd2104-2L-e")
    assert (a.lut, a.ff, a.dsp, a.bram18) == (1728000, 3456000, 12288, 5376)
    assert find_part("xc9nosuch") is None


def test_a_design_that_does_not_fit_is_flagged():
    part = find_part("xc7z020")
    over = fit(Cost(lut=60000, ff=10, dsp=221, bram18=0), part, "xc7z020")
    assert over.fits is False
    assert "LUT 60000 > 53200" in over.warning and "DSP 221 > 220" in over.warning
    unknown = fit(Cost(), None, "xc9nosuch")
    assert unknown.fits is None and "not in targets/parts" in unknown.warning


def test_inspect_target_prints_the_estimate(tmp_path):
    target = "pynq-z2"
    path = tmp_path / "one.qir"
    qir.save(one_layer(), path)
    r = run_main(["inspect", str(path), "--target", target])
    assert r.code == 0, r.stderr
    assert "LUT" in r.stdout and "BRAM18" in r.stdout and "latency" in r.stdout
    r = run_main(["inspect", str(path), "--target", target, "--json"])
    est = last_json(r.stdout)["estimate"]
    assert est == estimate(one_layer(), options(load_target(target), one_layer())).as_dict()
    r = run_main(["inspect", str(path), "--target", "cpu"])
    assert r.code == 2 and "estimates are for fpga profiles" in r.stderr
