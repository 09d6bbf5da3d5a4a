"""What `robustlab gate` writes: a markdown summary, JUnit XML, and the verdict as JSON.

Torch-free. All three are written for errors too (with no criteria but the error), so that a CI
page shows why the gate could not judge, not just a red cross.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from core.reports import Report
from robustlab.gate.verdict import Criterion, Verdict, diagnosis

SUITE = "robustlab-gate"
MARKS = {"pass": "✅ pass", "fail": "❌ fail", "undecided": "❔ undecided", "error": "⚠️ error"}
CHECK_MARKS = {"pass": "✅", "warn": "⚠️", "fail": "❌"}


@dataclass
class GateRun:
    """Where the verdict came from: what was evaluated, how, and where the report is."""

    mode: str  # "local" or "server"
    checkpoint: str
    spec_name: str = ""
    server: str | None = None
    job_id: str | None = None
    report_location: str | None = None  # a URL or a local path of report.html
    baseline: str | None = None
    seconds: float = 0.0
    report: Report | None = None
    samples_used: int | None = None  # how many test samples decided the verdict
    samples_available: int | None = None  # how many the spec's evaluation would attack
    rounds: list[int] = field(default_factory=list)  # --local: the sample counts judged, one round each
    notes: list[str] = field(default_factory=list)


def _number(value: float | str | None, bound: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float | int):
        return f"≥ {value:.4f}" if bound else f"{value:.4f}"
    return str(value)


def _actual(c: Criterion) -> str:
    """The measured value, with its 95 % interval (or the paired test's p) when there is one."""
    text = _number(c.actual) + (f" [{c.interval[0]:.4f}, {c.interval[1]:.4f}]" if c.interval else "")
    return text + (f", McNemar p = {c.p_value:.3g}" if c.p_value is not None else "")


def headline(verdict: Verdict) -> str:
    failed = [c for c in verdict.criteria if c.status == "fail"]
    undecided = [c for c in verdict.criteria if c.status == "undecided"]
    if verdict.exit_code == 2:
        return "robustlab gate: ERROR (could not judge)"
    if failed or undecided:
        total = len(verdict.criteria)
        parts = [f"{len(failed)} of {total} criteria failed"] if failed else []
        parts += [f"{len(undecided)} of {total} undecided with every sample used"] if undecided else []
        return f"robustlab gate: FAILED ({'; '.join(parts)})"
    return f"robustlab gate: passed ({len(verdict.criteria)} criteria)"


def _where(run: GateRun) -> str:
    spec = f", spec `{run.spec_name}`" if run.spec_name else ""
    if run.mode == "server":
        how = f"evaluated on the server {run.server}" + (f" as job `{run.job_id}`" if run.job_id else "")
    else:
        how = "evaluated locally (in this process)"
    return f"Model `{run.checkpoint}`{spec}, {how}."


def _item(head: str, detail: str) -> list[str]:
    """A list item; the detail's indented lines (spec lines to add) as a YAML block inside it."""
    text = [line for line in detail.splitlines() if not line.startswith("    ")]
    code = [line.strip() for line in detail.splitlines() if line.startswith("    ")]
    lines = [f"- {head}: {' '.join(text)}"]
    if code:
        lines += ["", "  ```yaml", *(f"  {line}" for line in code), "  ```"]
    return lines


def markdown(verdict: Verdict, run: GateRun) -> str:
    icon = {0: "✅", 1: "❌", 2: "⚠️"}[verdict.exit_code]
    lines = [f"## {icon} {headline(verdict)}", "", _where(run), ""]
    if verdict.criteria:
        lines += ["| criterion | required | actual [95 % interval] | result |", "|---|---|---|---|"]
        for c in verdict.criteria:
            lines.append(f"| {c.name} | {_number(c.required, bound=True)} | {_actual(c)} | {MARKS[c.status]} |")
        lines.append("")
        details = [c for c in verdict.criteria if c.detail and c.status != "pass"]
        for c in details:
            lines += _item(f"**{c.name}**", c.detail)
        lines += [""] if details else []
    cause = diagnosis(run.report) if run.report is not None else ""
    if cause and not any(cause in c.detail for c in verdict.criteria):
        lines += [*_item("**Likely cause**", cause), ""]
    if run.report is not None and run.report.checks:
        checks = " · ".join(f"{CHECK_MARKS.get(c.status, c.status)} {c.name}" for c in run.report.checks)
        lines += [f"**Validity checks:** {checks}", ""]
    for error in verdict.errors:
        lines += [f"**Error:** {error}", ""]
    if run.samples_used is not None:
        lines.append(_samples(run))
    if run.baseline:
        lines.append(f"Baseline: `{run.baseline}`.")
    if run.report_location:
        where = " (the dashboard; sign in with the API key)" if run.mode == "server" else ""
        lines.append(f"Full report: {run.report_location}{where}")
    lines += run.notes
    return "\n".join(lines).rstrip() + "\n"


def _samples(run: GateRun) -> str:
    """How many samples decided it: `Judged on 200 of 500 test samples (rounds of 100, 200).`"""
    rounds = f" (rounds of {', '.join(map(str, run.rounds))})" if len(run.rounds) > 1 else ""
    return f"Judged on {run.samples_used} of {run.samples_available} test samples{rounds}."


def _message(c: Criterion) -> str:
    if c.status == "error":
        return c.detail
    required = _number(c.required, bound=True)
    return f"{c.name}: {_actual(c)}, required {required}" + (f" ({c.detail})" if c.detail else "")


def junit_xml(verdict: Verdict, run: GateRun) -> str:
    """One testsuite `robustlab-gate`, one testcase per criterion; <failure> and <error> as JUnit has them."""
    cases: list[tuple[str, str, str]] = [(c.name, c.status, _message(c)) for c in verdict.criteria]
    cases += [("robustlab gate", "error", error) for error in verdict.errors]
    failures = sum(status in ("fail", "undecided") for _, status, _ in cases)
    errors = sum(status == "error" for _, status, _ in cases)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": str(errors), "skipped": "0",
              "time": f"{run.seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "robustlab", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE, **counts})
    properties = ET.SubElement(suite, "properties")
    for name, value in (("mode", run.mode), ("checkpoint", run.checkpoint), ("server", run.server),
                        ("job_id", run.job_id), ("report", run.report_location), ("baseline", run.baseline),
                        ("samples_used", run.samples_used), ("samples_available", run.samples_available)):
        if value is not None and value != "":
            ET.SubElement(properties, "property", {"name": name, "value": str(value)})
    for name, status, message in cases:
        case = ET.SubElement(suite, "testcase", {"classname": SUITE, "name": name, "time": "0"})
        if status in ("fail", "undecided"):
            kind = "threshold" if status == "fail" else "undecided"
            ET.SubElement(case, "failure", {"type": kind, "message": message}).text = message
        elif status == "error":
            ET.SubElement(case, "error", {"type": "gate_error", "message": message}).text = message
        else:
            ET.SubElement(case, "system-out").text = message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _report_summary(report: Report) -> list[dict[str, Any]]:
    intervals = {r.regularizer: r for r in report.runs}  # one run per model in the report of one checkpoint
    return [{"model": s.regularizer, "clean_accuracy": s.clean_accuracy.mean,
             "clean_interval": intervals[s.regularizer].clean_interval if s.regularizer in intervals else None,
             "robust_accuracy": [{"attack": r.attack, "label": r.label, "norm": r.norm, "eps": r.eps,
                                  "accuracy": r.mean} for r in s.robust_accuracy],
             "worst_case": [{"norm": w.norm, "eps": w.eps, "accuracy": w.mean} for w in s.worst_case],
             "trustworthy": s.trustworthy} for s in report.summary]


def verdict_json(verdict: Verdict, run: GateRun) -> str:
    report = run.report
    body = {
        "passed": verdict.passed,
        "exit_code": verdict.exit_code,
        "mode": run.mode,
        "server": run.server,
        "job_id": run.job_id,
        "checkpoint": run.checkpoint,
        "spec": run.spec_name or None,
        "baseline": run.baseline,
        "report_location": run.report_location,
        "criteria": [{**c.model_dump(), "passed": c.passed} for c in verdict.criteria],
        "checks": [c.model_dump() for c in report.checks] if report is not None else [],
        "report": _report_summary(report) if report is not None else None,
        "errors": verdict.all_errors,
        "samples_used": run.samples_used,
        "samples_available": run.samples_available,
        "rounds": run.rounds,
        "seconds": round(run.seconds, 3),
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
