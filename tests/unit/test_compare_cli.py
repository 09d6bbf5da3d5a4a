"""`robustlab compare` and `robustlab evaluate` end to end on a tiny digits spec."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from core.reports import Report
from models.checkpoints import load_model
from robustlab.cli import app

SPEC = {
    "name": "tiny-compare",
    "dataset": {"name": "digits", "train_size": 200, "test_size": 100, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [32]}},
    "training": {"epochs": 3, "batch_size": 50, "lr": 0.003},
    "regularizers": [{"name": "erm", "kind": "none"}, {"name": "db", "kind": "double_backprop", "weight": 0.5}],
    "seeds": [0, 1],
    "evaluation": {"attacks": [{"kind": "fgsm", "eps": [0.05, 0.1]}, {"kind": "suite", "eps": [0.05, 0.1]}]},
}


def test_compare_writes_every_output_and_evaluate_reads_its_checkpoint(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", str(spec_file), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output

    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.baseline == "erm" and {s.regularizer for s in report.summary} == {"erm", "db"}
    assert len(report.runs) == 4 and all(r.checks for r in report.runs)
    assert [w.eps for w in report.summary[0].worst_case] == [0.05, 0.1]
    html = (out / "report.html").read_text()
    assert html.count('class="regularizer-row"') == 2 and "robustness-curve" in html
    assert (out / "report.md").read_text().count("| db") >= 1
    assert len((out / "results.csv").read_text().splitlines()) > 4
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert "robustness-linf.svg" in plots and "cost.svg" in plots and len(plots) == 5  # + 3 sensitivity charts
    assert 'class="robustness-curve"' in (out / "plots" / "robustness-linf.svg").read_text()
    checkpoint = out / "checkpoints" / "db-seed1.safetensors"
    load_model(checkpoint)

    evaluated = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["evaluate", "--checkpoint", str(checkpoint), "--spec", str(spec_file), "--out", str(evaluated)]
    )
    assert result.exit_code == 0, result.output
    single = Report.model_validate_json((evaluated / "report.json").read_text())
    assert single.kind == "evaluate" and len(single.runs) == 1


def test_evaluate_rejects_a_broken_checkpoint_in_one_line(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(
        app, ["evaluate", "--checkpoint", str(broken), "--spec", str(spec_file), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert "Traceback" not in result.output
    assert last.startswith("Error: broken.safetensors") and "corrupted" in last


def test_render_redraws_every_file_from_a_report_json(tmp_path: Path) -> None:
    from reports.files import write_report
    from tests.unit.test_report_render import make_report

    write_report(make_report(), tmp_path / "first")
    first = str(tmp_path / "first" / "report.json")
    result = CliRunner().invoke(app, ["render", first, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    for name in ("report.html", "report.md", "results.csv", "plots/cost.svg"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name
    (tmp_path / "bad.json").write_text('{"schema_version": "1.0"}')
    bad = CliRunner().invoke(app, ["render", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "not a robustlab report.json" in bad.output
