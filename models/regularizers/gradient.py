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
from models.regularizers.directions import DirectionStore, per_sample_normalize


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
) -> tuple[Tensor, Tensor, Tensor]:
    """ℓ_b, d_b = (ℓ_b(x + h v_b) − ℓ_b(x)) / h (Finlay & Oberman 2019), and g_b (detached).

    v_b = g_b/‖g_b‖₂ makes d_b ≈ ‖g_b‖₂; v_b = sign(g_b)/√D makes d_b ≈ ‖g_b‖₁/√D. The gradient g
    is taken without a graph: only the two loss evaluations are differentiated, which is what
    makes this cheaper than double backpropagation.
    """
    with full_precision(x):
        x = _leaf(x)
        losses = per_sample_loss(model(x), y, task)
        g = input_gradient(losses.sum(), x, create_graph=False)
        shifted = per_sample_loss(model(x.detach() + h * unit_direction(g, direction)), y, task)
        return losses, (shifted - losses) / h, g


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


def unit_direction(g: Tensor, direction: str) -> Tensor:
    """v = g/‖g‖₂ (l2) or sign(g)/√D (linf), per sample, in g's shape."""
    flat = g.flatten(1)
    if direction == "l2":
        return per_sample_normalize(g)
    return (flat.sign() / math.sqrt(flat.shape[1])).view_as(g)


class CarriedSlope:
    """Finite-difference slopes along each sample's gradient direction from its previous visit.

    Finlay & Oberman's estimate needs v_b = g_b/‖g_b‖ before the shifted forward pass, and g_b costs
    a backward pass of its own (2 forwards + a backward to the input + a backward through both
    graphs: ≈ 2.3 ERM steps). The training step's own backward already passes through the clean
    forward pass, so making the clean inputs a leaf gives ∂L/∂x_b = c_b g_b for free, with c_b =
    1/B − 2λ d_b/(hB) known from the forward pass: g_b's direction is that gradient divided by c_b's
    sign. Carried to the sample's next visit, it lets one step be two forward passes and one
    backward pass (2 ERM steps). A sample's first visit measures g_b as the paper does.

    The direction is one visit old, so d_b ≈ g_b·v_b ≤ ‖g_b‖ (to first order in h) estimates the
    norm from below; docs/regularizers.md compares training with it against the fresh direction.
    """

    def __init__(self, weight: float, h: float, direction: str) -> None:
        self.weight, self.h, self.direction = weight, h, direction
        self.store = DirectionStore()
        self.awaiting_backward = False

    def slope(self, model: nn.Module, batch: Batch, task: Task) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """ℓ_b, d_b, and the probes the step's backward must differentiate (the clean inputs)."""
        if self.awaiting_backward:
            raise RuntimeError(
                "the previous step's backward did not differentiate Objective.probes: pass "
                "inputs=[*parameters, *objective.probes] to backward (the carried directions need it)"
            )
        assert batch.index is not None
        x = batch.x
        carried, seen = self.store.start(batch.index, x)
        first_visit = seen is None or not bool(self.store.seen[batch.index.cpu()].all())  # on the host: no sync
        with full_precision(x):
            if first_visit:  # measure the direction
                losses, slope, g = finite_difference_slope(model, x, batch.y, task, self.h, self.direction)
                leaf = None
            else:
                leaf = _leaf(x)
                losses = per_sample_loss(model(leaf), batch.y, task)
                v = unit_direction(carried.to(x.dtype), self.direction)  # (stored in bf16 for big sets)
                shifted = per_sample_loss(model(x.detach() + self.h * v), batch.y, task)
                slope = (shifted - losses) / self.h
        if leaf is None:
            self.store.update(batch.index, g)  # the direction measured on this visit, for the next one
            return losses, slope, ()
        # ∂L/∂ℓ_b = (1 − 2λ d_b / h) / B with L = mean ℓ + λ mean d²; its sign orients the gradient
        scale = (1.0 - 2.0 * self.weight * slope.detach() / self.h).sign()
        previous = carried
        index = batch.index

        def carry(grad: Tensor) -> None:
            self.awaiting_backward = False
            oriented = grad.detach() * scale.view(-1, *([1] * (grad.dim() - 1)))
            usable = (oriented.flatten(1).norm(dim=1) > 0) & (scale != 0)
            mask = usable.view(-1, *([1] * (grad.dim() - 1)))
            self.store.update(index, torch.where(mask, oriented, previous))

        leaf.register_hook(carry)  # type: ignore[no-untyped-call]
        self.awaiting_backward = True
        return losses, slope, (leaf,)


class DoubleBackpropReg(Regularizer):
    """λ · mean_b ‖∇ₓℓ_b‖₂², exact or by finite differences (fresh or carried directions)."""

    def __init__(self, task: Task, spec: DoubleBackprop) -> None:
        super().__init__(task)
        self.spec = spec
        self.carried = (CarriedSlope(spec.weight, spec.h, spec.direction)
                        if spec.method == "finite_difference" and spec.gradient == "carried" else None)

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        probes: tuple[Tensor, ...] = ()
        if self.spec.method == "exact":
            losses, grad = gradient_penalty_terms(model, batch.x, batch.y, self.task)
            penalty = grad.flatten(1).pow(2).sum(dim=1).mean()
        else:
            if self.carried is not None and batch.index is not None:
                losses, slope, probes = self.carried.slope(model, batch, self.task)
            else:
                losses, slope, _ = finite_difference_slope(
                    model, batch.x, batch.y, self.task, self.spec.h, self.spec.direction
                )
            penalty = slope.pow(2).mean()
        task_loss = losses.mean()
        return Objective(task_loss + self.spec.weight * penalty, task_loss.detach(), penalty.detach(), probes)

    def state_dict(self) -> dict[str, Tensor]:
        return self.carried.store.state_dict() if self.carried is not None else {}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device) -> None:
        if self.carried is not None:
            self.carried.store.load_state_dict(state, device)
            self.carried.awaiting_backward = False


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
