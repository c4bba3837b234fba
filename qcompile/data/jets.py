"""``jets``: a synthetic stand-in for hls4ml's jet-tagging data set (16 high-level features,
5 classes: gluon, light quark, W, Z, top), generated deterministically.

The real set (the ``hls4ml_lhc_jets_hlf`` OpenML table, 830k jets) is a download; qcompile
needs no network, so this one is drawn from a fixed seed: for each class, 16 features mixing
a class-dependent Gaussian (correlated through a random linear map), positive "mass-like"
features (log-normal) and a feature that depends on a product of others, so that classes
overlap and a 16-64-32-32-5 MLP has to learn something non-linear. It is a benchmark input
distribution with the real set's shape, not physics: accuracies on it say nothing about jet
tagging.

>>> ds = load_jets()
>>> ds.in_shape, ds.num_classes, len(ds.train_y), len(ds.test_y)
((16, 1, 1), 5, 8000, 2000)
"""

from __future__ import annotations

import numpy as np

from qcompile.data.base import Dataset, normalized, stratified_split

FEATURES = 16
CLASSES = 5
PER_CLASS = 2000
SEED = 1804_06913  # the hls4ml jet-tagging paper's arXiv number


def jet_features(
    rng: np.random.Generator, per_class: int = PER_CLASS
) -> tuple[np.ndarray, np.ndarray]:
    """``[5 * per_class, 16]`` float64 features and int64 labels, class-major."""
    xs, ys = [], []
    centres = rng.normal(0.0, 0.4, (CLASSES, FEATURES))
    for c in range(CLASSES):
        mix = rng.normal(0.0, 0.45, (FEATURES, FEATURES)) + np.eye(FEATURES)
        z = rng.normal(0.0, 1.0, (per_class, FEATURES)) @ mix.T + centres[c]
        z[:, :4] = np.exp(0.35 * z[:, :4])  # positive, skewed: masses, multiplicities
        z[:, 15] = z[:, 4] * z[:, 5] * (0.5 + 0.25 * c) + rng.normal(0, 0.5, per_class)
        xs.append(z)
        ys.append(np.full(per_class, c, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_jets() -> Dataset:
    """10,000 synthetic jets (2,000 per class), 20% held out for test, shaped ``(16, 1, 1)``."""
    x, y = jet_features(np.random.default_rng(SEED))
    x = x.reshape(-1, FEATURES, 1, 1)
    tr, te = stratified_split(y, 0.2)
    return normalized("jets", x[tr], y[tr], x[te], y[te], CLASSES)
