"""The fpga backend's export (the hls4ml project, the .qir, a manifest, a README), its runner
(the C simulation) and its export line (the registry's entries for them)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.backends.artifact import write_artifact
from qcompile.backends.estimates import FpgaEstimate
from qcompile.backends.hls4ml.context import TEMPLATES
from qcompile.backends.hls4ml.estimate import estimate
from qcompile.backends.hls4ml.fit import estimate_table
from qcompile.backends.hls4ml.project import HlsOptions, build
from qcompile.backends.hls4ml.reuse import choose_reuse
from qcompile.backends.manifest import Manifest
from qcompile.backends.targets import FpgaTarget
from qcompile.ir.graph import Graph


def options(target: FpgaTarget, graph: Graph) -> HlsOptions:
    """The project options of ``target`` for ``graph`` (lowered by the fpga pipeline): with
    ``reuse_factor = "auto"``, a reuse factor per layer chosen to fit the part (reuse.py)."""
    opts = HlsOptions(
        backend=target.backend,
        part=target.part,
        clock_period=target.clock_period,
        io_type=target.io_type,
        strategy=target.strategy,
        reuse_factor=1 if target.reuse_factor == "auto" else int(target.reuse_factor),
    )
    return choose_reuse(graph, opts) if target.reuse_factor == "auto" else opts


def export_fpga(
    graph: Graph, qir_bytes: bytes, out: Path, target: FpgaTarget, force: bool = False
) -> Manifest:
    """Write the artifact directory ``out`` for ``graph`` (lowered by the fpga pipeline:
    adds of at most three inputs); returns its manifest."""
    profile = {
        "name": target.name,
        "part": target.part,
        "clock_period": target.clock_period,
        "backend": target.backend,
        "strategy": target.strategy,
        "reuse_factor": target.reuse_factor,
        "io_type": target.io_type,
    }
    opts = options(target, graph)
    # resources and latency from a model of the generated kernels (estimate.py)
    info = Manifest.of(graph, qir_bytes, "fpga", profile, estimate=estimate(graph, opts))
    info = info.with_details(
        project="myproject",
        estimates={
            "note": "estimates from the IR, not from synthesis",
            "weight_mem_bits": info.weight_mem_bits,
            "hls4ml_default_bits": info.hls4ml_default_bits,
        },
    )

    def fill(tmp: Path) -> None:
        model = build(graph, tmp, opts)
        with contextlib.redirect_stdout(io.StringIO()):
            model.write()
        _scrub_paths(tmp, out)
        info.write(tmp, qir_bytes)
        readme = (TEMPLATES / "README.md.tpl").read_text()
        (tmp / "README.md").write_text(
            readme.format(model=graph.name, **profile, bits=info.avg_weight_bits)
        )

    write_artifact(out, force, fill)
    return info


def describe(info: Any) -> str:
    """What ``export`` prints for an fpga artifact: the project, its weight memory and the
    estimate's totals (a warning line when the design does not fit the part)."""
    p = info["profile"]
    est = info["estimate"]
    t = est["total"]
    line = (
        f"hls4ml {p['backend']} project for {p['part']}, {p['strategy']}, reuse factor "
        f"{reuse_text(est)}; weight memory {info['weight_mem_bits']} bits vs "
        f"{info['hls4ml_default_bits']} at hls4ml's default ap_fixed<16,6>\n"
        f"estimate: {t['lut']} LUT, {t['ff']} FF, {t['dsp']} DSP, {t['bram18']} BRAM18; "
        f"latency {t['latency_cycles']} cycles ({t['latency_ns']} ns), II {t['ii_cycles']} "
        f"(`qcompile inspect MODEL --target {p['name']}` for each layer)"
    )
    return line + (f"\nwarning: {est['warning']}" if est["warning"] else "")


def reuse_text(est: Any) -> str:
    """The reuse factor as the export line gives it: the model's, or for ``auto`` each
    layer's that is above 1.

    >>> reuse_text({"reuse_factor": "auto", "layers": [{"name": "fc", "reuse": 4},
    ...            {"name": "relu", "reuse": 1}]})
    'auto (fc 4, others 1)'
    """
    if est["reuse_factor"] != "auto":
        return str(est["reuse_factor"])
    raised = [f"{r['name']} {r['reuse']}" for r in est["layers"] if r["reuse"] > 1]
    if not raised:
        return "auto (1 for every layer)"
    rest = ", others 1" if len(raised) < len(est["layers"]) else ""
    return f"auto ({', '.join(raised)}{rest})"


def preview(graph: Graph, target: FpgaTarget) -> tuple[FpgaEstimate, str]:
    """The estimate ``export`` would write for ``graph`` (lowered by the fpga pipeline), and
    its text table, without building the project (``inspect --target``)."""
    e = estimate(graph, options(target, graph))
    return e, f"{target.name} ({target.part}):\n{estimate_table(e)}"


def runners(
    artifact: Path, graph: Graph, info: dict[str, Any]
) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], dict[str, Any]]:
    """The project's C simulation, built with g++ and run in a worker process."""
    from qcompile.backends.hls4ml.csim import CSim

    csim = CSim(artifact, graph, str(info.get("project", "myproject")))
    extra = {"artifact": str(artifact), "target": "fpga", "build_s": round(csim.build_s, 2)}
    return {"fpga_csim": csim}, extra


def _scrub_paths(tmp: Path, out: Path) -> None:
    """hls4ml records its output directory; name the final one, not the temporary one."""
    for f in (tmp / "hls4ml_config.yml",):
        if f.is_file():
            f.write_text(f.read_text().replace(str(tmp), str(Path(out).resolve())))
