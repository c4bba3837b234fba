"""VGG-Small, the CIFAR network of LQ-Net and the DMBQ paper."""

from __future__ import annotations

from torch import Tensor, nn

from qcompile.zoo.common import check_shape, conv_bn, flat_features, scaled


class VGGSmall(nn.Module):
    """(conv 128, conv 128, pool), (256, 256, pool), (512, 512, pool), linear classifier.

    Convs are 3x3 with BN and ReLU; channels scale with ``width``. Each max-pool halves the
    map (floor), so inputs down to 8x8 work.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int, width: float = 1.0
    ) -> None:
        super().__init__()
        c = check_shape("vgg_small", in_shape, min_side=8)[0]
        layers: list[nn.Module] = []
        for w in scaled("vgg_small", (128, 256, 512), width):
            layers += [conv_bn(c, w), conv_bn(w, w), nn.MaxPool2d(2)]
            c = w
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(flat_features(self.features, in_shape), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
