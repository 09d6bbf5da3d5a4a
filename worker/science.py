"""The torch side of a job's executions: plan its units, run one unit, assemble the report.

Imported only inside the work horse (by worker.runner, lazily), never by the worker parent, so the
parent never loads torch or initializes CUDA (DESIGN §5). Every function works in a local work
directory; the runner moves files between it and the artifact store.

A job's units (core.jobs.UnitWork):
- compare: one `train` unit per regularizer and seed (a Sobolev run after its teacher's), and per
  trained model one `evaluate` unit per shard of `evaluation.shard_size` test samples;
- evaluate: one `evaluate` unit per shard of the model's test samples.
A model evaluated in one shard has its checks run by that unit (`finish`); the checks of a model in
several shards run when the job assembles its report, on the merged shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.jobs import JobKind, UnitKind, UnitWork
from core.reports import Cost, Report, RunReport
from core.specs.experiment import ExperimentSpec
from core.specs.regularizers import Sobolev
from models.checkpoints import load_model, read_metadata
from models.datasets import load_dataset
from models.datasets.base import DatasetBundle
from models.evaluation.compare import baseline_name as baseline_name  # re-exported for the unit runner
from models.evaluation.compare import (
    compare_report,
    evaluate_report,
    report_of,
    training_cost,
)
from models.evaluation.evaluate import evaluate_shard, evaluated_samples, finish_evaluation
from models.evaluation.shards import ShardOutcome, merge_shards, shard_ranges
from models.training.device import select_device
from models.training.experiment import fit_from_metadata, run_id, train_run
from reports.files import write_report
from worker.progress import ProgressReporter

SHARD_FILE = "shard.json"
RUN_FILE = "run.json"


def train_unit_name(run: str, seed: int) -> str:
    return f"train {run} seed {seed}"


def checkpoint_name(run: str, seed: int) -> str:
    return f"checkpoints/{run_id(run, seed)}.safetensors"


def plan_units(spec: ExperimentSpec, kind: JobKind, upload_files: Mapping[str, Path] | None = None) -> list[UnitWork]:
    """The job's units, in the order they should start (teachers' training first)."""
    data = load_dataset(spec.dataset, upload_files=upload_files)
    shards = shard_ranges(evaluated_samples(data, spec.evaluation), spec.evaluation.shard_size)
    if kind is JobKind.EVALUATE:
        return [UnitWork(name=f"evaluate [{a}, {b})", kind=UnitKind.EVALUATE, start=a, stop=b, finish=len(shards) == 1)
                for a, b in shards]
    baseline = baseline_name(spec)
    train, evaluate = [], []
    for seed in spec.seeds:
        for name in spec.training_order():
            reg = spec.regularizer(name)
            after = [train_unit_name(reg.teacher, seed)] if isinstance(reg, Sobolev) and reg.teacher in {
                r.name for r in spec.regularizers} else []
            train.append(UnitWork(name=train_unit_name(name, seed), kind=UnitKind.TRAIN, run=name, seed=seed,
                                  after=after))
            needs = [train_unit_name(name, seed)]
            if len(shards) == 1 and name != baseline:  # its checks run here, with the baseline as surrogate
                needs.append(train_unit_name(baseline, seed))
            evaluate += [UnitWork(name=f"evaluate {name} seed {seed} [{a}, {b})", kind=UnitKind.EVALUATE, run=name,
                                  seed=seed, start=a, stop=b, finish=len(shards) == 1, after=needs)
                         for a, b in shards]
    return train + evaluate


def run_train_unit(spec: ExperimentSpec, work: UnitWork, work_dir: Path, device: str, reporter: ProgressReporter,
                   upload_files: Mapping[str, Path] | None = None, teacher: Path | None = None) -> list[str]:
    """Train one run into work_dir (resumable from work_dir/state); returns its checkpoint's name."""
    data = load_dataset(spec.dataset, upload_files=upload_files)
    dev = select_device(device or spec.training.device)
    reg = spec.regularizer(work.run)
    teacher_model: nn.Module | None = None
    if isinstance(reg, Sobolev) and reg.teacher != "dataset":
        source = teacher or (upload_files or {}).get(reg.teacher) or Path(reg.teacher)
        teacher_model = load_model(source, device=str(dev))
    train_run(spec, work.run, work.seed, work_dir, device=dev, data=data, teacher=teacher_model,
              progress=reporter.run_progress(work.run, work.seed))
    return [checkpoint_name(work.run, work.seed)]


def _model(spec: ExperimentSpec, kind: JobKind, path: Path, data: DatasetBundle, device: torch.device,
           max_model_bytes: int | None) -> nn.Module:
    if kind is JobKind.COMPARE:
        return load_model(path, device=str(device))
    from models.sources import DEFAULT_MAX_BYTES, load_any_model

    return load_any_model(path, spec.model, input_shape=data.input_shape, num_outputs=data.num_outputs, device=device,
                          max_bytes=max_model_bytes or DEFAULT_MAX_BYTES)


@dataclass
class ModelInputs:
    """What the checks of one model need besides its shards: the model file, its training history,
    and (compare, not the baseline) the baseline of the same seed as transfer surrogate."""

    path: Path
    surrogate: Path | None = None
    name: str = ""
    seed: int = 0
    shards: list[Path] = field(default_factory=list)
    run_file: Path | None = None


def _history(path: Path) -> list[object]:
    fitted = fit_from_metadata(read_metadata(path), nn.Identity()) if path.suffix == ".safetensors" else None
    return list(fitted.history) if fitted is not None else []


def _finish(spec: ExperimentSpec, kind: JobKind, inputs: ModelInputs, data: DatasetBundle, outcome: ShardOutcome,
            device: torch.device, reporter: ProgressReporter, max_model_bytes: int | None) -> RunReport:
    """A model's checks on its merged shards, and its entry of the report (cost filled in later)."""
    model = _model(spec, kind, inputs.path, data, device, max_model_bytes)
    surrogate = None
    if inputs.surrogate is not None:
        surrogate = (f"{baseline_name(spec)} seed {inputs.seed}", load_model(inputs.surrogate, device=str(device)))
    history = _history(inputs.path) if kind is JobKind.COMPARE else []
    label = f"{inputs.name} seed {inputs.seed}: " if kind is JobKind.COMPARE else ""
    evaluation = finish_evaluation(model, data, spec.evaluation, outcome, history=history, surrogate=surrogate,
                                   progress=lambda s: reporter.stage(label + s))
    if kind is JobKind.COMPARE:
        return report_of(inputs.name, spec.regularizer(inputs.name).kind, inputs.seed, evaluation, Cost(),
                         checkpoint_name(inputs.name, inputs.seed))
    report = report_of(inputs.path.stem, "checkpoint", 0, evaluation, Cost(), inputs.path.name)
    from models.sources.probe import diagnose_run  # a user model near chance: name the likely convention

    return diagnose_run(report, model, spec.model, data.x_test, data.y_test, num_classes=data.num_outputs,
                        device=device)


def run_eval_unit(spec: ExperimentSpec, kind: JobKind, work: UnitWork, inputs: ModelInputs, work_dir: Path,
                  device: str, reporter: ProgressReporter, upload_files: Mapping[str, Path] | None = None,
                  max_model_bytes: int | None = None) -> list[str]:
    """Attack one shard of a model's test samples (and, for its only shard, run its checks)."""
    data = load_dataset(spec.dataset, upload_files=upload_files)
    dev = select_device(device or spec.training.device)
    model = _model(spec, kind, inputs.path, data, dev, max_model_bytes)
    label = f"{work.run} seed {work.seed} " if work.run else ""
    outcome = evaluate_shard(model, data, spec.evaluation, work.start, work.stop,
                             progress=lambda s: reporter.stage(f"{label}[{work.start}, {work.stop}): {s}"))
    (work_dir / SHARD_FILE).write_text(outcome.to_json())
    if not work.finish:
        return [SHARD_FILE]
    report = _finish(spec, kind, inputs, data, merge_shards([outcome]), dev, reporter, max_model_bytes)
    (work_dir / RUN_FILE).write_text(report.model_dump_json())
    return [SHARD_FILE, RUN_FILE]


def assemble(spec: ExperimentSpec, kind: JobKind, models: list[ModelInputs], work_dir: Path, device: str,
             reporter: ProgressReporter, upload_files: Mapping[str, Path] | None = None,
             max_model_bytes: int | None = None) -> list[str]:
    """The report of the job from its units' files: each model's run file, or its merged shards checked
    here; training costs from the checkpoints. Returns the names written under work_dir."""
    dev = select_device(device or spec.training.device)
    data: DatasetBundle | None = None
    reports: list[RunReport] = []
    for inputs in models:
        if inputs.run_file is not None:
            report = RunReport.model_validate_json(inputs.run_file.read_text())
        else:
            data = data or load_dataset(spec.dataset, upload_files=upload_files)
            outcome = merge_shards([ShardOutcome.from_json(p.read_text()) for p in inputs.shards])
            report = _finish(spec, kind, inputs, data, outcome, dev, reporter, max_model_bytes)
        reports.append(report)
    if kind is JobKind.EVALUATE:
        final: Report = evaluate_report(spec, reports[0], str(dev), model_file=models[0].path)
    else:
        baseline = baseline_name(spec)
        fits = {(m.name, m.seed): fit_from_metadata(read_metadata(m.path), nn.Identity()) for m in models}
        base_step = {seed: fit.step_seconds for (name, seed), fit in fits.items() if name == baseline and fit}
        reports = [r.model_copy(update={"cost": training_cost(fits[r.regularizer, r.seed], base_step.get(r.seed))
                                        .model_copy(update={"eval_seconds": r.cost.eval_seconds})})
                   for r in reports]
        final = compare_report(spec, reports, str(dev))
    reporter.report("reporting", "writing the report", 0.98, force=True)
    written = write_report(final, work_dir)
    names = [path.relative_to(work_dir).as_posix() for path in written]
    if kind is JobKind.COMPARE:
        names += sorted(f"checkpoints/{p.name}" for p in (work_dir / "checkpoints").glob("*.safetensors"))
    return names
