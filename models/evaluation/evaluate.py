"""Evaluate one model: clean accuracy, the attack sweep, worst case per ε, sensitivity, checks.

Split the way a job's units run it: `evaluate_shard` attacks samples [start, stop) (one unit per
shard, any worker), `finish_evaluation` turns the merged shards into accuracies and runs the checks
once per model; `evaluate_model` does both in this process.
"""

from __future__ import annotations

import logging
import math
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
    AttackOutcomeBits,
    Check,
    Escalation,
    OutcomeBits,
    RadiusTrust,
    SampleOutcomes,
    Sensitivity,
    SuiteMember,
    WorstCase,
    pack_bits,
)
from core.specs.evaluation import APGDAttack, AttackSpec, EvaluationSpec, SquareAttack, SuiteSpec
from models.attacks import run_attack
from models.attacks.apgd import apgd_run, apgd_start_noise
from models.attacks.bpda import straight_through
from models.attacks.context import VERDICT_DRAWS, majority_wrong, model_device
from models.datasets.base import DatasetBundle
from models.evaluation.checks import (
    CHECK_LOSSES,
    LARGE_EPS,
    UNBOUNDED_EPS,
    audit_checks,
    black_box_not_stronger,
    gradient_health,
    gradient_stats,
    incomplete_optimization,
    large_eps_reaches_chance,
    min_norm_consistent,
    predictions_stable,
    silent_success,
    training_healthy,
    transfer_not_stronger,
    unbounded_eps_breaks_all,
)
from models.evaluation.sensitivity import measure_sensitivity
from models.evaluation.shards import AttackOutcome, ShardOutcome, merge_shards, shard_ranges
from models.evaluation.unit_test import attack_unit_test
from models.regularizers.base import per_sample_loss

log = logging.getLogger(__name__)

AUDIT_SAMPLES = 200  # each attack runs on its own on this many samples for the validity checks
# checks: fast runs the checks that attack on their own, and the sensitivity measures, on this many
FAST_AUDIT = 100
# checks: fast gives the black-box control of an evaluation without a suite this many queries (the
# suite's own Square control has 100 before it escalates; full: 1,000)
FAST_SQUARE_QUERIES = 250


EOT_SAMPLES = 10  # the default of evaluation.eot: gradients averaged over this many passes (randomized models)
# Checks that see masking: when one does not pass, the evaluation escalates before it reports
MASKING_CHECKS = ("input_gradients_healthy", "black_box_not_stronger", "large_eps_reaches_chance",
                  "unbounded_eps_breaks_all")
ESCALATION_QUERIES = 5000  # AutoAttack's Square budget, without pruning, for the escalation
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
    check_seconds: dict[str, float] = field(default_factory=dict)  # finish_evaluation's parts (benchmarks)
    checked: bool = True  # False with evaluation.checks: off (no validity check ran: "unchecked")
    escalations: list[Escalation] = field(default_factory=list)
    radius_trust: list[RadiusTrust] = field(default_factory=list)

    @property
    def trustworthy(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def training_failed(self) -> bool:
        return any(c.name == "training_healthy" and c.status == "fail" for c in self.checks)


def _predict_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, eot: int = 1) -> Tensor:
    """Classified correctly without attack; a randomized model (eot > 1) by the attacks' verdict rule:
    correct unless more than half of VERDICT_DRAWS passes misclassify the sample."""
    device = model_device(model)
    draws = VERDICT_DRAWS if eot > 1 else 1
    wrong = [majority_wrong(model, x[i : i + batch_size].to(device), y[i : i + batch_size].to(device), draws).cpu()
             for i in range(0, len(x), batch_size)]
    return ~torch.cat(wrong)


def _clean_gradients(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Input gradients at the clean points: (each entry the cross-entropy gradient's, or the margin
    loss's (best other logit − true logit) where that one is zero or not finite; cross-entropy's).
    The margin is invariant to a saturated softmax: logits × 1000 zero cross-entropy's gradient only."""
    device = model_device(model)
    combined, ce_grads = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).requires_grad_(True)
        yb = y[i : i + batch_size].to(device)
        with torch.enable_grad():
            out = model(xb)
            if not out.requires_grad:  # no path from the input: a zero gradient
                zero = torch.zeros_like(xb).cpu()
                combined.append(zero)
                ce_grads.append(zero)
                continue
            ce = per_sample_loss(out, yb, Task.CLASSIFICATION).sum()
            true = out.gather(1, yb.view(-1, 1)).squeeze(1)
            other = out.scatter(1, yb.view(-1, 1), float("-inf")).amax(dim=1)
            g_ce, g_margin = _grads(ce, (other - true).sum(), xb)
        usable = torch.isfinite(g_ce) & (g_ce != 0)
        combined.append(torch.where(usable, g_ce, g_margin).cpu())
        ce_grads.append(g_ce.cpu())
    return torch.cat(combined), torch.cat(ce_grads)


def _grads(first: Tensor, second: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    (a,) = torch.autograd.grad(first, x, retain_graph=True, allow_unused=True)
    (b,) = torch.autograd.grad(second, x, allow_unused=True) if second.requires_grad else (None,)
    return (torch.zeros_like(x) if a is None else a), (torch.zeros_like(x) if b is None else b)


def _gradient_stats(model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                    scale_invariant: bool) -> dict[str, float]:
    """gradient_stats of the combined gradient (cross-entropy's alone when no attack of the evaluation
    uses a scale-invariant loss), and `ce_zero`: samples whose cross-entropy gradient is all zero."""
    combined, ce = _clean_gradients(model, x, y, batch_size)
    ce_zero = float((ce.flatten(1) == 0).all(dim=1).sum())
    return gradient_stats(combined if scale_invariant else ce) | {"ce_zero": ce_zero}


def scale_invariant(evaluation: EvaluationSpec) -> bool:
    """Whether an attack of the evaluation uses a loss a saturated softmax does not mislead (DLR: the
    suite, AutoAttack, APGD-DLR): the checks then count that loss beside cross-entropy. With
    cross-entropy attacks only, a zero cross-entropy gradient does mislead the attacks reported."""
    return any(s.kind in ("suite", "autoattack") or (s.kind == "apgd" and s.loss == "dlr") for s in evaluation.attacks)


def worst_case_curves(clean_correct: Tensor, broken: dict[str, dict[float, Tensor]]) -> list[WorstCase]:
    """Per norm and ε: correct under every attack at every ε' ≤ ε (monotone by construction)."""
    out: list[WorstCase] = []
    for norm, by_eps in broken.items():
        cumulative = ~clean_correct
        for eps in sorted(by_eps):
            cumulative = cumulative | by_eps[eps]
            out.append(WorstCase(norm=norm, eps=eps, accuracy=float((~cumulative).double().mean())))
    return out


def sample_outcomes(clean_correct: Tensor, broken: dict[str, dict[float, Tensor]],
                    per_attack: Sequence[tuple[str, str, float, Tensor]] = (), *,
                    escalated: bool = False) -> SampleOutcomes:
    """Per sample: clean correct, correct under every attack at every ε' ≤ ε (the worst case), and
    correct under each attack kind at each ε (`per_attack`: (kind, norm, ε, correct) of every attack
    spec's result; a kind that several specs share: correct under all of them). `escalated`: the
    suite's rows are the worst case's (its entries report the lowest any escalation step reached)."""
    rows, worst = [], {}
    for norm, by_eps in broken.items():
        cumulative = ~clean_correct
        for eps in sorted(by_eps):
            cumulative = cumulative | by_eps[eps]
            worst[norm, eps] = ~cumulative
            rows.append(OutcomeBits(norm=norm, eps=eps, correct=pack_bits((~cumulative).tolist())))
    kinds: dict[tuple[str, str, float], Tensor] = {}
    for kind, norm, eps, correct in per_attack:
        if escalated and kind == "suite" and (norm, eps) in worst:
            correct = worst[norm, eps]
        key = (kind, norm, eps)
        kinds[key] = correct if key not in kinds else kinds[key] & correct
    attacks = [AttackOutcomeBits(attack=kind, norm=norm, eps=eps, correct=pack_bits(correct.tolist()))
               for (kind, norm, eps), correct in kinds.items()]
    return SampleOutcomes(samples=len(clean_correct), clean=pack_bits(clean_correct.tolist()), worst_case=rows,
                          attacks=attacks)


def _broken_so_far(by_eps: dict[float, Tensor], eps: float, clean_correct: Tensor) -> Tensor:
    broken = ~clean_correct
    for e, b in by_eps.items():
        if e <= eps:
            broken = broken | b
    return broken


def _square_rows(results: list[tuple[AttackSpec, AttackOutcome]], white: dict[str, dict[float, Tensor]],
                 square: Callable[[str, float, Tensor], Tensor], audit: int,
                 nested: bool = False) -> list[tuple[str, float, int, int]]:
    """Per norm and ε: samples Square breaks beyond the white-box attacks (the black-box check).

    A suite's own Square member counts what it broke after the white-box members; any other
    evaluation gets a Square run (1,000 queries) on the first `audit` samples the white-box attacks
    left (fast: FAST_SQUARE_QUERIES). `nested`: the radii in descending order, each smaller one only
    on the samples Square broke at the larger one (a sample Square cannot break in the larger ball
    it does not break in the smaller): the cost is about that of the largest radius, where few samples are left; masking
    that shows at a small radius only, with the white-box attacks working at the largest, is
    missed (`checks: full` runs every radius on every survivor)."""
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
        candidates: Tensor | None = None  # nested: what Square broke at the next larger radius
        for eps in sorted(by_eps, reverse=nested):
            if (norm, eps) in done:
                continue
            left = ~by_eps[eps][:audit] & (True if candidates is None else candidates)
            if not left.any():
                continue  # the white-box attacks broke everything: Square cannot beat them here
            broke = square(norm, eps, left)
            rows.append((norm, eps, int(broke.sum()), audit))
            if nested:
                candidates = broke
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
    return (evaluation.eot if stable.status != "pass" else 1), stable


def evaluate_shard(model: nn.Module, data: DatasetBundle, evaluation: EvaluationSpec, start: int, stop: int, *,
                   progress: Callable[[str], None] | None = None) -> ShardOutcome:
    """Every attack of the spec on test samples [start, stop): what one evaluation unit computes.

    Per sample, the outcome does not depend on the shard (randomness is keyed by sample index), so
    the shards of a test set merge into exactly what one run over all of it gives."""
    started = time.perf_counter()
    model.eval()
    x, y = data.x_test[start:stop], data.y_test[start:stop]
    n, bs, seed = len(x), evaluation.batch_size, evaluation.seed
    eot, _ = _eot_passes(model, data, evaluation)
    clean_correct = _predict_correct(model, x, y, bs, eot)
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
    gradient = _gradient_stats(model, x, y, bs, scale_invariant(evaluation))
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
    seed = evaluation.seed
    clean_correct = outcome.clean_correct
    clean_accuracy = float(clean_correct.double().mean())
    chance = 1.0 / data.num_outputs
    audit = min(AUDIT_SAMPLES, n)
    xa, ya = x[:audit], y[:audit]
    begun = time.perf_counter()
    eot, stable = _eot_passes(model, data, evaluation)
    eot_seconds = time.perf_counter() - begun
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
    mode = evaluation.checks
    timings: dict[str, float] = {"predictions_deterministic": eot_seconds}

    def timed(name: str, compute: Callable[[], Any]) -> Any:
        begun = time.perf_counter()
        value = compute()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - begun
        return value

    checks = [training_healthy(clean_accuracy, chance, history, data.num_outputs), stable]
    escalations: list[Escalation] = []
    if mode != "off":
        checks += timed("checks", lambda: _validity_checks(
            model, data, evaluation, outcome, results, white, diagnostics, eot, timed, surrogate))
        escalations = timed("escalation", lambda: _escalate(model, x, y, evaluation, clean_correct, broken,
                                                            checks, eot, progress))
        if escalations:  # the suite's entries give the lowest accuracy any step reached
            worst = {(w.norm, w.eps): w.accuracy for w in worst_case_curves(clean_correct, broken)}
            robust = [r.model_copy(update={"accuracy": min(r.accuracy, worst[r.norm, r.eps])})
                      if r.attack == "suite" else r for r in robust]
        # issue 23: FMN's distances against the survivors; `full`: the attack unit test (binarization test).
        # `fast` checks the L2 radii only, and only where the evaluation claims AutoAttack's strength (a
        # suite or AutoAttack): minimum-norm attacks are what find L2 points near a smooth boundary that
        # APGD misses; under L∞, or for bare FGSM / PGD (whose miss is only a warning), the check costs
        # about as much as the attacks it audits, or more.
        strong = any(a.kind in ("suite", "autoattack") for a in evaluation.attacks)
        norms = [norm for norm in broken if mode == "full" or (norm == "l2" and strong)]
        if norms:
            consistent = timed("min_norm_consistent", lambda: min_norm_consistent(
                model, xa, ya, {norm: {e: ~b[:audit] for e, b in broken[norm].items()} for norm in norms},
                evaluation.batch_size, strong=strong))
            checks += [consistent] if consistent is not None else []
        if mode == "full":
            unit = timed("attack_unit_test", lambda: attack_unit_test(model, xa, ya, evaluation.attacks, seed=seed,
                                                                       batch_size=evaluation.batch_size))
            checks += [unit] if unit is not None else []
    if progress:
        progress("sensitivity")
    few = min(audit, FAST_AUDIT) if mode != "full" else audit
    sensitivity = timed("sensitivity", lambda: measure_sensitivity(model, xa[:few], ya[:few], data.task, seed=seed))
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
        outcomes=sample_outcomes(clean_correct, broken, [
            (spec.kind, spec.norm, eps, result.correct[i]) for spec, result in results
            for i, eps in enumerate(result.eps)], escalated=bool(escalations)),
        check_seconds=timings | {"finish": time.perf_counter() - started},
        checked=mode != "off",
        escalations=escalations,
        radius_trust=radius_trust(worst_case_curves(clean_correct, broken), checks, escalations, members)
        if mode != "off" else [],
    )


def _escalate(model: nn.Module, x: Tensor, y: Tensor, evaluation: EvaluationSpec, clean_correct: Tensor,
              broken: dict[str, dict[float, Tensor]], checks: list[Check], eot: int,
              progress: Callable[[str], None] | None) -> list[Escalation]:
    """Escalation before reporting (issue 23): when a check saw masking (MASKING_CHECKS not passing),
    every sample still standing at a radius gets, in turn, the suite through a straight-through
    (BPDA) twin of the model when torch.fx finds non-differentiable input transforms in it, then
    Square at AutoAttack's full budget without pruning; a randomized model (predictions that change
    between passes) was attacked with EOT (`evaluation.eot` draws) and is reported as such. What each
    step breaks is folded into `broken` (so into the worst case); runs once per model on the merged
    outcome, every sample keyed by its global index (the same for any sharding)."""
    seen = [c.name for c in checks if c.name in MASKING_CHECKS and c.status != "pass"]
    out: list[Escalation] = []
    if eot > 1:
        for norm, by_eps in broken.items():
            cumulative = ~clean_correct
            for eps in sorted(by_eps):
                cumulative = cumulative | by_eps[eps]
                accuracy = float((~cumulative).double().mean())
                error = math.sqrt(accuracy * (1 - accuracy) / max(len(cumulative), 1))
                out.append(Escalation(
                    name="eot", norm=norm, eps=eps, attacked=int((~cumulative).sum()), broken=0,
                    detail=f"randomized predictions: gradients averaged over {eot} draws (evaluation.eot), a point "
                    f"broken when more than half of {VERDICT_DRAWS} draws misclassify it; accuracy {accuracy:.3f} "
                    f"± {error:.3f} (standard error over the samples)"))
    if not seen:
        return out
    device = model_device(model)
    twin = straight_through(model, x[:16].to(device))
    for norm, by_eps in broken.items():
        radii = sorted(by_eps)
        steps: list[tuple[str, nn.Module, AttackSpec, str]] = []
        if twin is not None:
            steps.append(("bpda-suite", twin[0], SuiteSpec(kind="suite", norm=norm, eps=radii),
                          f"straight-through backward for {', '.join(sorted(set(twin[1])))}; {', '.join(seen)}"))
        steps.append((f"square-{ESCALATION_QUERIES}", model,
                      SquareAttack(kind="square", norm=norm, eps=radii, queries=ESCALATION_QUERIES),
                      f"without pruning; {', '.join(seen)}"))
        for name, target, spec, detail in steps:
            cumulative, rows = ~clean_correct, []
            for eps in radii:
                cumulative = cumulative | by_eps[eps]
                rows.append(cumulative.clone())
            already = torch.stack(rows)
            if already.all():
                break
            if progress:
                progress(f"escalation {name} {norm}")
            result = run_attack(target, x, y, spec, seed=evaluation.seed, batch_size=evaluation.batch_size,
                                already_broken=already, eot=eot)
            share = result.seconds / len(radii)
            for i, eps in enumerate(radii):
                new = ~result.correct[i] & ~already[i]
                by_eps[eps] = by_eps[eps] | new
                out.append(Escalation(name=name, norm=norm, eps=eps, attacked=int((~already[i]).sum()),
                                      broken=int(new.sum()), seconds=share, detail=detail))
    return out


def radius_trust(worst: list[WorstCase], checks: list[Check], escalations: list[Escalation],
                 members: list[SuiteMember]) -> list[RadiusTrust]:
    """Per norm and ε: trusted, escalated (an escalation ran there: the number is the lowest it reached;
    the suite's own Square escalation counts) or flagged (a failed check that no escalation answers)."""
    failed = [c.name for c in checks if c.status == "fail"]
    answered = set(MASKING_CHECKS) | {"predictions_deterministic"}
    out = []
    for w in worst:
        here = [e for e in escalations if e.norm == w.norm and e.eps == w.eps]
        in_suite = [m for m in members if m.norm == w.norm and m.eps == w.eps and m.member.startswith("square-")]
        unanswered = [name for name in failed if name not in answered or not here]
        if unanswered:
            status, detail = "flagged", f"failed: {', '.join(unanswered)}"
        elif here or in_suite:
            steps = [f"{e.name} broke {e.broken}/{e.attacked}" for e in here]
            steps += [f"suite {m.member} broke {m.broken}/{m.attacked}" for m in in_suite]
            status, detail = "escalated", "; ".join(steps)
        else:
            status, detail = "trusted", ""
        out.append(RadiusTrust(norm=w.norm, eps=w.eps, status=status, detail=detail))
    return out


def _validity_checks(model: nn.Module, data: DatasetBundle, evaluation: EvaluationSpec, outcome: ShardOutcome,
                     results: list[tuple[AttackSpec, AttackOutcome]], white: dict[str, dict[float, Tensor]],
                     diagnostics: dict[str, float], eot: int, timed: Callable[[str, Callable[[], Any]], Any],
                     surrogate: tuple[str, nn.Module] | None) -> list[Check]:
    """Every check but training_healthy and predictions_deterministic (docs/evaluation.md).

    `fast` (the default): the checks that attack on their own (FGSM / PGD own accuracies, the black-box
    control of evaluations without a suite) use the first FAST_AUDIT audit samples; the large-ε checks
    reuse what the white-box attacks broke at L∞ radii ≤ 0.5, and ε = 1 attacks only what ε = 0.5
    left (a point inside the smaller ball is inside the larger one); Square without a suite runs at
    the largest radius first and at a smaller one only on samples it broke at the larger."""
    n, mode = outcome.stop, evaluation.checks
    bs, seed = evaluation.batch_size, evaluation.seed
    audit = min(AUDIT_SAMPLES, n)
    few = audit if mode == "full" else min(audit, FAST_AUDIT)
    x, y = data.x_test[:audit], data.y_test[:audit]

    def own_correct(spec: AttackSpec, broken: Tensor | None) -> Tensor:
        reused = _reuse_own(spec, results, outcome.clean_correct[:few]) if broken is None else None
        if reused is not None:
            survived, attack = reused
            index = attack.nonzero().flatten()
            if len(index):
                survived[index] = run_attack(model, x[:few][index], y[:few][index], spec, seed=seed, batch_size=bs,
                                             eot=eot).correct[0]
            return survived
        already = None if broken is None else broken[:few].view(1, -1)
        return run_attack(model, x[:few], y[:few], spec, seed=seed, batch_size=bs, eot=eot,
                          already_broken=already).correct[0]

    def square_broke(norm: str, eps: float, left: Tensor) -> Tensor:
        spec = SquareAttack.model_validate({"kind": "square", "norm": norm, "eps": [eps],
                                            "queries": 1000 if mode == "full" else FAST_SQUARE_QUERIES})
        broke = torch.zeros(len(left), dtype=torch.bool)
        broke[left] = ~run_attack(model, x[:len(left)][left], y[:len(left)][left], spec, seed=seed,
                                  batch_size=bs).correct[0]
        return broke

    checks = [gradient_health(outcome.gradient)]
    checks += timed("audit_checks", lambda: audit_checks(list(evaluation.attacks), own_correct, fast=mode != "full"))
    losses = check_losses(data.num_outputs) if scale_invariant(evaluation) else ("ce",)
    large, unbounded = timed("large_eps", lambda: _large_eps_checks(
        model, x, y, outcome.clean_correct[:audit], white.get("linf", {}), data.num_outputs, losses, eot, bs, seed))
    checks += [large]
    bb = timed("black_box_not_stronger", lambda: black_box_not_stronger(
        _square_rows(results, white, square_broke, few, nested=mode != "full")))
    if bb is not None:
        checks.append(bb)
    attacked = sum(v for k, v in diagnostics.items() if k.endswith("_attacked"))
    if attacked:
        checks.append(silent_success(sum(v for k, v in diagnostics.items() if k.endswith("_unconfirmed")), attacked,
                                     randomized=eot > 1))
    if diagnostics.get("ce_survivors"):
        checks.append(incomplete_optimization(diagnostics.get("ce_late_gainers", 0.0), diagnostics["ce_survivors"]))
    checks.append(unbounded)
    if surrogate is not None:
        checks += timed("transfer_not_stronger", lambda: _transfer_checks(model, surrogate, x, y, white, bs, seed))
    return checks


def _reuse_own(spec: AttackSpec, results: list[tuple[AttackSpec, AttackOutcome]],
               clean_correct: Tensor) -> tuple[Tensor, Tensor] | None:
    """What the evaluation's own run of `spec` (one radius of one of its FGSM / PGD attacks) already
    says about the first len(clean_correct) samples, for the checks that need each attack on its
    own: (survived, still to attack). A sample the evaluation's run of that attack left standing
    was attacked by it at that radius with the same steps and restarts (a sample given to it as
    broken, by an earlier attack or at a smaller radius, counts as broken), so that run is the
    attack's own result for it; only the samples counted broken there (clean-correct ones) are
    attacked again on their own, and those mostly break in a few steps. Every sample broken at a
    smaller radius is among them, so the monotonicity check keeps its power. At the first radius
    this is exactly the attack run alone (the same keyed starts); at a later one a survivor's start
    was keyed by that radius's place in the sweep, another draw of the same attack. None when
    `spec` is not one of the evaluation's attacks."""
    if spec.kind not in ("fgsm", "pgd") or len(spec.eps) != 1:
        return None
    for own, outcome in results:
        if own.model_copy(update={"eps": spec.eps}) == spec and spec.eps[0] in outcome.eps:
            survived = outcome.correct[outcome.eps.index(spec.eps[0])][: len(clean_correct)].clone()
            return survived, ~survived & clean_correct
    return None


def check_losses(num_classes: int) -> tuple[str, ...]:
    """The APGD losses the large-ε checks try in turn when the evaluation's attacks use a scale-invariant
    loss (`scale_invariant`): those of the suite (DLR needs ≥ 3 classes)."""
    return CHECK_LOSSES if num_classes >= 3 else ("ce",)


def _large_eps_checks(model: nn.Module, x: Tensor, y: Tensor, clean_correct: Tensor,
                      white_linf: dict[float, Tensor], num_classes: int, losses: tuple[str, ...], eot: int,
                      batch_size: int, seed: int) -> tuple[Check, Check]:
    """large_eps_reaches_chance and unbounded_eps_breaks_all on the audit samples, from one sweep per
    loss at L∞ ε 0.5 and 1 (each loss on what the white-box attacks at L∞ radii ≤ 0.5 and the
    earlier losses left; ε = 1 only on what ε = 0.5 left)."""
    n = len(x)
    broken = ~clean_correct.clone()
    for eps, by_eps in white_linf.items():
        if eps <= LARGE_EPS:
            broken |= by_eps[:n]
    already = torch.stack([broken, broken])
    for loss in losses:
        spec = APGDAttack(kind="apgd", norm="linf", eps=[LARGE_EPS, UNBOUNDED_EPS], steps=UNBOUNDED_STEPS, loss=loss)
        already = ~run_attack(model, x, y, spec, seed=seed, batch_size=batch_size, eot=eot,
                              already_broken=already).correct
    accuracy = (~already).double().mean(dim=1)
    return (large_eps_reaches_chance(float(accuracy[0]), 1.0 / num_classes, losses, n),
            unbounded_eps_breaks_all(float(accuracy[1]), "linf", UNBOUNDED_EPS, losses, n))


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
