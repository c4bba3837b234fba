"""Optimizer and learning-rate schedule from a :class:`TrainSpec`.

The rate is a pure function of the epoch (no scheduler object to save), so a resumed run
sets exactly the rate the uninterrupted one had.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qcompile.recipe import TrainSpec


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """SGD (Nesterov-free, with momentum) or Adam; weight decay only on weight matrices and
    kernels: biases, BatchNorm and quantizer parameters (PACT clips, LSQ steps) are exempt."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    # foreach: one C++ loop over the parameters per update op. torch picks it only for CUDA
    # tensors by default; on the CPU the per-parameter Python loop cost ~50 us a tensor per
    # step, and every quantizer parameter (PACT clips, DQA attention, DDQ levels) is one more
    # tensor. The CPU foreach ops run the same kernels one tensor at a time: same results.
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, foreach=True)
    return torch.optim.Adam(groups, lr=spec.lr, foreach=True)


def learning_rate(spec: TrainSpec, epoch: int) -> float:
    """Rate for 0-based ``epoch``.

    >>> learning_rate(TrainSpec(lr=0.1, schedule="step", epochs=100), 60)
    0.010000000000000002
    """
    if spec.schedule == "cosine":
        return spec.lr * 0.5 * (1 + math.cos(math.pi * epoch / spec.epochs))
    if spec.schedule == "step":
        marks = [m * spec.epochs if m <= 1 else m for m in spec.milestones]
        return spec.lr * spec.gamma ** sum(epoch >= m for m in marks)
    return spec.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
