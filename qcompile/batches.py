"""Seeded mini-batches: the order and the augmentation of an epoch depend only on
(seed, epoch), so a resumed run sees exactly the batches the uninterrupted one saw."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def shard_order(n: int, gen: torch.Generator, rank: int, world: int) -> Tensor:
    """This rank's share of a shuffled epoch, padded by wrap-around to equal sizes
    (as DistributedSampler does) so every rank runs the same number of steps."""
    order = torch.randperm(n, generator=gen)
    per_rank = -(-n // world)
    return order.repeat(-(-per_rank * world // n))[: per_rank * world][rank::world]


def random_crop_flip(x: Tensor, gen: torch.Generator, pad: int = 4) -> Tensor:
    """Random ``pad``-pixel translation (zero padding) and horizontal flip per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = dx[:, None] + torch.arange(w)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    idx_n = torch.arange(n)[:, None, None, None]
    idx_c = torch.arange(x.shape[1])[None, :, None, None]
    return padded[idx_n, idx_c, rows, cols]


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    gen: torch.Generator,
    rank: int = 0,
    world: int = 1,
    augment: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled ``(inputs, labels)`` batches of this rank for one epoch.

    ``batch_size`` is the global batch: each of ``world`` ranks takes ``batch_size / world``,
    at least 2. A trailing batch of one sample is dropped (BatchNorm cannot normalise it).
    """
    local = local_batch(batch_size, world)
    order = shard_order(len(x), gen, rank, world)
    # Ranks share the order's generator; each draws its own crops and flips.
    aug_gen = torch.Generator().manual_seed(gen.initial_seed() + 7919 * (rank + 1))
    for start in range(0, len(order), local):
        idx = order[start : start + local]
        if len(idx) == 1 and start > 0:
            break
        xb = x[idx]
        if augment:
            xb = random_crop_flip(xb, aug_gen)
        yield xb, y[idx]


def local_batch(batch_size: int, world: int) -> int:
    local = batch_size // world
    if local < 2:
        raise ValueError(
            f"batch_size {batch_size} over {world} rank(s) leaves {local} sample(s) per rank; "
            "BatchNorm needs at least 2"
        )
    return local


def num_batches(n: int, batch_size: int, world: int = 1) -> int:
    """How many batches :func:`batches` yields on each rank."""
    full, rest = divmod(-(-n // world), local_batch(batch_size, world))
    return full + (1 if rest >= 2 or (rest == 1 and full == 0) else 0)
