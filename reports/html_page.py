"""Render a `Report` as ONE self-contained HTML page: inline CSS and SVG, no script, no network.

The page is an artifact: it must open offline and years later, from the artifact store, an e-mail
or a CI job, and it must be safe to open although run names and check details come from users, so
every string from the report is escaped.

Reading order: the verdict first. A compact headline (clean accuracy, worst case at every radius,
trust; means only, so that it fits a phone's width) stands at the top; the full comparison below it
lets the reader choose its column groups (CSS checkboxes, no script); every colour has a legend and
every "—" a footnote that says why. Stable ids and classes (`#headline`, `tr.headline-row`,
`table#comparison`, `tr.regularizer-row`, `table#paired-matrix`, `svg.robustness-curve`,
`svg.robustness-panel`, `svg.sensitivity-chart`, `svg.cost-chart`, `.badge.pass|.warn|.fail`,
`#trust-banner`, `table#attack-costs`, `table#suite-members`) let tests and the dashboard find the parts.
"""

from __future__ import annotations

import json
from html import escape

from core.reports import BaselineComparison, Check, RegularizerSummary, Report, Stat, WorstCaseStat
from reports.html_charts import cost_section, curves_section, figures, sensitivity_section
from reports.html_charts import table as _table
from reports.render import (
    ATTACK_COST_HEADER,
    ATTACK_COST_NOTE,
    NORM_LABELS,
    SUITE_MEMBER_HEADER,
    SUITE_MEMBER_NOTE,
    attack_cost_rows,
    cause_of_untrust,
    column_label,
    environment_items,
    fmt_eps,
    fmt_p,
    fmt_ratio,
    fmt_stat,
    metric_label,
    pct,
    spec_name,
    suite_member_rows,
    untrustworthy_runs,
    worst_accuracy,
    worst_columns,
)
from reports.statistics import worst_case_metric

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--pass:#1a7f37;--warn:#d4a72c;--fail:#cf222e;
 --flagrow:#fff8c5}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:16px}
header h1{font-size:1.4rem;margin:.2em 0}
h2{font-size:1.15rem;margin:.1em 0 .5em}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin:12px 0}
.meta,.note,figcaption,.detail,.legend{color:var(--muted);font-size:.86rem}
.legend{margin:.5em 0 0}
.meta{overflow-wrap:anywhere;margin:0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em;overflow-wrap:anywhere}
.table-scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff}
thead th,thead th:first-child{background:#eef1f4;font-weight:600}
th.group{text-align:center;border-bottom:0;font-weight:600}
td.text{text-align:left;white-space:normal;min-width:14em}
tr.untrustworthy td,tr.untrustworthy td:first-child{background:var(--flagrow)}
.swatch{display:inline-block;width:1.1em;height:.9em;vertical-align:-.1em;border:1px solid #c9b458;
 background:var(--flagrow)}
.flag{color:#9a6700;font-weight:600}.ok{color:var(--pass);font-weight:700}
.na{color:var(--muted)}.na sup,.legend sup{font-size:.7em;color:var(--muted)}
.base{font-size:.72em;color:var(--muted);font-weight:600;margin-left:.3em;text-transform:uppercase}
.sd{color:var(--muted);font-size:.85em}
#headline table{font-size:.9rem}
#headline td:first-child{max-width:11em;overflow:hidden;text-overflow:ellipsis}
.choose{display:flex;flex-wrap:wrap;gap:4px 14px;align-items:center;font-size:.86rem;margin:0 0 6px}
.choose input{margin:0 3px 0 0;vertical-align:-.15em}
.choose label{margin-right:12px;white-space:nowrap}.choose .table-scroll{flex:1 0 100%;margin-top:4px}
#show-linf:not(:checked)~.table-scroll .c-linf,#show-l2:not(:checked)~.table-scroll .c-l2,
#show-cost:not(:checked)~.table-scroll .c-cost,#show-kind:not(:checked)~.table-scroll .c-kind{display:none}
.badge{display:inline-block;min-width:3.6em;text-align:center;padding:1px 8px;border-radius:999px;
 font-size:.78rem;font-weight:700;text-transform:uppercase;letter-spacing:.03em}
.badge.pass{background:var(--pass);color:#fff}.badge.warn{background:var(--warn);color:#1f2328}
.badge.fail{background:var(--fail);color:#fff}
.banner{border-left:6px solid var(--fail);background:#ffebe9;padding:8px 14px;border-radius:6px;margin:12px 0}
.banner strong{color:var(--fail)}.banner details{margin:4px 0 0}
.checks{list-style:none;padding:0;margin:0}
.checks li{padding:8px 0;border-bottom:1px solid var(--line);display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,360px),1fr));gap:16px}
.charts.single{grid-template-columns:minmax(0,620px)}.charts.narrow{grid-template-columns:minmax(0,480px)}
.phone-only{display:none}
.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(205px,1fr));gap:8px 14px}
figure{margin:0}
svg{width:100%;height:auto;display:block}
pre{overflow-x:auto;background:var(--bg);padding:12px;border-radius:6px;font-size:.8rem}
details{margin:8px 0}details summary{cursor:pointer;font-weight:600}
@media (max-width:640px){body{font-size:14px}main{padding:6px}section{padding:8px 8px}header h1{font-size:1.15rem}
 th,td{padding:3px 4px}#headline table{font-size:11.5px}#headline th,#headline td{padding:3px 2px}
 #headline td:first-child{max-width:6.2em}#headline th.group{font-size:10.5px}
 .panels{grid-template-columns:repeat(2,minmax(0,1fr));gap:6px}.wide-only{display:none}.phone-only{display:block}}
"""

# Why a cell shows "—": each reason gets a footnote mark, listed under its table.
NOT_MEASURED = "not measured at this radius for this regularizer"
NO_BASELINE_TIME = "no step time relative to a baseline (an evaluate job, or no baseline run)"
ONE_SEED = "a single paired seed: no test is possible"
SAME_DIFFERENCE = "the same difference on every seed: the t-test is undefined"


class Notes:
    """Footnote marks for "—" cells: `cell(reason)` gives the cell, `legend()` the line under the table."""

    def __init__(self) -> None:
        self.marks: dict[str, str] = {}

    def mark(self, reason: str) -> str:
        return self.marks.setdefault(reason, "abcdefghij"[len(self.marks) % 10])

    def cell(self, reason: str, css: str = "") -> str:
        cls = f"na {css}".strip()
        return f'<td class="{cls}" title="{escape(reason)}">—<sup>{self.mark(reason)}</sup></td>'

    def legend(self) -> str:
        if not self.marks:
            return ""
        items = "; ".join(f"<sup>{m}</sup> {escape(r)}" for r, m in self.marks.items())
        return f'<p class="legend na-legend">— {items}.</p>'


def _stat_title(stat: Stat) -> str:
    # An accuracy's t-interval can poke out of [0, 1] with few seeds; show the possible part.
    ci = f", 95 % CI {pct(max(0.0, stat.ci95[0]))}–{pct(min(1.0, stat.ci95[1]))}" if stat.ci95 else ""
    return f"{fmt_stat(stat)} %{ci}, n={stat.n}"


def _stat_cell(stat: Stat | None, notes: Notes, css: str = "", *, spread: bool = True) -> str:
    if stat is None:
        return notes.cell(NOT_MEASURED, css)
    cls = f' class="{css}"' if css else ""
    body = pct(stat.mean)
    if spread and stat.n >= 2:
        body += f' <span class="sd">± {pct(stat.std)}</span>'
    return f'<td{cls} title="{escape(_stat_title(stat))}">{body}</td>'


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _seeds(report: Report) -> str:
    counts = sorted({s.clean_accuracy.n for s in report.summary})
    return "/".join(map(str, counts)) or "0"


def _header(report: Report) -> str:
    name = escape(spec_name(report))
    what = (f"{len(report.summary)} regularizer{'s' if len(report.summary) != 1 else ''} × {_seeds(report)} "
            f"seed{'s' if _seeds(report) != '1' else ''}")
    base = f" · baseline <strong>{escape(report.baseline)}</strong>" if report.baseline else ""
    return (f"<header><h1>Robustness report: {name}</h1>"
            f'<p class="meta">{escape(report.kind)} · {what}{base} · spec hash '
            f'<code title="{escape(report.spec_hash)}">{escape(report.spec_hash[:12])}</code></p></header>')


def _banner(report: Report) -> str:
    unchecked = [f"{r.regularizer} seed {r.seed}" for r in report.runs if not r.checked]
    note = (f'<div id="unchecked-banner" class="banner" role="alert"><strong>⚠ Unchecked</strong>: '
            f"{escape(', '.join(unchecked))} evaluated with checks: off, no validity check ran.</div>"
            if unchecked else "")
    escalated = "".join(
        f'<div class="banner escalated-banner"><strong>Escalated</strong>: {escape(r.regularizer)} seed {r.seed}: '
        + escape("; ".join(f"{t.norm} ε={t.eps:g} {t.status}" + (f" ({t.detail})" if t.detail else "")
                           for t in r.radius_trust)) + "</div>"
        for r in report.runs if r.escalated)
    return note + escalated + _trust_banner(report)


def _trust_banner(report: Report) -> str:
    bad = untrustworthy_runs(report)
    if not bad:
        return ""
    items = "".join(
        f"<li>{escape(r.regularizer)} seed {r.seed}: {escape(', '.join(c.name for c in cs) or 'a check failed')}</li>"
        for r, cs in bad)
    names = ", ".join(dict.fromkeys(r.regularizer for r, _ in bad))
    return (f'<div id="trust-banner" class="banner" role="alert"><strong>⚠ Untrustworthy robust accuracy</strong> '
            f"in {len(bad)} of {len(report.runs)} runs ({escape(names)}): a validity check failed; "
            f"{escape(cause_of_untrust(bad))}"
            f"<details><summary>Which runs and checks</summary><ul>{items}</ul></details></div>")


def _name_cell(s: RegularizerSummary, report: Report) -> str:
    base = ' <span class="base">base</span>' if s.regularizer == report.baseline else ""
    return f'<td title="{escape(s.regularizer)} ({escape(s.kind)})">{escape(s.regularizer)}{base}</td>'


def _trust_cell(trustworthy: bool) -> str:
    if trustworthy:
        return '<td><span class="ok" title="every validity check passed or only warned">✓</span></td>'
    return '<td><span class="flag" title="a validity check failed for a run of it">⚠</span></td>'


def _norm_groups(columns: list[tuple[str, float]], prefix: str) -> tuple[str, str]:
    """The two header rows' norm groups: 'Worst case L∞ at ε' spanning its radii, then the radii."""
    groups: dict[str, int] = {}
    for norm, _ in columns:
        groups[norm] = groups.get(norm, 0) + 1
    top = "".join(f'<th class="group c-{escape(n)}" colspan="{k}">{escape(prefix)} '
                  f"{escape(NORM_LABELS.get(n, n))} ε</th>" for n, k in groups.items())
    radii = "".join(f'<th class="c-{escape(n)}">{escape(fmt_eps(n, e))}</th>' for n, e in columns)
    return top, radii


def _legend_line(report: Report) -> str:
    flagged = (' <span class="swatch"></span> yellow row and <span class="flag">⚠</span>: a validity check failed '
               "for a run of that regularizer, so its robust accuracy is not to be trusted (see Validity checks)."
               if any(not s.trustworthy for s in report.summary) else "")
    base = ' <span class="base">base</span>: the baseline the others are compared with.' if report.baseline else ""
    return (f'<p class="legend">Accuracy in %, mean over seeds; tap or hover a number for its ± std and 95 % '
            f"interval. Worst case: the lowest accuracy over every attack at that radius. "
            f'<span class="ok">✓</span>: every validity check passed.{flagged}{base}</p>')


def _headline(report: Report) -> str:
    """Clean accuracy, worst case at every radius and trust in one compact table: means only, so it
    fits a phone's width and stands at the top of the page."""
    columns = worst_columns(report.summary)
    notes = Notes()
    top, radii = _norm_groups(columns, "Worst case")
    rows = []
    for s in report.summary:
        worst: dict[tuple[str, float], WorstCaseStat] = {(w.norm, w.eps): w for w in s.worst_case}
        rows.append(f'<tr class="headline-row{"" if s.trustworthy else " untrustworthy"}" '
                    f'data-regularizer="{escape(s.regularizer)}">{_name_cell(s, report)}{_trust_cell(s.trustworthy)}'
                    f"{_stat_cell(s.clean_accuracy, notes, spread=False)}"
                    + "".join(_stat_cell(worst.get(c), notes, spread=False) for c in columns) + "</tr>")
    table = (f'<div class="table-scroll"><table id="headline-table"><thead>'
             f'<tr><th rowspan="2">Regularizer</th><th rowspan="2" title="Trust: did every validity check pass?">'
             f'✓?</th><th rowspan="2">Clean</th>{top}</tr><tr>{radii}</tr></thead><tbody>{"".join(rows)}</tbody>'
             f"</table></div>")
    return f'<section id="headline"><h2>Headline</h2>{table}{_legend_line(report)}{notes.legend()}</section>'


def _comparison(report: Report) -> str:
    """The full comparison, with ± std, step time and kind; the reader picks the column groups."""
    columns = worst_columns(report.summary)
    norms = list(dict.fromkeys(n for n, _ in columns))
    notes = Notes()
    top, radii = _norm_groups(columns, "Worst case")
    rows = []
    for s in report.summary:
        worst: dict[tuple[str, float], WorstCaseStat] = {(w.norm, w.eps): w for w in s.worst_case}
        ratio = (f'<td class="c-cost">{escape(fmt_ratio(s.step_time_ratio_to_baseline))}</td>'
                 if s.step_time_ratio_to_baseline is not None else notes.cell(NO_BASELINE_TIME, "c-cost"))
        rows.append(
            f'<tr class="regularizer-row{"" if s.trustworthy else " untrustworthy"}" '
            f'data-regularizer="{escape(s.regularizer)}">{_name_cell(s, report)}{_trust_cell(s.trustworthy)}'
            f"{_stat_cell(s.clean_accuracy, notes)}"
            + "".join(_stat_cell(worst.get(c), notes, f"c-{c[0]}") for c in columns)
            + f'{ratio}<td class="c-kind">{escape(s.kind)}</td><td class="c-kind">{s.clean_accuracy.n}</td></tr>')
    table = (f'<div class="table-scroll"><table id="comparison"><thead>'
             f'<tr><th rowspan="2">Regularizer</th><th rowspan="2">Trust</th><th rowspan="2">Clean</th>{top}'
             f'<th rowspan="2" class="c-cost">Step time vs baseline</th><th rowspan="2" class="c-kind">Kind</th>'
             f'<th rowspan="2" class="c-kind">Seeds</th></tr><tr>{radii}</tr></thead>'
             f"<tbody>{''.join(rows)}</tbody></table></div>")
    choices = [(f"show-{n}", f"Worst case {NORM_LABELS.get(n, n)}", True) for n in norms if n in ("linf", "l2")]
    choices += [("show-cost", "Step time", True), ("show-kind", "Kind and seeds", False)]
    toggles = "".join(f'<input type="checkbox" id="{i}"{" checked" if on else ""}><label for="{i}">{escape(t)}</label>'
                      for i, t, on in choices)
    return (f'<section id="comparison-section"><h2>Comparison</h2>'
            f'<p class="note">Accuracy in %, mean ± std over seeds. Columns shown:</p>'
            f'<div class="choose">{toggles}{table}</div>{_legend_line(report)}{notes.legend()}</section>')


def _p_cell(c: BaselineComparison, seeds: int, notes: Notes, value: float | None) -> str:
    if value is not None:
        return f"<td>{escape(fmt_p(value))}</td>"
    return notes.cell(ONE_SEED if seeds < 2 else SAME_DIFFERENCE)


def _paired(report: Report) -> str:
    seeds = {s.regularizer: s.clean_accuracy.n for s in report.summary}
    tests = [(s.regularizer, c) for s in report.summary for c in s.vs_baseline]
    if not tests:
        return ""
    notes = Notes()
    corrected = any(c.p_adjusted is not None for _, c in tests)
    rows = []
    for name, c in tests:
        verdict = "yes" if c.significant else "no" if c.p_value is not None else "—"
        rows.append(
            f'<tr class="{"significant" if c.significant else ""}"><td>{escape(name)}</td>'
            f'<td class="text">{escape(metric_label(c.metric))}</td><td>{100.0 * c.difference:+.1f}</td>'
            f"{_p_cell(c, seeds.get(name, 0), notes, c.p_value)}"
            + (_p_cell(c, seeds.get(name, 0), notes, c.p_adjusted) if corrected else "")
            + f"<td>{verdict}</td></tr>")
    header = ["Regularizer", "Metric", "Difference (pp)", "p", *(["p (Holm)"] if corrected else []), "Significant"]
    table = _table("vs-baseline", header, rows)
    n = max(seeds.values(), default=0)
    how = (f"Holm–Bonferroni correction over all {len(tests)} tests of this report, so the chance of any false "
           f"positive among them stays at 5 %" if corrected else "no correction for multiple comparisons "
           "(a report made before robustlab corrected them)")
    power = (f" With {n} seeds a paired t-test has little power: a difference that is not significant is not "
             "shown to be absent." if n <= 5 else "")
    return (f'<section id="paired-section"><h2>Paired tests vs baseline {escape(report.baseline or "")}</h2>'
            f'<p class="note">Difference to the baseline in percent points (this − baseline), mean over the seeds '
            f"both share; two-sided paired t-test; {how}.{power}</p>{_paired_matrix(report, corrected)}"
            f"<details><summary>All {len(tests)} tests with their p-values</summary>{table}{notes.legend()}"
            f"</details></section>")


def _paired_matrix(report: Report, corrected: bool) -> str:
    """The differences in the headline's shape: a row per regularizer, a column per metric, the
    significant ones (after correction) in bold with a star."""
    columns = worst_columns(report.summary)
    top, radii = _norm_groups(columns, "Worst case")
    keys = ["clean", *[worst_case_metric(n, e) for n, e in columns]]
    rows = []
    for s in report.summary:
        if not s.vs_baseline:
            continue
        by_metric = {c.metric: c for c in s.vs_baseline}
        cells = []
        for key in keys:
            c = by_metric.get(key)
            if c is None:
                cells.append('<td class="na">—</td>')
                continue
            p = "no test" if c.p_value is None else f"p = {fmt_p(c.p_value)}" + (
                f", Holm-adjusted {fmt_p(c.p_adjusted)}" if c.p_adjusted is not None else "")
            text = f"{100.0 * c.difference:+.1f}"
            body = f"<strong>{text}*</strong>" if c.significant else text
            cells.append(f'<td class="{"significant" if c.significant else ""}" title="{escape(p)}">{body}</td>')
        rows.append(f'<tr class="paired-row" data-regularizer="{escape(s.regularizer)}">'
                    f"<td>{escape(s.regularizer)}</td>{''.join(cells)}</tr>")
    significant = sum(c.significant for s in report.summary for c in s.vs_baseline)
    table = (f'<div class="table-scroll"><table id="paired-matrix"><thead><tr><th rowspan="2">Regularizer</th>'
             f'<th rowspan="2">Clean</th>{top}</tr><tr>{radii}</tr></thead><tbody>{"".join(rows)}</tbody>'
             f"</table></div>")
    return (f"{table}<p class=\"legend\"><strong>+1.2*</strong> in bold with a star: significant at 0.05"
            f"{' after the correction' if corrected else ''} ({significant} of "
            f"{sum(len(s.vs_baseline) for s in report.summary)}); plain: not significant; tap or hover for p.</p>")


def _check_item(check: Check) -> str:
    return (f'<li class="check">{_badge(check.status)}<strong>{escape(check.name)}</strong>'
            f'<span class="detail">{escape(check.detail)}</span></li>')


def _checks(report: Report) -> str:
    overall = "".join(_check_item(c) for c in report.checks) or '<li class="note">No checks were run.</li>'
    rows = [
        f'<tr><td>{escape(r.regularizer)}</td><td>{r.seed}</td><td class="text">{escape(c.name)}</td>'
        f'<td>{_badge(c.status)}</td><td class="text">{escape(c.detail)}</td></tr>'
        for r in report.runs for c in r.checks
    ]
    per_run = _table("run-checks", ["Regularizer", "Seed", "Check", "Status", "Detail"], rows)
    legend = (f'<p class="legend">{_badge("pass")} the check holds; {_badge("warn")} look closer, robust numbers still '
              f'count; {_badge("fail")} the run\'s robust accuracy is not trusted (yellow rows above).</p>')
    return (f'<section id="checks-section"><h2>Validity checks</h2><ul class="checks">{overall}</ul>{legend}'
            f"<details><summary>Per run ({len(rows)})</summary>{per_run}</details></section>")


def _runs(report: Report) -> str:
    columns = worst_columns(report.summary)
    notes = Notes()

    def num(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    rows = []
    for r in report.runs:
        worst = "".join(notes.cell(NOT_MEASURED) if (a := worst_accuracy(r, n, e)) is None else f"<td>{pct(a)}</td>"
                        for n, e in columns)
        memory = None if r.cost.peak_memory_bytes is None else r.cost.peak_memory_bytes / 2**20
        trust = "✓" if r.trustworthy else '<span class="flag">⚠</span>'
        if r.training_failed:  # shown here, left out of the headline, the comparison and the tests
            trust = '<span class="flag" title="the training_healthy check failed">⚠ training failed</span>'
        # On the CPU the figure is the process's peak resident memory, not an allocator peak: say so.
        rss = ' <abbr title="process peak resident set size (CPU)">RSS</abbr>' if (
            r.cost.memory_measure == "cpu_peak_rss") else ""
        rows.append(
            f'<tr class="run-row{"" if r.trustworthy else " untrustworthy"}"><td>{escape(r.regularizer)}</td>'
            f"<td>{r.seed}</td><td>{trust}</td><td>{pct(r.clean_accuracy)}</td>{worst}"
            f"<td>{num(r.cost.train_seconds)}</td><td>{num(r.cost.step_seconds, 4)}</td><td>{num(memory)}{rss}</td>"
            f"<td>{num(r.cost.eval_seconds)}</td><td>{r.samples}</td><td>{escape(r.checkpoint or '—')}</td></tr>")
    table = _table("runs", ["Regularizer", "Seed", "Trust", "Clean %",
                            *[f"{column_label(n, e)} %" for n, e in columns],
                            "Train s", "Step s", "Peak MiB", "Eval s", "Samples", "Checkpoint"], rows)
    failed = [f"{r.regularizer} seed {r.seed}" for r in report.runs if r.training_failed]
    left_out = (f'<p class="note flag" id="training-failed">Training failed for {len(failed)} run'
                f'{"s" if len(failed) != 1 else ""} ({escape(", ".join(failed))}): listed here, left out of the '
                f"headline, the comparison and the paired tests.</p>" if failed else "")
    return (f'<section id="runs-section"><h2>Runs</h2>{left_out}<details><summary>Every run ({len(report.runs)}): '
            f"accuracy, cost, checkpoint</summary>{table}{notes.legend()}</details></section>")


def _text_rows(rows: list[list[str]]) -> list[str]:
    """Rows of plain text cells as escaped `<tr>`s."""
    return ["<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows]


def _spend_details(table_id: str, summary: str, note: str, header: tuple[str, ...], rows: list[list[str]]) -> str:
    """One collapsed table of what attacks spent ("" when there are no rows)."""
    if not rows:
        return ""
    return (f"<details><summary>{escape(summary)} ({len(rows)})</summary><p class=\"note\">{escape(note)}</p>"
            f"{_table(table_id, list(header), _text_rows(rows))}</details>")


def _attack_spend(report: Report) -> str:
    """Per run: each attack entry's cost and each suite member's share ("" when the report has neither)."""
    body = (_spend_details("attack-costs", "Attack cost per run and attack entry", ATTACK_COST_NOTE,
                           ATTACK_COST_HEADER, attack_cost_rows(report))
            + _spend_details("suite-members", "Suite members per run and radius", SUITE_MEMBER_NOTE,
                             SUITE_MEMBER_HEADER, suite_member_rows(report)))
    return f'<section id="attack-cost-section"><h2>Attack cost</h2>{body}</section>' if body else ""


def _provenance(report: Report) -> str:
    rows = [f'<tr><td>{escape(k)}</td><td class="text">{escape(v)}</td></tr>'
            for k, v in environment_items(report.environment)]
    spec = escape(json.dumps(report.spec, indent=2, ensure_ascii=False, default=str))
    return (f'<section id="provenance-section"><h2>Environment and spec</h2>'
            f"{_table('environment', ['Key', 'Value'], rows)}"
            f'<details id="spec"><summary>Spec (hash <code>{escape(report.spec_hash)}</code>)</summary>'
            f"<pre>{spec}</pre></details></section>")


def render_html(report: Report) -> str:
    """The whole page; sections in reading order, from the verdict down to the provenance."""
    if report.kind == "evaluate":  # one model: a page of its own (reports.evaluation_page)
        from reports.evaluation_page import render_evaluation_html

        return render_evaluation_html(report)
    charts = figures(report)
    parts = [_header(report), _banner(report), _headline(report), _comparison(report), curves_section(report, charts),
             _paired(report), sensitivity_section(charts), cost_section(report, charts), _checks(report), _runs(report),
             _attack_spend(report), _provenance(report)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Robustness report: {escape(spec_name(report))}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")
