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
from qcompile.backends.hls4ml.context import TEMPLATES
from qcompile.backends.hls4ml.estimate import estimate, estimate_table
from qcompile.backends.hls4ml.project import HlsOptions, build
from qcompile.backends.manifest import Manifest
from qcompile.backends.targets import FpgaTarget
from qcompile.ir.graph import Graph


def options(target: FpgaTarget) -> HlsOptions:
    return HlsOptions(
        backend=target.backend,
        part=target.part,
        clock_period=target.clock_period,
        io_type=target.io_type,
        strategy=target.strategy,
        reuse_factor=target.reuse_factor,
    )


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
    # resources and latency from a model of the generated kernels (estimate.py)
    info = Manifest.of(graph, qir_bytes, "fpga", profile, estimate=estimate(graph, options(target)))
    info = info.with_details(
        project="myproject",
        estimates={
            "note": "estimates from the IR, not from synthesis",
            "weight_mem_bits": info.weight_mem_bits,
            "hls4ml_default_bits": info.hls4ml_default_bits,
        },
    )

    def fill(tmp: Path) -> None:
        model = build(graph, tmp, options(target))
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
        f"{p['reuse_factor']}; weight memory {info['weight_mem_bits']} bits vs "
        f"{info['hls4ml_default_bits']} at hls4ml's default ap_fixed<16,6>\n"
        f"estimate: {t['lut']} LUT, {t['ff']} FF, {t['dsp']} DSP, {t['bram18']} BRAM18; "
        f"latency {t['latency_cycles']} cycles ({t['latency_ns']} ns), II {t['ii_cycles']} "
        f"(`qcompile inspect MODEL --target {p['name']}` for each layer)"
    )
    return line + (f"\nwarning: {est['warning']}" if est["warning"] else "")


def preview(graph: Graph, target: FpgaTarget) -> tuple[dict[str, Any], str]:
    """The estimate ``export`` would write for ``graph`` (lowered by the fpga pipeline), and
    its text table, without building the project (``inspect --target``)."""
    e = estimate(graph, options(target))
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
