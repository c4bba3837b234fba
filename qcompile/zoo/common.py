"""Building blocks shared by the zoo architectures."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(
    cin: int,
    cout: int,
    k: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias: BN follows) + BatchNorm + optional activation, "same" padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def flat_features(body: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Number of features ``body`` produces for one input of ``in_shape``."""
    with torch.no_grad():
        was_training = body.training
        body.eval()
        n = body(torch.zeros(1, *in_shape)).numel()
        body.train(was_training)
    return n


def check_shape(name: str, in_shape: tuple[int, ...], min_side: int = 1) -> tuple[int, int, int]:
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(f"{name} needs an input shape (C, H, W), got {in_shape}")
    if min(in_shape[1:]) < min_side:
        raise ValueError(f"{name} needs images of at least {min_side}x{min_side}, got {in_shape}")
    c, h, w = in_shape
    return (c, h, w)
