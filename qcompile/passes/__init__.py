"""IR passes: plain ``Graph -> Graph`` functions; the pipelines that run them (freeze's and
each backend's) are declared in :mod:`qcompile.passes.pipelines`.

BatchNorm and scale folding are not passes over the integer IR: done after rounding they
would round twice, so freeze folds them into the levels before the one rounding
(:mod:`qcompile.freeze.emit`).
"""

from __future__ import annotations

from qcompile.ir.graph import Graph
from qcompile.ir.verify import verify
from qcompile.passes.dead_code import eliminate_dead
from qcompile.passes.fuse_activation import fuse_activation
from qcompile.passes.pack import pack_codes
from qcompile.passes.pipelines import FREEZE, Pass
from qcompile.passes.split_add import split_add

PIPELINE: tuple[Pass, ...] = FREEZE


def run_pipeline(graph: Graph, passes: tuple[Pass, ...] = PIPELINE) -> Graph:
    """Apply ``passes`` in order to ``graph`` (which must be verified: freeze's lowering and
    .qir loading both verify) and verify the result once."""
    for p in passes:
        graph = p(graph)
    return verify(graph)


__all__ = [
    "PIPELINE",
    "eliminate_dead",
    "fuse_activation",
    "pack_codes",
    "run_pipeline",
    "split_add",
]
