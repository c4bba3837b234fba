"""Backends by artifact kind: each names its pass pipeline, its export and its runner.

The CLI and ``simulate`` look backends up here and never switch on target names. Exports and
runners are named as ``"module:function"`` and imported on first use, so that looking a
backend up costs nothing (TVM and hls4ml take seconds to import).

- ``export(graph, qir_bytes, out, target, force) -> Manifest``: writes the artifact directory
  for ``graph`` already lowered by the backend's pipeline; ``qir_bytes`` is the .qir exactly
  as the user's file holds it, copied into the artifact.
- ``runner(artifact, graph, manifest) -> (implementations, extra figures)``: what
  ``simulate`` runs of an artifact, each implementation a function from integer inputs to
  integer outputs.
- ``describe(manifest) -> str``: what ``export`` prints (its first line in parentheses after
  the paths; an estimate or a warning on lines of their own).
- ``preview(graph, target) -> (estimate, text)``: the resource and latency estimate an export
  would hold (typed: ``estimates.FpgaEstimate``; ``as_dict`` is its JSON), without
  exporting (``inspect --target``); empty where a backend has none before export (rtl:
  da4ml's cost is known only once it has solved the model).

:func:`deploy` is the one place an export happens: pipeline once, then the backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.errors import QCompileError, unknown_choice
from qcompile.ir.graph import Graph
from qcompile.passes import pipelines
from qcompile.passes.pipelines import Pass

Impl = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Backend:
    kind: str
    summary: str
    pipeline: tuple[Pass, ...]
    export: str
    runner: str
    describe: str
    preview: str = ""

    def call(self, what: str, *args: Any) -> Any:
        """Import and call the backend's ``what`` (export, runner, describe or preview)."""
        module, _, name = getattr(self, what).partition(":")
        return getattr(importlib.import_module(module), name)(*args)


_TVM = "qcompile.backends.tvm.export"
BACKENDS: dict[str, Backend] = {
    b.kind: b
    for b in (
        Backend(
            "fpga",
            "an hls4ml project (Vitis/Vivado HLS) of qcompile's integer kernels; C simulation "
            "with g++",
            pipelines.FPGA,
            "qcompile.backends.hls4ml.export:export_fpga",
            "qcompile.backends.hls4ml.export:runners",
            "qcompile.backends.hls4ml.export:describe",
            "qcompile.backends.hls4ml.export:preview",
        ),
        Backend(
            "rtl",
            "fully parallel Verilog of the whole model from da4ml (no vendor tool), with "
            "Vivado/Quartus scripts; simulated under Verilator",
            pipelines.RTL,
            "qcompile.backends.rtl.export:export_rtl",
            "qcompile.backends.rtl.export:runners",
            "qcompile.backends.rtl.export:describe",
        ),
        *(
            Backend(
                kind,
                summary,
                pipelines.TVM,
                f"{_TVM}:export_tvm",
                f"{_TVM}:runners",
                f"{_TVM}:describe_manifest",
            )
            for kind, summary in (
                ("cpu", "a host library compiled by Apache TVM (llvm), run through its runtime"),
                ("arm", "an aarch64 object and a static runner (TVM llvm), run under qemu"),
                ("gpu", "CUDA source, PTX and a TVM library, run where a CUDA device is"),
            )
        ),
    )
}


def backend(kind: str) -> Backend:
    """The backend of artifact kind ``kind``."""
    if kind not in BACKENDS:
        raise unknown_choice("artifact kind", kind, BACKENDS)
    return BACKENDS[kind]


def artifact_kind(target: Any) -> str:
    """The kind of artifact a target profile builds (an aarch64 CPU profile builds ``arm``)."""
    kind = str(target.kind)
    if kind == "cpu" and str(getattr(target, "mtriple", "")).startswith("aarch64"):
        return "arm"
    return kind


def deploy(
    graph: Graph, target: Any, out: Path, force: bool = False, qir_bytes: bytes | None = None
) -> Any:
    """Export ``graph`` (verified, as loaded from ``qir_bytes``: the .qir copied into the
    artifact; serialised from ``graph`` when not given) for ``target`` into ``out``; the
    artifact's manifest."""
    from qcompile.ir import qir
    from qcompile.passes import run_pipeline

    b = backend(artifact_kind(target))
    if qir_bytes is None:
        qir_bytes = qir.to_onnx(graph).SerializeToString()
    lowered = run_pipeline(graph, b.pipeline) if b.pipeline else graph
    return b.call("export", lowered, qir_bytes, Path(out), target, force)


def runners(artifact: Path, graph: Graph, info: dict[str, Any]) -> tuple[dict[str, Impl], dict]:
    """The implementations ``simulate`` runs of an artifact (checked by ``open_artifact``)."""
    kind = info["target"]
    if kind not in BACKENDS:
        raise QCompileError(f"{artifact}: artifacts for target {kind!r} are not supported")
    return BACKENDS[kind].call("runner", Path(artifact), graph, info)


def describe(info: Any) -> str:
    return backend(info["target"]).call("describe", info)


def preview(graph: Graph, target: Any) -> tuple[Any, str] | None:
    """The estimate an export of ``graph`` for ``target`` would hold (after the backend's
    pipeline) and its text, or None where the backend has none before export."""
    from qcompile.passes import run_pipeline

    b = backend(artifact_kind(target))
    if not b.preview:
        return None
    return b.call("preview", run_pipeline(graph, b.pipeline) if b.pipeline else graph, target)
