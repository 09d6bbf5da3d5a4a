"""Input-Hessian penalties: power-iteration operator norm (Mustafa et al.) and CURE's finite difference."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.enums import Task
from core.specs.regularizers import InputHessian
from models.regularizers.base import Batch, Objective, Regularizer, input_gradient, per_sample_loss


def _per_sample_normalize(v: Tensor) -> Tensor:
    flat = v.flatten(1)
    unit: Tensor = (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(v)
    return unit


def hessian_rayleigh_quotient(
    grad: Tensor, x: Tensor, iterations: int, generator: torch.Generator, create_graph: bool
) -> Tensor:
    """v_bᵀ H_b v_b per sample, v_b the power-iteration estimate of H_b's top eigenvector.

    `grad` = ∇ₓ Σ_b ℓ_b computed with create_graph=True. Each Hessian-vector product is one more
    backward pass through it; since samples do not interact, ∇ₓ(Σ_b g_b·v_b) has rows H_b v_b.
    `iterations` HVPs (no graph) refine a random start; the last HVP, at the final iterate, is kept
    in the graph when `create_graph` so the quotient can be trained. Its absolute value estimates
    σ_max(H_b) = max |λ(H_b)|.
    """
    v = _per_sample_normalize(
        torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    )
    if not grad.requires_grad:  # the gradient is constant in x (e.g. piecewise-constant model): H = 0
        return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True)
        v = _per_sample_normalize(hv.detach())
    (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, create_graph=create_graph, retain_graph=True)
    return (v * hv).flatten(1).sum(dim=1)


def input_hessian_top_eigenvalue(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, iterations: int, generator: torch.Generator
) -> Tensor:
    """Per-sample estimate of σ_max(∇ₓ² ℓ_b), for evaluation (no graph kept)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = per_sample_loss(model(x), y, task)
        grad = input_gradient(losses.sum(), x, create_graph=True)
        return hessian_rayleigh_quotient(grad, x, iterations, generator, create_graph=False).abs()


def curvature_finite_difference(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, h: float
) -> tuple[Tensor, Tensor]:
    """ℓ_b and ‖∇ℓ(x_b + h z_b) − ∇ℓ(x_b)‖₂ with z_b = sign(∇ℓ_b)/‖sign(∇ℓ_b)‖ (CURE), both differentiable."""
    x = x.detach().requires_grad_(True)
    losses = per_sample_loss(model(x), y, task)
    grad = input_gradient(losses.sum(), x, create_graph=True)
    z = _per_sample_normalize(grad.detach().sign())
    x_h = (x.detach() + h * z).requires_grad_(True)
    grad_h = input_gradient(per_sample_loss(model(x_h), y, task).sum(), x_h, create_graph=True)
    return losses, (grad_h - grad).flatten(1).norm(dim=1)


class InputHessianRegularizer(Regularizer):
    """λ · mean_b σ_max(∇ₓ² ℓ_b) (exact HVPs) or λ · mean_b ‖∇ℓ(x + h z) − ∇ℓ(x)‖ (CURE)."""

    def __init__(self, task: Task, spec: InputHessian) -> None:
        super().__init__(task)
        self.spec = spec

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        if self.spec.method == "exact":
            x = batch.x.detach().requires_grad_(True)
            losses = per_sample_loss(model(x), batch.y, self.task)
            grad = input_gradient(losses.sum(), x, create_graph=True)
            quotient = hessian_rayleigh_quotient(
                grad, x, self.spec.power_iterations, generator, create_graph=True
            )
            penalty = quotient.abs().mean()
        else:
            losses, difference = curvature_finite_difference(
                model, batch.x, batch.y, self.task, self.spec.h
            )
            penalty = difference.mean()
        task_loss = losses.mean()
        return Objective(task_loss + self.spec.weight * penalty, task_loss.detach(), penalty.detach())
