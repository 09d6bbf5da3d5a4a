"""Render a `Report` as Markdown (for a PR comment or a terminal) and CSV (for a notebook).

Each renderer is a pure function of the report, so the CLI, the worker and the dashboard produce
byte-identical files from the same report.json. The HTML page lives in `reports.html_page`; the
number and label formatting it shares with the Markdown lives here.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

from core.reports import Check, RegularizerSummary, Report, RunReport, Stat, WorstCaseStat

NORM_LABELS = {"linf": "L∞", "l2": "L2"}
STATUS_ICONS = {"pass": "✅", "warn": "⚠️", "fail": "❌"}
CSV_COLUMNS = ("regularizer", "kind", "seed", "metric", "attack", "label", "norm", "eps", "value", "trustworthy")
SENSITIVITY_FIELDS = ("input_gradient_norm", "hessian_norm", "jacobian_frobenius")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
COST_FIELDS = ("train_seconds", "step_seconds", "step_time_ratio_to_baseline", "peak_memory_bytes", "memory_measure",
               "eval_seconds")


# --- shared formatting ----------------------------------------------------------------------------


def pct(value: float) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal: readers compare percent points."""
    return f"{100.0 * value:.1f}"


def fmt_stat(stat: Stat) -> str:
    """Mean ± std in percent (std omitted for a single seed, where it means nothing)."""
    return pct(stat.mean) if stat.n < 2 else f"{pct(stat.mean)} ± {pct(stat.std)}"


def fmt_eps(norm: str, eps: float) -> str:
    """ε as the spec wrote it: 0.2 stays "0.2" (the shortest decimal that reads back as the same
    float). Only a radius that no short decimal writes, such as 8/255 = 0.0313725490…, is shown as
    the k/255 it was computed from."""
    written = repr(eps)
    digits = written.split("e")[0].replace("-", "").replace(".", "").strip("0")
    if len(digits) <= 6:
        return f"{eps:g}" if "e" in written else written.removesuffix(".0")
    k = eps * 255.0
    if norm == "linf" and 0 < eps < 1 and abs(k - round(k)) < 1e-6 and round(k) >= 1:
        return f"{round(k)}/255"
    return f"{eps:.6g}"


def column_label(norm: str, eps: float) -> str:
    return f"{NORM_LABELS.get(norm, norm)} ε={fmt_eps(norm, eps)}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


def metric_label(metric: str) -> str:
    """'worst_case:linf:0.0313…' → 'worst case L∞ ε=8/255'; other metric names unchanged."""
    parts = metric.split(":")
    if len(parts) == 3 and parts[0] == "worst_case":
        try:
            return f"worst case {column_label(parts[1], float(parts[2]))}"
        except ValueError:
            return metric
    return metric


def worst_columns(summary: Iterable[RegularizerSummary]) -> list[tuple[str, float]]:
    """Every (norm, ε) with a worst case in any summary: norms in first appearance, ε ascending."""
    by_norm: dict[str, set[float]] = {}
    for s in summary:
        for w in s.worst_case:
            by_norm.setdefault(w.norm, set()).add(w.eps)
    return [(norm, eps) for norm, values in by_norm.items() for eps in sorted(values)]


def spec_name(report: Report) -> str:
    return str(report.spec.get("name") or "unnamed experiment")


def environment_items(environment: dict[str, Any]) -> list[tuple[str, str]]:
    """The environment flattened to (key, value) pairs: nested groups (versions) become 'group.key'."""
    items: list[tuple[str, str]] = []
    for key, value in environment.items():
        if isinstance(value, dict):
            items.extend((f"{key}.{k}", "—" if v is None else str(v)) for k, v in value.items())
        else:
            items.append((key, "—" if value is None else str(value)))
    return items


def environment_line(environment: dict[str, Any]) -> str:
    """One line with what decides reproducibility: Python, library versions, device."""
    parts = [f"Python {environment['python']}"] if environment.get("python") else []
    versions = environment.get("versions")
    if isinstance(versions, dict):
        parts.extend(f"{k} {v}" for k, v in versions.items() if v is not None)
    for key in ("device", "cuda", "platform"):
        if environment.get(key):
            parts.append(f"{key} {environment[key]}")
    return " · ".join(parts) if parts else "not recorded"


def untrustworthy_runs(report: Report) -> list[tuple[RunReport, list[Check]]]:
    """Runs whose robust accuracy is not to be believed, with the checks that failed."""
    return [(r, [c for c in r.checks if c.status == "fail"]) for r in report.runs if not r.trustworthy]


def cause_of_untrust(bad: list[tuple[RunReport, list[Check]]]) -> str:
    """What the failed checks of `bad` (untrustworthy_runs) most likely mean, in one sentence."""
    failed = {c.name for _, checks in bad for c in checks}
    if "input_conventions" in failed:
        return ("the model's input conventions look wrong (see input_conventions for the spec lines to add): "
                "its accuracies mean little until they match the model.")
    if failed == {"training_healthy"}:
        return "training failed, so the robust numbers of these runs say nothing about robustness."
    return "the robust numbers of these runs may reflect gradient masking or a broken attack, not robustness."


def flagged_checks(run: RunReport) -> list[Check]:
    return [c for c in run.checks if c.status != "pass"]


def worst_accuracy(run: RunReport, norm: str, eps: float) -> float | None:
    return next((w.accuracy for w in run.worst_case if w.norm == norm and w.eps == eps), None)


ATTACK_COST_HEADER = ("Regularizer", "Seed", "Attack", "Norm", "Gradient evaluations", "Forwards", "Seconds")
ATTACK_COST_NOTE = ("Samples × passes through the model: gradient evaluations (forward + backward) and "
                    "forward-only passes.")
SUITE_MEMBER_HEADER = ("Regularizer", "Seed", "Member", "Norm", "Radius", "Attacked", "Broke", "Gave up on",
                       "Gradient evaluations", "Forwards", "Seconds")
SUITE_MEMBER_NOTE = ("Each member runs on the samples the earlier ones left unbroken at that radius: how many it "
                     "was given, how many it broke, how many it stopped searching before its budget ran out "
                     "(the escalated Square's hopeless samples), what it spent.")


def attack_cost_rows(report: Report) -> list[list[str]]:
    """One row of text cells (`ATTACK_COST_HEADER`) per run and attack entry, for every renderer."""
    return [[r.regularizer, str(r.seed), c.label, c.norm, f"{c.gradient_evaluations:,}", f"{c.forwards:,}",
             f"{c.seconds:.1f}"] for r in report.runs for c in r.attack_costs]


def suite_member_rows(report: Report) -> list[list[str]]:
    """One row of text cells (`SUITE_MEMBER_HEADER`) per run, suite member and radius, for every renderer."""
    return [[r.regularizer, str(r.seed), m.member, m.norm, fmt_eps(m.norm, m.eps), f"{m.attacked:,}",
             f"{m.broken:,}", f"{m.pruned:,}", f"{m.gradient_evaluations:,}", f"{m.forwards:,}", f"{m.seconds:.1f}"]
            for r in report.runs for m in r.suite_members]


# --- Markdown -------------------------------------------------------------------------------------


def _md(text: object) -> str:
    """A table cell: no raw HTML (Markdown viewers render tags), no pipes, no line breaks.

    Only a `<` that could open a tag or comment is escaped, so "p < 0.05" stays readable as plain text.
    """
    escaped = _TAG_START.sub("&lt;", str(text))
    return escaped.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_md(c) for c in row) + " |" for row in rows)
    return [*lines, ""]


def _comparison_rows(report: Report, columns: list[tuple[str, float]]) -> tuple[list[list[str]], set[str]]:
    rows, reasons = [], set()
    for s in report.summary:
        worst: dict[tuple[str, float], WorstCaseStat] = {(w.norm, w.eps): w for w in s.worst_case}
        name = s.regularizer + (" (baseline)" if s.regularizer == report.baseline else "")
        cells = []
        for c in columns:
            if c in worst:
                cells.append(fmt_stat(worst[c]))
            else:
                cells.append("—¹")
                reasons.add("¹ not measured at this radius for this regularizer")
        ratio = fmt_ratio(s.step_time_ratio_to_baseline)
        if s.step_time_ratio_to_baseline is None:
            ratio = "—²"
            reasons.add("² no step time relative to a baseline (an evaluate job, or no baseline run)")
        rows.append([name, "✓" if s.trustworthy else "⚠ untrustworthy", fmt_stat(s.clean_accuracy), *cells,
                     ratio, s.kind])
    return rows, reasons


def _paired_rows(report: Report) -> tuple[list[list[str]], set[str], bool]:
    corrected = any(c.p_adjusted is not None for s in report.summary for c in s.vs_baseline)
    rows, reasons = [], set()
    for s in report.summary:
        for c in s.vs_baseline:
            why = "³" if s.clean_accuracy.n < 2 else "⁴"
            if c.p_value is None:
                reasons.add("³ a single paired seed: no test is possible" if why == "³"
                            else "⁴ the same difference on every seed: the t-test is undefined")
            p = fmt_p(c.p_value) if c.p_value is not None else f"—{why}"
            adjusted = [fmt_p(c.p_adjusted) if c.p_adjusted is not None else f"—{why}"] if corrected else []
            rows.append([s.regularizer, metric_label(c.metric), f"{100.0 * c.difference:+.1f}", p, *adjusted,
                         "yes" if c.significant else "no" if c.p_value is not None else "—"])
    return rows, reasons, corrected


def render_markdown(report: Report) -> str:
    """The report as Markdown: comparison, paired tests against the baseline, checks, runs."""
    if report.kind == "evaluate":  # one model: a report of its own (reports.evaluation)
        from reports.evaluation import render_evaluation_markdown

        return render_evaluation_markdown(report)
    columns = worst_columns(report.summary)
    out = [
        f"# Robustness report: {_md(spec_name(report))}",
        "",
        f"Spec {_md(spec_name(report))} · hash {_md(report.spec_hash)} · {_md(report.kind)} · "
        f"baseline {_md(report.baseline or '—')} · schema {_md(report.schema_version)}",
        "",
        f"Environment: {_md(environment_line(report.environment))}",
        "",
    ]
    bad = untrustworthy_runs(report)
    if bad:
        names = ", ".join(f"{r.regularizer} seed {r.seed} ({', '.join(c.name for c in cs) or 'failed check'})"
                          for r, cs in bad)
        out += [f"> ⚠ **Untrustworthy robust accuracy**: {_md(names)}. A validity check failed; "
                f"{cause_of_untrust(bad)}", ""]
    unchecked = [f"{r.regularizer} seed {r.seed}" for r in report.runs if not r.checked]
    if unchecked:
        out += [f"> ⚠ **Unchecked**: {_md(', '.join(unchecked))}: evaluated with `checks: off`, no validity "
                "check ran.", ""]
    for r in (r for r in report.runs if r.escalated):
        radii = "; ".join(f"{t.norm} ε={t.eps:g} {t.status}" + (f" ({t.detail})" if t.detail else "")
                          for t in r.radius_trust)
        out += [f"> **Escalated**: {_md(f'{r.regularizer} seed {r.seed}')}: a check saw masking or randomness; "
                f"the numbers are the lowest the escalation reached. {_md(radii)}", ""]
    out += ["## Comparison", "", "Accuracy in %, mean ± std over seeds; worst case: the lowest accuracy over every "
            "attack at that radius. Trust ⚠: a validity check failed for a run of that regularizer.", ""]
    rows, reasons = _comparison_rows(report, columns)
    out += _table(
        ["Regularizer", "Trust", "Clean", *[f"Worst {column_label(n, e)}" for n, e in columns],
         "Step time vs baseline", "Kind"], rows)
    paired, paired_reasons, corrected = _paired_rows(report)
    if paired:
        how = (f"Holm–Bonferroni correction over all {len(paired)} tests (p (Holm); \"significant\" uses it)"
               if corrected else "no correction for multiple comparisons (an older report)")
        out += [f"## Paired comparison vs baseline {_md(report.baseline or '')}", "",
                f"Difference in percent points (this − baseline), paired by seed; two-sided paired t-test; {how}.",
                ""]
        out += _table(["Regularizer", "Metric", "Difference (pp)", "p", *(["p (Holm)"] if corrected else []),
                       "Significant (p < 0.05)"], paired)
    if reasons | paired_reasons:
        out += ["— " + "; ".join(sorted(reasons | paired_reasons)) + ".", ""]
    out += ["## Checks", ""]
    if report.checks:
        out += _table(["Check", "Status", "Detail"],
                      [[c.name, f"{STATUS_ICONS[c.status]} {c.status}", c.detail] for c in report.checks])
    else:
        out += ["No checks were run.", ""]
    out += ["## Runs", ""]
    out += _table(
        ["Regularizer", "Seed", "Clean", *[column_label(n, e) for n, e in columns], "Train s", "Trust",
         "Checks not passing"],
        [[r.regularizer, str(r.seed), pct(r.clean_accuracy),
          *["—" if (a := worst_accuracy(r, n, e)) is None else pct(a) for n, e in columns],
          "—" if r.cost.train_seconds is None else f"{r.cost.train_seconds:.1f}",
          "✗ training failed" if r.training_failed else "✓" if r.trustworthy else "⚠",
          ", ".join(f"{c.name} ({c.status})" for c in flagged_checks(r)) or "—"]
         for r in report.runs],
    )
    return "\n".join(out + _cost_sections(report))


def _cost_sections(report: Report) -> list[str]:
    """What each attack spent, and what each suite member broke, per run (when the report has them)."""
    out: list[str] = []
    costs = attack_cost_rows(report)
    if costs:
        out += ["## Attack cost", "", ATTACK_COST_NOTE, ""]
        out += _table(list(ATTACK_COST_HEADER), costs)
    members = suite_member_rows(report)
    if members:
        out += ["## Suite members", "", SUITE_MEMBER_NOTE, ""]
        out += _table(list(SUITE_MEMBER_HEADER), members)
    return out


# --- CSV ------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Neutralize spreadsheet formulas (CSV injection): a text cell must not start with = + - @."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_rows(run: RunReport) -> list[list[object]]:
    rows: list[list[object]] = [["clean_accuracy", "", "", "", "", run.clean_accuracy]]
    rows += [["robust_accuracy", r.attack, r.label, r.norm, r.eps, r.accuracy] for r in run.robust]
    rows += [["worst_case_accuracy", "", "", w.norm, w.eps, w.accuracy] for w in run.worst_case]
    if run.sensitivity is not None:
        rows += [[f, "", "", "", "", getattr(run.sensitivity, f)] for f in SENSITIVITY_FIELDS]
    # Every cost field always has its row (empty when unknown): identical specs give identical row counts.
    rows += [[f, "", "", "", "", "" if (v := getattr(run.cost, f)) is None else v] for f in COST_FIELDS]
    return rows


def render_csv(report: Report) -> str:
    """Long format, one row per run × metric; floats written exactly (repr), accuracies in [0, 1]."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in report.runs:
        for metric, attack, label, norm, eps, value in _csv_rows(run):
            writer.writerow([
                _cell(run.regularizer), _cell(run.kind), run.seed, metric, _cell(str(attack)), _cell(str(label)),
                norm, eps, value, "true" if run.trustworthy else "false",
            ])
    return buffer.getvalue()


def render_html(report: Report) -> str:
    """The self-contained HTML page (see `reports.html_page`), importable from here with the others."""
    from reports.html_page import render_html as _render_html  # late: report_html imports this module

    return _render_html(report)
