"""Per-layer reuse factors chosen to fit the part: a profile's ``reuse_factor = "auto"``.

Each layer's kernel takes any reuse factor R: ``R`` pipelined iterations of ``ceil(n / R)``
parallel lanes, ``n`` its output rows (filters) or elements (context.lanes). Only the
smallest R giving each lane count is worth building (a larger one adds empty iterations),
so a layer's candidates are ``ceil(n / p)`` for ``p = 1..n`` lanes.

The chooser starts every layer at R = 1 (the lowest latency) and, while the estimate
(estimate.py) exceeds the utilisation budget (``UTILISATION_BUDGET`` of the part's LUT, FF,
DSP and BRAM18 each), raises the one layer whose step removes the most excess per cycle of
latency added: the excess is ``sum over resources of max(0, need - budget) / budget``, and a
layer may jump to any larger candidate (sharing multipliers can cost more than constant
weights at R = 2 and less at R = 3). Once the design fits, it lowers each layer back to the
smallest R that still fits, to win back latency the greedy steps gave away. When no step
reduces the excess, the design cannot fit: the last choice stands and the estimate's
warning says by how much it is over.

>>> [candidates(n) for n in (1, 3, 10)]
[[1], [1, 2, 3], [1, 2, 3, 4, 5, 10]]
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from qcompile.backends.hls4ml.estimate import UTILISATION_BUDGET, Estimator, parallel_units
from qcompile.backends.hls4ml.parts import Part
from qcompile.backends.hls4ml.project import HlsOptions
from qcompile.ir.graph import Graph

RESOURCES = ("lut", "ff", "dsp", "bram18")


@cache
def candidates(n: int) -> list[int]:
    """The reuse factors worth building for a layer of ``n`` parallel units: the smallest R
    for each lane count ``ceil(n / R)``."""
    return sorted({-(-n // p) for p in range(1, n + 1)})


class _Layers:
    """Each layer's estimate at each reuse factor, computed once."""

    def __init__(self, graph: Graph, opts: HlsOptions) -> None:
        self.est = Estimator(graph, opts)
        self.nodes = {n.name: n for n in graph.nodes}
        self._rows: dict[tuple[str, int], dict] = {}

    def row(self, name: str, r: int) -> dict:
        key = (name, r)
        if key not in self._rows:
            self._rows[key] = self.est.layer(self.nodes[name], r)
        return self._rows[key]

    def total(self, choice: dict[str, int]) -> dict[str, int]:
        rows = [self.row(name, r) for name, r in choice.items()]
        return {k: sum(row[k] for row in rows) for k in RESOURCES}

    def swapped(self, total: dict[str, int], name: str, old: int, new: int) -> dict[str, int]:
        """``total`` with layer ``name`` at reuse ``new`` instead of ``old``."""
        a, b = self.row(name, old), self.row(name, new)
        return {k: total[k] - a[k] + b[k] for k in RESOURCES}


def _excess(total: dict[str, int], budget: dict[str, float]) -> float:
    # a part without a resource (budget 0) counts each unit needed as a whole part over
    return sum(max(0.0, total[k] - budget[k]) / max(budget[k], 1.0) for k in RESOURCES)


def choose_reuse(
    graph: Graph, opts: HlsOptions, part: Part | None = None, budget: float = UTILISATION_BUDGET
) -> HlsOptions:
    """``opts`` with a reuse factor per layer of ``graph`` (lowered by the fpga pipeline)
    chosen to fit ``part`` (default: the options' part) within ``budget`` of each resource,
    at the lowest latency the greedy search finds (see the module docstring).

    Under the Latency strategy every layer is R = 1 (hls4ml pipelines it at II 1), and
    without a known part there is nothing to fit: R = 1 everywhere too.
    """
    layers = _Layers(graph, opts)
    part = part or layers.est.part
    choice = {n.name: 1 for n in graph.nodes}
    if part is not None and opts.strategy != "Latency" and not layers.est.unrolled:
        cap = {"lut": part.lut, "ff": part.ff, "dsp": part.dsp, "bram18": part.bram18}
        limit = {k: budget * v for k, v in cap.items()}
        _raise_until_fit(layers, choice, limit)
        if _excess(layers.total(choice), limit) == 0:
            _lower_while_fit(layers, choice, limit)
    return replace(opts, layer_reuse=tuple(choice.items()), reuse_auto=True)


def _raise_until_fit(layers: _Layers, choice: dict[str, int], limit: dict[str, float]) -> None:
    """Greedy: the step removing the most excess per cycle added, until none is left."""
    while (excess := _excess(total := layers.total(choice), limit)) > 0:
        best: tuple[float, str, int] | None = None
        for name, r in choice.items():
            now = layers.row(name, r)
            for cand in candidates(parallel_units(layers.nodes[name])):
                if cand <= r:
                    continue
                gain = excess - _excess(layers.swapped(total, name, r, cand), limit)
                added = max(1, layers.row(name, cand)["cycles"] - now["cycles"])
                if gain > 0 and (best is None or gain / added > best[0]):
                    best = (gain / added, name, cand)
        if best is None:  # no layer can give anything more: the part is too small
            return
        choice[best[1]] = best[2]


def _lower_while_fit(layers: _Layers, choice: dict[str, int], limit: dict[str, float]) -> None:
    """Each layer (slowest first) back to the smallest reuse factor that still fits."""
    for name in sorted(choice, key=lambda n: -layers.row(n, choice[n])["cycles"]):
        for cand in candidates(parallel_units(layers.nodes[name])):
            if cand >= choice[name]:
                break
            if _excess(layers.swapped(layers.total(choice), name, choice[name], cand), limit) == 0:
                choice[name] = cand
                break
