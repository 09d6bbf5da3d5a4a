"""`robustlab compare` and `robustlab evaluate`: in-process runs with progress and a summary table.

Imported lazily by the CLI, because it needs torch.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.reports import Report
from core.specs import ExperimentSpec
from models.evaluation.compare import compare, evaluate_checkpoint
from models.training.loop import ProgressCallback, ProgressEvent
from reports.files import write_report
from robustlab.evaluation_summary import evaluation_table
from robustlab.threads import apply_threads

CONVENTIONS_CHECK = "input_conventions"  # models/sources/probe.py: why a user model is near chance


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<40}"), BarColumn(), TextColumn("{task.fields[status]}"),
                    TimeElapsedColumn(), console=console)


def _threads(threads: int | None, console: Console) -> None:
    choice = apply_threads(threads)
    console.print(f"torch threads: {choice.threads} ({choice.reason}; --threads N to change)", style="dim",
                  highlight=False)


def run_compare(spec: ExperimentSpec, out: Path, device: str | None, console: Console, *,
                threads: int | None = None) -> Report:
    _threads(threads, console)
    console.print(f"[bold]{spec.name}[/]: {len(spec.regularizers)} regularizers × {len(spec.seeds)} seeds, "
                  f"{len(spec.evaluation.attacks)} attacks → {out}")
    with _progress(console) as bars:
        stage_task = bars.add_task("evaluation", total=None, status="waiting for training")

        def on_run(name: str, seed: int) -> ProgressCallback:
            task = bars.add_task(f"train {name} seed {seed}", total=1.0, status="")

            def report(event: ProgressEvent) -> None:
                bars.update(task, completed=event.fraction,
                            status=f"epoch {event.epoch}/{event.epochs} loss {event.loss:.3f}")
                if event.fraction >= 1.0:
                    bars.remove_task(task)

            return report

        report = compare(spec, out, device=device, run_progress=on_run,
                         stage=lambda s: bars.update(stage_task, status=s))
        bars.update(stage_task, status="done", total=1, completed=1)
    _finish(report, out, console)
    return report


def run_evaluate(spec: ExperimentSpec, checkpoint: Path, out: Path, device: str | None, console: Console, *,
                 threads: int | None = None) -> Report:
    _threads(threads, console)
    with _progress(console) as bars:
        task = bars.add_task(f"evaluate {checkpoint.name}", total=None, status="")
        report = evaluate_checkpoint(spec, checkpoint, device=device, stage=lambda s: bars.update(task, status=s))
    _finish(report, out, console)
    return report


def _finish(report: Report, out: Path, console: Console) -> None:
    files = write_report(report, out)
    console.print(summary_table(report))
    failed = [c for c in report.checks if c.status == "fail"]
    for check in failed:
        console.print(f"[red]check failed[/] {check.name}: {check.detail}", highlight=False)
    causes = [c for r in report.runs for c in r.checks if c.name == CONVENTIONS_CHECK and c.status == "fail"]
    for cause in causes:  # a user model near chance: the conventions it likely expects, not the attacks
        console.print(f"[red]{cause.name}[/] {cause.detail}", highlight=False)
    if failed and not causes:
        console.print("[red]robust accuracy of the flagged runs is untrustworthy (see report.html)[/]")
    console.print("wrote " + ", ".join(str(f) for f in files))


def summary_table(report: Report) -> Table:
    """Clean and worst-case accuracy (mean ± std over seeds) per regularizer; an evaluated model is shown
    even when its clean accuracy is near chance (a summary leaves such runs out of comparisons)."""
    if report.kind == "evaluate" and len(report.runs) == 1:  # one model: its own summary, intervals included
        return evaluation_table(report)
    if report.kind == "evaluate" and not report.summary and report.runs:
        return _runs_table(report)
    table = Table(title=f"{report.spec.get('name', '')}: accuracy, mean ± std over seeds")
    table.add_column("regularizer", no_wrap=True)
    table.add_column("clean", justify="right")
    keys = [(w.norm, w.eps) for w in report.summary[0].worst_case] if report.summary else []
    for norm, eps in keys:
        table.add_column(f"{norm} {eps:g}", justify="right")
    table.add_column("× time", justify="right")
    for s in report.summary:
        worst = {(w.norm, w.eps): w for w in s.worst_case}
        ratio = "" if s.step_time_ratio_to_baseline is None else f"{s.step_time_ratio_to_baseline:.2f}"
        cells = [f"{worst[k].mean:.3f}±{worst[k].std:.3f}" if k in worst else "" for k in keys]
        name = s.regularizer + ("" if s.trustworthy else " ⚠")
        table.add_row(name, f"{s.clean_accuracy.mean:.3f}±{s.clean_accuracy.std:.3f}", *cells, ratio)
    return table


def _runs_table(report: Report) -> Table:
    """Clean and worst-case accuracy of each evaluated run, flagged when a check failed."""
    table = Table(title=f"{report.spec.get('name', '')}: accuracy")
    table.add_column("model", no_wrap=True)
    table.add_column("clean", justify="right")
    keys = [(w.norm, w.eps) for w in report.runs[0].worst_case]
    for norm, eps in keys:
        table.add_column(f"{norm} {eps:g}", justify="right")
    for run in report.runs:
        worst = {(w.norm, w.eps): w.accuracy for w in run.worst_case}
        name = run.regularizer + ("" if run.trustworthy else " ⚠")
        table.add_row(name, f"{run.clean_accuracy:.3f}", *(f"{worst[k]:.3f}" if k in worst else "" for k in keys))
    return table
