"""Helpers that behave the same with and without torch.distributed initialised."""

from __future__ import annotations

import os

import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def launched_by_torchrun() -> bool:
    """torchrun exports these for every worker; a plain ``python -m qcompile`` has none."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _all_reduce(t: Tensor, op: dist.ReduceOp) -> Tensor:
    if not is_distributed():
        return t
    t = t.clone()
    dist.all_reduce(t, op=op)
    return t


def all_reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` across ranks (``t`` itself when not distributed).

    Lazily initialised statistics (LSQ's step from the first batch) must agree on every rank,
    because DDP only synchronises parameters when it wraps the model.
    """
    return _all_reduce(t, dist.ReduceOp.SUM) / world_size()


def all_reduce_sum(t: Tensor) -> Tensor:
    return _all_reduce(t, dist.ReduceOp.SUM)


def all_reduce_max(t: Tensor) -> Tensor:
    return _all_reduce(t, dist.ReduceOp.MAX)
