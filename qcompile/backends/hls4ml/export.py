"""`qcompile export --target fpga`: write the hls4ml project, the .qir, a manifest, a README."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

from qcompile.backends.artifact import MANIFEST, write_artifact
from qcompile.backends.hls4ml.context import TEMPLATES
from qcompile.backends.hls4ml.estimate import estimate
from qcompile.backends.hls4ml.project import HlsOptions, build
from qcompile.backends.targets import FpgaTarget
from qcompile.ir import qir
from qcompile.ir.graph import Graph
from qcompile.report import summary

QIR = "model.qir"


def options(target: FpgaTarget) -> HlsOptions:
    return HlsOptions(
        backend=target.backend,
        part=target.part,
        clock_period=target.clock_period,
        io_type=target.io_type,
        strategy=target.strategy,
        reuse_factor=target.reuse_factor,
    )


def manifest(graph: Graph, target: FpgaTarget, qir_bytes: bytes) -> dict[str, Any]:
    s = summary(graph)
    keys = ("name", "op", "weight_bits", "levels", "level_bits", "weight_mem_bits")
    layers = [{k: r[k] for k in keys} for r in s["layers"] if "weight_bits" in r]
    return {
        "format": "qcompile-artifact",
        "version": 1,
        "target": target.kind,
        "profile": {
            "name": target.name,
            "part": target.part,
            "clock_period": target.clock_period,
            "backend": target.backend,
            "strategy": target.strategy,
            "reuse_factor": target.reuse_factor,
            "io_type": target.io_type,
        },
        "qir": QIR,
        "qir_sha256": hashlib.sha256(qir_bytes).hexdigest(),
        "project": "myproject",
        "input": s["input"],
        "layers": layers,
        # what the project stores: codes at each channel's width, int8 tables of non-uniform
        # layers, zero points, biases, multipliers and shifts at the widths they need
        "weight_mem_bits": s["weight_mem_bits"],
        "avg_weight_bits": s["avg_weight_bits"],
        "estimates": {
            "note": "estimates from the IR, not from synthesis",
            "weight_mem_bits": s["weight_mem_bits"],
            "hls4ml_default_bits": s["hls4ml_default_bits"],
        },
        # resources and latency from a model of the generated kernels (estimate.py)
        "estimate": estimate(graph, options(target)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def export_fpga(graph: Graph, out: Path, target: FpgaTarget, force: bool = False) -> dict:
    """Write the artifact directory ``out``; returns its manifest."""
    qir_bytes = qir.to_onnx(graph).SerializeToString()
    info = manifest(graph, target, qir_bytes)

    def fill(tmp: Path) -> None:
        model = build(graph, tmp, options(target))
        with contextlib.redirect_stdout(io.StringIO()):
            model.write()
        _scrub_paths(tmp, out)
        (tmp / QIR).write_bytes(qir_bytes)
        (tmp / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
        readme = (TEMPLATES / "README.md.tpl").read_text()
        (tmp / "README.md").write_text(
            readme.format(model=graph.name, **info["profile"], bits=info["avg_weight_bits"])
        )

    write_artifact(out, force, fill)
    return info


def _scrub_paths(tmp: Path, out: Path) -> None:
    """hls4ml records its output directory; name the final one, not the temporary one."""
    for f in (tmp / "hls4ml_config.yml",):
        if f.is_file():
            f.write_text(f.read_text().replace(str(tmp), str(Path(out).resolve())))
