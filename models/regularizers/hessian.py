"""Input-Hessian penalties: power-iteration operator norm (Mustafa et al.) and CURE's finite difference."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.enums import Task
from core.specs.regularizers import InputHessian
from models.regularizers.base import Batch, Objective, Regularizer, input_gradient, per_sample_loss
from models.regularizers.directions import DirectionStore, per_sample_normalize
from models.regularizers.gradient import full_precision


def hessian_rayleigh_quotient(
    grad: Tensor,
    x: Tensor,
    iterations: int,
    generator: torch.Generator,
    create_graph: bool,
    start: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """v_bᵀ H_b v_b per sample, v_b the power-iteration estimate of H_b's top eigenvector, and H_b v_b.

    `grad` = ∇ₓ Σ_b ℓ_b computed with create_graph=True. Each Hessian-vector product is one more
    backward pass through it; since samples do not interact, ∇ₓ(Σ_b g_b·v_b) has rows H_b v_b.
    `iterations` HVPs (no graph) refine the start (`start`, else a random direction); the last HVP,
    at the final iterate, is kept in the graph when `create_graph` so the quotient can be trained.
    Its absolute value estimates σ_max(H_b) = max |λ(H_b)|. The returned H_b v_b (detached) is one
    more power-iteration step for free: the start of the next estimate at a nearby point.
    """
    if start is None:
        start = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    v = per_sample_normalize(start.to(x.dtype))
    if not grad.requires_grad:  # the gradient is constant in x (e.g. piecewise-constant model): H = 0
        return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype), v
    for _ in range(iterations):
        (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True)
        v = per_sample_normalize(hv.detach())
    (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, create_graph=create_graph, retain_graph=True)
    return (v * hv).flatten(1).sum(dim=1), hv.detach()


def input_hessian_top_eigenvalue(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, iterations: int, generator: torch.Generator
) -> Tensor:
    """Per-sample estimate of σ_max(∇ₓ² ℓ_b), for evaluation (no graph kept)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = per_sample_loss(model(x), y, task)
        grad = input_gradient(losses.sum(), x, create_graph=True)
        quotient, _ = hessian_rayleigh_quotient(grad, x, iterations, generator, create_graph=False)
        return quotient.abs()


def curvature_finite_difference(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, h: float
) -> tuple[Tensor, Tensor]:
    """ℓ_b and ‖∇ℓ(x_b + h z_b) − ∇ℓ(x_b)‖₂ with z_b = sign(∇ℓ_b)/‖sign(∇ℓ_b)‖ (CURE), both differentiable."""
    with full_precision(x):  # a difference of gradients at step h: fp32 even under autocast
        x = x.detach().requires_grad_(True)
        losses = per_sample_loss(model(x), y, task)
        grad = input_gradient(losses.sum(), x, create_graph=True)
        z = per_sample_normalize(grad.detach().sign())
        x_h = (x.detach() + h * z).requires_grad_(True)
        grad_h = input_gradient(per_sample_loss(model(x_h), y, task).sum(), x_h, create_graph=True)
        return losses, (grad_h - grad).flatten(1).norm(dim=1)


def aligned_start(carried: Tensor, gradient: Tensor) -> Tensor:
    """ĉ_b·sign(ĉ_b·ĝ_b) + ĝ_b: the carried direction and the fresh input gradient, both unit, same side.

    For a network that is piecewise linear in x, H_b = J_bᵀ A_b J_b (A_b = diag(p_b) − p_b p_bᵀ) lives
    in the span of the logit gradients, and g_b = J_bᵀ(p_b − e_y) is dominated by the runner-up
    class's margin direction, which is where a confident sample's top eigenvector lies: the gradient
    is a good start that is never stale. The carried direction adds what earlier visits found.
    """
    c, g = per_sample_normalize(carried).flatten(1), per_sample_normalize(gradient).flatten(1)
    side = torch.where((c * g).sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(c.dtype)
    return (side * c + g).view_as(gradient)


def hessian_norm_estimate(
    grad: Tensor, x: Tensor, iterations: int, start: Tensor, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """‖H_b v_b‖ per sample after `iterations` HVPs from `start`, and H_b v_b (detached).

    `iterations − 1` HVPs (no graph) refine the start; the last one, at the final unit iterate v_b,
    is kept in the graph when `create_graph`. ‖H_b v_b‖ is the power method's estimate of
    σ_max(H_b): never above it, and never below the Rayleigh quotient |v_bᵀH_b v_b| at the same
    v_b (a direction that is off by an angle θ from the top eigenvector loses O(θ²) either way,
    but the norm keeps the energy of the other eigenvalues instead of letting them cancel).
    """
    v = per_sample_normalize(start.to(x.dtype))
    if not grad.requires_grad:  # the gradient is constant in x (e.g. piecewise-constant model): H = 0
        return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype), v
    for _ in range(iterations - 1):
        (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True)
        v = per_sample_normalize(hv.detach())
    (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, create_graph=create_graph, retain_graph=True)
    return hv.flatten(1).norm(dim=1), hv.detach()


class InputHessianRegularizer(Regularizer):
    """λ · mean_b σ_max(∇ₓ² ℓ_b) (HVPs) or λ · mean_b ‖∇ℓ(x + h z) − ∇ℓ(x)‖ (CURE).

    Exact method: `power_iterations` Hessian-vector products in all (the last one differentiated),
    starting from the input gradient's direction, and, when the batch names its samples
    (`Batch.index`, as the training loop does), also from the direction this sample's previous
    visit found (`DirectionStore`, `aligned_start`). The penalty is ‖H_b v_b‖ at the last iterate.
    The default of 1 costs one HVP per step.
    """

    def __init__(self, task: Task, spec: InputHessian) -> None:
        super().__init__(task)
        self.spec = spec
        self.store = DirectionStore()

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        if self.spec.method == "exact":
            x = batch.x.detach().requires_grad_(True)
            losses = per_sample_loss(model(x), batch.y, self.task)
            grad = input_gradient(losses.sum(), x, create_graph=True)
            start = grad.detach()
            if batch.index is not None:
                carried, seen = self.store.start(batch.index, x)
                if seen is not None:
                    start = torch.where(seen, aligned_start(carried, start), start)
            estimate, hv = hessian_norm_estimate(grad, x, self.spec.power_iterations, start, create_graph=True)
            if batch.index is not None:
                self.store.update(batch.index, hv)
            penalty = estimate.mean()
        else:
            losses, difference = curvature_finite_difference(
                model, batch.x, batch.y, self.task, self.spec.h
            )
            penalty = difference.mean()
        task_loss = losses.mean()
        return Objective(task_loss + self.spec.weight * penalty, task_loss.detach(), penalty.detach())

    def state_dict(self) -> dict[str, Tensor]:
        return self.store.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.store.load_state_dict(state, device)
