"""The report of an `evaluate` job, shaped for one model: what the renderers share, its Markdown and
its per-sample outcomes as CSV.

An evaluate report has one run (the model file) and no baseline, so the comparison of the compare
report says nothing here. Instead: the model (file, hash, format, input conventions) and the samples;
robust accuracy per attack and radius with its 95 % interval (when the report has intervals); the
suite's members and what each broke; the checks; and the samples' outcomes (`outcomes.csv`).
Tables run down (a row per radius or attack), not across, so they fit a phone's width.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.reports import Check, RadiusTrust, Report, RunReport, SuiteMember
from reports.render import STATUS_ICONS, _md, _table, cause_of_untrust, column_label, environment_line, pct, spec_name

OUTCOMES_FILE = "outcomes.csv"
INTERVAL_NOTE = "95 % interval: exact binomial (Clopper–Pearson) over the samples"
NO_INTERVAL = "no interval in this report (made before robustlab recorded them)"


@dataclass(frozen=True)
class AccuracyRow:
    """One accuracy of the model at one radius: an attack's, or the worst case over every attack."""

    norm: str
    eps: float
    attack: str  # the attack's label, or "worst case"
    accuracy: float
    interval: tuple[float, float] | None
    worst: bool = False


def interval(item: object, field: str = "interval") -> tuple[float, float] | None:
    """An accuracy's 95 % interval when the report has one (reports before intervals have none)."""
    value = getattr(item, field, None)
    if value is None or len(value) != 2:
        return None
    return float(value[0]), float(value[1])


def fmt_interval(value: tuple[float, float] | None) -> str:
    return "—" if value is None else f"{100.0 * value[0]:.1f}–{100.0 * value[1]:.1f}"


def the_run(report: Report) -> RunReport | None:
    return report.runs[0] if report.runs else None


def radii(run: RunReport) -> list[tuple[str, float]]:
    """Every (norm, ε) the model was attacked at: norms in first appearance, ε ascending."""
    by_norm: dict[str, set[float]] = {}
    for norm, eps in [(a.norm, a.eps) for a in run.robust] + [(w.norm, w.eps) for w in run.worst_case]:
        by_norm.setdefault(norm, set()).add(eps)
    return [(norm, eps) for norm, values in by_norm.items() for eps in sorted(values)]


def accuracy_rows(run: RunReport) -> list[AccuracyRow]:
    """Per radius: each attack's accuracy, then the worst case (samples correct under every attack)."""
    rows = []
    for norm, eps in radii(run):
        rows += [AccuracyRow(norm, eps, a.label or a.attack, a.accuracy, interval(a))
                 for a in run.robust if a.norm == norm and a.eps == eps]
        rows += [AccuracyRow(norm, eps, "worst case", w.accuracy, interval(w), worst=True)
                 for w in run.worst_case if w.norm == norm and w.eps == eps]
    return rows


def members_by_radius(run: RunReport) -> list[tuple[tuple[str, float], list[SuiteMember]]]:
    groups: dict[tuple[str, float], list[SuiteMember]] = {}
    for m in run.suite_members:
        groups.setdefault((m.norm, m.eps), []).append(m)
    norms: list[str] = list(dict.fromkeys(m.norm for m in run.suite_members))
    return sorted(groups.items(), key=lambda g: (norms.index(g[0][0]), g[0][1]))


def run_checks(report: Report) -> list[Check]:
    """The model's own checks (with their details); the report's overall ones when the run has none."""
    run = the_run(report)
    return list(run.checks) if run is not None and run.checks else list(report.checks)


def _join(values: Any) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def model_facts(report: Report) -> list[tuple[str, str]]:
    """(label, value) pairs: the file and its hash, then the input conventions the spec gave."""
    info = report.model_info
    model = report.spec.get("model") if isinstance(report.spec.get("model"), dict) else {}
    assert isinstance(model, dict)
    facts: list[tuple[str, str]] = []
    if info is not None:
        facts.append(("File", info.file))
        facts.append(("SHA-256", info.sha256))
        if info.bytes is not None:
            facts.append(("Size", f"{info.bytes:,} bytes"))
    elif (run := the_run(report)) is not None and run.checkpoint:
        facts.append(("File", run.checkpoint))
    fmt = info.format if info is not None else str(model.get("format", "registry"))
    facts.append(("Format", "robustlab architecture" if fmt == "registry" else fmt))
    for key, label in (("name", "Architecture"), ("architecture", "Architecture")):
        if model.get(key):
            facts.append((label, str(model[key])))
    if model.get("input_shape"):
        facts.append(("Input shape", " × ".join(str(d) for d in model["input_shape"])))
    for key, label in (("layout", "Layout"), ("outputs", "Outputs"), ("num_classes", "Classes")):
        if model.get(key) is not None:
            facts.append((label, str(model[key])))
    if model.get("input_range") is not None:
        facts.append(("Input range", f"[{_join(model['input_range'])}]"))
    if model.get("mean") is not None:
        facts.append(("Mean / std", f"[{_join(model['mean'])}] / [{_join(model.get('std') or [])}]"))
    return facts


def sample_facts(report: Report) -> list[tuple[str, str]]:
    """(label, value) pairs: which data set, how many samples, and which ones (by index)."""
    dataset = report.spec.get("dataset") if isinstance(report.spec.get("dataset"), dict) else {}
    assert isinstance(dataset, dict)
    facts: list[tuple[str, str]] = [("Dataset", str(dataset.get("name", "—")))]
    for key, label in (("path", "File"), ("id", "Upload id"), ("test_size", "Test set size"), ("seed", "Split seed")):
        if dataset.get(key) is not None:
            facts.append((label, str(dataset[key])))
    run = the_run(report)
    if run is not None:
        facts.append(("Samples evaluated", f"{run.samples:,} (test-set indices 0…{run.samples - 1})"))
        if run.outcomes is not None:
            clean = sum(run.outcomes.clean_correct())
            facts.append(("Correct without attack", f"{clean:,} of {run.outcomes.samples:,}"))
    return facts


def outcome_rows(run: RunReport) -> list[tuple[str, float, int, int]]:
    """Per radius with per-sample outcomes: (norm, ε, still correct, broken since clean)."""
    if run.outcomes is None:
        return []
    clean = sum(run.outcomes.clean_correct())
    rows: list[tuple[str, float, int, int]] = []
    for row in run.outcomes.worst_case:
        correct = sum(run.outcomes.correct_at(row.norm, row.eps))
        rows.append((row.norm, row.eps, correct, clean - correct))
    return rows


def render_outcomes_csv(report: Report) -> str | None:
    """One row per sample (its index in the test set): 1/0 for correct without attack and still correct
    under every attack at each radius. None when the report has no per-sample outcomes."""
    run = the_run(report)
    if run is None or run.outcomes is None:
        return None
    outcomes = run.outcomes
    columns = [(row.norm, row.eps) for row in outcomes.worst_case]
    bits: list[Sequence[bool]] = [outcomes.clean_correct(), *[outcomes.correct_at(n, e) for n, e in columns]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample", "clean_correct", *[f"correct_{n}_{e!r}" for n, e in columns]])
    for i in range(outcomes.samples):
        writer.writerow([i, *(int(b[i]) for b in bits)])
    return buffer.getvalue()


# --- Markdown -------------------------------------------------------------------------------------


def trust_of(run: RunReport, norm: str, eps: float) -> RadiusTrust | None:
    """How far the radius's number can be believed (trusted, escalated, flagged), where the run says."""
    return next((t for t in run.radius_trust if t.norm == norm and t.eps == eps), None)


def escalation_rows(run: RunReport) -> list[list[str]]:
    """[step, radius, attacked, broke, detail] of every escalation step the evaluation took."""
    return [[e.name, column_label(e.norm, e.eps), f"{e.attacked:,}", f"{e.broken:,}", e.detail]
            for e in run.escalations]


def render_evaluation_markdown(report: Report) -> str:
    """The evaluate report as Markdown: model, samples, robust accuracy with intervals, suite, checks."""
    run = the_run(report)
    out = [f"# Evaluation report: {_md(spec_name(report))}", "",
           f"Spec hash {_md(report.spec_hash)} · evaluate · schema {_md(report.schema_version)}", "",
           f"Environment: {_md(environment_line(report.environment))}", ""]
    if run is not None and not run.trustworthy:
        failed = ", ".join(c.name for c in run.checks if c.status == "fail") or "a check"
        bad = [c for c in run.checks if c.status == "fail"]
        out += [f"> ⚠ **Untrustworthy robust accuracy**: {_md(failed)} failed; {cause_of_untrust([(run, bad)])}", ""]
    if run is not None and run.escalated:
        out += ["> **Escalated**: a check saw masking or randomness, so the evaluation escalated (below); the "
                "numbers are the lowest any step reached. " + "; ".join(
                    f"{column_label(t.norm, t.eps)}: {t.status}" for t in run.radius_trust), ""]
    out += ["## Model", "", *_table(["Field", "Value"], [[k, v] for k, v in model_facts(report)])]
    out += ["## Samples", "", *_table(["Field", "Value"], [[k, v] for k, v in sample_facts(report)])]
    if run is None:
        return "\n".join([*out, "No run in this report.", ""])
    clean = interval(run, "clean_interval")
    out += ["## Robust accuracy", "", f"Accuracy in % over {run.samples:,} samples; {INTERVAL_NOTE}"
            f"{'' if clean or any(r.interval for r in accuracy_rows(run)) else ' (' + NO_INTERVAL + ')'}. "
            "Worst case: correct under every attack at that radius and every smaller one.", ""]
    rows = [["clean", "no attack", pct(run.clean_accuracy), fmt_interval(clean), ""]]
    rows += [[column_label(r.norm, r.eps), f"**{r.attack}**" if r.worst else r.attack, pct(r.accuracy),
              fmt_interval(r.interval), (t.status if (t := trust_of(run, r.norm, r.eps)) and r.worst else "")]
             for r in accuracy_rows(run)]
    out += _table(["Radius", "Attack", "Accuracy %", "95 % interval", "Trust"], rows)
    if run.escalations:
        out += ["## Escalations", "", "Steps the evaluation took because a check saw masking or randomness; "
                "each attacked what everything before it left standing.", ""]
        out += _table(["Step", "Radius", "Attacked", "Broke", "Detail"], escalation_rows(run))
    groups = members_by_radius(run)
    if groups:
        out += ["## Suite members", "", "Each member attacks the samples the earlier ones left unbroken.", ""]
        out += _table(["Radius", "Member", "Attacked", "Broke", "Gave up on", "Seconds"],
                      [[column_label(n, e), m.member, f"{m.attacked:,}", f"{m.broken:,}", f"{m.pruned:,}",
                        f"{m.seconds:.1f}"] for (n, e), members in groups for m in members])
    out += ["## Checks", ""]
    checks = run_checks(report)
    out += _table(["Check", "Status", "Detail"], [[c.name, f"{STATUS_ICONS[c.status]} {c.status}", c.detail]
                                                   for c in checks]) if checks else ["No checks were run.", ""]
    outcomes = outcome_rows(run)
    if outcomes:
        out += ["## Per-sample outcomes", "", f"Every sample's outcome, by its index: `{OUTCOMES_FILE}` next to this "
                "report (1 = correct).", ""]
        out += _table(["Radius", "Still correct", "Broken by the attacks"],
                      [[column_label(n, e), f"{c:,}", f"{b:,}"] for n, e, c, b in outcomes])
    if run.attack_costs:
        out += ["## Attack cost", ""]
        out += _table(["Attack", "Norm", "Gradient evaluations", "Forwards", "Seconds"],
                      [[c.label, c.norm, f"{c.gradient_evaluations:,}", f"{c.forwards:,}", f"{c.seconds:.1f}"]
                       for c in run.attack_costs])
    return "\n".join(out)
