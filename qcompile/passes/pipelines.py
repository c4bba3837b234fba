"""Every pass pipeline, declared in one place: freeze's, and each backend's (run once per
export, on the verified graph loaded from the .qir, before the backend sees it).

Each is a tuple of plain ``Graph -> Graph`` passes; :func:`qcompile.passes.run_pipeline`
verifies the graph after the last one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from qcompile.ir.graph import Graph
from qcompile.passes.dead_code import eliminate_dead
from qcompile.passes.fuse_activation import fuse_activation
from qcompile.passes.pack import pack_codes
from qcompile.passes.split_add import split_add

Pass = Callable[[Graph], Graph]

# freeze: a ReLU clip fused into the node before it, dead nodes dropped, codes packed
FREEZE: tuple[Pass, ...] = (fuse_activation, eliminate_dead, pack_codes)
# the fpga kernels add two or three tensors (hls4ml's add templates); wider adds are split
FPGA: tuple[Pass, ...] = (partial(split_add, max_inputs=3),)
# TVM lowers every op as the IR has it
TVM: tuple[Pass, ...] = ()
# the da4ml tracer takes every op as the IR has it too (an add of any number of inputs is
# one sum of constant multiples); the RTL export refuses, in one line, ops it has no
# lowering for
RTL: tuple[Pass, ...] = ()
