"""The README demo's spec gives a sound first result: its plain model passes every validity check.

`robustlab up --demo examples/digits-quick.yaml` is the first thing a new user runs. A report that
marks plain ERM as FAIL (as PGD settings that cannot reach ε once made it) teaches them to ignore
the checks. This runs the demo's own training and evaluation sections for ERM with one seed.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from core.reports import Report
from robustlab.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_reports_no_fail_on_a_plain_model(tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "examples" / "digits-quick.yaml").read_text())
    spec["regularizers"] = [r for r in spec["regularizers"] if r["kind"] == "none"]
    spec["seeds"] = spec["seeds"][:1]
    spec_file = tmp_path / "demo-erm.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["compare", str(spec_file), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = Report.model_validate_json((tmp_path / "out" / "report.json").read_text())
    (run,) = report.runs
    failed = [f"{c.name}: {c.detail}" for c in run.checks if c.status == "fail"]
    assert not failed and run.trustworthy, failed
    assert run.clean_accuracy > 0.9  # a sound model, not a broken one that passes vacuously
    assert all(c.status != "fail" for c in report.checks), report.checks
    assert "❌" not in (tmp_path / "out" / "report.md").read_text()  # the status mark of a failed check
