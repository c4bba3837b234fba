"""Seeded mini-batches: order, sharding, batch counts and augmentation."""

from __future__ import annotations

import pytest
import torch

from qcompile.batches import batches, epoch_generator, num_batches, random_crop_flip, shard_order


def _orders(seed: int, epoch: int, n: int = 50, batch_size: int = 8) -> list[list[int]]:
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None]
    y = torch.arange(n)
    return [yb.tolist() for _, yb in batches(x, y, batch_size, epoch_generator(seed, epoch))]


def test_batch_order_is_deterministic_per_seed_and_epoch() -> None:
    assert _orders(3, 1) == _orders(3, 1)


def test_batch_order_differs_across_epochs_and_seeds() -> None:
    assert _orders(3, 1) != _orders(3, 2)
    assert _orders(3, 1) != _orders(4, 1)


def test_batches_cover_a_permutation_with_matching_labels() -> None:
    n = 50
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 2, 2).clone()
    y = torch.arange(n)
    seen: list[int] = []
    for xb, yb in batches(x, y, 8, epoch_generator(0, 0)):
        assert torch.equal(xb[:, 0, 0, 0].long(), yb)
        seen += yb.tolist()
    # 50 = 6 * 8 + 2: the trailing batch of two is kept.
    assert sorted(seen) == list(range(n))
    assert seen != list(range(n))  # shuffled


@pytest.mark.parametrize("n", [10, 11, 1, 2, 3])
def test_shard_order_covers_all_indices_in_equal_shards(n: int) -> None:
    world = 2
    shards = [shard_order(n, torch.Generator().manual_seed(5), r, world) for r in range(world)]
    sizes = {len(s) for s in shards}
    assert sizes == {-(-n // world)}
    merged = torch.cat(shards).tolist()
    assert set(merged) == set(range(n))
    assert len(merged) == world * -(-n // world)  # padding only to the next multiple


def test_shard_order_without_padding_is_a_partition() -> None:
    shards = [shard_order(12, torch.Generator().manual_seed(1), r, 3) for r in range(3)]
    merged = torch.cat(shards).tolist()
    assert sorted(merged) == list(range(12))


@pytest.mark.parametrize(
    ("n", "batch_size", "world"),
    [
        (64, 16, 1),  # remainder 0
        (65, 16, 1),  # remainder 1: dropped
        (70, 16, 1),  # remainder 6
        (1, 4, 1),  # a single sample is still one batch
        (2, 4, 1),
        (64, 16, 2),  # per rank 32, local 8: remainder 0
        (66, 16, 2),  # per rank 33: remainder 1
        (75, 16, 2),  # per rank 38: remainder 6
        (3, 4, 2),  # per rank 2
        (100, 32, 4),
        (101, 32, 4),
    ],
)
def test_num_batches_matches_batches(n: int, batch_size: int, world: int) -> None:
    x = torch.zeros(n, 1, 2, 2)
    y = torch.zeros(n, dtype=torch.long)
    expected = num_batches(n, batch_size, world)
    for rank in range(world):
        got = list(batches(x, y, batch_size, epoch_generator(0, 0), rank, world))
        assert len(got) == expected, (n, batch_size, world, rank)
        local = max(1, batch_size // world)
        assert all(len(yb) <= local for _, yb in got)
        if -(-n // world) >= 2:
            assert all(len(yb) >= 2 for _, yb in got)


def test_num_batches_values() -> None:
    assert num_batches(64, 16) == 4
    assert num_batches(65, 16) == 4
    assert num_batches(70, 16) == 5
    assert num_batches(1, 16) == 1


def test_random_crop_flip_keeps_shape() -> None:
    x = torch.randn(6, 3, 10, 12)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.dtype == x.dtype


def test_random_crop_flip_without_pad_only_flips() -> None:
    x = torch.randn(64, 3, 5, 7)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    assert (same | flipped).all()
    # With 64 images both outcomes occur (a miss has probability 2**-63).
    assert same.any() and flipped.any()


def test_random_crop_flip_translates_with_zero_padding() -> None:
    x = torch.ones(32, 1, 6, 6)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    # Shifted images bring in zero padding; the values are only ever 0 or 1.
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert (out == 0).any()


def test_batches_augmentation_is_deterministic() -> None:
    x = torch.randn(20, 3, 8, 8)
    y = torch.arange(20)
    first = [xb for xb, _ in batches(x, y, 8, epoch_generator(1, 2), augment=True)]
    second = [xb for xb, _ in batches(x, y, 8, epoch_generator(1, 2), augment=True)]
    plain = [xb for xb, _ in batches(x, y, 8, epoch_generator(1, 2), augment=False)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, plain, strict=True))


def test_shard_order_equal_shards_when_world_exceeds_twice_n() -> None:
    shards = [shard_order(1, torch.Generator().manual_seed(0), r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [1, 1, 1]


@pytest.mark.parametrize(("batch_size", "world"), [(1, 1), (3, 2), (7, 4)])
def test_fewer_than_two_samples_per_rank_is_refused(batch_size: int, world: int) -> None:
    x, y = torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="at least 2"):
        num_batches(10, batch_size, world)
    with pytest.raises(ValueError, match="at least 2"):
        list(batches(x, y, batch_size, epoch_generator(0, 0), 0, world))
