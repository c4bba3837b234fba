"""Deployment target profiles: TOML files in the repository's ``targets/`` folder.

>>> load_target("fpga").name
'pynq-z2'
"""

from __future__ import annotations

import math
import re
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from qcompile.errors import QCompileError, clip, did_you_mean, unknown_choice
from qcompile.fileio import input_file

TARGETS = Path(__file__).resolve().parents[2] / "targets"
DEFAULTS = {"fpga": "pynq-z2", "cpu": "host", "arm": "rpi4", "gpu": "h100", "rtl": "rtl-zcu104"}
STRATEGIES = ("Latency", "Resource")
HLS_BACKENDS = ("Vitis", "Vivado")
IO_TYPES = ("io_parallel", "io_stream")
# Names that reach generated TCL, C and LLVM options: plain tokens only, no quoting to escape.
TOKEN = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
TYPE_NAMES = {
    str: "a string",
    float: "a number",
    int: "an integer",
    tuple[str, ...]: "a list of strings",
    int | str: 'an integer or "auto"',
}
FIELD_HELP = {"part": 'the FPGA part, e.g. part = "xc7z020clg400-1"'}


def _token(key: str, value: str, allow_empty: bool = False) -> None:
    if (value or not allow_empty) and not TOKEN.fullmatch(value):
        raise ValueError(f"{key} {clip(repr(value), 40)} must be 1-64 letters, digits or _ . + -")


@dataclass(frozen=True)
class FpgaTarget:
    """An hls4ml project for ``part``. ``reuse_factor``: an integer R for every layer, or
    ``"auto"`` (the default): one per layer, chosen to fit the part (hls4ml/reuse.py);
    the Latency strategy builds every layer at R = 1."""

    name: str
    part: str
    clock_period: float = 10.0
    backend: str = "Vitis"
    strategy: str = "Latency"
    reuse_factor: int | str = "auto"
    io_type: str = "io_parallel"
    kind: str = "fpga"

    def __post_init__(self) -> None:
        _token("part", self.part)
        if self.backend not in HLS_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(HLS_BACKENDS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        rf = self.reuse_factor
        if rf != "auto" and (not isinstance(rf, int) or isinstance(rf, bool) or rf < 1):
            raise ValueError(f'reuse_factor must be an integer >= 1 or "auto", got {rf!r}')
        if not (math.isfinite(self.clock_period) and self.clock_period > 0):
            raise ValueError(
                f"clock_period must be a finite number > 0 (ns), got {self.clock_period}"
            )
        if self.io_type not in IO_TYPES:
            raise ValueError(f"io_type must be one of {', '.join(IO_TYPES)}")


@dataclass(frozen=True)
class CpuTarget:
    """A CPU compiled by TVM's llvm backend: ``mtriple``/``mcpu``/``mattr`` as LLVM takes them.

    Empty ``mtriple``, ``mcpu`` and ``mattr`` mean this host, compiled for the features its
    CPU really has (``cpu_features.host_target``: a psABI level plus extras, never the CPU's
    name, which can promise features a virtual machine masks). ``path`` is the profile's file,
    for error messages."""

    name: str
    mtriple: str = ""
    mcpu: str = ""
    mattr: tuple[str, ...] = ()
    kind: str = "cpu"
    path: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _token("mtriple", self.mtriple, allow_empty=True)
        _token("mcpu", self.mcpu, allow_empty=True)
        for a in self.mattr:
            if not (a[:1] in "+-" and TOKEN.fullmatch(a)):
                raise ValueError(f'mattr entries look like "+neon" or "-avx512f", got {a!r}')

    @property
    def is_host(self) -> bool:
        return not (self.mtriple or self.mcpu or self.mattr)

    def tvm_target(self) -> dict:
        if self.is_host:
            from qcompile.backends.cpu_features import host_target

            return host_target()
        t: dict = {"kind": "llvm"}
        if self.mtriple:
            t["mtriple"] = self.mtriple
        if self.mcpu:
            t["mcpu"] = self.mcpu
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
        if not (
            self.arch.startswith("sm_") and self.arch[3:].isascii() and self.arch[3:].isdigit()
        ):
            raise ValueError(f"arch must look like sm_90, got {self.arch!r}")

    def tvm_target(self) -> dict:
        return {"kind": "cuda", "arch": self.arch}


@dataclass(frozen=True)
class RtlTarget:
    """Fully parallel Verilog from da4ml (no vendor tool): ``part`` and ``clock_period`` go
    into the project scripts; ``latency_cutoff`` is the combinational delay (in da4ml's
    adder-depth units) between pipeline registers; ``max_macs`` and ``max_solve_s`` bound
    what is attempted (every multiply becomes logic, and da4ml's solve time grows steeply)."""

    name: str
    part: str
    clock_period: float = 5.0
    latency_cutoff: int = 5
    max_macs: int = 40_000
    max_solve_s: float = 600.0
    kind: str = "rtl"

    def __post_init__(self) -> None:
        _token("part", self.part)
        if not (math.isfinite(self.clock_period) and self.clock_period > 0):
            raise ValueError(
                f"clock_period must be a finite number > 0 (ns), got {self.clock_period}"
            )
        if not isinstance(self.latency_cutoff, int) or self.latency_cutoff < 1:
            raise ValueError("latency_cutoff must be an integer >= 1")
        if not isinstance(self.max_macs, int) or self.max_macs < 1:
            raise ValueError("max_macs must be an integer >= 1")
        if not (math.isfinite(self.max_solve_s) and self.max_solve_s > 0):
            raise ValueError("max_solve_s must be a finite number > 0 (seconds)")


KINDS = {"fpga": FpgaTarget, "cpu": CpuTarget, "gpu": GpuTarget, "rtl": RtlTarget}


def available() -> list[str]:
    return sorted(p.stem for p in TARGETS.glob("*.toml"))


def load_target(spec: str) -> FpgaTarget | CpuTarget | GpuTarget | RtlTarget:
    """``fpga`` (the default profile), a profile name, or a path to a TOML file."""
    if spec.endswith(".toml"):
        path = input_file(spec, "--target")
    elif "/" in spec or spec.startswith(".") or DEFAULTS.get(spec, spec) not in available():
        raise unknown_choice("target", spec, ["fpga", "rtl", "cpu", "arm", "gpu", *available()])
    else:
        path = TARGETS / f"{DEFAULTS.get(spec, spec)}.toml"
    where = f"target file {clip(str(path))}"
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise QCompileError(f"{where}: {clip(str(e))}") from None
    cls = KINDS.get(raw.get("kind")) if isinstance(raw.get("kind"), str) else None
    if cls is None:
        raise QCompileError(
            f"{where}: kind {clip(repr(raw.get('kind')), 40)} is not supported "
            f'({" or ".join(map(repr, KINDS))}); set kind = "fpga", "rtl", "cpu" or "gpu"'
        )
    kw = _fields(cls, raw, where)
    if cls is CpuTarget:
        kw["path"] = str(path)  # for LLVM's checks at export, which name the file
    return cls(name=path.stem, **kw)


def with_reuse_factor(target: Any, value: str | None) -> Any:
    """``target`` with the command line's ``--reuse-factor`` (``auto`` or an integer >= 1)
    in place of its profile's; ``target`` itself when not given.

    >>> with_reuse_factor(load_target("zcu104"), "8").reuse_factor
    8
    """
    if value is None:
        return target
    if not isinstance(target, FpgaTarget):
        raise QCompileError(
            f"--reuse-factor is for fpga profiles (pynq-z2, zcu104, alveo-u250), not the "
            f"{target.kind} profile {target.name}; leave it out"
        )
    ok = value.isascii() and value.isdigit() and int(value) >= 1
    if value != "auto" and not ok:
        raise QCompileError(
            f'--reuse-factor must be an integer >= 1 or "auto", got {clip(repr(value), 40)}'
        )
    return replace(target, reuse_factor=value if value == "auto" else int(value))


def _fields(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` checked against ``cls``'s fields: no unknown key, every required key present,
    every value of the field's type (a float field takes an integer); then ``cls``'s own
    checks (in its ``__post_init__``) run on construction."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.name not in ("name", "path")}
    for key in raw:
        if key not in known:
            raise QCompileError(
                f"{where}: unknown key {clip(repr(key), 40)}{did_you_mean(key, known)}; "
                "valid: " + ", ".join(sorted(known))
            )
    for key, f in known.items():
        if key not in raw and f.default is MISSING:
            raise QCompileError(
                f"{where}: missing key '{key}' ({FIELD_HELP.get(key, 'required')}); add it"
            )
    out: dict[str, Any] = {}
    for key, value in raw.items():
        hint = hints[key]
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if hint == tuple[str, ...]:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        else:  # TOML's true is no integer
            ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if not ok:
            raise QCompileError(
                f"{where}: '{key}' must be {TYPE_NAMES.get(hint, hint)}, got "
                f"{clip(repr(value), 40)}"
            )
        out[key] = value
    try:
        cls(name="check", **out)
    except ValueError as e:
        raise QCompileError(f"{where}: {clip(str(e), 200)}") from None
    return out
