"""FPGA part capacities (``targets/parts/*.toml``, data from the vendors' data sheets).

>>> find_part("xc7z020clg400-1").lut
53200
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

PARTS = Path(__file__).resolve().parents[3] / "targets" / "parts"


@dataclass(frozen=True)
class Part:
    """A device's LUTs, flip-flops, DSP slices and 18 Kb block RAMs; ``dsp_a`` x ``dsp_b`` is
    its DSP slice's signed multiplier (25x18 DSP48E1, 27x18 DSP48E2)."""

    name: str
    family: str
    lut: int
    ff: int
    dsp: int
    bram18: int
    dsp_a: int
    dsp_b: int


def all_parts() -> dict[str, Part]:
    out: dict[str, Part] = {}
    for f in sorted(PARTS.glob("*.toml")):
        for name, row in tomllib.loads(f.read_text()).items():
            out[name] = Part(name=name, **row)
    return out


def find_part(part: str) -> Part | None:
    """The table entry whose name starts ``part`` (longest match), or None."""
    hits = [p for n, p in all_parts().items() if part.lower().startswith(n)]
    return max(hits, key=lambda p: len(p.name)) if hits else None
