"""Sobolev training (Czarnecki et al. 2017): match a teacher's outputs and its input derivatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.enums import Task
from core.specs.regularizers import Sobolev
from models.regularizers.base import Batch, Objective, Regularizer, per_sample_loss
from models.regularizers.jacobian import random_unit_vectors


def _matched_outputs(logits: Tensor, task: Task) -> Tensor:
    """What the derivatives are matched on: log-probabilities (shift-invariant) or raw outputs."""
    return F.log_softmax(logits, dim=1) if task == Task.CLASSIFICATION else logits


def sobolev_derivative_gap(
    student_out: Tensor,
    x: Tensor,
    teacher_out: Tensor,
    x_teacher: Tensor,
    projections: int,
    generator: torch.Generator,
) -> Tensor:
    """mean_k ‖∇ₓ(v_bkᵀ s_b) − ∇ₓ(v_bkᵀ t_b)‖² per sample, v_bk uniform unit vectors.

    The student's side keeps its graph; the teacher's is a constant. Its expectation over v is
    ‖J_s − J_t‖_F² / K for K outputs (exact for K = 1, where v = ±1).
    """
    batch, outputs = student_out.shape
    total = torch.zeros(batch, device=x.device, dtype=student_out.dtype)
    for _ in range(projections):
        v = random_unit_vectors(batch, outputs, student_out, generator)
        (g_s,) = torch.autograd.grad((student_out * v).sum(), x, create_graph=True, retain_graph=True)
        (g_t,) = torch.autograd.grad((teacher_out * v).sum(), x_teacher, retain_graph=True)
        total = total + (g_s - g_t.detach()).flatten(1).pow(2).sum(dim=1)
    return total / projections


class SobolevRegularizer(Regularizer):
    """ℓ(f(x), g(x)) + λ · mean_b mean_k ‖v_bkᵀ(J_f(x_b) − J_g(x_b))‖².

    Classification: ℓ is the cross-entropy against the teacher's probabilities (distillation) and
    the Jacobians are those of log-probabilities. Regression: ℓ is the squared error against the
    teacher's outputs; with teacher 'dataset' it is against the targets and their exact gradients.
    `task_loss` reports the loss against the true labels / targets, for comparison with ERM.
    """

    def __init__(self, task: Task, spec: Sobolev, teacher: nn.Module | None) -> None:
        super().__init__(task)
        if spec.teacher != "dataset" and teacher is None:
            raise ValueError(f"sobolev run {spec.name!r} needs its teacher model {spec.teacher!r}")
        self.spec = spec
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        x = batch.x.detach().requires_grad_(True)
        out = model(x)
        label_loss = per_sample_loss(out, batch.y, self.task).mean().detach()
        if self.teacher is None:
            if batch.dydx is None:
                raise ValueError("teacher 'dataset' needs a dataset with exact target gradients")
            fit = per_sample_loss(out, batch.y, self.task)
            (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
            gap = (g.flatten(1) - batch.dydx.flatten(1)).pow(2).sum(dim=1)
        else:
            x_t = batch.x.detach().requires_grad_(True)
            with torch.enable_grad():
                t_out = self.teacher(x_t)
            if self.task == Task.CLASSIFICATION:
                soft_targets = F.softmax(t_out.detach(), dim=1)
                fit = -(soft_targets * F.log_softmax(out, dim=1)).sum(dim=1)
            else:
                fit = (out - t_out.detach()).pow(2).flatten(1).sum(dim=1)
            gap = sobolev_derivative_gap(
                _matched_outputs(out, self.task), x,
                _matched_outputs(t_out, self.task), x_t,
                self.spec.projections, generator,
            )
        penalty = gap.mean()
        loss = fit.mean() + self.spec.weight * penalty
        return Objective(loss, label_loss, penalty.detach())
