"""Train every run of a spec (regularizer × seed), teachers first, each resumable and checkpointed."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.specs.experiment import ExperimentSpec
from core.specs.model import require_registry
from core.specs.regularizers import Sobolev
from models.architectures import build_from_spec
from models.checkpoints import load_model, read_metadata, save_checkpoint
from models.datasets import load_dataset
from models.datasets.base import DatasetBundle
from models.regularizers import build_regularizer
from models.training.device import select_device
from models.training.loop import EpochRecord, FitResult, ProgressCallback, clean_score, fit

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    name: str
    kind: str
    seed: int
    checkpoint: Path
    model: nn.Module
    fit: FitResult | None  # None when a finished checkpoint was reused
    clean_score: float  # accuracy, or MSE for regression


def run_id(name: str, seed: int) -> str:
    return f"{name}-seed{seed}"


def _finished_checkpoint(path: Path, spec_hash: str, epochs: int) -> bool:
    if not path.exists():
        return False
    meta = read_metadata(path)
    return bool(meta.get("spec_hash") == spec_hash and meta.get("epoch") == epochs)


def train_experiment(
    spec: ExperimentSpec,
    out_dir: Path,
    *,
    device: str | None = None,
    data: DatasetBundle | None = None,
    progress: Callable[[str, int], ProgressCallback | None] | None = None,
    upload_files: Mapping[str, Path] | None = None,
) -> list[RunResult]:
    """Train all runs into out_dir/checkpoints; per-epoch state in out_dir/state for resume.

    `upload_files` maps upload ids (Sobolev teachers named by id) to local files.

    `progress(name, seed)` may return a callback for that run's progress events. A run whose
    final checkpoint for this spec already exists is loaded, not retrained.
    """
    data = data if data is not None else load_dataset(spec.dataset)
    dev = select_device(device or spec.training.device)
    results: dict[tuple[str, int], RunResult] = {}
    for seed in spec.seeds:
        for name in spec.training_order():
            reg_spec = spec.regularizer(name)
            teacher = _teacher(reg_spec, seed, results, dev, upload_files) if isinstance(reg_spec, Sobolev) else None
            results[name, seed] = train_run(spec, name, seed, out_dir, device=dev, data=data, teacher=teacher,
                                            progress=progress(name, seed) if progress is not None else None)
    return list(results.values())


def train_run(spec: ExperimentSpec, name: str, seed: int, out_dir: Path, *, device: torch.device,
              data: DatasetBundle, teacher: nn.Module | None = None,
              progress: ProgressCallback | None = None) -> RunResult:
    """Train one run (regularizer `name`, `seed`) into out_dir/checkpoints, resumable from out_dir/state.

    A function of (spec, name, seed) alone, whichever process runs it and whatever ran before: the
    initial weights come from torch.manual_seed(seed), the sample order and the regularizer's draws
    from generators seeded by the seed (so a work unit on any worker trains what `compare` trains).
    A run whose final checkpoint for this spec exists is loaded, not retrained."""
    registry = require_registry(spec.model)  # user model files are evaluated, never trained
    spec_hash = spec.spec_hash()
    reg_spec = spec.regularizer(name)
    checkpoint = out_dir / "checkpoints" / f"{run_id(name, seed)}.safetensors"
    if _finished_checkpoint(checkpoint, spec_hash, spec.training.epochs):
        model = load_model(checkpoint, device=str(device))
        # Its cost and history come from the checkpoint: a retried job reports them like a fresh one.
        reused = fit_from_metadata(read_metadata(checkpoint), model)
        log.info("%s: finished checkpoint found, not retrained", run_id(name, seed))
        return RunResult(name, reg_spec.kind, seed, checkpoint, model, reused, clean_score(model, data))
    torch.manual_seed(seed)  # the initial weights are a function of the seed alone
    model = build_from_spec(spec.model, data.input_shape, data.num_outputs, data.channel_stats())
    fitted = fit(
        model,
        build_regularizer(reg_spec, data.task, teacher),
        data,
        spec.training,
        seed=seed,
        device=device,
        state_path=out_dir / "state" / f"{run_id(name, seed)}.pt",
        spec_hash=spec_hash,
        progress=progress,
    )
    save_checkpoint(
        checkpoint,
        model,
        architecture=registry.architecture,
        params=registry.params.model_dump(mode="json"),
        input_shape=data.input_shape,
        num_outputs=data.num_outputs,
        spec_hash=spec_hash,
        epoch=spec.training.epochs,
        extra={"run": name, "kind": reg_spec.kind, "seed": seed, "dataset": data.name, "fit": fit_summary(fitted)},
    )
    return RunResult(name, reg_spec.kind, seed, checkpoint, model, fitted, clean_score(model, data))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None  # metadata JSON has no NaN


def fit_summary(fitted: FitResult) -> dict[str, Any]:
    """What a finished run's checkpoint keeps of its training: cost and per-epoch history."""
    return {
        "seconds": fitted.seconds, "step_seconds": fitted.step_seconds, "state_seconds": fitted.state_seconds,
        "peak_memory_bytes": fitted.peak_memory_bytes, "memory_measure": fitted.memory_measure,
        "history": [{k: _finite(v) if isinstance(v, float) else v for k, v in asdict(h).items()}
                    for h in fitted.history],
    }


def fit_from_metadata(meta: dict[str, Any], model: nn.Module) -> FitResult | None:
    """The FitResult a checkpoint's metadata recorded (None for checkpoints saved without one)."""
    summary = (meta.get("extra") or {}).get("fit")
    if not isinstance(summary, dict):
        return None
    def number(value: Any) -> float:
        return float("nan") if value is None else float(value)

    history = [EpochRecord(epoch=int(h["epoch"]), loss=number(h.get("loss")), task_loss=number(h.get("task_loss")),
                           penalty=number(h.get("penalty")), seconds=number(h.get("seconds")),
                           samples_per_second=number(h.get("samples_per_second")))
               for h in summary.get("history", [])]
    return FitResult(model=model, history=history, seconds=float(summary.get("seconds") or 0.0),
                     step_seconds=float(summary.get("step_seconds") or 0.0),
                     state_seconds=float(summary.get("state_seconds") or 0.0),
                     peak_memory_bytes=summary.get("peak_memory_bytes"), memory_measure=summary.get("memory_measure"))


def _teacher(
    spec: Sobolev, seed: int, trained: dict[tuple[str, int], RunResult], device: torch.device,
    upload_files: Mapping[str, Path] | None = None,
) -> nn.Module | None:
    """The teacher of a Sobolev run: the same seed's run of that name, a checkpoint, or none."""
    if spec.teacher == "dataset":
        return None
    if (spec.teacher, seed) in trained:
        return trained[spec.teacher, seed].model
    if upload_files and spec.teacher in upload_files:  # an uploaded model, fetched by the worker
        return load_model(upload_files[spec.teacher], device=str(device))
    return load_model(Path(spec.teacher), device=str(device))
