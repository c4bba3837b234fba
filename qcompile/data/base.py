"""The in-memory dataset every loader returns, and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Train/test splits are a property of the dataset, not of a run: one fixed seed for all runs.
SPLIT_SEED = 20240601


@dataclass(frozen=True)
class Dataset:
    """Normalised float images ``[N, C, H, W]`` and integer labels, split once and for all.

    ``mean``/``std`` are the per-channel statistics of the raw training images (in the
    dataset's raw units) that were subtracted and divided out; ``augment`` asks the training
    loop for random crops and flips (natural images only).
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False

    @property
    def in_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)


def stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a class-stratified train/test split, fixed by :data:`SPLIT_SEED`."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def normalized(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    augment: bool = False,
) -> Dataset:
    """Build a :class:`Dataset` from raw ``[N, C, H, W]`` arrays, normalising per channel
    with the training split's statistics."""
    raw = train_x.astype(np.float64)
    mean = raw.mean(axis=(0, 2, 3))
    std = raw.std(axis=(0, 2, 3))
    std = np.where(std > 0, std, 1.0)

    def norm(x: np.ndarray) -> Tensor:
        z = (x.astype(np.float64) - mean[None, :, None, None]) / std[None, :, None, None]
        return torch.from_numpy(z.astype(np.float32))

    return Dataset(
        name=name,
        train_x=norm(train_x),
        train_y=torch.from_numpy(train_y.astype(np.int64)),
        test_x=norm(test_x),
        test_y=torch.from_numpy(test_y.astype(np.int64)),
        num_classes=num_classes,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        augment=augment,
    )
