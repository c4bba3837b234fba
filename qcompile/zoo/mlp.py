"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from qcompile.zoo.common import check_shape, check_units


class MLP(nn.Sequential):
    """Flatten -> (Linear -> BatchNorm1d -> ReLU) per hidden layer -> Linear.

    >>> MLP((1, 8, 8), 10, hidden=(32,))[1]
    Linear(in_features=64, out_features=32, bias=False)
    """

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int, hidden: Sequence[int] = (256, 128)
    ) -> None:
        check_shape("mlp", in_shape)
        hidden = check_units("hidden", hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
