"""LeNet-5 (LeCun et al. 1998) with BatchNorm, sized from the input."""

from __future__ import annotations

from torch import Tensor, nn

from qcompile.zoo.common import check_shape, conv_bn, flat_features, scaled


class LeNet(nn.Module):
    """Two conv blocks (conv -> BN -> ReLU -> 2x2 max-pool) and three dense layers.

    Inputs of 20 pixels or more use 5x5 kernels as in LeNet-5 (28x28 MNIST: 6x14x14,
    16x7x7 feature maps); smaller ones (8x8 digits) use 3x3, which keeps a 2x2 map before the
    classifier. ``width`` scales the channel and unit counts (6, 16, 120, 84).

    >>> import torch
    >>> LeNet((1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int, width: float = 1.0
    ) -> None:
        super().__init__()
        c, h, w = check_shape("lenet", in_shape, min_side=4)
        k = 5 if min(h, w) >= 20 else 3
        c1, c2, f1, f2 = scaled("lenet", (6, 16, 120, 84), width)
        self.features = nn.Sequential(
            conv_bn(c, c1, k), nn.MaxPool2d(2), conv_bn(c1, c2, k), nn.MaxPool2d(2), nn.Flatten()
        )
        n = flat_features(self.features, in_shape)
        self.classifier = nn.Sequential(
            nn.Linear(n, f1, bias=False), nn.BatchNorm1d(f1), nn.ReLU(),
            nn.Linear(f1, f2, bias=False), nn.BatchNorm1d(f2), nn.ReLU(),
            nn.Linear(f2, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
