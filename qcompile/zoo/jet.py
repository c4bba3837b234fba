"""The jet-tagging MLP of hls4ml's benchmarks (Duarte et al. 2018, arXiv:1804.06913):
16 high-level jet features -> 64 -> 32 -> 32 -> 5 classes (g, q, W, Z, t)."""

from __future__ import annotations

from collections.abc import Sequence

from qcompile.zoo.mlp import MLP


def jet_mlp(
    in_shape: tuple[int, int, int], num_classes: int, hidden: Sequence[int] = (64, 32, 32)
) -> MLP:
    """Flatten -> (Linear -> BatchNorm1d -> ReLU) x 3 -> Linear, on the ``jets`` dataset's
    ``(16, 1, 1)`` features (any input shape builds: it is flattened).

    >>> [m.out_features for m in jet_mlp((16, 1, 1), 5) if hasattr(m, "out_features")]
    [64, 32, 32, 5]
    """
    return MLP(in_shape, num_classes, hidden=hidden)
