"""Writing a report's files: report.json, report.md, report.html, results.csv, plots/*.svg, and for an
evaluate report with per-sample outcomes, outcomes.csv.

Torch-free, so that `robustlab render` can redraw every file from a report.json anywhere, and the
worker and the CLI write exactly the same set.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.reports import Report
from reports.evaluation import OUTCOMES_FILE, render_outcomes_csv
from reports.html_charts import figures
from reports.render import render_csv, render_html, render_markdown


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """report.json, report.md, report.html, results.csv and plots/*.svg in out_dir (atomically each)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "report.json": report.model_dump_json(indent=2),
        "report.md": render_markdown(report),
        "report.html": render_html(report),
        "results.csv": render_csv(report),
    }
    outcomes = render_outcomes_csv(report) if report.kind == "evaluate" else None
    if outcomes is not None:  # each sample's outcome by index, linked from an evaluate report's page
        files[OUTCOMES_FILE] = outcomes
    # Each chart also as its own SVG (for papers and docs): plots/robustness-linf.svg, cost.svg, ...
    (out_dir / "plots").mkdir(exist_ok=True)
    files.update({f"plots/{name}": svg for name, svg in figures(report).items()})
    written: list[Path] = []
    for name, text in files.items():
        path = out_dir / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written
