"""Evaluate one model: clean accuracy, the attack sweep, worst case per ε, sensitivity, checks.

Split the way a job's units run it: `evaluate_shard` attacks samples [start, stop) (one unit per
shard, any worker), `finish_evaluation` turns the merged shards into accuracies and runs the checks
once per model; `evaluate_model` does both in this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from core.enums import Task
from core.reports import (
    AttackAccuracy,
    AttackCost,
    Check,
    OutcomeBits,
    SampleOutcomes,
    Sensitivity,
    SuiteMember,
    WorstCase,
    pack_bits,
)
from core.specs.evaluation import APGDAttack, AttackSpec, EvaluationSpec, SquareAttack
from models.attacks import run_attack
from models.attacks.apgd import apgd_run, apgd_start_noise
from models.attacks.context import model_device
from models.datasets.base import DatasetBundle
from models.evaluation.checks import (
    UNBOUNDED_EPS,
    audit_checks,
    black_box_not_stronger,
    gradient_health,
    gradient_stats,
    incomplete_optimization,
    predictions_stable,
    silent_success,
    training_healthy,
    transfer_not_stronger,
    unbounded_eps_breaks_all,
)
from models.evaluation.sensitivity import measure_sensitivity
from models.evaluation.shards import AttackOutcome, ShardOutcome, merge_shards, shard_ranges
from models.regularizers.base import per_sample_loss

log = logging.getLogger(__name__)

AUDIT_SAMPLES = 200  # each attack runs on its own on this many samples for the validity checks


EOT_SAMPLES = 10  # gradients averaged over this many passes when predictions are randomized
UNBOUNDED_STEPS = 20


@dataclass
class ModelEvaluation:
    clean_accuracy: float
    samples: int
    robust: list[AttackAccuracy]
    worst_case: list[WorstCase]
    sensitivity: Sensitivity
    checks: list[Check]
    seconds: float
    attack_costs: list[AttackCost] = field(default_factory=list)
    suite_members: list[SuiteMember] = field(default_factory=list)
    outcomes: SampleOutcomes | None = None

    @property
    def trustworthy(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def training_failed(self) -> bool:
        return any(c.name == "training_healthy" and c.status == "fail" for c in self.checks)


def _predict_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    device = model_device(model)
    with torch.no_grad():
        preds = [model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds) == y


def _clean_gradients(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    device = model_device(model)
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


def sample_outcomes(clean_correct: Tensor, broken: dict[str, dict[float, Tensor]]) -> SampleOutcomes:
    """Per sample: clean correct, and correct under every attack at every ε' ≤ ε (the worst case)."""
    rows = []
    for norm, by_eps in broken.items():
        cumulative = ~clean_correct
        for eps in sorted(by_eps):
            cumulative = cumulative | by_eps[eps]
            rows.append(OutcomeBits(norm=norm, eps=eps, correct=pack_bits((~cumulative).tolist())))
    return SampleOutcomes(samples=len(clean_correct), clean=pack_bits(clean_correct.tolist()), worst_case=rows)


def _broken_so_far(by_eps: dict[float, Tensor], eps: float, clean_correct: Tensor) -> Tensor:
    broken = ~clean_correct
    for e, b in by_eps.items():
        if e <= eps:
            broken = broken | b
    return broken


def _square_rows(results: list[tuple[AttackSpec, AttackOutcome]], white: dict[str, dict[float, Tensor]],
                 square: Any, audit: int) -> list[tuple[str, float, int, int]]:
    """Per norm and ε: samples Square breaks beyond the white-box attacks (the black-box check).

    A suite's own Square member counts what it broke after the white-box members; any other
    evaluation gets a Square run (1,000 queries) on the audit samples the white-box attacks left."""
    rows: list[tuple[str, float, int, int]] = []
    done: set[tuple[str, float]] = set()
    for spec, result in results:
        if spec.kind == "suite":
            n = result.correct.shape[1]
            for m in result.members:
                if m["member"] == "square":
                    rows.append((spec.norm, float(m["eps"]), int(m["broken"]), n))
                    done.add((spec.norm, float(m["eps"])))
    for norm, by_eps in white.items():
        for eps in sorted(by_eps):
            if (norm, eps) in done:
                continue
            left = ~by_eps[eps][:audit]
            if not left.any():
                continue  # the white-box attacks broke everything: Square cannot beat them here
            rows.append((norm, eps, square(norm, eps, left), audit))
    return rows


def evaluated_samples(data: DatasetBundle, evaluation: EvaluationSpec) -> int:
    """How many test samples the evaluation covers (the first ones, by index)."""
    if data.task != Task.CLASSIFICATION:
        raise ValueError(f"robustness evaluation needs a classification dataset; {data.name!r} is regression")
    if len(data.x_test) == 0:
        raise ValueError(f"dataset {data.name!r} has no test samples to evaluate on: add x_test / y_test")
    n = len(data.x_test)
    return n if evaluation.max_samples is None else min(evaluation.max_samples, n)


def _eot_passes(model: nn.Module, data: DatasetBundle, evaluation: EvaluationSpec) -> tuple[int, Check]:
    """Gradients are averaged over EOT_SAMPLES passes when the audit samples' predictions are randomized;
    decided on the same samples by every shard."""
    audit = min(AUDIT_SAMPLES, evaluated_samples(data, evaluation))
    stable = predictions_stable(model, data.x_test[:audit], batch_size=evaluation.batch_size)
    return (EOT_SAMPLES if stable.status != "pass" else 1), stable


def evaluate_shard(model: nn.Module, data: DatasetBundle, evaluation: EvaluationSpec, start: int, stop: int, *,
                   progress: Callable[[str], None] | None = None) -> ShardOutcome:
    """Every attack of the spec on test samples [start, stop): what one evaluation unit computes.

    Per sample, the outcome does not depend on the shard (randomness is keyed by sample index), so
    the shards of a test set merge into exactly what one run over all of it gives."""
    started = time.perf_counter()
    model.eval()
    x, y = data.x_test[start:stop], data.y_test[start:stop]
    n, bs, seed = len(x), evaluation.batch_size, evaluation.seed
    clean_correct = _predict_correct(model, x, y, bs)
    eot, _ = _eot_passes(model, data, evaluation)
    broken: dict[str, dict[float, Tensor]] = {}
    attacks: list[AttackOutcome] = []
    for spec in evaluation.attacks:
        if progress:
            progress(f"{spec.kind} {spec.norm} ε={spec.eps}")
        by_eps = broken.setdefault(spec.norm, {})
        already = torch.stack([_broken_so_far(by_eps, e, clean_correct) for e in spec.eps])
        result = run_attack(model, x, y, spec, seed=seed, batch_size=bs, already_broken=already, eot=eot,
                            offset=start)
        attacks.append(AttackOutcome(label=result.label, eps=list(result.eps), correct=result.correct,
                                     white_correct=result.white_correct,
                                     gradient_evaluations=result.gradient_evaluations, forwards=result.forwards,
                                     seconds=result.seconds, members=list(result.members),
                                     diagnostics=dict(result.diagnostics)))
        for i, eps in enumerate(result.eps):
            by_eps[eps] = by_eps.get(eps, torch.zeros(n, dtype=torch.bool)) | ~result.correct[i]
    if progress:
        progress("input gradients")
    gradient = gradient_stats(_clean_gradients(model, x, y, bs))
    return ShardOutcome(start=start, stop=stop, clean_correct=clean_correct, attacks=attacks, gradient=gradient,
                        eot=eot, seconds=time.perf_counter() - started)


def evaluate_model(
    model: nn.Module,
    data: DatasetBundle,
    evaluation: EvaluationSpec,
    *,
    progress: Callable[[str], None] | None = None,
    history: Sequence[Any] = (),
    surrogate: tuple[str, nn.Module] | None = None,
) -> ModelEvaluation:
    """The whole evaluation of DESIGN §3 for one model in eval mode, inputs in [0, 1]: the shards
    one after another, then the checks (what the units of a job do, in this process).

    history: the run's per-epoch training records (for the training_healthy check); surrogate:
    (name, model) whose adversarial inputs must not transfer better than the white-box attacks.
    """
    n = evaluated_samples(data, evaluation)
    shards = [evaluate_shard(model, data, evaluation, start, stop, progress=progress)
              for start, stop in shard_ranges(n, evaluation.shard_size)]
    return finish_evaluation(model, data, evaluation, merge_shards(shards), progress=progress, history=history,
                             surrogate=surrogate)


def finish_evaluation(
    model: nn.Module,
    data: DatasetBundle,
    evaluation: EvaluationSpec,
    outcome: ShardOutcome,
    *,
    progress: Callable[[str], None] | None = None,
    history: Sequence[Any] = (),
    surrogate: tuple[str, nn.Module] | None = None,
) -> ModelEvaluation:
    """The merged attack outcome of every shard turned into accuracies, plus the validity checks and
    the sensitivity measures, which run once per model on the first AUDIT_SAMPLES samples."""
    started = time.perf_counter()
    model.eval()
    n = evaluated_samples(data, evaluation)
    if outcome.stop != n:
        raise ValueError(f"the evaluation shards cover {outcome.stop} of the {n} samples to evaluate")
    x, y = data.x_test[:n], data.y_test[:n]
    bs, seed = evaluation.batch_size, evaluation.seed
    clean_correct = outcome.clean_correct
    clean_accuracy = float(clean_correct.double().mean())
    chance = 1.0 / data.num_outputs
    audit = min(AUDIT_SAMPLES, n)
    xa, ya = x[:audit], y[:audit]
    eot, stable = _eot_passes(model, data, evaluation)
    robust: list[AttackAccuracy] = []
    costs: list[AttackCost] = []
    members: list[SuiteMember] = []
    broken: dict[str, dict[float, Tensor]] = {}
    white: dict[str, dict[float, Tensor]] = {}  # the same without Square (the black-box control)
    results: list[tuple[AttackSpec, AttackOutcome]] = []
    diagnostics: dict[str, float] = {}
    for spec, result in zip(evaluation.attacks, outcome.attacks, strict=True):
        results.append((spec, result))
        costs.append(AttackCost(label=result.label, norm=spec.norm, gradient_evaluations=result.gradient_evaluations,
                                forwards=result.forwards, seconds=result.seconds))
        members += [SuiteMember(suite=result.label, norm=spec.norm, **m) for m in result.members]
        for key, value in result.diagnostics.items():
            diagnostics[key] = diagnostics.get(key, 0.0) + value
        by_eps = broken.setdefault(spec.norm, {})
        for i, eps in enumerate(result.eps):
            robust.append(AttackAccuracy(attack=spec.kind, norm=spec.norm, eps=eps, label=result.label,
                                         accuracy=float(result.correct[i].double().mean())))
            by_eps[eps] = by_eps.get(eps, torch.zeros(n, dtype=torch.bool)) | ~result.correct[i]
            if spec.kind != "square":
                wb = white.setdefault(spec.norm, {})
                white_correct = result.correct if result.white_correct is None else result.white_correct
                wb[eps] = wb.get(eps, ~clean_correct) | ~white_correct[i]

    if progress:
        progress("validity checks")

    def own_accuracy(spec: AttackSpec) -> float:
        return float(run_attack(model, xa, ya, spec, seed=seed, batch_size=bs, eot=eot).correct[0].double().mean())

    def square_extra(norm: str, eps: float, left: Tensor) -> int:
        spec = SquareAttack.model_validate({"kind": "square", "norm": norm, "eps": [eps], "queries": 1000})
        return int((~run_attack(model, xa[left], ya[left], spec, seed=seed, batch_size=bs).correct[0]).sum())

    checks = [training_healthy(clean_accuracy, chance, history, data.num_outputs), stable,
              gradient_health(outcome.gradient)]
    checks += audit_checks(list(evaluation.attacks), own_accuracy, chance)
    bb = black_box_not_stronger(_square_rows(results, white, square_extra, audit))
    if bb is not None:
        checks.append(bb)
    attacked = sum(v for k, v in diagnostics.items() if k.endswith("_attacked"))
    if attacked:
        checks.append(silent_success(sum(v for k, v in diagnostics.items() if k.endswith("_unconfirmed")), attacked))
    if diagnostics.get("ce_survivors"):
        checks.append(incomplete_optimization(diagnostics.get("ce_late_gainers", 0.0), diagnostics["ce_survivors"]))
    unbounded = APGDAttack(kind="apgd", norm="linf", eps=[UNBOUNDED_EPS], steps=UNBOUNDED_STEPS)
    checks.append(unbounded_eps_breaks_all(own_accuracy(unbounded), "linf", UNBOUNDED_EPS))
    if surrogate is not None:
        checks += _transfer_checks(model, surrogate, xa, ya, white, bs, seed)
    if progress:
        progress("sensitivity")
    sensitivity = measure_sensitivity(model, xa, ya, data.task, seed=seed)
    return ModelEvaluation(
        clean_accuracy=clean_accuracy,
        samples=n,
        robust=robust,
        worst_case=worst_case_curves(clean_correct, broken),
        sensitivity=sensitivity,
        checks=checks,
        seconds=outcome.seconds + time.perf_counter() - started,
        attack_costs=costs,
        suite_members=members,
        outcomes=sample_outcomes(clean_correct, broken),
    )


def _transfer_checks(model: nn.Module, surrogate: tuple[str, nn.Module], xa: Tensor, ya: Tensor,
                     white: dict[str, dict[float, Tensor]], batch_size: int, seed: int) -> list[Check]:
    """APGD-CE (30 steps) on the surrogate at every radius; transferred breaks the white-box missed."""
    name, other = surrogate
    other.eval()
    device = model_device(other)
    rows = []
    for norm, by_eps in white.items():
        for eps in sorted(by_eps):
            left = ~by_eps[eps][: len(xa)]
            if not left.any():
                continue
            extra = 0
            for i in range(0, len(xa), batch_size):
                keep = left[i:i + batch_size]
                if not keep.any():
                    continue
                xb, yb = xa[i:i + batch_size][keep].to(device), ya[i:i + batch_size][keep].to(device)
                generator = torch.Generator(device=device).manual_seed(seed)
                start = torch.clamp(xb + apgd_start_noise(xb, eps, norm, generator), 0, 1)
                out = apgd_run(other, xb, yb, start, eps=eps, norm=norm, steps=30)
                x_adv = torch.where(out.found.view(-1, *([1] * (xb.dim() - 1))), out.x_found, out.x_best)
                with torch.no_grad():
                    extra += int((model(x_adv.to(model_device(model))).argmax(dim=1).cpu()
                                  != yb.cpu()).sum())
            rows.append((extra, len(xa), eps, norm))
    if not rows:
        return []
    extra, samples, eps, norm = max(rows)
    return [transfer_not_stronger(extra, samples, eps, norm, name)]
