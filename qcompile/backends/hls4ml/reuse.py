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

import numpy as np

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


class _Table:
    """Every layer's estimate at each of its candidate reuse factors, one row per (layer,
    candidate) pair in layer order, as arrays: the greedy step scores them all at once."""

    def __init__(self, graph: Graph, opts: HlsOptions) -> None:
        self.est = Estimator(graph, opts)
        self.names = [n.name for n in graph.nodes]
        layer, reuse, rows = [], [], []
        for i, node in enumerate(graph.nodes):
            for r in candidates(parallel_units(node)):
                layer.append(i)
                reuse.append(r)
                rows.append(self.est.layer(node, r))
        self.layer = np.array(layer)
        self.reuse = np.array(reuse)
        self.res = np.array([[getattr(r, k) for k in RESOURCES] for r in rows], dtype=np.float64)
        self.cycles = np.array([r.cycles for r in rows])
        # each layer's R = 1 row: its first candidate
        self.first = np.searchsorted(self.layer, np.arange(len(self.names)))


def _excess(total: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """How far over the budget: the sum over resources of ``max(0, need - budget) / budget``
    (a part without a resource, budget 0, counts each unit needed as a whole part over);
    ``total`` is one row of needs or one per candidate."""
    return (np.maximum(0.0, total - limit) / np.maximum(limit, 1.0)).sum(axis=-1)


def choose_reuse(
    graph: Graph, opts: HlsOptions, part: Part | None = None, budget: float = UTILISATION_BUDGET
) -> HlsOptions:
    """``opts`` with a reuse factor per layer of ``graph`` (lowered by the fpga pipeline)
    chosen to fit ``part`` (default: the options' part) within ``budget`` of each resource,
    at the lowest latency the greedy search finds (see the module docstring).

    Under the Latency strategy every layer is R = 1 (hls4ml pipelines it at II 1), and
    without a known part there is nothing to fit: R = 1 everywhere too.
    """
    est = Estimator(graph, opts)
    part = part or est.part
    choice = [1] * len(graph.nodes)
    if part is not None and opts.strategy != "Latency" and not est.unrolled:
        table = _Table(graph, opts)
        cap = (part.lut, part.ff, part.dsp, part.bram18)
        limit = budget * np.array(cap, dtype=np.float64)
        cur = table.first.copy()  # each layer's chosen row in the table
        _raise_until_fit(table, cur, limit)
        if _excess(table.res[cur].sum(axis=0), limit) == 0:
            _lower_while_fit(table, cur, limit)
        choice = [int(r) for r in table.reuse[cur]]
    names = [n.name for n in graph.nodes]
    return replace(opts, layer_reuse=tuple(zip(names, choice, strict=True)), reuse_auto=True)


def _raise_until_fit(table: _Table, cur: np.ndarray, limit: np.ndarray) -> None:
    """Greedy: the step removing the most excess per cycle added, until none is left."""
    while (excess := _excess(total := table.res[cur].sum(axis=0), limit)) > 0:
        now = cur[table.layer]  # each candidate's layer's current row
        gain = excess - _excess(total + table.res - table.res[now], limit)
        added = np.maximum(1, table.cycles - table.cycles[now])
        ok = (table.reuse > table.reuse[now]) & (gain > 0)
        if not ok.any():  # no layer can give anything more: the part is too small
            return
        score = np.where(ok, gain / added, -1.0)
        best = int(np.argmax(score))  # the first of equals: the earlier layer, smaller R
        cur[table.layer[best]] = best


def _lower_while_fit(table: _Table, cur: np.ndarray, limit: np.ndarray) -> None:
    """Each layer (slowest first) back to the smallest reuse factor that still fits."""
    for i in sorted(range(len(cur)), key=lambda i: -table.cycles[cur[i]]):
        total = table.res[cur].sum(axis=0)
        for row in range(table.first[i], cur[i]):
            if _excess(total - table.res[cur[i]] + table.res[row], limit) == 0:
                cur[i] = row
                break
