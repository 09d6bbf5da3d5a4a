"""The torch side of a job: run compare or evaluate in a work directory and write the report files.

Imported only inside the work horse (by worker.runner, lazily), never by the worker parent, so the
parent never loads torch or initializes CUDA (DESIGN §5).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from core.specs.experiment import ExperimentSpec
from models.evaluation.compare import compare, evaluate_checkpoint
from reports.files import write_report
from worker.progress import ProgressReporter


def _report_names(written: list[Path], work_dir: Path) -> list[str]:
    """The report files write_report wrote (report.*, results.csv, plots/*.svg), relative to work_dir."""
    return [path.relative_to(work_dir).as_posix() for path in written]


def run_compare(spec: ExperimentSpec, work_dir: Path, device: str, reporter: ProgressReporter,
                upload_files: Mapping[str, Path] | None = None) -> list[str]:
    """Train, evaluate and report; returns the artifact names (relative to work_dir) to publish."""
    report = compare(spec, work_dir, device=device or "auto", run_progress=reporter.run_progress,
                     stage=reporter.stage, upload_files=upload_files)
    reporter.report("reporting", "writing the report", 0.98, force=True)
    written = write_report(report, work_dir)
    checkpoints = sorted(f"checkpoints/{p.name}" for p in (work_dir / "checkpoints").glob("*.safetensors"))
    return [*_report_names(written, work_dir), *checkpoints]


def run_evaluate(spec: ExperimentSpec, checkpoint: Path, work_dir: Path, device: str,
                 reporter: ProgressReporter, upload_files: Mapping[str, Path] | None = None,
                 max_model_bytes: int | None = None) -> list[str]:
    report = evaluate_checkpoint(spec, checkpoint, device=device or "auto", stage=reporter.stage,
                                 upload_files=upload_files, max_model_bytes=max_model_bytes)
    reporter.report("reporting", "writing the report", 0.98, force=True)
    return _report_names(write_report(report, work_dir), work_dir)
