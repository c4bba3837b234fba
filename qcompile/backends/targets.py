"""Deployment target profiles: TOML files in the repository's ``targets/`` folder.

>>> load_target("fpga").name
'pynq-z2'
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from qcompile.errors import QCompileError, unknown_choice

TARGETS = Path(__file__).resolve().parents[2] / "targets"
DEFAULTS = {"fpga": "pynq-z2", "cpu": "host", "arm": "rpi4", "gpu": "h100"}
PLANNED: tuple[str, ...] = ()
STRATEGIES = ("Latency", "Resource")
HLS_BACKENDS = ("Vitis", "Vivado")
IO_TYPES = ("io_parallel", "io_stream")


@dataclass(frozen=True)
class FpgaTarget:
    name: str
    part: str
    clock_period: float = 10.0
    backend: str = "Vitis"
    strategy: str = "Latency"
    reuse_factor: int = 1
    io_type: str = "io_parallel"
    kind: str = "fpga"

    def __post_init__(self) -> None:
        if self.backend not in HLS_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(HLS_BACKENDS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        if not isinstance(self.reuse_factor, int) or self.reuse_factor < 1:
            raise ValueError("reuse_factor must be an integer >= 1")
        if not self.clock_period > 0:
            raise ValueError("clock_period must be > 0 (ns)")
        if self.io_type not in IO_TYPES:
            raise ValueError(f"io_type must be one of {', '.join(IO_TYPES)}")


@dataclass(frozen=True)
class CpuTarget:
    """A CPU compiled by TVM's llvm backend: ``mtriple``/``mcpu``/``mattr`` as LLVM takes them.

    Empty ``mtriple`` and ``mcpu`` mean this host, compiled for the CPU LLVM detects here (its
    vector units: the generic x86-64 default would stop at SSE2)."""

    name: str
    mtriple: str = ""
    mcpu: str = ""
    mattr: tuple[str, ...] = ()
    kind: str = "cpu"

    def tvm_target(self) -> dict:
        t: dict = {"kind": "llvm"}
        if self.mtriple:
            t["mtriple"] = self.mtriple
        if self.mcpu:
            t["mcpu"] = self.mcpu
        elif not self.mtriple:
            from tvm.target import codegen

            t["mcpu"] = str(codegen.llvm_get_system_cpu())
        if self.mattr:
            t["mattr"] = list(self.mattr)
        return t


@dataclass(frozen=True)
class GpuTarget:
    """An NVIDIA GPU: TVM's CUDA codegen for ``arch`` (e.g. sm_90); PTX by the machine's nvcc."""

    name: str
    arch: str = "sm_90"
    kind: str = "gpu"

    def __post_init__(self) -> None:
        if not (self.arch.startswith("sm_") and self.arch[3:].isdigit()):
            raise ValueError(f"arch must look like sm_90, got {self.arch!r}")

    def tvm_target(self) -> dict:
        return {"kind": "cuda", "arch": self.arch}


KINDS = {"fpga": FpgaTarget, "cpu": CpuTarget, "gpu": GpuTarget}


def available() -> list[str]:
    return sorted(p.stem for p in TARGETS.glob("*.toml"))


def load_target(spec: str) -> FpgaTarget | CpuTarget | GpuTarget:
    """``fpga`` (the default profile), a profile name, or a path to a TOML file."""
    if spec in PLANNED:
        raise QCompileError(
            f"--target {spec}: the TVM gpu target is not in this version; "
            "available: fpga, cpu, arm, " + ", ".join(available())
        )
    path = Path(spec) if spec.endswith(".toml") else TARGETS / f"{DEFAULTS.get(spec, spec)}.toml"
    if not path.is_file():
        if spec.endswith(".toml"):
            raise QCompileError(f"--target {spec}: no such file")
        raise unknown_choice("target", spec, ["fpga", "cpu", "arm", "gpu", *available()])
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise QCompileError(f"target file {path}: {e}") from None
    cls = KINDS.get(raw.get("kind"))
    if cls is None:
        raise QCompileError(
            f"target file {path}: kind {raw.get('kind')!r} is not supported in this version "
            f"({' or '.join(KINDS)})"
        )
    known = {f.name for f in fields(cls)} - {"name"}
    for key in raw:
        if key not in known:
            raise QCompileError(
                f"target file {path}: unknown key '{key}'; valid: " + ", ".join(sorted(known))
            )
    try:
        if "mattr" in raw:
            raw["mattr"] = tuple(raw["mattr"])
        return cls(name=path.stem, **raw)
    except (TypeError, ValueError) as e:
        raise QCompileError(f"target file {path}: {e}") from None
