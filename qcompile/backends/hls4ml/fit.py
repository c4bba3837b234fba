"""An fpga estimate against its part (``fit``: utilisation, fits, a warning line) and as
the text ``inspect --target`` prints (``estimate_table``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from qcompile.backends.estimates import FpgaEstimate, PartCapacity, Utilization
from qcompile.backends.hls4ml.parts import Part

if TYPE_CHECKING:
    from qcompile.backends.hls4ml.estimate import Cost


@dataclass(frozen=True)
class Fit:
    """The estimate checked against the part (all None but ``warning`` for a part not in
    targets/parts/)."""

    part: PartCapacity | None
    utilization: Utilization | None
    fits: bool | None
    warning: str | None


def fit(total: Cost, part: Part | None, name: str, auto: bool = False) -> Fit:
    """Utilisation of the part, ``fits`` and a warning line when it does not fit (``auto``:
    the reuse factors were already chosen to fit, so only a larger part helps)."""
    if part is None:
        return Fit(None, None, None, f"part {name} is not in targets/parts/: fit not checked")
    need = asdict(total)
    cap = {"lut": part.lut, "ff": part.ff, "dsp": part.dsp, "bram18": part.bram18}
    over = [
        f"{k.upper()} {need[k]} > {cap[k]} ({100 * need[k] / cap[k]:.0f}%)"
        for k in cap
        if need[k] > cap[k]
    ]
    advice = (
        "even at the reuse factors that save most (auto): use a larger part"
        if auto
        else 'raise the reuse factor (Resource strategy; reuse_factor = "auto" chooses one per '
        "layer) or use a larger part"
    )
    warning = f"estimated design does not fit {part.name} ({', '.join(over)}): {advice}"
    return Fit(
        PartCapacity(part.name, part.family, **cap),
        Utilization(**{k: round(need[k] / cap[k], 4) for k in cap}),
        not over,
        warning if over else None,
    )


def estimate_table(e: FpgaEstimate) -> str:
    """The estimate as text: one row per layer, the total, the part's capacity and a
    warning line when the design does not fit."""
    head = ("layer", "op", "reuse", "lanes", "cycles", "LUT", "FF", "DSP", "BRAM18")
    keys = ("name", "op", "reuse", "lanes", "cycles", "lut", "ff", "dsp", "bram18")
    t = e.total
    rows = [[str(getattr(r, k)) for k in keys] for r in e.layers]
    rows.append(["total", "", "", "", f"II {t.ii_cycles}", *(str(getattr(t, k)) for k in keys[5:])])
    p = e.part
    if p is not None:
        rows.append([p.name, "capacity", "", "", "", *(str(getattr(p, k)) for k in keys[5:])])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in pairs)

    out = [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    rf = e.reuse_factor
    if rf == "auto" and e.budget is not None:
        rf = (
            f"auto: chosen per layer to fit {e.budget:.0%} of the part"
            if e.part is not None
            else "auto: 1 for every layer, the part being unknown"
        )
    out.append(
        f"\nestimate ({e.schedule}, reuse factor {rf}): latency {t.latency_cycles} cycles = "
        f"{t.latency_ns} ns at {e.clock_period} ns, a new input every {t.ii_cycles} cycles; "
        f"{e.note}"
    )
    if e.warning:
        out.append(f"warning: {e.warning}")
    return "\n".join(out)
