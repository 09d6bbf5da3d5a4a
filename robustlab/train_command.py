"""`robustlab train`: train every run of a spec locally, with progress bars and a summary table.

Imported lazily by the CLI, because it needs torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from core.enums import Task
from core.specs import ExperimentSpec
from models.datasets import load_dataset
from models.datasets.base import DatasetBundle
from models.regularizers import per_sample_loss
from models.training.experiment import RunResult, train_experiment
from models.training.loop import ProgressCallback, ProgressEvent
from robustlab.messages import model_label
from robustlab.threads import apply_threads

log = logging.getLogger(__name__)


def mean_input_gradient_norm(model: torch.nn.Module, data: DatasetBundle, limit: int = 1000) -> float:
    """mean_b ‖∇ₓℓ_b‖₂ on up to `limit` test points: the quantity gradient penalties shrink."""
    device = next(model.parameters()).device
    x = data.x_test[:limit].to(device).requires_grad_(True)
    loss = per_sample_loss(model.eval()(x), data.y_test[:limit].to(device), data.task).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return float(grad.flatten(1).norm(dim=1).mean())


def run_training(spec: ExperimentSpec, out: Path, device: str | None, console: Console, *,
                 threads: int | None = None) -> list[dict[str, Any]]:
    choice = apply_threads(threads)
    console.print(f"torch threads: {choice.threads} ({choice.reason}; --threads N to change)", style="dim",
                  highlight=False)
    data = load_dataset(spec.dataset)
    console.print(
        f"[bold]{spec.name}[/]: {len(spec.regularizers)} regularizers × {len(spec.seeds)} seeds on "
        f"{data.name} ({len(data.x_train)} train / {len(data.x_test)} test, input {data.input_shape}), "
        f"{model_label(spec.model)}, {spec.training.epochs} epochs → {out}"
    )
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bars:
        overall = bars.add_task("all runs", total=len(spec.regularizers) * len(spec.seeds), status="")

        def on_run(name: str, seed: int) -> ProgressCallback:
            task = bars.add_task(f"{name} seed {seed}", total=1.0, status="")

            def report(event: ProgressEvent) -> None:
                bars.update(task, completed=event.fraction, status=(
                    f"epoch {event.epoch}/{event.epochs} loss {event.loss:.3f} "
                    f"penalty {event.penalty:.3g} {event.samples_per_second:,.0f}/s"))
                if event.fraction >= 1.0:  # keep one line per finished run, not one bar each
                    bars.remove_task(task)
                    bars.advance(overall)
                    bars.console.print(f"  done {name} seed {seed}: loss {event.loss:.4f}")

            return report

        runs = train_experiment(spec, out, device=device, data=data, progress=on_run)
        bars.update(overall, completed=len(runs))  # runs reused from earlier checkpoints count too
    rows = [_row(run, data) for run in runs]
    (out / "training.json").write_text(json.dumps({"spec": spec.model_dump(mode="json"),
                                                   "spec_hash": spec.spec_hash(), "runs": rows}, indent=2))
    console.print(_table(rows, data.task))
    console.print(f"checkpoints in {out / 'checkpoints'}, summary in {out / 'training.json'}")
    return rows


def _row(run: RunResult, data: DatasetBundle) -> dict[str, Any]:
    return {
        "run": run.name,
        "kind": run.kind,
        "seed": run.seed,
        "clean": run.clean_score,
        "grad_norm": mean_input_gradient_norm(run.model, data),
        "seconds": run.fit.seconds if run.fit else None,
        "step_ms": 1000 * run.fit.step_seconds if run.fit else None,
        "checkpoint": str(run.checkpoint),
    }


def _table(rows: list[dict[str, Any]], task: Task) -> Table:
    """Mean over seeds per run: clean score, input-gradient norm, step time relative to the first run."""
    metric = "acc" if task == Task.CLASSIFICATION else "MSE"
    table = Table(title="training summary: test accuracy (MSE), mean input-gradient norm; mean over seeds")
    for column in ("run", "kind", metric, "‖∇ₓℓ‖", "ms/step", "train s"):
        table.add_column(column, justify="left" if column in ("run", "kind") else "right", no_wrap=True)
    names = list(dict.fromkeys(r["run"] for r in rows))
    for name in names:
        mine = [r for r in rows if r["run"] == name]

        def mean(key: str, mine: list[dict[str, Any]] = mine) -> float | None:
            values = [r[key] for r in mine if r[key] is not None]
            return sum(values) / len(values) if values else None

        step, seconds = mean("step_ms"), mean("seconds")
        table.add_row(
            name, mine[0]["kind"], f"{mean('clean'):.4f}", f"{mean('grad_norm'):.4g}",
            "reused" if step is None else f"{step:.1f}", "reused" if seconds is None else f"{seconds:.1f}",
        )
    return table
