"""The charts of a report: standalone SVGs (`figures`, also written to plots/) and the HTML sections
that show them (robustness curves, sensitivity, cost).

Up to six regularizers share one robustness chart per norm; from seven on, each gets a small chart of
its own (its line in colour, the baseline dashed, every other one grey), since a dozen overlapping
coloured lines cannot be told apart. Cost is a ratio of wall-clock timings, so it is shown with its
spread over seeds and ratios within timing noise are marked as such.
"""

from __future__ import annotations

from html import escape

from core.reports import Report
from reports.plots import Bar, Series, color, hbar_chart, line_chart, nice_ticks, panel_chart
from reports.render import NORM_LABELS, worst_columns
from reports.statistics import describe

SENSITIVITY_MEASURES = (
    ("input_gradient_norm", "Input-gradient norm ‖∇ₓℓ‖₂"),
    ("hessian_norm", "Input-Hessian spectral norm σmax(∇ₓ²ℓ)"),
    ("jacobian_frobenius", "Logit Jacobian Frobenius norm ‖∂f/∂x‖F"),
)

def table(table_id: str, header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return (f'<div class="table-scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _curve_series(report: Report, norm: str) -> list[Series]:
    series = []
    for i, s in enumerate(report.summary):
        points = [(w.eps, w.mean, w.std) for w in s.worst_case if w.norm == norm]
        if points:
            clean = s.clean_accuracy
            series.append(Series(s.regularizer, [(0.0, clean.mean, clean.std), *points], color(i)))
    return series


def _cost_bars(report: Report) -> tuple[list[Bar], float | None]:
    """Step time ÷ the baseline's, mean ± std over seeds; a ratio within twice the timing noise (the
    baseline's own seed-to-seed spread, or the ratio's) is drawn pale: it is not a difference."""
    base = [r.cost.step_seconds for r in report.runs if r.regularizer == report.baseline and r.cost.step_seconds]
    base_cv = describe(base).std / describe(base).mean if len(base) >= 2 else None
    bars = []
    for i, s in enumerate(report.summary):
        ratios = [x for r in report.runs if r.regularizer == s.regularizer
                  if (x := r.cost.step_time_ratio_to_baseline) is not None]
        std = describe(ratios).std if len(ratios) >= 2 else None
        mean = s.step_time_ratio_to_baseline
        spread = max(base_cv or 0.0, std or 0.0)
        noise = (mean is not None and s.regularizer != report.baseline and spread > 0
                 and abs(mean - 1.0) <= 2 * spread)
        bars.append(Bar(s.regularizer, mean, std, color(i), faint=noise, note="≈ noise" if noise else ""))
    return bars, base_cv


def figures(report: Report) -> dict[str, str]:
    """Every chart of the report as a standalone SVG, by file name (also written to `plots/`).

    robustness-<norm>.svg (worst-case accuracy vs ε, ± std bands), sensitivity-<measure>.svg and,
    when any run was trained, cost.svg; report.html embeds the same SVGs (and small multiples of the
    curves when there are many regularizers).
    """
    if report.kind == "evaluate" and report.runs:  # one model: its curve with 95 % interval bands
        from reports.evaluation_page import curve_figures

        return curve_figures(report.runs[0])
    out: dict[str, str] = {}
    for norm in dict.fromkeys(n for n, _ in worst_columns(report.summary)):
        label = NORM_LABELS.get(norm, norm)
        out[f"robustness-{norm}.svg"] = line_chart(
            _curve_series(report, norm), title=f"Worst-case accuracy vs ε ({label})", x_label=f"ε ({label})",
            y_label="accuracy %", css_class="robustness-curve", data={"norm": norm})
    for field, title in SENSITIVITY_MEASURES:
        bars = []
        for i, s in enumerate(report.summary):
            values = [float(getattr(r.sensitivity, field)) for r in report.runs
                      if r.regularizer == s.regularizer and r.sensitivity is not None]
            stat = describe(values) if values else None
            bars.append(Bar(s.regularizer, stat.mean if stat else None, stat.std if stat else None, color(i)))
        if any(b.mean is not None for b in bars):
            out[f"sensitivity-{field}.svg"] = hbar_chart(
                bars, title=title, x_label="mean over seeds (± std)", css_class="sensitivity-chart",
                data={"measure": field})
    bars, _ = _cost_bars(report)
    if any(b.mean is not None for b in bars):
        out["cost.svg"] = hbar_chart(bars, title="Training step time relative to the baseline",
                                     x_label="× baseline step time (mean ± std over seeds)", css_class="cost-chart",
                                     reference=1.0, decimals=2)
    return out


SMALL_MULTIPLES_FROM = 7  # regularizers: from here on, one small chart each instead of one crowded chart


def curves_section(report: Report, charts: dict[str, str]) -> str:
    caption = ("Mean ± std over seeds (band); ε = 0 is clean accuracy. Each line's colour is its regularizer, "
               "as in the legend.")
    parts = []
    for name, svg in charts.items():
        if not name.startswith("robustness-"):
            continue
        norm = name.removeprefix("robustness-").removesuffix(".svg")
        series = _curve_series(report, norm)
        label = NORM_LABELS.get(norm, norm)
        base = next((i for i, s in enumerate(series) if s.name == report.baseline), None)
        ticks = nice_ticks(0.0, max(x for s in series for x, _, _ in s.points), 3)
        panels = "".join(panel_chart(series, i, x_label=f"ε ({label})", css_class="robustness-panel",
                                     baseline=base, x_ticks=ticks, data={"norm": norm})
                         for i in range(len(series)))
        legend = (f'<p class="legend">Coloured: this regularizer, mean ± std over seeds (band); dashed: the '
                  f"baseline{' ' + escape(report.baseline) if report.baseline else ''}; grey: every other "
                  f"regularizer; ε = 0 is clean accuracy.</p>")
        multiples = (f'<h3 class="note">Worst-case accuracy % vs ε ({escape(label)}), one chart per regularizer</h3>'
                     f'<div class="panels" data-norm="{escape(norm)}">{panels}</div>{legend}')
        if len(series) < SMALL_MULTIPLES_FROM:
            # One chart reads best on a wide screen; a phone gets the small charts, whose text stays legible.
            parts.append(f'<div class="charts single wide-only"><figure>{svg}<figcaption>{caption}</figcaption>'
                         f'</figure></div><div class="phone-only">{multiples}</div>')
            continue
        parts.append(f"{multiples}<details><summary>All {len(series)} in one chart</summary><figure>{svg}</figure>"
                     f"</details>")
    body = "".join(parts) or '<p class="note">No robust accuracy was measured.</p>'
    return f'<section id="robustness-section"><h2>Robustness curves</h2>{body}</section>'


def sensitivity_section(charts: dict[str, str]) -> str:
    body = "".join(f"<figure>{svg}</figure>" for name, svg in charts.items() if name.startswith("sensitivity-"))
    if not body:
        return ""
    return (f'<section id="sensitivity-section"><h2>Sensitivity</h2><p class="note">Smaller means a smoother '
            f"model around test points. Bar colours are the regularizers' colours of the curves; whiskers: ± std "
            f'over seeds.</p><div class="charts">{body}</div></section>')


def cost_section(report: Report, charts: dict[str, str]) -> str:
    if "cost.svg" not in charts:
        seconds = [r.cost.eval_seconds for r in report.runs if r.cost.eval_seconds is not None]
        took = f" Evaluation took {describe(seconds).mean:.1f} s per run." if seconds else ""
        return (f'<section id="cost-section"><h2>Cost</h2><p class="note">No model was trained in this '
                f"{escape(report.kind)} job, so there is no training cost to compare.{took}</p></section>")
    _, base_cv = _cost_bars(report)
    noise = (f"the baseline's own step time varied by ± {100 * base_cv:.0f} % across seeds. " if base_cv is not None
             else "with one seed the timing noise is unknown. ")
    train = [(s.regularizer, [r.cost.train_seconds for r in report.runs
                              if r.regularizer == s.regularizer and r.cost.train_seconds is not None])
             for s in report.summary]
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{describe(v).mean:.1f}</td>"
                   f"<td>{describe(v).std:.1f}</td><td>{min(v):.1f}–{max(v):.1f}</td></tr>"
                   for name, v in train if v)
    times = (f"<details><summary>Training time in seconds per run</summary>"
             f"{table('train-seconds', ['Regularizer', 'Mean s', 'Std s', 'Range s'], [rows])}</details>"
             if rows else "")
    return (f'<section id="cost-section"><h2>Cost</h2><div class="charts narrow"><figure>{charts["cost.svg"]}'
            f"<figcaption>Each run's mean step time ÷ the baseline's (dashed line: 1×), mean ± std over seeds. "
            f"Timings depend on what else the machine was doing: {noise}Pale bars marked ≈ noise differ "
            f"from 1× by less than twice that spread (or their own): they are not a measured difference."
            f"</figcaption></figure></div>{times}</section>")
