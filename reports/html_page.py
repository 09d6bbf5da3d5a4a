"""Render a `Report` as ONE self-contained HTML page: inline CSS and SVG, no script, no network.

The page is an artifact: it must open offline and years later, from the artifact store, an e-mail
or a CI job, and it must be safe to open although run names and check details come from users, so
every string from the report is escaped. Stable ids and classes (`table#comparison`,
`tr.regularizer-row`, `svg.robustness-curve`, `svg.sensitivity-chart`, `svg.cost-chart`,
`.badge.pass|.warn|.fail`, `#trust-banner`) let tests and the dashboard find the parts.
"""

from __future__ import annotations

import json
from html import escape

from core.reports import Check, Report, Stat, WorstCaseStat
from reports.plots import Bar, Series, color, hbar_chart, line_chart
from reports.render import (
    NORM_LABELS,
    column_label,
    environment_items,
    fmt_p,
    fmt_ratio,
    fmt_stat,
    metric_label,
    pct,
    spec_name,
    untrustworthy_runs,
    worst_accuracy,
    worst_columns,
)
from reports.statistics import describe

SENSITIVITY_MEASURES = (
    ("input_gradient_norm", "Input-gradient norm ‖∇ₓℓ‖₂"),
    ("hessian_norm", "Input-Hessian spectral norm σmax(∇ₓ²ℓ)"),
    ("jacobian_frobenius", "Logit Jacobian Frobenius norm ‖∂f/∂x‖F"),
)

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--pass:#1a7f37;--warn:#d4a72c;--fail:#cf222e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1120px;margin:0 auto;padding:16px}
header h1{font-size:1.5rem;margin:.2em 0}
h2{font-size:1.15rem;margin:.1em 0 .6em}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin:16px 0}
.meta,.note,figcaption,.detail{color:var(--muted);font-size:.88rem}
.meta{overflow-wrap:anywhere}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em;overflow-wrap:anywhere}
.table-scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff}
thead th,thead th:first-child{background:#eef1f4;font-weight:600}
td.text{text-align:left;white-space:normal;min-width:16em}
tr.untrustworthy td{background:#fff8c5}
.flag{color:#9a6700;font-weight:600}
.badge{display:inline-block;min-width:3.6em;text-align:center;padding:1px 8px;border-radius:999px;
 font-size:.78rem;font-weight:700;text-transform:uppercase;letter-spacing:.03em}
.badge.pass{background:var(--pass);color:#fff}.badge.warn{background:var(--warn);color:#1f2328}
.badge.fail{background:var(--fail);color:#fff}
.banner{border-left:6px solid var(--fail);background:#ffebe9;padding:12px 16px;border-radius:6px;margin:16px 0}
.banner strong{color:var(--fail)}
.checks{list-style:none;padding:0;margin:0}
.checks li{padding:8px 0;border-bottom:1px solid var(--line);display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr));gap:16px}
figure{margin:0}
svg{width:100%;height:auto;display:block}
pre{overflow-x:auto;background:var(--bg);padding:12px;border-radius:6px;font-size:.8rem}
details{margin:8px 0}details summary{cursor:pointer;font-weight:600}
@media (max-width:640px){body{font-size:14px}main{padding:8px}section{padding:10px}th,td{padding:5px 6px}}
"""


def _stat_cell(stat: Stat | None) -> str:
    if stat is None:
        return "<td>—</td>"
    # An accuracy's t-interval can poke out of [0, 1] with few seeds; show the possible part.
    ci = f"95 % CI {pct(max(0.0, stat.ci95[0]))}–{pct(min(1.0, stat.ci95[1]))} %, " if stat.ci95 else ""
    return f'<td title="{ci}n={stat.n}">{escape(fmt_stat(stat))}</td>'


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _table(table_id: str, header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return (f'<div class="table-scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _header(report: Report) -> str:
    name = escape(spec_name(report))
    return (f"<header><h1>Robustness report: {name}</h1>"
            f'<p class="meta">spec <strong>{name}</strong> · hash '
            f'<code id="spec-hash">{escape(report.spec_hash)}</code>'
            f" · {escape(report.kind)} · baseline <strong>{escape(report.baseline or '—')}</strong>"
            f" · {len(report.runs)} runs · schema {escape(report.schema_version)}</p></header>")


def _banner(report: Report) -> str:
    bad = untrustworthy_runs(report)
    if not bad:
        return ""
    items = "".join(
        f"<li>{escape(r.regularizer)} seed {r.seed}: {escape(', '.join(c.name for c in cs) or 'a check failed')}</li>"
        for r, cs in bad)
    return (f'<div id="trust-banner" class="banner" role="alert"><strong>⚠ Untrustworthy robust accuracy.</strong> '
            f"A validity check failed for {len(bad)} of {len(report.runs)} runs: their robust accuracy may "
            f"reflect gradient masking or a broken attack, not robustness.<ul>{items}</ul></div>")


def _comparison(report: Report) -> str:
    columns = worst_columns(report.summary)
    rows = []
    for s in report.summary:
        worst: dict[tuple[str, float], WorstCaseStat] = {(w.norm, w.eps): w for w in s.worst_case}
        base = ' <span class="note">(baseline)</span>' if s.regularizer == report.baseline else ""
        trust = ('<span class="trust-ok">✓</span>' if s.trustworthy
                 else '<span class="flag" title="a validity check failed">⚠ untrustworthy</span>')
        rows.append(
            f'<tr class="regularizer-row{"" if s.trustworthy else " untrustworthy"}" '
            f'data-regularizer="{escape(s.regularizer)}"><td>{escape(s.regularizer)}{base}</td>'
            f"<td>{escape(s.kind)}</td><td>{s.clean_accuracy.n}</td>{_stat_cell(s.clean_accuracy)}"
            + "".join(_stat_cell(worst.get(c)) for c in columns)
            + f"<td>{escape(fmt_ratio(s.step_time_ratio_to_baseline))}</td><td>{trust}</td></tr>")
    table = _table("comparison", ["Regularizer", "Kind", "Seeds", "Clean %",
                                  *[f"Worst {column_label(n, e)} %" for n, e in columns],
                                  "Step time vs baseline", "Trust"], rows)
    return (f'<section id="comparison-section"><h2>Comparison</h2><p class="note">Accuracy in %, mean ± std over '
            f"seeds (hover for the 95 % interval); worst case over every attack at each ε.</p>{table}</section>")


def _paired(report: Report) -> str:
    rows = [
        f'<tr><td>{escape(s.regularizer)}</td><td class="text">{escape(metric_label(c.metric))}</td>'
        f"<td>{100.0 * c.difference:+.1f}</td><td>{escape(fmt_p(c.p_value))}</td>"
        f"<td>{'yes' if c.significant else 'no' if c.p_value is not None else '—'}</td></tr>"
        for s in report.summary for c in s.vs_baseline
    ]
    if not rows:
        return ""
    table = _table("vs-baseline", ["Regularizer", "Metric", "Difference (pp)", "p", "Significant"], rows)
    return (f'<section id="paired-section"><h2>Paired comparison vs baseline {escape(report.baseline or "")}</h2>'
            f'<p class="note">this − baseline in percent points, paired by seed; two-sided paired t-test, '
            f"significant at p &lt; 0.05.</p>{table}</section>")


def figures(report: Report) -> dict[str, str]:
    """Every chart of the report as a standalone SVG, by file name (also written to `plots/`).

    robustness-<norm>.svg (worst-case accuracy vs ε, ± std bands), sensitivity-<measure>.svg and
    cost.svg; report.html embeds the same SVGs.
    """
    out: dict[str, str] = {}
    for norm in dict.fromkeys(n for n, _ in worst_columns(report.summary)):
        series = []
        for i, s in enumerate(report.summary):
            points = [(w.eps, w.mean, w.std) for w in s.worst_case if w.norm == norm]
            if points:
                clean = s.clean_accuracy
                series.append(Series(s.regularizer, [(0.0, clean.mean, clean.std), *points], color(i)))
        label = NORM_LABELS.get(norm, norm)
        out[f"robustness-{norm}.svg"] = line_chart(
            series, title=f"Worst-case accuracy vs ε ({label})", x_label=f"ε ({label})", y_label="accuracy %",
            css_class="robustness-curve", data={"norm": norm})
    for field, title in SENSITIVITY_MEASURES:
        bars = []
        for i, s in enumerate(report.summary):
            values = [float(getattr(r.sensitivity, field)) for r in report.runs
                      if r.regularizer == s.regularizer and r.sensitivity is not None]
            stat = describe(values) if values else None
            bars.append(Bar(s.regularizer, stat.mean if stat else None, stat.std if stat else None, color(i)))
        out[f"sensitivity-{field}.svg"] = hbar_chart(
            bars, title=title, x_label="mean over seeds (± std)", css_class="sensitivity-chart",
            data={"measure": field})
    bars = []
    for i, s in enumerate(report.summary):
        ratios = [r.cost.step_time_ratio_to_baseline for r in report.runs if r.regularizer == s.regularizer]
        present = [x for x in ratios if x is not None]
        std = describe(present).std if present else None
        bars.append(Bar(s.regularizer, s.step_time_ratio_to_baseline, std, color(i)))
    out["cost.svg"] = hbar_chart(bars, title="Training step time relative to the baseline",
                                 x_label="× baseline step time", css_class="cost-chart", reference=1.0, decimals=2)
    return out


def _curves(charts: dict[str, str]) -> str:
    figures = [f"<figure>{svg}<figcaption>Mean ± std over seeds (band); ε = 0 is clean accuracy.</figcaption>"
               f"</figure>" for name, svg in charts.items() if name.startswith("robustness-")]
    body = "".join(figures) or '<p class="note">No robust accuracy was measured.</p>'
    return f'<section id="robustness-section"><h2>Robustness curves</h2><div class="charts">{body}</div></section>'


def _sensitivity(charts: dict[str, str]) -> str:
    body = "".join(f"<figure>{svg}</figure>" for name, svg in charts.items() if name.startswith("sensitivity-"))
    return (f'<section id="sensitivity-section"><h2>Sensitivity</h2><p class="note">Smaller means a smoother '
            f'model around test points.</p><div class="charts">{body}</div></section>')


def _cost(charts: dict[str, str]) -> str:
    return (f'<section id="cost-section"><h2>Cost</h2><div class="charts"><figure>{charts["cost.svg"]}<figcaption>'
            f"Dashed line: the baseline (1×).</figcaption></figure></div></section>")


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
    return (f'<section id="checks-section"><h2>Validity checks</h2><ul class="checks">{overall}</ul>'
            f"<details><summary>Per run ({len(rows)})</summary>{per_run}</details></section>")


def _runs(report: Report) -> str:
    columns = worst_columns(report.summary)

    def num(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    rows = []
    for r in report.runs:
        worst = "".join(f"<td>{'—' if (a := worst_accuracy(r, n, e)) is None else pct(a)}</td>" for n, e in columns)
        memory = None if r.cost.peak_memory_bytes is None else r.cost.peak_memory_bytes / 2**20
        trust = "✓" if r.trustworthy else '<span class="flag">⚠</span>'
        # On the CPU the figure is the process's peak resident memory, not an allocator peak: say so.
        rss = ' <abbr title="process peak resident set size (CPU)">RSS</abbr>' if (
            r.cost.memory_measure == "cpu_peak_rss") else ""
        rows.append(
            f'<tr class="run-row{"" if r.trustworthy else " untrustworthy"}"><td>{escape(r.regularizer)}</td>'
            f"<td>{r.seed}</td><td>{pct(r.clean_accuracy)}</td>{worst}<td>{num(r.cost.train_seconds)}</td>"
            f"<td>{num(r.cost.step_seconds, 4)}</td><td>{num(memory)}{rss}</td><td>{num(r.cost.eval_seconds)}</td>"
            f"<td>{r.samples}</td><td>{trust}</td><td>{escape(r.checkpoint or '—')}</td></tr>")
    table = _table("runs", ["Regularizer", "Seed", "Clean %", *[f"{column_label(n, e)} %" for n, e in columns],
                            "Train s", "Step s", "Peak MiB", "Eval s", "Samples", "Trust", "Checkpoint"], rows)
    return f'<section id="runs-section"><h2>Runs</h2>{table}</section>'


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
    charts = figures(report)
    parts = [_header(report), _banner(report), _comparison(report), _paired(report), _curves(charts),
             _sensitivity(charts), _cost(charts), _checks(report), _runs(report), _provenance(report)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Robustness report: {escape(spec_name(report))}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")
