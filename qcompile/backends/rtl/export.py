"""`qcompile export --target rtl`: fully parallel Verilog of the whole model from da4ml, the
.qir, Vivado/Quartus project scripts, a manifest with da4ml's cost estimate, a README; its
runner and export line (the registry's entries for them).

The Verilator build is not part of the export (it needs seconds to minutes and only the
simulation uses it): ``qcompile simulate DIR`` builds ``sim/`` in a copy of the artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.backends.artifact import write_artifact
from qcompile.backends.estimates import RtlEstimate
from qcompile.backends.manifest import Manifest
from qcompile.backends.rtl.build import TOP, solve_and_write
from qcompile.backends.rtl.trace import SUPPORTED
from qcompile.backends.targets import RtlTarget
from qcompile.errors import QCompileError
from qcompile.ir import qir
from qcompile.ir.graph import Graph

TEMPLATES = Path(__file__).parent / "templates"
IO_BITS = 32  # the Verilator binder moves each input and output in an int32


def check_graph(graph: Graph, target: RtlTarget) -> None:
    """Refuse, before any work, what the RTL target does not take: an op it has no lowering
    for, a model over the profile's size limit, I/O wider than the simulator's 32 bits."""
    for n in graph.nodes:
        if not isinstance(n.op, SUPPORTED):
            raise QCompileError(
                f"node {n.name}: op {n.kind} has no rtl lowering (rtl takes dense, conv2d, "
                "add, clip, flatten, maxpool, avgpool)"
            )
    if len(graph.outputs) != 1:
        raise QCompileError("the rtl target needs a graph with exactly one output")
    n_mac = graph.macs()  # each multiply becomes its own logic here
    if n_mac > target.max_macs:
        raise QCompileError(
            f"{graph.name} needs {n_mac} multiplies per inference, over the rtl profile's "
            f"max_macs = {target.max_macs} (a fully parallel design makes each one logic); "
            "export it with --target fpga (HLS shares multipliers) or raise max_macs in your "
            "own profile"
        )
    out = graph.tensors()[graph.outputs[0]].qtype
    for what, q in (("input", graph.input.qtype), ("output", out)):
        if q.bits > IO_BITS:
            raise QCompileError(
                f"the model's {what} is {q.bits} bits; the rtl simulation moves at most "
                f"{IO_BITS}-bit values"
            )


def export_rtl(
    graph: Graph, qir_bytes: bytes, out: Path, target: RtlTarget, force: bool = False
) -> Manifest:
    """Write the artifact directory ``out`` for ``graph`` (lowered by the rtl pipeline);
    returns its manifest, whose ``estimate`` is da4ml's cost of the Verilog."""
    from importlib.metadata import version

    check_graph(graph, target)
    profile = {
        "name": target.name,
        "part": target.part,
        "clock_period": target.clock_period,
        "latency_cutoff": target.latency_cutoff,
    }
    # the solver (a child process) traces the graph it is given: the lowered one, not the
    # user's .qir that the artifact keeps
    lowered = qir.to_onnx(graph).SerializeToString()
    made: list[Manifest] = []

    def fill(tmp: Path) -> None:
        figs = solve_and_write(
            lowered, tmp, target.part, target.clock_period, target.latency_cutoff,
            target.max_solve_s,
        )  # fmt: skip
        for name in ("build_vivado_prj.tcl", "build_quartus_prj.tcl"):  # ours replace these
            (tmp / name).unlink(missing_ok=True)
        info = Manifest.of(
            graph, qir_bytes, "rtl", profile, estimate=cost(figs, target.clock_period),
            project=TOP, da4ml=version("da4ml"), ops=sorted({n.kind for n in graph.nodes}),
            macs=graph.macs(), io={"in_kif": figs["in_kif"], "out_kif": figs["out_kif"]},
        )  # fmt: skip
        fields = {
            "profile": target.name, "part": target.part, "clock_period": target.clock_period,
            "top": TOP, "model": graph.name, "da4ml": info["da4ml"],
            "latency": figs["latency_cycles"],
        }  # fmt: skip
        for src, dst in (("vivado.tcl", "build_vivado.tcl"), ("quartus.tcl", "build_quartus.tcl")):
            (tmp / dst).write_text((TEMPLATES / src).read_text().format(**fields))
        (tmp / "README.md").write_text((TEMPLATES / "README.md.tpl").read_text().format(**fields))
        info.write(tmp, qir_bytes)
        made.append(info)

    write_artifact(out, force, fill)
    return made[0]


def cost(figs: dict[str, Any], clock_period: float) -> RtlEstimate:
    """The manifest's ``estimate`` from da4ml's figures for the solved model."""
    cycles = figs["latency_cycles"]
    return RtlEstimate(
        note="da4ml's estimate, not a place-and-route report: LUT = adder bits of its "
        "shift-and-add graph, FF = pipeline register bits; constant multiplies use no DSP",
        lut=round(figs["cost"]),
        ff=figs["reg_bits"],
        dsp=0,
        bram18=0,
        ii_cycles=1,
        latency_cycles=cycles,
        latency_ns=round(cycles * clock_period, 3),
        solve_s=figs["solve_s"],
    )


def describe(info: Any) -> str:
    """What ``export`` prints for an rtl artifact."""
    est = info["estimate"]
    return (
        f"Verilog by da4ml for {info['profile']['part']}: ~{est['lut']} LUT, {est['ff']} FF, "
        f"{est['latency_cycles']} cycles at II=1, solved in {est['solve_s']} s; estimates, "
        "not place-and-route"
    )


def runners(
    artifact: Path, graph: Graph, info: dict[str, Any]
) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], dict[str, Any]]:
    """The Verilog built by Verilator and run in a worker process."""
    from qcompile.backends.rtl.runner import RtlRunner

    rtl = RtlRunner(artifact, graph, info)
    extra = {"artifact": str(artifact), "target": "rtl", "build_s": round(rtl.build_s, 2)}
    return {"rtl_verilator": rtl}, extra
