"""ResNet-20 (He et al. 2016, CIFAR) and ResNet-18 (ImageNet layout, CIFAR stem when small)."""

from __future__ import annotations

from torch import Tensor, nn

from qcompile.zoo.common import check_shape, conv_bn, scaled


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut, added before the final ReLU.

    Where the shape changes, the shortcut is a strided 1x1 conv + BN (He et al.'s option B):
    option A's zero-padded channels would need an op the integer IR does not have.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.shortcut = (
            conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, stages of :class:`BasicBlock`, global average pool, linear classifier."""

    def __init__(
        self,
        stem: nn.Module,
        cin: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.stem = stem
        blocks: list[nn.Module] = []
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            for j in range(d):
                blocks.append(BasicBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))


def resnet20(in_shape: tuple[int, int, int], num_classes: int, width: float = 1.0) -> ResNet:
    """ResNet-20 for 32x32 images: 3 stages x 3 blocks, 16/32/64 channels (x ``width``).

    >>> sum(p.numel() for p in resnet20((3, 32, 32), 10).parameters())
    272474
    """
    c = check_shape("resnet20", in_shape)[0]
    w = scaled("resnet20", (16, 32, 64), width)
    return ResNet(conv_bn(c, w[0], 3), w[0], w, (3, 3, 3), num_classes)


def resnet18(in_shape: tuple[int, int, int], num_classes: int, width: float = 1.0) -> ResNet:
    """ResNet-18: 4 stages x 2 blocks, 64..512 channels (x ``width``).

    Images of 64 pixels or less get the CIFAR stem (3x3 conv, no max-pool); larger ones the
    ImageNet stem (7x7 stride-2 conv and a 3x3 stride-2 max-pool).
    """
    c, h, w_ = check_shape("resnet18", in_shape)
    w = scaled("resnet18", (64, 128, 256, 512), width)
    if min(h, w_) <= 64:
        stem: nn.Module = conv_bn(c, w[0], 3)
    else:
        stem = nn.Sequential(conv_bn(c, w[0], 7, 2), nn.MaxPool2d(3, 2, padding=1))
    return ResNet(stem, w[0], w, (2, 2, 2, 2), num_classes)
