"""MobileNetV2 (Sandler et al. 2018) with a width multiplier and a CIFAR-size variant."""

from __future__ import annotations

from torch import Tensor, nn

from qcompile.zoo.common import MAX_CHANNELS, check_shape, check_width, conv_bn

# (expansion t, channels c, repeats n, first stride s), Table 2 of the paper.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8, never more than 10% down (the reference rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, residual when
    the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, 1, act=None),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2; ``width`` multiplies every layer's channels (the last conv's 1280 only
    grows, as in the paper).

    Images of 64 pixels or less use the usual CIFAR adaptation: stride 1 in the stem and in
    the first stride-2 stage, so 32x32 inputs end on a 4x4 map instead of 1x1.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int, width: float = 1.0
    ) -> None:
        super().__init__()
        c, h, w = check_shape("mobilenetv2", in_shape)
        width = check_width("mobilenetv2", width)
        if make_divisible(1280 * width) > MAX_CHANNELS:
            raise ValueError(f"width {width:g} is too large (layers over {MAX_CHANNELS} channels)")
        small = min(h, w) <= 64
        cin = make_divisible(32 * width)
        layers: list[nn.Module] = [conv_bn(c, cin, 3, 1 if small else 2, act=nn.ReLU6)]
        for i, (t, ch, n, s) in enumerate(SETTINGS):
            cout = make_divisible(ch * width)
            stride = 1 if small and i == 1 else s
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, stride if j == 0 else 1, t))
                cin = cout
        last = make_divisible(1280 * max(1.0, width))
        layers.append(conv_bn(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))
