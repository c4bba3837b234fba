"""Optional compiled kernels (``torch.compile``, Inductor's C++ backend) for the quantizers'
elementwise hot spots, with the eager ops as the always-available fallback.

Why: DQA's activation mixture runs K PACT quantizers on every activation of a batch. Eager
ATen needs about ten passes over the activation per member (divide, round, clamp, scale, mix,
and in the backward pass masks, sums and products), so on lenet and resnet20 the mixture cost
more than the convolutions around it; a compiled kernel does the forward pass in one read of
``x`` and the backward pass in one read of ``x`` and the gradient. The same holds, less
strongly, for a single PACT quantizer on resnet20's larger activations (four eager passes
each way); each caller says from what size it uses its kernels. Inductor compiles the very
Python functions the eager path is checked against, with IEEE arithmetic on the CPU (no
fast-math, no FMA contraction, true division), so the values are bit-identical to the eager
ones; only sums over the tensor run in another order (``tests/quant/test_fused.py``).

Compiling is never required. ``QCOMPILE_COMPILE=0`` turns it off; without it a kernel is
compiled on its first call (once per process, reused from Inductor's on-disk cache
afterwards; BENCHMARKS.md has the times), and if compiling fails for any reason (no C++
compiler, an unsupported platform) one line goes to stderr and the eager path is used from
then on. Tensors under ``MIN_NUMEL`` elements always take the eager path: for them the call
overhead of a compiled graph (~0.1 ms) exceeds what fusing saves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

ENV = "QCOMPILE_COMPILE"
MIN_NUMEL = 1 << 16
# A single PACT quantizer is four cheap eager passes each way, not a mixture's ten per member:
# its compiled kernels (two calls of ~0.15 ms fixed cost) only pay on large activations.
# Alone, forward and backward: slower at 64k elements, even at 256k, 1.4x faster at 512k and
# 1.6x at 1M (resnet20's); inside lenet's training steps at a load of 3-4, its 301k-element
# conv1 activation was 0.5 ms a step slower compiled (paired median of 15 interleaved rounds).
PACT_MIN_NUMEL = 1 << 19

_state: dict[str, Any] = {"broken": None}


def enabled() -> bool:
    """Whether compiled kernels may be used (``QCOMPILE_COMPILE`` not 0/false/off, and no
    compile has failed in this process)."""
    off = os.environ.get(ENV, "1").strip().lower() in ("0", "false", "off", "no")
    return not off and _state["broken"] is None


def worth_it(x: Tensor, min_numel: int = MIN_NUMEL) -> bool:
    """Whether ``x`` should take a compiled kernel: a float32 CPU tensor of at least
    ``min_numel`` elements."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() >= min_numel


class Kernel:
    """``fn`` compiled on first use (dynamic shapes: one compilation serves every layer),
    falling back to ``fn`` itself, eagerly, when compiling is off or has failed."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        if not enabled():
            return self.fn(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
        try:
            return self._compiled(*args)
        except Exception as e:  # a compiler problem, never a user mistake: say so, go eager
            _state["broken"] = e
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(
                f"qcompile: torch.compile failed ({type(e).__name__}: {first[:200]}); "
                f"using the eager quantizer kernels (set {ENV}=0 to skip compiling)",
                file=sys.stderr,
            )
            return self.fn(*args)
