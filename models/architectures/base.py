"""Normalization inside the model, and the wrapper every registry architecture is built into."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """(x − mean) / std per channel, as a layer, so attacks work on raw [0, 1] inputs."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_dims: int) -> None:
        super().__init__()
        # Broadcast over N×C×H×W (images) or N×D (vectors: one channel, mean/std of length 1).
        shape = (1, len(mean), 1, 1) if input_dims == 3 else (1, -1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class NormalizedModel(nn.Module):
    """A registry network behind its normalization layer. Inputs live in [0, 1]."""

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(self.normalize(x))
        return out
