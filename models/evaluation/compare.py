"""`compare` and `evaluate`: train (or load), evaluate, aggregate, and write the report files."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.reports import Check, Cost, ModelInfo, Report, RunReport
from core.specs.experiment import ExperimentSpec
from core.specs.model import model_format, require_registry
from models.attacks.context import model_device
from models.datasets import load_dataset
from models.datasets.base import DatasetBundle
from models.evaluation.evaluate import ModelEvaluation, evaluate_model
from models.training.experiment import train_experiment
from models.training.loop import FitResult, ProgressCallback
from reports.statistics import summarize, with_intervals

log = logging.getLogger(__name__)

RunProgress = Callable[[str, int], ProgressCallback | None]
StageProgress = Callable[[str], None]


def environment(device: str) -> dict[str, Any]:
    """Library versions and the machine: every report carries them (DESIGN §3)."""
    versions: dict[str, str | None] = {}
    for package in ("robustlab", "torch", "torchattacks", "numpy", "pydantic", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def baseline_name(spec: ExperimentSpec) -> str:
    """The run the others are compared with: the first `none` run, else the first run."""
    return next((r.name for r in spec.regularizers if r.kind == "none"), spec.regularizers[0].name)


def run_report(name: str, kind: str, seed: int, model: nn.Module, data: DatasetBundle, spec: ExperimentSpec,
               cost: Cost, checkpoint: str | None, stage: StageProgress | None, *, history: Sequence[Any] = (),
               surrogate: tuple[str, nn.Module] | None = None) -> RunReport:
    evaluation = evaluate_model(model, data, spec.evaluation, history=history, surrogate=surrogate,
                                progress=(lambda s: stage(f"{name} seed {seed}: {s}")) if stage else None)
    return report_of(name, kind, seed, evaluation, cost, checkpoint)


def report_of(name: str, kind: str, seed: int, evaluation: ModelEvaluation, cost: Cost,
              checkpoint: str | None) -> RunReport:
    """One run's entry of the report, from its evaluation (in this process, or merged from units), every
    accuracy with its 95 % interval over the samples."""
    return with_intervals(RunReport(
        regularizer=name, kind=kind, seed=seed, clean_accuracy=evaluation.clean_accuracy,
        samples=evaluation.samples, robust=evaluation.robust, worst_case=evaluation.worst_case,
        sensitivity=evaluation.sensitivity, cost=cost.model_copy(update={"eval_seconds": evaluation.seconds}),
        checks=evaluation.checks, trustworthy=evaluation.trustworthy, checked=evaluation.checked, checkpoint=checkpoint,
        escalated=bool(evaluation.escalations), escalations=evaluation.escalations,
        radius_trust=evaluation.radius_trust,
        training_failed=evaluation.training_failed, attack_costs=evaluation.attack_costs,
        suite_members=evaluation.suite_members, outcomes=evaluation.outcomes,
    ))


def training_cost(fit: FitResult | None, baseline_step: float | None) -> Cost:
    """A run's training cost, its step time relative to the baseline run of the same seed."""
    if fit is None:
        return Cost()
    ratio = fit.step_seconds / baseline_step if baseline_step else None
    return Cost(train_seconds=fit.seconds, step_seconds=fit.step_seconds, step_time_ratio_to_baseline=ratio,
                peak_memory_bytes=fit.peak_memory_bytes, memory_measure=fit.memory_measure)


def compare_report(spec: ExperimentSpec, reports: list[RunReport], device: str) -> Report:
    """The comparison report of a spec's runs (in training order per seed), aggregated over seeds."""
    baseline = baseline_name(spec)
    return Report(kind="compare", spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(),
                  environment=environment(device), baseline=baseline, runs=reports,
                  summary=summarize(reports, baseline), checks=overall_checks(reports))


def overall_checks(runs: list[RunReport]) -> list[Check]:
    """Per check name, the worst status over runs, naming the runs that warned or failed."""
    rank = {"pass": 0, "warn": 1, "fail": 2}
    out: list[Check] = []
    for name in dict.fromkeys(c.name for r in runs for c in r.checks):
        results = [(f"{r.regularizer}-seed{r.seed}", c) for r in runs for c in r.checks if c.name == name]
        worst = max(results, key=lambda rc: rank[rc[1].status])[1].status
        flagged = [f"{run} ({c.status})" for run, c in results if c.status != "pass"]
        detail = f"{len(results) - len(flagged)}/{len(results)} runs pass" + (
            f"; {', '.join(flagged)}" if flagged else "")
        out.append(Check(name=name, status=worst, detail=detail))
    return out


def compare(spec: ExperimentSpec, out_dir: Path, *, device: str | None = None,
            run_progress: RunProgress | None = None, stage: StageProgress | None = None,
            upload_files: Mapping[str, Path] | None = None) -> Report:
    """Train every regularizer × seed, evaluate each, aggregate over seeds against the baseline.

    `upload_files`: local copies of the uploads the spec names by id (dataset, Sobolev teachers).
    """
    require_registry(spec.model)  # a user model file can be evaluated, not trained
    data = load_dataset(spec.dataset, upload_files=upload_files)
    runs = train_experiment(spec, out_dir, device=device, data=data, progress=run_progress,
                            upload_files=upload_files)
    baseline = baseline_name(spec)
    base_step = {r.seed: r.fit.step_seconds for r in runs if r.name == baseline and r.fit is not None}
    reports = []
    for run in runs:
        cost = training_cost(run.fit, base_step.get(run.seed))
        base_model = next((r.model for r in runs if r.name == baseline and r.seed == run.seed), None)
        surrogate = (f"{baseline} seed {run.seed}", base_model) if base_model is not None and run.name != baseline \
            else None
        reports.append(run_report(run.name, run.kind, run.seed, run.model, data, spec, cost,
                                  str(run.checkpoint.relative_to(out_dir)), stage,
                                  history=run.fit.history if run.fit is not None else (), surrogate=surrogate))
    used = str(model_device(runs[0].model)) if runs else "cpu"
    return compare_report(spec, reports, used)


def evaluate_checkpoint(spec: ExperimentSpec, checkpoint: Path, *, device: str | None = None,
                        stage: StageProgress | None = None, upload_files: Mapping[str, Path] | None = None,
                        max_model_bytes: int | None = None) -> Report:
    """The same evaluation and report for an existing model file (spec's model, dataset and evaluation).

    The file is a self-describing robustlab checkpoint, a state_dict of the registry architecture the
    spec names, or a user format (onnx / timm / torchvision) that the spec's model section describes.
    """
    from models.sources import DEFAULT_MAX_BYTES, load_any_model
    from models.training.device import select_device

    data = load_dataset(spec.dataset, upload_files=upload_files)
    dev = select_device(device or spec.training.device)
    model = load_any_model(checkpoint, spec.model, input_shape=data.input_shape, num_outputs=data.num_outputs,
                           device=dev, max_bytes=max_model_bytes or DEFAULT_MAX_BYTES)
    name = checkpoint.stem
    report = run_report(name, "checkpoint", 0, model, data, spec, Cost(), checkpoint.name, stage)
    # issue 22 (robustlab helper's call site): a user model near chance gets the `input_conventions` check,
    # which names the convention (input_range, layout, mean/std) that classifies the samples correctly.
    from models.sources.probe import diagnose_run

    report = diagnose_run(report, model, spec.model, data.x_test, data.y_test, num_classes=data.num_outputs,
                          device=dev)
    return evaluate_report(spec, report, str(dev), model_file=checkpoint)


def model_info(spec: ExperimentSpec, path: Path) -> ModelInfo:
    """Which file an evaluate job judged (name, SHA-256, size) and the format it was read as."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return ModelInfo(file=path.name, sha256=digest.hexdigest(), format=model_format(spec.model),
                     bytes=path.stat().st_size)


def evaluate_report(spec: ExperimentSpec, report: RunReport, device: str, *, model_file: Path | None = None) -> Report:
    """The report of one evaluated model file."""
    return Report(kind="evaluate", spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(),
                  environment=environment(device), baseline=None, runs=[report],
                  summary=summarize([report], None), checks=overall_checks([report]),
                  model_info=model_info(spec, model_file) if model_file is not None else None)
