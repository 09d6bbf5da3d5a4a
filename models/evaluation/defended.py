"""Known defended models: wrappers that mask gradients in the ways real defenses do.

They audit the evaluation (issue 23): the tests and `benchmarks/defended_models.py` wrap a trained
model in each and check that the suite reports the number a strong adaptive attack finds, and says
when it needed escalation to get it. None of them is a defense worth deploying.

- `LogitScaled`: logits × 1000 (cross-entropy saturates; margin losses do not).
- `Rounded`: inputs rounded to 4 levels: a zero input gradient almost everywhere.
- `StraightThrough`: the same rounding with an identity backward: the honest gradient (BPDA).
- `FlippedStraightThrough`: that gradient with its sign flipped on a fixed share of the pixels:
  dense, finite, non-zero and wrong.
- `Randomized`: Gaussian noise on the input at every forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

LEVELS = 3  # x ↦ round(3x)/3: the 4 levels 0, 1/3, 2/3, 1


def round_levels(x: Tensor) -> Tensor:
    return torch.round(x * LEVELS) / LEVELS


class _Wrapped(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


class LogitScaled(_Wrapped):
    def __init__(self, inner: nn.Module, scale: float = 1000.0) -> None:
        super().__init__(inner)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x) * self.scale
        return out


class Rounded(_Wrapped):
    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(round_levels(x))
        return out


class _RoundStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return round_levels(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


class StraightThrough(_Wrapped):
    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(_RoundStraightThrough.apply(x))  # type: ignore[no-untyped-call]
        return out


class _RoundFlipped(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, flip: Tensor) -> Tensor:
        ctx.save_for_backward(flip)
        return round_levels(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (flip,) = ctx.saved_tensors
        return grad * flip, None


class FlippedStraightThrough(_Wrapped):
    """Straight-through rounding whose gradient sign is flipped on `share` of the input's elements
    (the same elements for every sample, chosen by `seed`)."""

    def __init__(self, inner: nn.Module, share: float = 0.15, seed: int = 0) -> None:
        super().__init__(inner)
        self.share, self.seed = share, seed

    def forward(self, x: Tensor) -> Tensor:
        flip = torch.ones(x[0].numel(), device=x.device, dtype=x.dtype)
        chosen = torch.randperm(flip.numel(), generator=torch.Generator().manual_seed(self.seed))
        flip[chosen[: int(self.share * flip.numel())].to(x.device)] = -1
        out: Tensor = self.inner(_RoundFlipped.apply(x, flip.view_as(x[0])))  # type: ignore[no-untyped-call]
        return out


class Randomized(_Wrapped):
    def __init__(self, inner: nn.Module, sigma: float = 0.1) -> None:
        super().__init__(inner)
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x + self.sigma * torch.randn_like(x))
        return out
