"""Jacobian penalties: exact JacReg / Frob, random projections (Hoffman et al.), SpectReg (Varga et al.)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.enums import Task
from core.specs.regularizers import JacobianReg, SpectralReg
from models.regularizers.base import Batch, Objective, Regularizer, per_sample_loss


def random_unit_vectors(rows: int, dim: int, like: Tensor, generator: torch.Generator) -> Tensor:
    """rows×dim vectors drawn uniformly from the unit sphere."""
    v = torch.randn(rows, dim, generator=generator, device=like.device, dtype=like.dtype)
    unit: Tensor = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit


def vector_jacobian_sq_norm(outputs: Tensor, x: Tensor, v: Tensor) -> Tensor:
    """‖∇ₓ(v_bᵀ o_b)‖₂² per sample, with the graph kept. outputs B×C, v B×C (or 1×C)."""
    (g,) = torch.autograd.grad((outputs * v).sum(), x, create_graph=True, retain_graph=True)
    return g.flatten(1).pow(2).sum(dim=1)


def jacobian_frobenius_sq(outputs: Tensor, x: Tensor) -> Tensor:
    """Exact ‖∂o_b/∂x‖_F² per sample: one backward pass per output."""
    eye = torch.eye(outputs.shape[1], device=outputs.device, dtype=outputs.dtype)
    total = vector_jacobian_sq_norm(outputs, x, eye[0:1])
    for k in range(1, outputs.shape[1]):
        total = total + vector_jacobian_sq_norm(outputs, x, eye[k : k + 1])
    return total


def jacobian_frobenius_sq_projected(
    outputs: Tensor, x: Tensor, projections: int, generator: torch.Generator
) -> Tensor:
    """Unbiased estimate of ‖∂o_b/∂x‖_F²: C/n · Σ_k ‖∇ₓ(v_bkᵀ o_b)‖², v_bk uniform on the sphere.

    E[‖Jᵀv‖²] = ‖J‖_F²/C for a uniform unit v, so each projection is scaled by C.
    """
    batch, classes = outputs.shape
    total = vector_jacobian_sq_norm(outputs, x, random_unit_vectors(batch, classes, outputs, generator))
    for _ in range(1, projections):  # projections >= 1 (JacobianReg validates it)
        total = total + vector_jacobian_sq_norm(outputs, x, random_unit_vectors(batch, classes, outputs, generator))
    return total * (classes / projections)


class JacobianRegularizer(Regularizer):
    """λ · mean_b ‖∂o_b/∂x‖_F², o = softmax or logits; exact or by random projections."""

    def __init__(self, task: Task, spec: JacobianReg) -> None:
        super().__init__(task)
        self.spec = spec

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        x = batch.x.detach().requires_grad_(True)
        logits = model(x)
        task_loss = per_sample_loss(logits, batch.y, self.task).mean()
        outputs = F.softmax(logits, dim=1) if self.spec.target == "softmax" else logits
        if self.spec.projections is None:
            per_sample = jacobian_frobenius_sq(outputs, x)
        else:
            per_sample = jacobian_frobenius_sq_projected(outputs, x, self.spec.projections, generator)
        penalty = per_sample.mean()
        return Objective(task_loss + self.spec.weight * penalty, task_loss.detach(), penalty.detach())


class SpectralRegularizer(Regularizer):
    """λ · mean_b ‖∇ₓ(rᵀ f(x_b))‖₂², one r ~ N(0, I_C) per batch: unbiased for ‖J_f‖_F² (logits)."""

    def __init__(self, task: Task, spec: SpectralReg) -> None:
        super().__init__(task)
        self.weight = spec.weight

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        x = batch.x.detach().requires_grad_(True)
        logits = model(x)
        task_loss = per_sample_loss(logits, batch.y, self.task).mean()
        r = torch.randn(1, logits.shape[1], generator=generator, device=x.device, dtype=logits.dtype)
        penalty = vector_jacobian_sq_norm(logits, x, r).mean()
        return Objective(task_loss + self.weight * penalty, task_loss.detach(), penalty.detach())
