"""Training stages by method name, and :func:`quantize` for users' own models."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from qcompile.errors import QCompileError, did_you_mean, unknown_choice
from qcompile.stages.base import Stage, StageConfig
from qcompile.stages.ddq import DDQStage
from qcompile.stages.dmbq import DMBQStage
from qcompile.stages.dqa import BRStage, DQAStage
from qcompile.stages.layers import (
    ActExport,
    QuantAct,
    QuantConv2d,
    QuantLayer,
    QuantLinear,
    QuantModel,
    WeightExport,
)
from qcompile.stages.sdq import SDQStage
from qcompile.stages.uniform import UniformStage

STAGES: dict[str, type[Stage]] = {
    s.name: s for s in (UniformStage, DQAStage, BRStage, DDQStage, DMBQStage, SDQStage)
}


def stage_class(method: str) -> type[Stage]:
    if method in STAGES:
        return STAGES[method]
    raise unknown_choice("method", method, STAGES)


def make_stage(method: str, **options: Any) -> Stage:
    """The stage ``method`` configured with ``options`` (fields of its config class)."""
    cls = stage_class(method)
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    for key in options:
        if key not in known:
            raise QCompileError(
                f"unknown option '{key}' for method '{method}'{did_you_mean(key, known)}; "
                f"valid: {', '.join(sorted(known))}"
            )
    try:
        return cls(cls.config_class(**options))
    except (TypeError, ValueError) as e:
        raise QCompileError(f"method '{method}': {e}") from None


def quantize(model: nn.Module, method: str = "uniform", **options: Any) -> QuantModel:
    """Wrap any ``nn.Module``'s Conv2d/Linear/ReLU/ReLU6 layers for quantization-aware training.

    Returns a :class:`QuantModel` (the input model is not modified). Train it like any module;
    stages with extra terms expose them as ``model.stage.regularizer(model)``.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32),
    ...                           torch.nn.ReLU(), torch.nn.Linear(32, 10))
    >>> qnet = quantize(net, method="uniform", wbits=4, abits=4, first_last_wbits="same")
    >>> qnet.weight_bits()
    {'1': 4, '3': 4}
    >>> qnet(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    return make_stage(method, **options).wrap(model)


__all__ = [
    "STAGES",
    "ActExport",
    "QuantAct",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
    "QuantModel",
    "Stage",
    "StageConfig",
    "WeightExport",
    "make_stage",
    "quantize",
    "stage_class",
]
