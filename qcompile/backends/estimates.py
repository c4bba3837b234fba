"""The typed resource and latency estimates a hardware artifact's manifest holds
(``estimate`` in ``manifest.json``): :class:`FpgaEstimate`, qcompile's model of its HLS
kernels (hls4ml/estimate.py), and :class:`RtlEstimate`, da4ml's cost of its Verilog.

``as_dict`` gives the JSON object the manifest writes, its keys in the order they are
declared here (nested estimates as objects, tuples as lists).

>>> t = TotalEstimate(lut=10, ff=4, dsp=0, bram18=0, ii_cycles=1, latency_cycles=3,
...                   latency_ns=30.0)
>>> list(asdict(t))[:4], t.latency_ns
(['lut', 'ff', 'dsp', 'bram18'], 30.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LayerEstimate:
    """One layer of an fpga estimate: its reuse factor R, parallel lanes, pipelined
    iterations, cycles (iterations plus pipeline depth, plus stream beats under io_stream)
    and resources."""

    name: str
    op: str
    reuse: int
    lanes: int
    iterations: int
    cycles: int
    lut: int
    ff: int
    dsp: int
    bram18: int


@dataclass(frozen=True)
class TotalEstimate:
    """A model's resources, its initiation interval and its latency."""

    lut: int
    ff: int
    dsp: int
    bram18: int
    ii_cycles: int
    latency_cycles: int
    latency_ns: float


@dataclass(frozen=True)
class PartCapacity:
    """What the estimate was checked against (targets/parts/)."""

    name: str
    family: str
    lut: int
    ff: int
    dsp: int
    bram18: int


@dataclass(frozen=True)
class Utilization:
    """Each resource needed as a share of the part's (1.0 = all of it), to 4 decimals."""

    lut: float
    ff: float
    dsp: float
    bram18: float


@dataclass(frozen=True)
class FpgaEstimate:
    """The fpga estimate: the schedule (``unrolled`` or ``dataflow``), the reuse factor as
    the profile gives it (an integer, or ``auto`` with the utilisation ``budget`` it was
    chosen for), each layer, the total, and the fit: ``part``, ``utilization``, ``fits``
    and ``warning`` are None / None / None / a line saying why when the part is not in the
    table."""

    note: str
    schedule: str
    reuse_factor: int | str
    budget: float | None
    clock_period: float
    layers: tuple[LayerEstimate, ...]
    total: TotalEstimate
    part: PartCapacity | None
    utilization: Utilization | None
    fits: bool | None
    warning: str | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(d["layers"])
        return d


@dataclass(frozen=True)
class RtlEstimate:
    """da4ml's cost of the rtl artifact's Verilog (fully parallel: II 1, no DSP or BRAM) and
    how long its solver took."""

    note: str
    lut: int
    ff: int
    dsp: int
    bram18: int
    ii_cycles: int
    latency_cycles: int
    latency_ns: float
    solve_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
