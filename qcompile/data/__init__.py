"""Datasets by name: ``digits`` and ``mnist5k`` (embedded), ``cifar10`` and ``imagefolder``
(from ``--data-dir``).

>>> ds = load_dataset("digits")
>>> ds.in_shape, ds.num_classes, len(ds.train_y), len(ds.test_y)
((1, 8, 8), 10, 1438, 359)
"""

from __future__ import annotations

from collections.abc import Callable

from qcompile.data.base import Dataset
from qcompile.data.cifar10 import load_cifar10
from qcompile.data.embedded import load_digits, load_mnist5k
from qcompile.data.imagefolder import load_imagefolder
from qcompile.errors import unknown_choice

DATASETS: dict[str, Callable[[str, int], Dataset]] = {
    "digits": lambda directory, size: load_digits(),
    "mnist5k": lambda directory, size: load_mnist5k(),
    "cifar10": lambda directory, size: load_cifar10(directory),
    "imagefolder": load_imagefolder,
}


def load_dataset(name: str, directory: str = "", image_size: int = 32) -> Dataset:
    """Load dataset ``name``; ``directory`` is needed by cifar10 and imagefolder."""
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    return DATASETS[name](directory, image_size)


__all__ = ["DATASETS", "Dataset", "load_dataset"]
