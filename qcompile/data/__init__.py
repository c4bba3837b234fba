"""Datasets by name: ``digits`` and ``mnist5k`` (embedded), ``jets`` (synthetic), ``cifar10``
and ``imagefolder`` (from ``--data-dir``).

>>> ds = load_dataset("digits")
>>> ds.in_shape, ds.num_classes, len(ds.train_y), len(ds.test_y)
((1, 8, 8), 10, 1438, 359)
"""

from __future__ import annotations

from collections.abc import Callable

from qcompile.data.base import Dataset
from qcompile.data.cifar10 import load_cifar10
from qcompile.data.embedded import load_digits, load_mnist5k
from qcompile.data.imagefolder import imagefolder_classes, load_imagefolder
from qcompile.data.jets import load_jets
from qcompile.errors import unknown_choice

DATASETS: dict[str, Callable[[str, int], Dataset]] = {
    "digits": lambda directory, size: load_digits(),
    "mnist5k": lambda directory, size: load_mnist5k(),
    "jets": lambda directory, size: load_jets(),
    "cifar10": lambda directory, size: load_cifar10(directory),
    "imagefolder": load_imagefolder,
}


# Input shape and class count of the datasets whose shape does not depend on their files.
SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist5k": ((1, 28, 28), 10),
    "jets": ((16, 1, 1), 5),
    "cifar10": ((3, 32, 32), 10),
}


def dataset_shape(
    name: str, directory: str = "", image_size: int = 32
) -> tuple[tuple[int, int, int], int]:
    """``(in_shape, num_classes)`` of dataset ``name`` without reading its examples: what
    rebuilding a trained model needs. No data file is opened (imagefolder lists its class
    folders), so a checkpoint naming a directory cannot make qcompile unpickle its files.

    >>> dataset_shape("cifar10", "/nowhere")
    ((3, 32, 32), 10)
    """
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    if name == "imagefolder":
        return (3, image_size, image_size), len(imagefolder_classes(directory))
    return SHAPES[name]


def load_dataset(name: str, directory: str = "", image_size: int = 32) -> Dataset:
    """Load dataset ``name``; ``directory`` is needed by cifar10 and imagefolder."""
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    return DATASETS[name](directory, image_size)


__all__ = ["DATASETS", "SHAPES", "Dataset", "dataset_shape", "load_dataset"]
