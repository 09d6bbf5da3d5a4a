"""The report of an `evaluate` job, shaped for one model (issue 22.5): HTML page, Markdown, outcomes.csv and
the CLI summary, from a synthetic report (tests/report_fixtures.py), parsed rather than grepped."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.console import Console

from core.reports import ModelInfo
from reports.evaluation import NO_INTERVAL, OUTCOMES_FILE, render_outcomes_csv
from reports.files import write_report
from reports.render import render_html, render_markdown
from robustlab.evaluation_summary import evaluation_table
from tests.report_fixtures import demo_report, evaluate_fixture
from tests.unit.test_report_render import EVIL, _parse


def _text(page: str) -> str:
    return " ".join(_parse(page).text)


def test_the_page_is_about_one_model_not_a_comparison() -> None:
    page = render_html(evaluate_fixture())
    parsed, text = _parse(page), _text(page)
    for section in ("evaluation-headline", "model-section", "accuracy-section", "suite-section", "checks-section",
                    "outcomes-section", "provenance-section"):
        assert parsed.find("section", id=section), section
    # Nothing of the compare report: no regularizer, seeds, baseline or step time.
    assert not parsed.find("table", id="comparison") and not parsed.find("table", id="headline-table")
    shown = text.split("Environment and spec")[0]  # the spec itself (at the end) names its regularizers
    assert "regularizer" not in shown.lower() and "Step time" not in shown and "seed" not in shown.lower()
    assert "Evaluation report: my-cnn" in text


def test_the_model_and_its_samples_are_described() -> None:
    parsed = _parse(render_html(evaluate_fixture()))
    assert parsed.find("dl", id="model-facts") and parsed.find("dl", id="sample-facts")
    text = _text(render_html(evaluate_fixture()))
    for fact in ("cnn.onnx", "ab12" * 16, "123,456 bytes", "onnx", "1 × 8 × 8", "[0, 255]", "nchw", "logits",
                 "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "500 (test-set indices 0…499)", "450 of 500"):
        assert fact in text, fact


def test_robust_accuracy_per_attack_and_radius_with_intervals() -> None:
    page = render_html(evaluate_fixture())
    parsed = _parse(page)
    radii = parsed.inside("tr", "radius-row", "robust-accuracy")
    assert [(r["data-norm"], float(r["data-eps"])) for r in radii] == [
        ("linf", 0.02), ("linf", 8 / 255), ("linf", 0.05), ("l2", 0.5)]
    assert len(parsed.inside("tr", "accuracy-row", "robust-accuracy")) == 1 + 4 * 2  # clean + 2 attacks each
    assert len(parsed.inside("tr", "worst-row", "robust-accuracy")) == 4
    text = _text(page)
    assert "87.0–92.5" in text and "56.0–64.0" in text and "Clopper–Pearson" in text
    assert "L∞ ε=8/255" in text  # radii as the spec wrote them
    # One curve per norm, its band the interval.
    assert len(parsed.find("svg", "robustness-curve")) == 2
    assert "95 % interval 87–92.5" in page  # the clean point's tooltip


def test_a_report_without_intervals_says_so_instead_of_failing() -> None:
    page = render_html(evaluate_fixture(intervals=False))
    text = _text(page)
    assert NO_INTERVAL in text and "Clopper" not in text
    md = render_markdown(evaluate_fixture(intervals=False))
    assert NO_INTERVAL in md and "| L∞ ε=0.02 | fgsm | 65.0 | — |" in md


def test_suite_members_checks_and_outcomes() -> None:
    parsed = _parse(render_html(evaluate_fixture()))
    members = parsed.inside("tr", "member-row", "suite-section")
    assert [m["data-member"] for m in members[:3]] == ["apgd-ce", "apgd-t", "square"]
    assert len(members) == 12
    assert len(parsed.inside("li", "check", "checks-section")) == 2
    link = parsed.find("a", id="outcomes-download")
    assert link and link[0]["href"] == OUTCOMES_FILE and link[0]["data-artifact"] == OUTCOMES_FILE
    assert not parsed.find("div", id="trust-banner")


def test_a_failed_check_raises_the_banner() -> None:
    page = render_html(evaluate_fixture(untrustworthy=True))
    assert _parse(page).find("div", id="trust-banner") and "large_eps_reaches_chance failed" in _text(page)
    assert "**Untrustworthy robust accuracy**: large_eps_reaches_chance failed" in render_markdown(
        evaluate_fixture(untrustworthy=True))


def test_markdown_has_the_same_sections() -> None:
    md = render_markdown(evaluate_fixture())
    for heading in ("# Evaluation report: my-cnn", "## Model", "## Samples", "## Robust accuracy",
                    "## Suite members", "## Checks", "## Per-sample outcomes", "## Attack cost"):
        assert f"\n{heading}\n" in f"\n{md}", heading
    assert "| SHA-256 | " + "ab12" * 16 + " |" in md and "| clean | no attack | 90.0 | 87.0–92.5 |" in md
    assert "Step time" not in md and "Regularizer" not in md and "regularizer" not in md


def test_model_strings_are_escaped() -> None:
    report = evaluate_fixture().model_copy(update={"model_info": ModelInfo(file=EVIL, sha256="00", format="onnx")})
    page = render_html(report)
    assert "<script" not in page.lower() and EVIL in _text(page)
    assert "<script" not in render_markdown(report)


def test_outcomes_csv_is_written_for_an_evaluate_report_only(tmp_path: Path) -> None:
    report = evaluate_fixture(samples=37)
    written = {p.relative_to(tmp_path / "eval").as_posix() for p in write_report(report, tmp_path / "eval")}
    assert OUTCOMES_FILE in written and "report.html" in written and "plots/robustness-linf.svg" in written
    rows = list(csv.reader(io.StringIO((tmp_path / "eval" / OUTCOMES_FILE).read_text())))
    assert rows[0] == ["sample", "clean_correct", "correct_linf_0.02", f"correct_linf_{8 / 255!r}",
                       "correct_linf_0.05", "correct_l2_0.5"]
    assert [int(r[0]) for r in rows[1:]] == list(range(37))
    outcomes = report.runs[0].outcomes
    assert outcomes is not None
    assert [r[1] == "1" for r in rows[1:]] == outcomes.clean_correct()
    assert [r[4] == "1" for r in rows[1:]] == outcomes.correct_at("linf", 0.05)
    compared = {p.name for p in write_report(demo_report(2, 1), tmp_path / "compare")}
    assert OUTCOMES_FILE not in compared  # the compare report's files are unchanged
    no_outcomes = report.model_copy(update={"runs": [report.runs[0].model_copy(update={"outcomes": None})]})
    assert render_outcomes_csv(no_outcomes) is None
    assert "outcomes-section" not in render_html(no_outcomes)


def test_a_report_of_an_older_version_still_renders() -> None:
    """No model_info, no suite, no outcomes, no intervals, no checks: every section degrades."""
    run = evaluate_fixture(intervals=False).runs[0].model_copy(
        update={"suite_members": [], "outcomes": None, "checks": [], "attack_costs": []})
    report = evaluate_fixture(intervals=False).model_copy(update={"model_info": None, "runs": [run], "checks": []})
    page = render_html(report)
    parsed, text = _parse(page), _text(page)
    assert not parsed.find("section", id="suite-section") and not parsed.find("section", id="outcomes-section")
    assert "No checks were run." in text and "cnn.onnx" in text  # the file from the run's checkpoint
    assert "No checks were run." in render_markdown(report)
    empty = report.model_copy(update={"runs": [], "summary": []})
    assert "No run in this report." in _text(render_html(empty)) and "No run in this report." in render_markdown(empty)


def test_the_cli_summary_shows_the_model_and_intervals() -> None:
    console = Console(width=100, record=True)
    console.print(evaluation_table(evaluate_fixture()))
    out = console.export_text()
    assert "cnn.onnx (onnx, sha256 ab12ab12ab12)" in out
    assert "87.0–92.5" in out and "29.4–37.4" in out and "L∞ ε=8/255" in out and "60/50/40" in out
    assert "regularizer" not in out and "time" not in out
    narrow = Console(width=60, record=True)
    narrow.print(evaluation_table(evaluate_fixture(intervals=False, untrustworthy=True)))
    text = narrow.export_text()
    assert "33.4 ⚠" in text and "not to be trusted" in text and "—" in text


def test_an_escalated_evaluation_shows_each_radius_trust_and_its_escalations() -> None:
    """Issue 23: each ε's number says whether it is trusted, escalated or flagged, and the report names
    each escalation step and what it broke (HTML page and Markdown)."""
    from core.reports import Escalation, RadiusTrust

    report = evaluate_fixture(untrustworthy=True)
    run = report.runs[0]
    trust = [RadiusTrust(norm=w.norm, eps=w.eps, status="escalated" if w.eps == 0.05 else "trusted")
             for w in run.worst_case]
    steps = [Escalation(name="bpda-suite", norm="linf", eps=0.05, attacked=120, broken=7,
                        detail="straight-through backward for round")]
    run = run.model_copy(update={"radius_trust": trust, "escalations": steps, "escalated": True})
    report = report.model_copy(update={"runs": [run]})
    page = render_html(report)
    parsed = _parse(page)
    assert len(parsed.find("span", "trust-escalated")) == 1 and len(parsed.find("span", "trust-trusted")) == 3
    assert parsed.find("table", id="escalations") and parsed.find("tr", **{"data-step": "bpda-suite"})
    assert "straight-through backward for round" in _text(page)
    markdown = render_markdown(report)
    assert "## Escalations" in markdown and "| bpda-suite |" in markdown and "escalated" in markdown
