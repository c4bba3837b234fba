"""The manifest every backend writes into its artifact (``manifest.json``).

One typed :class:`Manifest` for every backend: the fields every artifact has (which model,
for which target, what it stores) and the backend's own ``details`` (a library and its
parameter order, an HLS project's name, a resource estimate, ...), written flat into one
JSON object. It reads like the mapping it becomes (``m["target"]``, ``{**m}``).

>>> m = Manifest("cpu", {"name": "host"}, "ab" * 32, {"shape": [8]}, [], 120, 2.0,
...              details={"library": "model.so"})
>>> m["library"], m["qir"], sorted(m)[:3]
('model.so', 'model.qir', ['avg_weight_bits', 'created', 'format'])
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcompile.backends.estimates import FpgaEstimate, RtlEstimate
from qcompile.ir.graph import Graph

FORMAT = "qcompile-artifact"
MANIFEST = "manifest.json"
QIR = "model.qir"
LAYER_FIELDS = ("name", "op", "weight_bits", "levels", "level_bits", "weight_mem_bits")


@dataclass(frozen=True)
class Manifest(Mapping[str, Any]):
    """What an artifact holds. ``target`` is the backend kind (fpga, cpu, arm, gpu, ...),
    ``profile`` the target profile it was built for, ``weight_mem_bits`` what it stores of
    the weights (codes, tables, per-channel constants), ``estimate`` the resources and
    latency of a hardware artifact (typed, written as its ``as_dict``: fpga an
    :class:`FpgaEstimate`, qcompile's model of its HLS kernels; rtl an :class:`RtlEstimate`,
    da4ml's cost of its Verilog; None elsewhere), ``details`` the backend's own fields."""

    target: str
    profile: dict[str, Any]
    qir_sha256: str
    input: dict[str, Any]
    layers: list[dict[str, Any]]
    weight_mem_bits: int
    avg_weight_bits: float
    hls4ml_default_bits: int = 0
    estimate: FpgaEstimate | RtlEstimate | None = None
    details: dict[str, Any] = field(default_factory=dict)
    qir: str = QIR
    format: str = FORMAT
    version: int = 1
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @classmethod
    def of(
        cls,
        graph: Graph,
        qir_bytes: bytes,
        target: str,
        profile: dict[str, Any],
        estimate: FpgaEstimate | RtlEstimate | None = None,
        **details: Any,
    ) -> Manifest:
        """The common fields from ``graph`` (what inspect reports) and the .qir's bytes."""
        from qcompile.report import summary

        s = summary(graph)
        layers = [{k: r[k] for k in LAYER_FIELDS} for r in s["layers"] if "weight_bits" in r]
        return cls(
            target,
            profile,
            hashlib.sha256(qir_bytes).hexdigest(),
            s["input"],
            layers,
            s["weight_mem_bits"],
            s["avg_weight_bits"],
            s["hls4ml_default_bits"],
            estimate,
            details,
        )

    def with_details(self, **details: Any) -> Manifest:
        from dataclasses import replace

        return replace(self, details={**self.details, **details})

    def as_dict(self) -> dict[str, Any]:
        common = {
            "format": self.format,
            "version": self.version,
            "target": self.target,
            "profile": self.profile,
            "qir": self.qir,
            "qir_sha256": self.qir_sha256,
            "input": self.input,
            "layers": self.layers,
            "weight_mem_bits": self.weight_mem_bits,
            "avg_weight_bits": self.avg_weight_bits,
            "hls4ml_default_bits": self.hls4ml_default_bits,
            "created": self.created,
        }
        if self.estimate is not None:
            common["estimate"] = self.estimate.as_dict()
        return {**common, **self.details}

    def write(self, directory: Path, qir_bytes: bytes) -> None:
        """``model.qir`` (the file exported, byte for byte) and ``manifest.json``."""
        (directory / self.qir).write_bytes(qir_bytes)
        (directory / MANIFEST).write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())
