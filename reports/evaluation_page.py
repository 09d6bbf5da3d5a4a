"""The HTML page of an `evaluate` report: one model, read top to bottom on a phone or a laptop.

Same rules as the compare page (`reports.html_page`): one self-contained file, no script, every string
from the report escaped. Its tables run down, never across (a row per radius, attack or member, at most
four columns on a phone), so no column is clipped at 390 px. Stable ids for tests and the dashboard:
`#evaluation-headline`, `#model-section` (`dl#model-facts`, `dl#sample-facts`), `table#robust-accuracy`
(`tr.accuracy-row`, `tr.worst-row`), `svg.robustness-curve`, `table#suite-members`, `#checks-section`,
`#outcomes-section` with `a#outcomes-download[data-artifact]`, `#trust-banner`.
"""

from __future__ import annotations

from html import escape

from core.reports import Report, RunReport
from reports.evaluation import (
    INTERVAL_NOTE,
    NO_INTERVAL,
    OUTCOMES_FILE,
    accuracy_rows,
    escalation_rows,
    fmt_interval,
    interval,
    members_by_radius,
    model_facts,
    outcome_rows,
    run_checks,
    sample_facts,
    the_run,
    trust_of,
)
from reports.html_charts import table as _table
from reports.html_page import CSS, _badge, _check_item, _provenance
from reports.plots import Series, color, line_chart
from reports.render import NORM_LABELS, cause_of_untrust, column_label, fmt_eps, pct, spec_name

EVALUATION_CSS = """
dl.facts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:3px 14px;margin:0 0 8px;font-size:.9rem}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere;min-width:0}
.facts-pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,320px),1fr));gap:4px 24px}
h3{font-size:1rem;margin:.4em 0}
.side-by-side{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:8px 24px}
.side-by-side .charts{grid-template-columns:minmax(0,1fr)}
.big{display:flex;flex-wrap:wrap;gap:8px 28px;margin:4px 0 8px}
.big div{min-width:8em}.big strong{display:block;font-size:1.6rem;line-height:1.2}
.big span{color:var(--muted);font-size:.82rem}
tr.radius-row td,tr.radius-row td:first-child{background:#eef1f4;font-weight:600;text-align:left}
tr.worst-row td{font-weight:700}
table.down{width:auto;min-width:min(100%,420px)}
td.iv{color:var(--muted)}
.trust{font-size:.78rem;font-weight:600;padding:1px 6px;border-radius:8px;margin-left:6px}
.trust-trusted{background:#e3f4e8}.trust-escalated{background:#fff1d6}.trust-flagged{background:#fde2e1}
#escalations td:last-child{overflow-wrap:anywhere;min-width:12em}
a.download{display:inline-block;padding:6px 12px;border:1px solid var(--line);border-radius:6px;
 background:var(--bg);font-weight:600;text-decoration:none}
@media (max-width:640px){.big strong{font-size:1.3rem}.cost-col{display:none}table.down{width:100%}}
"""


def _facts(facts: list[tuple[str, str]], dl_id: str) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{_fact_value(k, v)}</dd>" for k, v in facts)
    return f'<dl class="facts" id="{dl_id}">{items}</dl>'


def _fact_value(key: str, value: str) -> str:
    return f"<code>{escape(value)}</code>" if key in ("SHA-256", "File", "Upload id") else escape(value)


def _header(report: Report) -> str:
    info = report.model_info
    what = f" · model <code>{escape(info.file)}</code>" if info is not None else ""
    return (f"<header><h1>Evaluation report: {escape(spec_name(report))}</h1>"
            f'<p class="meta">evaluate{what} · spec hash <code title="{escape(report.spec_hash)}">'
            f"{escape(report.spec_hash[:12])}</code></p></header>")


def _banner(run: RunReport) -> str:
    if run.trustworthy:
        return ""
    bad = [c for c in run.checks if c.status == "fail"]
    failed = ", ".join(c.name for c in bad) or "a validity check"
    return (f'<div id="trust-banner" class="banner" role="alert"><strong>⚠ Untrustworthy robust accuracy</strong>: '
            f"{escape(failed)} failed; {escape(cause_of_untrust([(run, bad)]))} (See Validity checks.)</div>")


def _headline(run: RunReport) -> str:
    """Clean accuracy and the worst case at the largest radius of each norm, each with its interval."""
    items = [("Clean", run.clean_accuracy, interval(run, "clean_interval"))]
    for norm in dict.fromkeys(w.norm for w in run.worst_case):
        w = max((w for w in run.worst_case if w.norm == norm), key=lambda w: w.eps)
        items.append((f"Worst case {column_label(norm, w.eps)}", w.accuracy, interval(w)))
    trust = ('<span class="ok">✓ every check passed or warned</span>' if run.trustworthy
             else '<span class="flag">⚠ a check failed</span>')
    cells = "".join(f'<div><span>{escape(label)}</span><strong>{pct(value)} %</strong>'
                    f"<span>{'95 % interval ' + fmt_interval(iv) if iv else ''}</span></div>"
                    for label, value, iv in items)
    return (f'<section id="evaluation-headline"><h2>Verdict</h2><div class="big">{cells}</div>'
            f'<p class="note">{run.samples:,} samples · {trust}</p></section>')


def _model(report: Report) -> str:
    return (f'<section id="model-section"><h2>Model and samples</h2><div class="facts-pair">'
            f"<div><h3>Model</h3>{_facts(model_facts(report), 'model-facts')}</div>"
            f"<div><h3>Samples</h3>{_facts(sample_facts(report), 'sample-facts')}</div></div></section>")


def _accuracy(run: RunReport) -> str:
    rows = accuracy_rows(run)
    clean = interval(run, "clean_interval")
    body = [f'<tr class="accuracy-row clean-row"><td>clean (no attack)</td><td>{pct(run.clean_accuracy)}</td>'
            f'<td class="iv">{fmt_interval(clean)}</td></tr>']
    last: tuple[str, float] | None = None
    for r in rows:
        if (r.norm, r.eps) != last:
            last = (r.norm, r.eps)
            trust = trust_of(run, r.norm, r.eps)
            badge = (f' <span class="trust trust-{escape(trust.status)}" title="{escape(trust.detail)}">'
                     f"{escape(trust.status)}</span>" if trust is not None else "")
            body.append(f'<tr class="radius-row" data-norm="{escape(r.norm)}" data-eps="{r.eps!r}"><td colspan="3">'
                        f"{escape(column_label(r.norm, r.eps))}{badge}</td></tr>")
        css = "worst-row" if r.worst else "accuracy-row"
        body.append(f'<tr class="{css}"><td>{escape(r.attack)}</td><td>{pct(r.accuracy)}</td>'
                    f'<td class="iv">{fmt_interval(r.interval)}</td></tr>')
    has = clean is not None or any(r.interval for r in rows)
    table = (f'<div class="table-scroll"><table id="robust-accuracy" class="down"><thead><tr><th>Attack</th>'
             f"<th>Accuracy %</th><th>95 % interval</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")
    about = INTERVAL_NOTE if has else NO_INTERVAL
    note = (f'<p class="legend">Accuracy in % of {run.samples:,} samples; {escape(about)}. Worst case (bold): '
            "correct under every attack at that radius and every smaller one.</p>")
    return (f'<section id="accuracy-section"><h2>Robust accuracy per attack and radius</h2>'
            f'<div class="side-by-side"><div>{table}{note}</div><div>{_curves(run)}</div></div></section>')


def curve_figures(run: RunReport) -> dict[str, str]:
    """The worst case vs ε per norm, ε = 0 the clean accuracy, its 95 % interval as the band."""
    out = {}
    clean = interval(run, "clean_interval")
    for norm in dict.fromkeys(w.norm for w in run.worst_case):
        points = sorted((w.eps, w.accuracy, 0.0) for w in run.worst_case if w.norm == norm)
        bands = sorted((w.eps, *iv) for w in run.worst_case if w.norm == norm if (iv := interval(w)))
        if bands and clean:
            bands.insert(0, (0.0, *clean))
        label = NORM_LABELS.get(norm, norm)
        series = Series(run.regularizer, [(0.0, run.clean_accuracy, 0.0), *points], color(0),
                        bands=bands if len(bands) == len(points) + 1 else None)
        out[f"robustness-{norm}.svg"] = line_chart(
            [series], title=f"Worst-case accuracy vs ε ({label})", x_label=f"ε ({label})", y_label="accuracy %",
            css_class="robustness-curve", data={"norm": norm})
    return out


def _curves(run: RunReport) -> str:
    charts = "".join(f"<figure>{svg}</figure>" for svg in curve_figures(run).values())
    return (f'<div class="charts">{charts}</div><p class="legend">ε = 0 is clean accuracy; the band is the 95 % '
            f"interval where the report has one.</p>" if charts else "")


def _suite(run: RunReport) -> str:
    groups = members_by_radius(run)
    if not groups:
        return ""
    body = []
    for (norm, eps), members in groups:
        body.append(f'<tr class="radius-row"><td colspan="4">{escape(column_label(norm, eps))}</td>'
                    f'<td class="cost-col" colspan="3"></td></tr>')
        body += [f'<tr class="member-row" data-member="{escape(m.member)}"><td>{escape(m.member)}</td>'
                 f"<td>{m.attacked:,}</td><td>{m.broken:,}</td><td>{m.pruned:,}</td>"
                 f'<td class="cost-col">{m.gradient_evaluations:,}</td><td class="cost-col">{m.forwards:,}</td>'
                 f'<td class="cost-col">{m.seconds:.1f}</td></tr>' for m in members]
    head = ("<tr><th>Member</th><th>Attacked</th><th>Broke</th><th>Gave up</th><th class=\"cost-col\">Gradient evals"
            "</th><th class=\"cost-col\">Forwards</th><th class=\"cost-col\">Seconds</th></tr>")
    suites = ", ".join(dict.fromkeys(m.suite for m in run.suite_members))
    return (f'<section id="suite-section"><h2>Suite members ({escape(suites)})</h2><p class="note">Each member '
            f"attacks the samples the earlier ones left unbroken at that radius: how many it was given, how many "
            f"it broke, how many it gave up on before its budget ran out.</p>"
            f'<div class="table-scroll"><table id="suite-members" class="down"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody></table></div></section>")


def _escalations(run: RunReport) -> str:
    rows = escalation_rows(run)
    if not rows:
        return ""
    body = [f'<tr data-step="{escape(step)}">' + "".join(f"<td>{escape(v)}</td>" for v in (step, radius, attacked,
                                                                                       broke, detail)) + "</tr>"
            for step, radius, attacked, broke, detail in rows]
    head = "<tr><th>Step</th><th>Radius</th><th>Attacked</th><th>Broke</th><th>Detail</th></tr>"
    return (f'<section id="escalation-section"><h2>Escalations</h2><p class="note">A check saw masking or '
            f"randomness, so the evaluation escalated on the samples still standing; the accuracies above are the "
            f"lowest any step reached, and each radius says whether its number is trusted, escalated or flagged."
            f'</p><div class="table-scroll"><table id="escalations" class="down"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody></table></div></section>")


def _checks(report: Report) -> str:
    checks = run_checks(report)
    items = "".join(_check_item(c) for c in checks) or '<li class="note">No checks were run.</li>'
    legend = (f'<p class="legend">{_badge("pass")} the check holds; {_badge("warn")} look closer, robust numbers '
              f'still count; {_badge("fail")} the robust accuracy is not to be trusted.</p>')
    return f'<section id="checks-section"><h2>Validity checks</h2><ul class="checks">{items}</ul>{legend}</section>'


def _outcomes(run: RunReport) -> str:
    rows = outcome_rows(run)
    if not rows or run.outcomes is None:
        return ""
    clean = sum(run.outcomes.clean_correct())
    body = [f"<tr><td>clean</td><td>{clean:,}</td><td>—</td></tr>"]
    body += [f"<tr><td>{escape(NORM_LABELS.get(n, n))} ε={escape(fmt_eps(n, e))}</td><td>{c:,}</td><td>{b:,}</td>"
             f"</tr>" for n, e, c, b in rows]
    table = _table("outcome-counts", ["Radius", "Still correct", "Broken"], body).replace(
        '<table id="outcome-counts"', '<table id="outcome-counts" class="down"')
    return (f'<section id="outcomes-section"><h2>Per-sample outcomes</h2><p class="note">Every one of the '
            f"{run.outcomes.samples:,} samples by its index in the test set: correct without attack, and still "
            f"correct under every attack at each radius (1 / 0). Paired comparisons with another model or "
            f"a later run read these.</p>{table}<p><a id=\"outcomes-download\" class=\"download\" "
            f'href="{OUTCOMES_FILE}" download data-artifact="{OUTCOMES_FILE}">Download {OUTCOMES_FILE}</a></p>'
            f"</section>")


def _costs(run: RunReport) -> str:
    rows = [f"<tr><td>{escape(c.label)}</td><td>{escape(NORM_LABELS.get(c.norm, c.norm))}</td>"
            f'<td class="cost-col">{c.gradient_evaluations:,}</td><td class="cost-col">{c.forwards:,}</td>'
            f"<td>{c.seconds:.1f}</td></tr>" for c in run.attack_costs]
    took = f"Evaluation took {run.cost.eval_seconds:.1f} s." if run.cost.eval_seconds is not None else ""
    if not rows and not took:
        return ""
    head = ('<tr><th>Attack</th><th>Norm</th><th class="cost-col">Gradient evals</th><th class="cost-col">Forwards'
            "</th><th>Seconds</th></tr>")
    table = (f'<details><summary>Per attack ({len(rows)})</summary><div class="table-scroll">'
             f'<table id="attack-costs" class="down"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
             "</div></details>" if rows else "")
    return f'<section id="cost-section"><h2>Cost</h2><p class="note">{took}</p>{table}</section>'


def render_evaluation_html(report: Report) -> str:
    """The whole page: verdict, model and samples, accuracy per attack, suite, checks, outcomes, provenance."""
    run = the_run(report)
    parts = [_header(report)]
    if run is not None:
        parts += [_banner(run), _headline(run), _model(report), _accuracy(run), _suite(run), _escalations(run),
                  _checks(report),
                  _outcomes(run), _costs(run)]
    else:
        parts += [_model(report), '<section><p class="note">No run in this report.</p></section>']
    parts.append(_provenance(report))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Evaluation report: {escape(spec_name(report))}</title><style>{CSS}{EVALUATION_CSS}</style>"
            f"</head><body><main>{''.join(parts)}</main></body></html>\n")
