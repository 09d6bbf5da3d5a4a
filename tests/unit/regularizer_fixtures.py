"""A tiny float64 model whose weights are plain inputs, for brute-force and gradcheck comparisons."""

from __future__ import annotations

import torch
from torch import Tensor, nn

D, H, C, B = 6, 5, 3, 4  # inputs, hidden units, classes, batch


class TinyNet(nn.Module):
    """tanh MLP D→H→C with weights given as tensors (so gradcheck can perturb them)."""

    def __init__(self, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> None:
        super().__init__()
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x.flatten(1) @ self.w1.T + self.b1) @ self.w2.T + self.b2


def weights(seed: int = 0, outputs: int = C) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(H, D), (H,), (outputs, H), (outputs,)]
    return tuple(
        (torch.randn(s, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True) for s in shapes
    )


def data(seed: int = 1, outputs: int = C) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, outputs, (B,), generator=g)
    return x, y
