"""Evaluate one model: clean accuracy, the attack sweep, worst case per ε, sensitivity, checks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.enums import Task
from core.reports import AttackAccuracy, Check, Sensitivity, WorstCase
from core.specs.evaluation import AttackSpec, EvaluationSpec
from models.attacks import run_attack
from models.datasets.base import DatasetBundle
from models.evaluation.checks import audit_checks, gradient_health
from models.evaluation.sensitivity import measure_sensitivity
from models.regularizers.base import per_sample_loss

log = logging.getLogger(__name__)

AUDIT_SAMPLES = 200  # each attack runs on its own on this many samples for the validity checks


@dataclass
class ModelEvaluation:
    clean_accuracy: float
    samples: int
    robust: list[AttackAccuracy]
    worst_case: list[WorstCase]
    sensitivity: Sensitivity
    checks: list[Check]
    seconds: float

    @property
    def trustworthy(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


def _predict_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        preds = [model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds) == y


def _clean_gradients(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    device = next(model.parameters()).device
    grads = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).requires_grad_(True)
        with torch.enable_grad():
            loss = per_sample_loss(model(xb), y[i : i + batch_size].to(device), Task.CLASSIFICATION).sum()
            (g,) = torch.autograd.grad(loss, xb, allow_unused=True) if loss.requires_grad else (None,)
        grads.append(torch.zeros_like(xb).cpu() if g is None else g.cpu())  # no path: a zero gradient
    return torch.cat(grads)


def worst_case_curves(clean_correct: Tensor, broken: dict[str, dict[float, Tensor]]) -> list[WorstCase]:
    """Per norm and ε: correct under every attack at every ε' ≤ ε (monotone by construction)."""
    out: list[WorstCase] = []
    for norm, by_eps in broken.items():
        cumulative = ~clean_correct
        for eps in sorted(by_eps):
            cumulative = cumulative | by_eps[eps]
            out.append(WorstCase(norm=norm, eps=eps, accuracy=float((~cumulative).double().mean())))
    return out


def _broken_so_far(by_eps: dict[float, Tensor], eps: float, clean_correct: Tensor) -> Tensor:
    broken = ~clean_correct
    for e, b in by_eps.items():
        if e <= eps:
            broken = broken | b
    return broken


def evaluate_model(
    model: nn.Module,
    data: DatasetBundle,
    evaluation: EvaluationSpec,
    *,
    progress: Callable[[str], None] | None = None,
) -> ModelEvaluation:
    """The whole evaluation of DESIGN §3 for one model in eval mode, inputs in [0, 1]."""
    if data.task != Task.CLASSIFICATION:
        raise ValueError(f"robustness evaluation needs a classification dataset; {data.name!r} is regression")
    if len(data.x_test) == 0:
        raise ValueError(f"dataset {data.name!r} has no test samples to evaluate on: add x_test / y_test")
    started = time.perf_counter()
    model.eval()
    n = len(data.x_test) if evaluation.max_samples is None else min(evaluation.max_samples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    bs, seed = evaluation.batch_size, evaluation.seed
    clean_correct = _predict_correct(model, x, y, bs)

    robust: list[AttackAccuracy] = []
    broken: dict[str, dict[float, Tensor]] = {}
    for spec in evaluation.attacks:
        if progress:
            progress(f"{spec.kind} {spec.norm} ε={spec.eps}")
        by_eps = broken.setdefault(spec.norm, {})
        already = torch.stack([_broken_so_far(by_eps, e, clean_correct) for e in spec.eps])
        result = run_attack(model, x, y, spec, seed=seed, batch_size=bs, already_broken=already)
        for i, eps in enumerate(result.eps):
            robust.append(AttackAccuracy(attack=spec.kind, norm=spec.norm, eps=eps, label=result.label,
                                         accuracy=float(result.correct[i].double().mean())))
            by_eps[eps] = by_eps.get(eps, torch.zeros(n, dtype=torch.bool)) | ~result.correct[i]

    if progress:
        progress("validity checks")
    audit = min(AUDIT_SAMPLES, n)
    xa, ya = x[:audit], y[:audit]

    def own_accuracy(spec: AttackSpec) -> float:
        return float(run_attack(model, xa, ya, spec, seed=seed, batch_size=bs).correct[0].double().mean())

    checks = [gradient_health(_clean_gradients(model, x, y, bs))]
    checks += audit_checks(list(evaluation.attacks), own_accuracy, 1.0 / data.num_outputs)
    if progress:
        progress("sensitivity")
    sensitivity = measure_sensitivity(model, xa, ya, data.task, seed=seed)
    return ModelEvaluation(
        clean_accuracy=float(clean_correct.double().mean()),
        samples=n,
        robust=robust,
        worst_case=worst_case_curves(clean_correct, broken),
        sensitivity=sensitivity,
        checks=checks,
        seconds=time.perf_counter() - started,
    )
