"""A plain GPU schedule for the graph's TE function: every block's data-parallel loops are
fused and split over (blockIdx.x, threadIdx.x); reductions stay serial in their thread.

Correct for any graph and enough to emit CUDA and PTX; not tuned (no shared memory, no
vectorised LUT lookup).
"""

from __future__ import annotations

from typing import Any

THREADS = 128


def schedule_gpu(func: Any) -> Any:
    """``func`` (a PrimFunc from ``te.create_prim_func``) with thread bindings."""
    import tvm

    sch = tvm.s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for block in blocks:
        iters = sch.get(block).iter_vars
        spatial = sum(1 for v in iters if v.iter_type == 0)  # kDataPar
        loops = sch.get_loops(block)
        if not spatial or len(loops) < spatial:
            continue
        fused = sch.fuse(*loops[:spatial])
        bx, tx = sch.split(fused, [None, THREADS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    return sch.mod["main"]
