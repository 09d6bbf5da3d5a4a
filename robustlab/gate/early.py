"""`robustlab gate --local` that stops when it knows: samples attacked in rounds, judged after each.

The test samples are attacked in their fixed order (the dataset's seeded split, by index) in rounds
of 100, 200, 400, … samples (whole blocks of SHARD_BLOCK, so every sample's outcome is exactly what
a full evaluation gives it). After each round the gate judges the samples so far on their intervals
(verdict.judge with final=False); as soon as every criterion is decided, or the samples run out, the
validity checks and sensitivity measures run once (finish_evaluation, on the samples used) and the
final verdict is judged on that report. A model far above or far below its thresholds is decided on
a fraction of the samples; one close to a threshold uses them all, and stays undecided (exit 1) if
even all of them cannot tell.

Looking again after every round would make a wrong early decision likelier than one look does, so
the L looks before the last (rounds but the last) are judged at Bonferroni-corrected levels: their
intervals at 1 − 0.05 / L confidence and the regression test at significance / L, so that all the
early stops together are wrong with probability at most 5 % (and `significance`); the last look is
the full evaluation's own 95 % interval and significance.

Imports torch: the command imports this module only for --local.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from core.reports import AttackAccuracy, Cost, Report, RunReport
from core.specs import ExperimentSpec
from core.specs.evaluation import SHARD_BLOCK
from models.datasets import load_dataset
from models.evaluation.compare import evaluate_report, report_of
from models.evaluation.evaluate import (
    ModelEvaluation,
    evaluate_shard,
    evaluated_samples,
    finish_evaluation,
    sample_outcomes,
    worst_case_curves,
)
from models.evaluation.shards import ShardOutcome, merge_shards
from reports.statistics import with_intervals
from robustlab.gate.policy import GatePolicy
from robustlab.gate.verdict import Verdict, judge

FIRST_ROUND = 100  # samples; each round doubles the samples judged
INTERIM_ALPHA = 0.05  # all early stops together are wrong with at most this probability


def rounds(available: int, first: int = FIRST_ROUND) -> list[int]:
    """The sample counts judged one after another: 100, 200, 400, … (whole blocks), ending at `available`."""
    size = max(SHARD_BLOCK, -(-first // SHARD_BLOCK) * SHARD_BLOCK)
    out = []
    while size < available:
        out.append(size)
        size *= 2
    return [*out, available]


@dataclass
class EarlyResult:
    report: Report
    verdict: Verdict
    samples_used: int
    samples_available: int
    rounds: list[int] = field(default_factory=list)  # the sample counts judged, the last one decided it
    attack_seconds: float = 0.0


def interim_run(name: str, outcome: ShardOutcome, spec: ExperimentSpec, confidence: float = 0.95) -> RunReport:
    """The accuracies of the samples so far, with their intervals at `confidence` (no checks yet: they
    run once, at the end)."""
    n = outcome.stop
    robust: list[AttackAccuracy] = []
    broken: dict[str, dict[float, Tensor]] = {}
    for attack, result in zip(spec.evaluation.attacks, outcome.attacks, strict=True):
        by_eps = broken.setdefault(attack.norm, {})
        for i, eps in enumerate(result.eps):
            robust.append(AttackAccuracy(attack=attack.kind, norm=attack.norm, eps=eps, label=result.label,
                                         accuracy=float(result.correct[i].double().mean())))
            by_eps[eps] = by_eps.get(eps, torch.zeros(n, dtype=torch.bool)) | ~result.correct[i]
    clean = outcome.clean_correct
    run = RunReport(regularizer=name, kind="checkpoint", seed=0, clean_accuracy=float(clean.double().mean()),
                    samples=n, robust=robust, worst_case=worst_case_curves(clean, broken),
                    outcomes=sample_outcomes(clean, broken, [
                        (attack.kind, attack.norm, eps, result.correct[i])
                        for attack, result in zip(spec.evaluation.attacks, outcome.attacks, strict=True)
                        for i, eps in enumerate(result.eps)]))
    return with_intervals(run, confidence)


def interim_verdict(name: str, outcome: ShardOutcome, spec: ExperimentSpec, policy: GatePolicy,
                    baseline: Report | None, looks: int, device: str = "cpu") -> Verdict:
    """One of `looks` looks before the last: the samples so far judged on 1 − INTERIM_ALPHA / looks
    intervals and the regression test at significance / looks (a criterion undecided there waits
    for the next round)."""
    run = interim_run(name, outcome, spec, 1 - INTERIM_ALPHA / looks)
    strict = policy.model_copy(update={"significance": policy.significance / looks})
    return judge(evaluate_report(spec, run, device), strict, baseline, final=False)


def evaluate_early(spec: ExperimentSpec, checkpoint: Path, policy: GatePolicy, baseline: Report | None, *,
                   device: str | None = None, progress: Callable[[str], None] | None = None,
                   first_round: int = FIRST_ROUND) -> EarlyResult:
    """Attack in rounds until every criterion of the policy is decided; then the checks, the report, the verdict."""
    from models.sources import load_any_model
    from models.sources.probe import diagnose_run
    from models.training.device import select_device

    say = progress or (lambda _: None)
    data = load_dataset(spec.dataset)
    dev = select_device(device or spec.training.device)
    model = load_any_model(checkpoint, spec.model, input_shape=data.input_shape, num_outputs=data.num_outputs,
                           device=dev)
    name = checkpoint.stem
    available = evaluated_samples(data, spec.evaluation)
    # decide: point has no early decision (an estimate on part of the samples is not the estimate on all)
    plan = rounds(available, first_round) if policy.decide == "interval" else [available]
    looks = max(1, len(plan) - 1)  # the interim looks, judged at Bonferroni-corrected levels
    shards: list[ShardOutcome] = []
    judged: list[int] = []
    started = time.perf_counter()
    for size in plan:
        start = shards[-1].stop if shards else 0
        say(f"attacking samples {start}-{size - 1} of {available}")
        shards.append(evaluate_shard(model, data, spec.evaluation, start, size, progress=say))
        judged.append(size)
        if size == available:
            break
        verdict = interim_verdict(name, merge_shards(shards), spec, policy, baseline, looks, str(dev))
        if verdict.decided or verdict.exit_code == 2:
            break
    attack_seconds = time.perf_counter() - started
    used = judged[-1]
    evaluation = spec.evaluation.model_copy(update={"max_samples": used})
    say(f"validity checks on {min(used, 200)} samples")
    finished: ModelEvaluation = finish_evaluation(model, data, evaluation, merge_shards(shards), progress=say)
    run = report_of(name, "checkpoint", 0, finished, Cost(), checkpoint.name)
    run = diagnose_run(run, model, spec.model, data.x_test, data.y_test, num_classes=data.num_outputs, device=dev)
    used_spec = spec.model_copy(update={"evaluation": evaluation})
    report = evaluate_report(used_spec, run, str(dev))
    verdict = judge(report, policy, baseline, final=used == available)
    return EarlyResult(report=report, verdict=verdict, samples_used=used, samples_available=available,
                       rounds=judged, attack_seconds=attack_seconds)
