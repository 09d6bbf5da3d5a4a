"""Sensitivity measures on test points: the quantities the regularizers act on."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.enums import Task
from core.reports import Sensitivity
from models.attacks.context import model_device
from models.regularizers.base import per_sample_loss
from models.regularizers.hessian import input_hessian_top_eigenvalue
from models.regularizers.jacobian import jacobian_frobenius_sq


def measure_sensitivity(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, *, seed: int, batch_size: int = 100,
    hessian_iterations: int = 10,
) -> Sensitivity:
    """Means over the given points of ‖∇ₓℓ‖₂, σ_max(∇ₓ²ℓ) (power iteration) and ‖∂f/∂x‖_F (logits)."""
    model.eval()
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    grads, hessians, jacobians = [], [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).requires_grad_(True)
        yb = y[i : i + batch_size].to(device)
        with torch.enable_grad():
            out = model(xb)
            (g,) = torch.autograd.grad(per_sample_loss(out, yb, task).sum(), xb, retain_graph=True,
                                       allow_unused=True)
            if g is None:  # the output does not depend differentiably on the input (e.g. rounding)
                zeros = torch.zeros(len(xb))
                grads.append(zeros), jacobians.append(zeros), hessians.append(zeros)
                continue
            jacobians.append(jacobian_frobenius_sq(out, xb).detach().sqrt().cpu())
        grads.append(g.flatten(1).norm(dim=1).cpu())
        hessians.append(
            input_hessian_top_eigenvalue(model, xb.detach(), yb, task, hessian_iterations, generator).detach().cpu()
        )
    return Sensitivity(
        input_gradient_norm=float(torch.cat(grads).mean()),
        hessian_norm=float(torch.cat(hessians).mean()),
        jacobian_frobenius=float(torch.cat(jacobians).mean()),
        samples=len(x),
    )
