"""Inline SVG charts for the HTML report, generated in Python: no matplotlib, no JavaScript.

A report page must open years later, offline, from an artifact store or an e-mail attachment, so
the charts are plain SVG markup inside the page. Every text that reaches the markup is escaped
here; callers pass raw strings. Charts scale with their container (viewBox, width 100 %).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
WIDTH = 560
BAR_WIDTH = 440  # bar charts are narrower: two share a laptop row, one fills a phone at about 10 px text


def color(index: int) -> str:
    """Tableau-10 for the first ten series; beyond that, hues spaced by the golden angle, darker
    than the palette so that an 11th regularizer never reuses the 1st one's colour."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 137.508) % 360
    return f"hsl({hue:.0f}, 60%, 35%)"


@dataclass(frozen=True)
class Series:
    """One line of a line chart: (x, mean, std) points, drawn with a mean ± std band."""

    name: str
    points: list[tuple[float, float, float]]
    color: str
    # (x, low, high): an asymmetric band (e.g. a binomial 95 % interval) drawn instead of mean ± std
    bands: list[tuple[float, float, float]] | None = None


@dataclass(frozen=True)
class Bar:
    """One bar of a horizontal bar chart; mean None draws 'n/a' (a run without that measurement).

    A `faint` bar is drawn pale with `note` after its value, e.g. a cost ratio within timing noise.
    """

    name: str
    mean: float | None
    std: float | None
    color: str
    faint: bool = False
    note: str = ""


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2, 5 × 10^k steps) from ≤ lo to ≥ hi: an axis ends on a tick."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks: list[float] = []
    k = 0
    while not ticks or ticks[-1] < hi - step * 1e-9:
        ticks.append(round(start + k * step, 12))
        k += 1
    return ticks


def fmt_tick(value: float) -> str:
    return f"{round(value, 10):g}"


def _attrs(css_class: str, data: dict[str, str], height: float, label: str, width: float = WIDTH,
           font_size: int = 13) -> str:
    extra = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in data.items())
    return (f'<svg class="{escape(css_class)}"{extra} role="img" aria-label="{escape(label)}" '
            f'viewBox="0 0 {width:g} {height:.0f}" font-family="system-ui, sans-serif" font-size="{font_size}">'
            f"<title>{escape(label)}</title>")


def _legend(series: list[Series], top: float, left: float) -> tuple[list[str], float]:
    """Legend entries under the plot, in one or two columns; returns the markup and its height."""
    columns = 1 if len(series) <= 3 else 2
    width = (WIDTH - left) / columns
    limit = 60 if columns == 1 else 28
    out = []
    for i, s in enumerate(series):
        x = left + (i % columns) * width
        y = top + (i // columns) * 20
        name = s.name if len(s.name) <= limit else s.name[: limit - 1] + "…"
        out.append(f'<g class="legend-item"><title>{escape(s.name)}</title>'
                   f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="14" height="10" fill="{s.color}"/>'
                   f'<text x="{x + 20:.1f}" y="{y:.1f}">{escape(name)}</text></g>')
    return out, 20 * math.ceil(len(series) / columns)


def line_chart(series: list[Series], *, title: str, x_label: str, y_label: str, css_class: str,
               data: dict[str, str] | None = None, y_range: tuple[float, float] = (0.0, 1.0),
               y_format: Callable[[float], str] = lambda v: f"{100 * v:g}") -> str:
    """Lines of mean vs x with a shaded mean ± std band, x and y axes with ticks, and a legend."""
    left, right, top, plot_h = 56.0, 24.0, 34.0, 240.0
    plot_w = WIDTH - left - right
    xs = [x for s in series for x, _, _ in s.points]
    x_lo, x_hi = min(xs, default=0.0), max(xs, default=1.0)
    if x_hi <= x_lo:
        x_hi = x_lo + (abs(x_lo) or 1.0)
    x_ticks = nice_ticks(x_lo, x_hi)
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_lo, y_hi = y_range

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        clamped = min(max(y, y_lo), y_hi)
        return top + plot_h - (clamped - y_lo) / (y_hi - y_lo) * plot_h

    legend, legend_h = _legend(series, top + plot_h + 62, left)
    height = top + plot_h + 62 + legend_h
    out = [_attrs(css_class, data or {}, height, title),
           f'<text class="chart-title" x="{left}" y="20" font-weight="600">{escape(title)}</text>']
    for tick in nice_ticks(y_lo, y_hi):
        y = sy(tick)
        out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(y_format(tick))}</text>')
    for tick in x_ticks:
        x = sx(tick)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}" stroke="#555"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 20}" text-anchor="middle">{fmt_tick(tick)}</text>')
    out.append(f'<path d="M{left},{top}V{top + plot_h}H{WIDTH - right}" fill="none" stroke="#555"/>'
               f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 40}" text-anchor="middle">'
               f"{escape(x_label)}</text>"
               f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f"{escape(y_label)}</text>")
    for s in series:
        pts = sorted(s.points)
        edges = sorted(s.bands) if s.bands else [(x, m - sd, m + sd) for x, m, sd in pts]
        upper = [f"{sx(x):.1f},{sy(hi):.1f}" for x, _, hi in edges]
        lower = [f"{sx(x):.1f},{sy(lo):.1f}" for x, lo, _ in reversed(edges)]
        spans = {x: f"95 % interval {y_format(round(lo, 3))}–{y_format(round(hi, 3))}" for x, lo, hi in s.bands or []}
        line = " ".join(f"{sx(x):.1f},{sy(m):.1f}" for x, m, _ in pts)
        out.append(f'<g class="series" data-name="{escape(s.name)}">'
                   f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{s.color}" fill-opacity="0.15"/>'
                   f'<polyline points="{line}" fill="none" stroke="{s.color}" stroke-width="2.5"/>')
        out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(m):.1f}" r="3.5" fill="{s.color}"><title>'
                   f"{escape(s.name)}: {escape(x_label)} {fmt_tick(x)} → {escape(y_format(m))} "
                   f"{escape(spans.get(x) or '± ' + y_format(sd))}</title></circle>" for x, m, sd in pts)
        out.append("</g>")
    return "".join([*out, *legend, "</svg>"])


def hbar_chart(bars: list[Bar], *, title: str, x_label: str, css_class: str, data: dict[str, str] | None = None,
               reference: float | None = None, decimals: int | None = None) -> str:
    """Horizontal bars (one per name, so long names stay readable) with ± std whiskers.

    `reference` draws a dashed vertical line, e.g. at 1 for a ratio to the baseline. Values are
    written with `decimals` places, by default three significant digits of the largest mean, the
    same for every bar and its std so that they compare at a glance.
    """
    left, right, top, row = 122.0, 84.0, 34.0, 26.0
    plot_w = BAR_WIDTH - left - right
    values = [b.mean + (b.std or 0.0) for b in bars if b.mean is not None]
    if reference is not None:
        values.append(reference)
    ticks = nice_ticks(0.0, max([*values, 0.0]) or 1.0, 4)
    x_hi = ticks[-1] if ticks[-1] > 0 else 1.0
    plot_h = max(row * len(bars), row)
    if decimals is None:
        largest = max((abs(b.mean) for b in bars if b.mean), default=1.0)
        decimals = min(6, max(0, 2 - math.floor(math.log10(largest))))
    height = top + plot_h + 44

    def sx(x: float) -> float:
        return left + max(0.0, x) / x_hi * plot_w

    out = [_attrs(css_class, data or {}, height, title, BAR_WIDTH),
           f'<text class="chart-title" x="8" y="20" font-weight="600">{escape(title)}</text>']
    for tick in ticks:
        x = sx(tick)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#e3e3e3"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{fmt_tick(tick)}</text>')
    if not bars:
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + 17}" text-anchor="middle" fill="#777">no data</text>')
    for i, b in enumerate(bars):
        y = top + i * row
        name = b.name if len(b.name) <= 16 else b.name[:15] + "…"
        out.append(f'<g class="bar" data-name="{escape(b.name)}"><title>{escape(b.name)}</title>'
                   f'<text x="{left - 6}" y="{y + 17:.1f}" text-anchor="end">{escape(name)}</text>')
        if b.mean is None:
            out.append(f'<text x="{left + 4}" y="{y + 17:.1f}" fill="#777">n/a</text></g>')
            continue
        label = f"{b.mean:.{decimals}f}" + (f" ± {b.std:.{decimals}f}" if b.std else "") + (
            f" {b.note}" if b.note else "")
        pale = ' fill-opacity="0.3"' if b.faint else ""
        out.append(f'<rect x="{left}" y="{y + 5:.1f}" width="{sx(b.mean) - left:.1f}" height="{row - 10}" '
                   f'fill="{b.color}"{pale}/>')
        if b.std:
            lo, hi = sx(b.mean - b.std), sx(b.mean + b.std)
            out.append(f'<path d="M{lo:.1f},{y + row / 2:.1f}H{hi:.1f}" stroke="#333" stroke-width="1.5"/>')
        end = sx(b.mean + (b.std or 0.0))
        out.append(f'<text x="{end + 4:.1f}" y="{y + 17:.1f}">{escape(label)}</text></g>')
    if reference is not None:
        x = sx(reference)
        out.append(f'<line class="reference" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + plot_h}" '
                   f'stroke="#333" stroke-dasharray="4 3"/>')
    out.append(f'<path d="M{left},{top}V{top + plot_h}" stroke="#555"/>'
               f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 36}" text-anchor="middle">'
               f"{escape(x_label)}</text></svg>")
    return "".join(out)


PANEL_WIDTH = 220  # small multiples: 2 per row on a phone keep their 12 px text at about 10 px


def panel_chart(series: list[Series], highlight: int, *, x_label: str, css_class: str, baseline: int | None = None,
                x_ticks: list[float] | None = None, data: dict[str, str] | None = None) -> str:
    """One small multiple: `series[highlight]` in its colour with its ± std band, every other series
    as a thin grey line for context, the baseline (when it is another) dashed. Accuracy 0-100 %."""
    left, right, top, plot_h = 30.0, 10.0, 26.0, 110.0
    plot_w = PANEL_WIDTH - left - right
    xs = [x for s in series for x, _, _ in s.points]
    ticks = x_ticks or nice_ticks(min(xs, default=0.0), max(xs, default=1.0), 3)
    x_lo, x_hi = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1.0

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - min(max(y, 0.0), 1.0) * plot_h

    def line(s: Series) -> str:
        return " ".join(f"{sx(x):.1f},{sy(m):.1f}" for x, m, _ in sorted(s.points))

    me = series[highlight]
    height = top + plot_h + 34
    name = me.name if len(me.name) <= 26 else me.name[:25] + "…"
    attrs = {"name": me.name, **(data or {})}
    out = [_attrs(css_class, attrs, height, f"{me.name}: worst-case accuracy vs {x_label}", PANEL_WIDTH, 12),
        f'<rect x="{left}" y="7" width="14" height="10" fill="{me.color}"/>'
        f'<text x="{left + 19}" y="16" font-weight="600">{escape(name)}</text>']
    for tick in (0.0, 0.5, 1.0):
        y = sy(tick)
        out.append(f'<line x1="{left}" x2="{PANEL_WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{100 * tick:g}</text>')
    for tick in ticks:
        out.append(f'<text x="{sx(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{fmt_tick(tick)}</text>')
    out.append(f'<path d="M{left},{top}V{top + plot_h}H{PANEL_WIDTH - right}" fill="none" stroke="#555"/>'
               f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" text-anchor="middle">'
               f"{escape(x_label)}</text>")
    for i, s in enumerate(series):
        if i == highlight or not s.points:
            continue
        if i == baseline:
            out.append(f'<polyline class="baseline-line" points="{line(s)}" fill="none" stroke="#333" '
                       f'stroke-width="1.2" stroke-dasharray="4 3"><title>baseline {escape(s.name)}</title></polyline>')
        else:
            out.append(f'<polyline class="context-line" points="{line(s)}" fill="none" stroke="#c8c8c8" '
                       f'stroke-width="1"/>')
    pts = sorted(me.points)
    upper = [f"{sx(x):.1f},{sy(m + sd):.1f}" for x, m, sd in pts]
    lower = [f"{sx(x):.1f},{sy(m - sd):.1f}" for x, m, sd in reversed(pts)]
    out.append(f'<g class="series" data-name="{escape(me.name)}">'
               f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{me.color}" fill-opacity="0.2"/>'
               f'<polyline points="{line(me)}" fill="none" stroke="{me.color}" stroke-width="2.5"/>')
    out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(m):.1f}" r="3" fill="{me.color}"><title>{escape(me.name)}: '
               f"{escape(x_label)} {fmt_tick(x)} → {100 * m:.1f} ± {100 * sd:.1f} %</title></circle>"
               for x, m, sd in pts)
    out.append("</g></svg>")
    return "".join(out)
