"""The optimizers run their CPU updates with foreach: the same parameters, bit for bit, as
the per-tensor loop torch uses by default on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qcompile.optim import make_optimizer
from qcompile.recipe import TrainSpec


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_foreach_updates_equal_the_per_tensor_loop(optimizer: str) -> None:
    spec = TrainSpec(optimizer=optimizer, lr=0.05, weight_decay=1e-3)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)))
    fast = make_optimizer(models[0], spec)
    assert all(group["foreach"] for group in fast.param_groups)
    slow = make_optimizer(models[1], spec)
    for group in slow.param_groups:
        group["foreach"] = False
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for model, opt in ((models[0], fast), (models[1], slow)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
