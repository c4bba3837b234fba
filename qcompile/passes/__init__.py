"""IR passes: plain ``Graph -> Graph`` functions, run in the order of :data:`PIPELINE`.

BatchNorm and scale folding are not passes over the integer IR: done after rounding they
would round twice, so freeze folds them into the levels before the one rounding
(:mod:`qcompile.freeze.emit`).
"""

from __future__ import annotations

from collections.abc import Callable

from qcompile.ir.graph import Graph
from qcompile.ir.verify import verify
from qcompile.passes.dead_code import eliminate_dead
from qcompile.passes.fuse_activation import fuse_activation
from qcompile.passes.pack import pack_codes
from qcompile.passes.split_add import split_add

Pass = Callable[[Graph], Graph]
PIPELINE: tuple[Pass, ...] = (fuse_activation, eliminate_dead, pack_codes)


def run_pipeline(graph: Graph, passes: tuple[Pass, ...] = PIPELINE) -> Graph:
    """Apply ``passes`` in order, verifying the graph before and after each."""
    graph = verify(graph)
    for p in passes:
        graph = verify(p(graph))
    return graph


__all__ = [
    "PIPELINE",
    "eliminate_dead",
    "fuse_activation",
    "pack_codes",
    "run_pipeline",
    "split_add",
]
