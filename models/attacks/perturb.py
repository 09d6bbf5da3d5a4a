"""L∞ FGSM and PGD perturbations, shared by adversarial training and evaluation.

The model is attacked in whatever mode the caller left it in (training keeps train mode, as Wong
et al. and Madry et al. do; evaluation puts it in eval mode first). Gradients are taken without a
graph and the result is detached: the perturbation is data, not part of the objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs, y) -> per-sample losses


def _loss_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), y).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def uniform_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """δ ~ U(−ε, ε), elementwise."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (2 * noise - 1) * eps


def fgsm_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    loss_fn: LossFn,
    *,
    step_size: float | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x + δ with δ = proj_ε(δ₀ + α·sign(∇ₓℓ(x + δ₀))); δ₀ = 0, or U(−ε, ε) with a random start."""
    step = eps if step_size is None else step_size
    delta = uniform_start(x, eps, generator) if random_start else torch.zeros_like(x)
    x_start = (x + delta).clamp(0.0, 1.0)
    grad = _loss_gradient(model, x_start, y, loss_fn)
    delta = (x_start - x + step * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0).detach()


def pgd_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    loss_fn: LossFn,
    *,
    steps: int,
    step_size: float,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent on the loss in the L∞ ball of radius ε around x, inside [0, 1]."""
    x = x.detach()
    x_adv = x + uniform_start(x, eps, generator) if random_start else x.clone()
    x_adv = x_adv.clamp(0.0, 1.0)
    for _ in range(steps):
        grad = _loss_gradient(model, x_adv, y, loss_fn)
        x_adv = x_adv + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()
