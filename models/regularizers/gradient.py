"""Plain training and the input-gradient penalties (DESIGN §2, rows 1-2 and 6, and Finlay & Oberman)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.enums import Task
from core.specs.regularizers import ConfidencePenalty, DataGradL1, DoubleBackprop, WeightDecay
from models.regularizers.base import Batch, Objective, Regularizer, input_gradient, per_sample_loss


def _zero(like: Tensor) -> Tensor:
    return torch.zeros((), dtype=like.dtype, device=like.device)


def _leaf(x: Tensor) -> Tensor:
    """A fresh leaf copy of the inputs that autograd can differentiate with respect to."""
    return x.detach().requires_grad_(True)


class Plain(Regularizer):
    """ERM: mean_b ℓ_b."""

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        loss = per_sample_loss(model(batch.x), batch.y, self.task).mean()
        return Objective(loss, loss.detach(), _zero(loss))


class WeightDecayOnly(Plain):
    """ERM whose optimizer uses this run's weight decay instead of the training section's."""

    def __init__(self, task: Task, spec: WeightDecay) -> None:
        super().__init__(task)
        self.decay = spec.weight

    def weight_decay(self, default: float) -> float:
        return self.decay


def gradient_penalty_terms(
    model: nn.Module, x: Tensor, y: Tensor, task: Task
) -> tuple[Tensor, Tensor]:
    """ℓ_b and ∇ₓℓ_b (B×…) with the graph kept, so a penalty on the gradient can be trained."""
    x = _leaf(x)
    losses = per_sample_loss(model(x), y, task)
    return losses, input_gradient(losses.sum(), x, create_graph=True)


def finite_difference_slope(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, h: float, direction: str
) -> tuple[Tensor, Tensor]:
    """ℓ_b and d_b = (ℓ_b(x + h v_b) − ℓ_b(x)) / h (Finlay & Oberman 2019).

    v_b = g_b/‖g_b‖₂ makes d_b ≈ ‖g_b‖₂; v_b = sign(g_b)/√D makes d_b ≈ ‖g_b‖₁/√D. The gradient g
    is taken without a graph: only the two loss evaluations are differentiated, which is what
    makes this cheaper than double backpropagation.
    """
    with full_precision(x):
        x = _leaf(x)
        losses = per_sample_loss(model(x), y, task)
        g = input_gradient(losses.sum(), x, create_graph=False).flatten(1)  # B×D
        if direction == "l2":
            v = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        else:
            v = g.sign() / math.sqrt(g.shape[1])
        shifted = per_sample_loss(model(x.detach() + h * v.view_as(x)), y, task)
        return losses, (shifted - losses) / h


def full_precision(x: Tensor) -> contextlib.AbstractContextManager[object]:
    """Autocast off for a finite difference on `x`'s device (a no-op when autocast is off).

    A difference of two losses at step h is rounding noise in bf16: logits carry about 3
    significant digits, so ℓ(x + hv) − ℓ(x) ≈ h‖g‖ (≈ 0.01) drowns in errors of ≈ 0.01-0.1. The
    two forward passes of a finite-difference penalty therefore run in fp32 even in an autocast
    region; the rest of the step keeps its precision.
    """
    if not torch.is_autocast_enabled(x.device.type):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


class DoubleBackpropReg(Regularizer):
    """λ · mean_b ‖∇ₓℓ_b‖₂², exact or by finite differences."""

    def __init__(self, task: Task, spec: DoubleBackprop) -> None:
        super().__init__(task)
        self.spec = spec

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        if self.spec.method == "exact":
            losses, grad = gradient_penalty_terms(model, batch.x, batch.y, self.task)
            penalty = grad.flatten(1).pow(2).sum(dim=1).mean()
        else:
            losses, slope = finite_difference_slope(
                model, batch.x, batch.y, self.task, self.spec.h, self.spec.direction
            )
            penalty = slope.pow(2).mean()
        task_loss = losses.mean()
        return Objective(task_loss + self.spec.weight * penalty, task_loss.detach(), penalty.detach())


class DataGradL1Reg(Regularizer):
    """λ · mean_b ‖∇ₓℓ_b‖₁."""

    def __init__(self, task: Task, spec: DataGradL1) -> None:
        super().__init__(task)
        self.weight = spec.weight

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        losses, grad = gradient_penalty_terms(model, batch.x, batch.y, self.task)
        penalty = grad.flatten(1).abs().sum(dim=1).mean()
        task_loss = losses.mean()
        return Objective(task_loss + self.weight * penalty, task_loss.detach(), penalty.detach())


def negative_entropy(logits: Tensor) -> Tensor:
    """Σ_k p_k log p_k per sample (≤ 0; 0 for a one-hot prediction)."""
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(dim=1)


class ConfidencePenaltyReg(Regularizer):
    """β · mean_b Σ_k p_bk log p_bk: rewards uncertain predictions (mean over the batch, not the sum)."""

    def __init__(self, task: Task, spec: ConfidencePenalty) -> None:
        super().__init__(task)
        self.weight = spec.weight

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        logits = model(batch.x)
        task_loss = per_sample_loss(logits, batch.y, self.task).mean()
        penalty = negative_entropy(logits).mean()
        return Objective(task_loss + self.weight * penalty, task_loss.detach(), penalty.detach())
