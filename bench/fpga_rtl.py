"""FPGA flows without a vendor tool: the hls4ml project's estimate, da4ml Verilog, and its
Verilator simulation, for jet_mlp (16-64-32-32-5), lenet (8x8 digits) and a small
depthwise-separable CNN, at 2, 4 and 6 bits (weights and activations, every layer).

For each: export time of the fpga artifact (hls4ml project + its estimate), rtl export time
(da4ml trace + solve + Verilog), Verilator build and simulation time of 1000 inputs
(bit-exact against the simulator, checked), and the estimated LUTs of four designs of the same
fixed-point model side by side:

- `hls est`: the hls4ml project's estimate (qcompile/backends/hls4ml/estimate.py) for the
  zcu104 profile (Latency, io_parallel: fully unrolled);
- `rtl LUT`: da4ml's cost of qcompile's RTL (per-channel multiplier kept apart from W);
- `DA LUT`: da4ml's cost of the same layers as hls4ml's `distributed_arithmetic` strategy
  sees them: fixed-point weights `W * m_c` (the per-channel scale folded into the weights, as
  a converter of the real-valued model does), same requantization; solved by the same da4ml
  in the same run (hls4ml 1.3.0's own DA conversion needs a Keras or PyTorch model of the
  float layers, not our integer IR, so this is da4ml's estimate of it, as the issue allows).

Sizes are chosen so the whole run takes minutes on two cores: da4ml's solve time grows
steeply with layer size (DESIGN.md: 256x128 at 4 bits took 100-540 s), lenet is the 8x8
digits variant (about 36k multiplies), the CNN works on 8x8 inputs. Untrained models (random
weights, calibrated activations): costs depend on the weight values, not on accuracy.

    python -m bench.fpga_rtl [--models jet_mlp dscnn lenet] [--bits 2 4 6] [--no-sim]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.report import machine, write_section
from qcompile.backends.registry import deploy
from qcompile.backends.rtl.export import macs
from qcompile.backends.rtl.runner import RtlRunner
from qcompile.backends.targets import load_target
from qcompile.errors import QCompileError
from qcompile.freeze import freeze_model
from qcompile.ir.graph import Graph
from qcompile.sim import Simulator
from qcompile.stages import quantize
from qcompile.zoo import build_model
from tests.backends.helpers import random_inputs


def dscnn(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Depthwise-separable CNN: 3x3 conv 8, depthwise 3x3, pointwise 1x1 16, 2x2 max-pool,
    dense."""
    c, h, w = in_shape

    def block(cin: int, cout: int, k: int, groups: int = 1) -> list[nn.Module]:
        conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False)
        return [conv, nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(c, 8, 3), *block(8, 8, 3, groups=8), *block(8, 16, 1),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * (h // 2) * (w // 2), num_classes),
    )  # fmt: skip


FULL_BITS = (2, 4, 6)
MODELS = {  # smallest first: a run stopped early has the most rows
    "jet_mlp": (lambda s, k: build_model("jet_mlp", s, k), (16, 1, 1), 5),
    "dscnn": (dscnn, (1, 8, 8), 10),
    "lenet": (lambda s, k: build_model("lenet", s, k), (1, 8, 8), 10),
}


def frozen(name: str, bits: int) -> Graph:
    factory, shape, classes = MODELS[name]
    torch.manual_seed(0)
    q = quantize(factory(shape, classes), wbits=bits, abits=bits, first_last_wbits="same")
    q.train()
    with torch.no_grad():
        q(torch.randn(64, *shape))
    return freeze_model(q.eval(), shape, name)


def folded_cost(graph: Graph) -> float:
    """da4ml's cost of the model with each layer's multiplier folded into its weights."""
    from qcompile.backends.rtl.trace import exact_decimals, trace_pipeline

    with exact_decimals(graph):
        return float(trace_pipeline(graph, load_target("rtl").latency_cutoff, fold=True).cost)


def run_one(name: str, bits: int, sim: bool, work: Path) -> dict[str, Any]:
    graph = frozen(name, bits)
    row: dict[str, Any] = {"model": name, "bits": bits, "macs": macs(graph)}
    t = time.perf_counter()
    info = deploy(graph, load_target("zcu104"), work / f"{name}{bits}_fpga")
    row["fpga_export_s"] = round(time.perf_counter() - t, 2)
    est = info["estimate"]["total"]
    row.update(hls_lut=est["lut"], hls_dsp=est["dsp"], hls_latency_cycles=est["latency_cycles"])
    t = time.perf_counter()
    try:
        rtl = deploy(graph, load_target("rtl"), work / f"{name}{bits}_rtl")
    except QCompileError as e:  # a size or solve-time limit: say so in the table
        row["rtl_export_s"] = round(time.perf_counter() - t, 2)
        row["rtl_error"] = str(e)
        print(json.dumps(row), flush=True)
        return row
    row["rtl_export_s"] = round(time.perf_counter() - t, 2)
    row.update(rtl_lut=rtl["estimate"]["lut"], rtl_ff=rtl["estimate"]["ff"])
    row["rtl_latency_cycles"] = rtl["estimate"]["latency_cycles"]
    t = time.perf_counter()
    row["da_lut"] = round(folded_cost(graph))
    row["da_s"] = round(time.perf_counter() - t, 2)
    row["da_over_rtl"] = round(row["da_lut"] / row["rtl_lut"], 2)
    if sim:
        runner = RtlRunner(work / f"{name}{bits}_rtl", graph, rtl)
        x = random_inputs(graph, 1000)
        t = time.perf_counter()
        got = runner(x)
        row["verilator_build_s"] = round(runner.build_s, 1)
        row["verilator_sim_s"] = round(time.perf_counter() - t, 2)
        row["exact"] = bool(np.array_equal(got, Simulator(graph).run(x)[graph.outputs[0]]))
        runner.close()
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("model", "model"), ("bits", "bits"), ("macs", "MACs"), ("fpga_export_s", "fpga export s"),
        ("hls_lut", "hls est LUT"), ("hls_dsp", "hls DSP"), ("rtl_export_s", "rtl export s"),
        ("rtl_lut", "rtl LUT"), ("rtl_ff", "rtl FF"), ("rtl_latency_cycles", "rtl cycles"),
        ("da_lut", "DA LUT"), ("da_over_rtl", "DA / rtl"),
        ("verilator_build_s", "Verilator build s"), ("verilator_sim_s", "sim 1000 s"),
        ("exact", "exact"),
    ]  # fmt: skip
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(k, "-")) for k, _ in cols) + " |" for r in rows]
    errors = [
        f"- {r['model']} at {r['bits']} bits: {r['rtl_error']}" for r in rows if "rtl_error" in r
    ]
    return "\n".join(out + (["", *errors] if errors else []))


def not_run(done: list[tuple[str, int]], no_sim: bool) -> str:
    """A line naming what the full run (every model at 2, 4 and 6 bits, simulated) has and
    this run has not (yet), so a partial table says so."""
    missing = [f"{m} at {b} bits" for m in MODELS for b in FULL_BITS if (m, b) not in done]
    notes = [f"Not run: {', '.join(missing)}"] if missing else []
    if no_sim:
        notes.append("Verilator not run (--no-sim)")
    return "\n\n" + "; ".join(notes) + "." if notes else ""


def section(rows: list[dict[str, Any]], total: float, no_sim: bool) -> tuple[str, str]:
    """The BENCHMARKS.md section (ending with the figures as JSON) and the figures' line."""
    done = [(r["model"], r["bits"]) for r in rows]
    body = (
        "## FPGA without a vendor tool: estimate, da4ml RTL, Verilator\n\n"
        f"`python -m bench.fpga_rtl` ({machine()}; {total} s in all). Untrained models at "
        "W=A=bits on every layer; `hls est`: the hls4ml project's estimate (zcu104, Latency, "
        "unrolled); `rtl`: da4ml's cost of qcompile's Verilog; `DA`: da4ml's cost of the same "
        "model with each channel's multiplier folded into its fixed-point weights, as "
        "hls4ml's `distributed_arithmetic` strategy would take the layer (solved in the "
        "same run); `exact`: Verilator output == simulator on 1000 inputs. Estimates, not "
        "place-and-route results.\n\n" + table(rows) + not_run(done, no_sim)
    )
    figures = json.dumps({"rows": rows, "total_s": total})
    return f"{body}\n\nFigures (the run's last line):\n\n```json\n{figures}\n```", figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, nargs="+", default=list(FULL_BITS))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--no-sim", action="store_true", help="skip the Verilator build and run")
    a = p.parse_args()
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for m in a.models:
            for b in a.bits:
                rows.append(run_one(m, b, not a.no_sim, Path(d)))
                # after every row: a run stopped early still leaves a true, partial section
                text, figures = section(rows, round(time.perf_counter() - t0, 1), a.no_sim)
                write_section("fpga_rtl", text)
    print(text.split("\n\nFigures")[0])
    print(figures)


if __name__ == "__main__":
    main()
