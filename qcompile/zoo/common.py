"""Building blocks shared by the zoo architectures."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

# Far above any zoo architecture's widest layer; keeps a mistyped width from asking for
# terabytes of weights.
MAX_CHANNELS = 1 << 16


def check_width(name: str, width: object) -> float:
    """``width`` if it is a finite number > 0 (a channel multiplier), else ValueError."""
    ok = isinstance(width, int | float) and not isinstance(width, bool)
    if not (ok and math.isfinite(width) and width > 0):  # type: ignore[arg-type]
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    return float(width)  # type: ignore[arg-type]


def scaled(name: str, counts: Sequence[int], width: object) -> tuple[int, ...]:
    """``counts`` times ``width``, rounded. A width that would leave a layer without channels
    is an error, not silently raised to one channel.

    >>> scaled("lenet", (6, 16), 0.5)
    (3, 8)
    """
    w = check_width(name, width)
    out = tuple(round(n * w) for n in counts)
    if min(out) < 1:
        raise ValueError(
            f"width {w:g} leaves {name}'s {min(counts)}-channel layer with none; "
            f"use width >= {1 / min(counts):.3g}"
        )
    if max(out) > MAX_CHANNELS:
        raise ValueError(
            f"width {w:g} gives {name} a layer of {max(out)} channels (at most {MAX_CHANNELS})"
        )
    return out


def check_units(name: str, units: object) -> tuple[int, ...]:
    """A list of layer sizes, each an integer 1..MAX_CHANNELS."""
    if not isinstance(units, Sequence) or isinstance(units, str):
        raise ValueError(f"{name} must be a list of integers, got {units!r}")
    for u in units:
        if isinstance(u, bool) or not isinstance(u, int) or not 1 <= u <= MAX_CHANNELS:
            raise ValueError(f"{name} sizes must be integers 1..{MAX_CHANNELS}, got {u!r}")
    return tuple(units)


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
