"""Optimizers and learning-rate schedules as plain functions of training progress.

The schedule is a function of the global step, not a stateful scheduler object, so resuming from
a checkpoint only needs the step count to reproduce the learning rate exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from core.specs.training import TrainingSpec


def build_optimizer(
    parameters: Iterable[nn.Parameter], spec: TrainingSpec, weight_decay: float
) -> torch.optim.Optimizer:
    params = list(parameters)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=weight_decay)


def lr_factor(spec: TrainingSpec, step: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total_steps`."""
    t = step / max(total_steps, 1)  # progress in [0, 1)
    if spec.schedule == "constant":
        return 1.0
    if spec.schedule == "step":  # e.g. Varga et al.: × 0.1 at 50 % and 75 %
        return float(spec.gamma ** sum(t >= m for m in spec.milestones))
    if spec.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    # one-cycle (Smith & Topin): linear warm-up from 1/25 over 30 %, then cosine to ~0
    warmup = 0.3
    if t < warmup:
        return 1 / 25 + (1 - 1 / 25) * t / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (1 - warmup))) * (1 - 1e-4) + 1e-4


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
