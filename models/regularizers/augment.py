"""Objectives that change the data the loss sees: MaxUp and adversarial training."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from core.enums import Task
from core.specs.regularizers import AdversarialTraining, MaxUp
from models.attacks.perturb import fgsm_linf, pgd_linf
from models.regularizers.base import Batch, Objective, Regularizer, per_sample_loss


def maxup_copies(x: Tensor, spec: MaxUp, generator: torch.Generator) -> Tensor:
    """m×B×… perturbed copies x + δ_i, kept inside [0, 1]."""
    shape = (spec.copies, *x.shape)
    if spec.perturbation == "gaussian":
        assert spec.sigma is not None  # the spec validator guarantees it
        noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * spec.sigma
    else:
        assert spec.eps is not None
        uniform = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
        noise = (2 * uniform - 1) * spec.eps
    return (x.unsqueeze(0) + noise).clamp(0.0, 1.0)


class MaxUpRegularizer(Regularizer):
    """mean_b max_i ℓ(f(x_b + δ_bi), y_b); only the worst copy is back-propagated.

    The m copies are scored without a graph, then the worst copy of every sample is run again with
    one: the same value and gradient as differentiating the max, at the cost of one training step
    plus m forward passes. `task_loss` is the mean loss over all copies, `penalty` 0 (MaxUp has no
    separate penalty term; it changes the data term).
    """

    def __init__(self, task: Task, spec: MaxUp) -> None:
        super().__init__(task)
        self.spec = spec

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        copies = maxup_copies(batch.x, self.spec, generator)  # m×B×…
        m, b = copies.shape[:2]
        with torch.no_grad():
            y_rep = batch.y.repeat(m, *([1] * (batch.y.dim() - 1)))
            losses = per_sample_loss(model(copies.flatten(0, 1)), y_rep, self.task).view(m, b)
        worst = copies[losses.argmax(dim=0), torch.arange(b, device=batch.x.device)]
        loss = per_sample_loss(model(worst), batch.y, self.task).mean()
        return Objective(loss, losses.mean(), torch.zeros((), device=loss.device, dtype=loss.dtype))


class AdversarialTrainingRegularizer(Regularizer):
    """Loss on L∞ adversarial examples: FGSM with random start (α = 1.25ε) or PGD (α = 2.5ε/steps).

    `task_loss` is the loss on the adversarial batch (mixed with the clean one by `clean_weight`).
    """

    def __init__(self, task: Task, spec: AdversarialTraining) -> None:
        super().__init__(task)
        self.spec = spec
        self.loss_fn = functools.partial(per_sample_loss, task=task)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        s = self.spec
        if s.attack == "fgsm":
            step = 1.25 * s.eps if s.step_size is None else s.step_size
            return fgsm_linf(
                model, x, y, s.eps, self.loss_fn,
                step_size=step, random_start=s.random_start, generator=generator,
            )
        step = 2.5 * s.eps / s.pgd_steps if s.step_size is None else s.step_size
        return pgd_linf(
            model, x, y, s.eps, self.loss_fn,
            steps=s.pgd_steps, step_size=step, random_start=s.random_start, generator=generator,
        )

    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective:
        x_adv = self.perturb(model, batch.x, batch.y, generator)
        loss = per_sample_loss(model(x_adv), batch.y, self.task).mean()
        if self.spec.clean_weight > 0:
            clean = per_sample_loss(model(batch.x), batch.y, self.task).mean()
            loss = (1 - self.spec.clean_weight) * loss + self.spec.clean_weight * clean
        return Objective(loss, loss.detach(), torch.zeros((), device=loss.device, dtype=loss.dtype))
