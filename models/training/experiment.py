"""Train every run of a spec (regularizer × seed), teachers first, each resumable and checkpointed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

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
from models.training.loop import FitResult, ProgressCallback, clean_score, fit

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
    registry = require_registry(spec.model)  # user model files are evaluated, never trained
    data = data if data is not None else load_dataset(spec.dataset)
    dev = select_device(device or spec.training.device)
    spec_hash = spec.spec_hash()
    results: dict[tuple[str, int], RunResult] = {}
    for seed in spec.seeds:
        for name in spec.training_order():
            reg_spec = spec.regularizer(name)
            checkpoint = out_dir / "checkpoints" / f"{run_id(name, seed)}.safetensors"
            if _finished_checkpoint(checkpoint, spec_hash, spec.training.epochs):
                model = load_model(checkpoint, device=str(dev))
                results[name, seed] = RunResult(
                    name, reg_spec.kind, seed, checkpoint, model, None, clean_score(model, data)
                )
                log.info("%s: finished checkpoint found, not retrained", run_id(name, seed))
                continue
            teacher = _teacher(reg_spec, seed, results, dev, upload_files) if isinstance(reg_spec, Sobolev) else None
            torch.manual_seed(seed)  # the initial weights are a function of the seed alone
            model = build_from_spec(spec.model, data.input_shape, data.num_outputs, data.channel_stats())
            fitted = fit(
                model,
                build_regularizer(reg_spec, data.task, teacher),
                data,
                spec.training,
                seed=seed,
                device=dev,
                state_path=out_dir / "state" / f"{run_id(name, seed)}.pt",
                spec_hash=spec_hash,
                progress=progress(name, seed) if progress is not None else None,
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
                extra={"run": name, "kind": reg_spec.kind, "seed": seed, "dataset": data.name},
            )
            results[name, seed] = RunResult(
                name, reg_spec.kind, seed, checkpoint, model, fitted, clean_score(model, data)
            )
    return list(results.values())


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
