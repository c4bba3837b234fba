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

Sizes are kept small: da4ml's solve time grows steeply with layer size (DESIGN.md: 256x128
at 4 bits took 100-540 s; the DA baseline of dscnn at 4 bits 652 s), lenet is the 8x8 digits
variant (35,880 multiplies, under the rtl profile's max_macs of 40,000, so it is attempted;
an export past the profile's max_solve_s, or ``--rtl-solve-s``, is refused and the row
records that one line), the CNN works on 8x8 inputs. The DA baseline is solved in a child
process stopped after ``--da-solve-s`` (default 300 s): its cell then says "not solved
within N s". ``--add`` keeps the rows the section already holds, so the table can be filled
in short runs. Untrained models (random weights, calibrated activations): costs depend on
the weight values, not on accuracy.

    python -m bench.fpga_rtl [--models jet_mlp dscnn lenet] [--bits 2 4 6] [--no-sim]
                             [--da-solve-s 300] [--rtl-solve-s S] [--add]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.report import BENCHMARKS, machine, write_section
from qcompile.backends.registry import deploy
from qcompile.backends.rtl.build import SolveTimeout, in_child
from qcompile.backends.rtl.runner import RtlRunner
from qcompile.backends.targets import load_target
from qcompile.errors import QCompileError
from qcompile.freeze import freeze_model
from qcompile.ir import qir
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


def _folded_cost(qir_bytes: bytes, cutoff: int, q: Any) -> None:
    """The solver child's side of :func:`folded_cost`: its answer on ``q``."""
    try:
        from qcompile.backends.rtl.trace import exact_decimals, trace_pipeline

        graph = qir.loads(qir_bytes)
        with exact_decimals(graph):
            q.put({"cost": float(trace_pipeline(graph, cutoff, fold=True).cost)})
    except BaseException as e:  # the parent records it in the row
        q.put({"error": f"{type(e).__name__}: {e}"})


def folded_cost(graph: Graph, limit_s: float) -> tuple[float | None, str | None]:
    """da4ml's cost of the model with each layer's multiplier folded into its weights, solved
    in a child process stopped after ``limit_s`` (the compiled solver cannot be interrupted
    here, and its time grows steeply: dscnn at 4 bits took 652 s): (cost, None), or (None,
    why not)."""
    blob = qir.to_onnx(graph).SerializeToString()
    try:
        r = in_child(_folded_cost, (blob, load_target("rtl").latency_cutoff), limit_s)
    except SolveTimeout:
        return None, f"not solved within {limit_s:g} s"
    except QCompileError as e:  # the child died without answering
        return None, str(e)
    return (r["cost"], None) if "cost" in r else (None, f"da4ml failed: {r['error']}"[:300])


def run_one(
    name: str, bits: int, sim: bool, work: Path, da_limit_s: float, rtl_limit_s: float | None
) -> dict[str, Any]:
    graph = frozen(name, bits)
    row: dict[str, Any] = {"model": name, "bits": bits, "macs": graph.macs()}
    t = time.perf_counter()
    info = deploy(graph, load_target("zcu104"), work / f"{name}{bits}_fpga")
    row["fpga_export_s"] = round(time.perf_counter() - t, 2)
    est = info["estimate"]["total"]
    row.update(hls_lut=est["lut"], hls_dsp=est["dsp"], hls_latency_cycles=est["latency_cycles"])
    t = time.perf_counter()
    target = load_target("rtl")
    if rtl_limit_s is not None:
        target = replace(target, max_solve_s=rtl_limit_s)
    try:
        rtl = deploy(graph, target, work / f"{name}{bits}_rtl")
    except QCompileError as e:  # a size or solve-time limit: say so in the table
        row["rtl_export_s"] = round(time.perf_counter() - t, 2)
        row["rtl_error"] = str(e)
        print(json.dumps(row), flush=True)
        return row
    row["rtl_export_s"] = round(time.perf_counter() - t, 2)
    row.update(rtl_lut=rtl["estimate"]["lut"], rtl_ff=rtl["estimate"]["ff"])
    row["rtl_latency_cycles"] = rtl["estimate"]["latency_cycles"]
    t = time.perf_counter()
    da, why = folded_cost(graph, da_limit_s)
    row["da_s"] = round(time.perf_counter() - t, 2)
    if da is None:
        row["da_error"] = why
    else:
        row["da_lut"] = round(da)
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
    out += ["| " + " | ".join(cell(r, k) for k, _ in cols) + " |" for r in rows]
    errors = [
        f"- {r['model']} at {r['bits']} bits: {r['rtl_error']}" for r in rows if "rtl_error" in r
    ]
    return "\n".join(out + (["", *errors] if errors else []))


def cell(row: dict[str, Any], key: str) -> str:
    """A table cell: the figure, why the DA baseline has none, or "-"."""
    if key == "da_lut" and key not in row and "da_error" in row:
        return str(row["da_error"])
    return str(row.get(key, "-"))


def not_run(done: list[tuple[str, int]], no_sim: bool) -> str:
    """A line naming what the full run (every model at 2, 4 and 6 bits, simulated) has and
    this run has not (yet), so a partial table says so."""
    missing = [f"{m} at {b} bits" for m in MODELS for b in FULL_BITS if (m, b) not in done]
    notes = [f"Not run: {', '.join(missing)}"] if missing else []
    if no_sim:
        notes.append("Verilator not run (--no-sim) for the rows without its figures")
    return "\n\n" + "; ".join(notes) + "." if notes else ""


def section(rows: list[dict[str, Any]], total: float, no_sim: bool, a: Any) -> tuple[str, str]:
    """The BENCHMARKS.md section (ending with the figures as JSON) and the figures' line."""
    done = [(r["model"], r["bits"]) for r in rows]
    runs = "rows from more than one run (`--add`), each row's figures from one; " if a.add else ""
    rtl_limit = "the rtl profile's" if a.rtl_solve_s is None else f"{a.rtl_solve_s:g} s"
    body = (
        "## FPGA without a vendor tool: estimate, da4ml RTL, Verilator\n\n"
        f"`python -m bench.fpga_rtl` ({machine()}; {runs}{total} s in all). Untrained models "
        "at W=A=bits on every layer; `hls est`: the hls4ml project's estimate (zcu104, "
        "Latency, unrolled); `rtl`: da4ml's cost of qcompile's Verilog (solve limit: "
        f"{rtl_limit}); `DA`: da4ml's cost of the same model with each channel's multiplier "
        "folded into its fixed-point weights, as hls4ml's `distributed_arithmetic` strategy "
        "would take the layer (solved in the same run, stopped after "
        f"{a.da_solve_s:g} s: `--da-solve-s`); `exact`: Verilator output == simulator on "
        "1000 inputs. Estimates, not place-and-route results.\n\n"
        + table(rows)
        + not_run(done, no_sim)
    )
    figures = json.dumps({"rows": rows, "total_s": total})
    return f"{body}\n\nFigures (the run's last line):\n\n```json\n{figures}\n```", figures


def previous() -> tuple[list[dict[str, Any]], float]:
    """The rows and total time BENCHMARKS.md's fpga_rtl section holds (``--add``)."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    start, end = "<!-- bench:fpga_rtl -->", "<!-- /bench:fpga_rtl -->"
    if start not in text:
        return [], 0.0
    block = text.split(start, 1)[1].split(end, 1)[0]
    if "```json\n" not in block:
        return [], 0.0
    figures = json.loads(block.split("```json\n", 1)[1].split("\n```", 1)[0])
    return list(figures["rows"]), float(figures["total_s"])


def merged(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` rows with ``new`` ones added, a new row replacing an old one of the same model
    and bits; in the order of MODELS and bits."""
    by = {(r["model"], r["bits"]): r for r in [*old, *new]}
    order = {m: i for i, m in enumerate(MODELS)}
    return [by[k] for k in sorted(by, key=lambda k: (order.get(k[0], len(order)), k[1]))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, nargs="+", default=list(FULL_BITS))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--no-sim", action="store_true", help="skip the Verilator build and run")
    p.add_argument(
        "--da-solve-s", type=float, default=300.0,
        help="stop da4ml's DA baseline solve after this many seconds; the row then says "
        "'not solved within N s' (default 300)",
    )  # fmt: skip
    p.add_argument(
        "--rtl-solve-s", type=float, default=None,
        help="the rtl export's solve limit (default: the rtl profile's max_solve_s); past it "
        "the row records the export's one-line refusal",
    )  # fmt: skip
    p.add_argument(
        "--add", action="store_true",
        help="keep the rows BENCHMARKS.md's section holds, adding (or replacing) this run's: "
        "run the table in short pieces",
    )  # fmt: skip
    a = p.parse_args()
    t0 = time.perf_counter()
    old, old_s = previous() if a.add else ([], 0.0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for m in a.models:
            for b in a.bits:
                rows.append(run_one(m, b, not a.no_sim, Path(d), a.da_solve_s, a.rtl_solve_s))
                # after every row: a run stopped early still leaves a true, partial section
                total = round(old_s + time.perf_counter() - t0, 1)
                text, figures = section(merged(old, rows), total, a.no_sim, a)
                write_section("fpga_rtl", text)
    print(text.split("\n\nFigures")[0])
    print(figures)


if __name__ == "__main__":
    main()
