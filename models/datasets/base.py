"""What every dataset loader returns, and the seeded sample selection they share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from core.enums import Task


@dataclass(frozen=True)
class DatasetBundle:
    """Train and test tensors, inputs float32 in [0, 1].

    x: N×C×H×W for images, N×D for vectors. y: int64 labels (classification) or float32 N×1
    targets (regression). dydx: exact target gradients N×D' (regression sets that have them).
    """

    name: str
    task: Task
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_outputs: int  # classes, or output dimension for regression
    dydx_train: Tensor | None = None
    dydx_test: Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training inputs (vectors: one channel)."""
        x = self.x_train.double()
        dims = [0, 2, 3] if x.dim() == 4 else list(range(x.dim()))
        mean = x.mean(dim=dims).reshape(-1)
        std = x.std(dim=dims).reshape(-1).clamp_min(1e-6)
        return mean.tolist(), std.tolist()


def select(n: int, size: int | None, generator: torch.Generator) -> Tensor:
    """A seeded random subset of range(n) of the given size (all of it, shuffled, when None)."""
    perm = torch.randperm(n, generator=generator)
    if size is None:
        return perm
    if size > n:
        raise ValueError(f"asked for {size} samples but only {n} are available: lower the size")
    return perm[:size]
