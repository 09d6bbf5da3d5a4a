"""Report renderers: JSON round trip, Markdown, CSV and the self-contained HTML page (parsed, not grepped)."""

from __future__ import annotations

import csv
import html
import io
import re
from html.parser import HTMLParser

import pytest

from core.reports import (
    AttackAccuracy,
    AttackCost,
    Check,
    Cost,
    Report,
    RunReport,
    Sensitivity,
    SuiteMember,
    WorstCase,
)
from reports.plots import nice_ticks
from reports.render import COST_FIELDS, CSV_COLUMNS, fmt_eps, metric_label, render_csv, render_html, render_markdown
from reports.statistics import summarize, worst_case_metric
from tests.report_fixtures import demo_report

LINF = [2 / 255, 4 / 255, 8 / 255]
L2 = [0.25, 0.5]
EVIL = '<script>alert("x")</script>'


def _run(name: str, kind: str, seed: int, strength: float, *, failed: bool = False) -> RunReport:
    """A plausible run: accuracy decays with ε, less for a stronger regularizer."""
    clean = 0.97 - 0.02 * strength + 0.004 * seed * (1 + strength)  # seed effects differ: p-values exist
    robust, worst = [], []
    for norm, radii, scale in (("linf", LINF, 12.0), ("l2", L2, 1.2)):
        for eps in radii:
            pgd = max(0.0, clean - scale * eps * (1.0 - 0.3 * strength))
            robust += [AttackAccuracy(attack="fgsm", norm=norm, eps=eps, accuracy=min(clean, pgd + 0.04)),
                       AttackAccuracy(attack="pgd", label="pgd-20x1", norm=norm, eps=eps, accuracy=pgd)]
            worst.append(WorstCase(norm=norm, eps=eps, accuracy=pgd))
    checks = [
        Check(name="pgd_not_weaker_than_fgsm", status="pass", detail="largest PGD − FGSM gap −0.040"),
        Check(name="large_eps_reaches_chance", status="fail" if failed else "pass",
              detail=f"accuracy {0.31 if failed else 0.1:.2f} at L∞ ε=0.5 vs chance 0.10", values={"chance": 0.1}),
        Check(name="attack_converged", status="warn" if seed else "pass", detail="more PGD steps lower it by 0.012"),
    ]
    return RunReport(
        regularizer=name, kind=kind, seed=seed, clean_accuracy=clean, samples=512, robust=robust, worst_case=worst,
        sensitivity=Sensitivity(input_gradient_norm=2.0 / (1 + strength), hessian_norm=40.0 / (1 + strength),
                                jacobian_frobenius=9.0 + seed, samples=128),
        cost=Cost(train_seconds=30.0 * (1 + strength), step_seconds=0.01 * (1 + strength),
                  step_time_ratio_to_baseline=1.0 + strength + 0.05 * seed, peak_memory_bytes=2**27, eval_seconds=4.0),
        checks=checks, trustworthy=not failed, checkpoint=f"{name}/seed{seed}.safetensors",
    )


def _overall(runs: list[RunReport]) -> list[Check]:
    rank = {"pass": 0, "warn": 1, "fail": 2}
    out = []
    for name in dict.fromkeys(c.name for r in runs for c in r.checks):
        found = [c for r in runs for c in r.checks if c.name == name]
        worst = max(found, key=lambda c: rank[c.status])
        out.append(Check(name=name, status=worst.status, detail=f"{sum(c.status == 'pass' for c in found)}"
                         f"/{len(found)} runs pass"))
    return out


def make_report(names: tuple[str, str, str] = ("erm", "dbp", "jacobian")) -> Report:
    """Three regularizers × two seeds, L∞ and L2 radii, and one run failing a validity check."""
    kinds = ("none", "double_backprop", "jacobian")
    runs = [_run(name, kind, seed, strength, failed=(strength == 2 and seed == 1))
            for seed in (0, 1) for strength, (name, kind) in enumerate(zip(names, kinds, strict=True))]
    spec = {"name": "digits-quick", "dataset": {"name": "digits"}, "model": {"architecture": "mlp"},
            "regularizers": [{"name": n, "kind": k} for n, k in zip(names, kinds, strict=True)], "seeds": [0, 1],
            "evaluation": {"attacks": [{"kind": "pgd", "norm": "linf", "eps": LINF}, {"kind": "pgd", "norm": "l2",
                                                                                     "eps": L2}]}}
    return Report(kind="compare", spec=spec, spec_hash="3f2a9c0d" * 8, baseline=names[0],
                  environment={"python": "3.11.7", "platform": "Linux-x86_64", "device": "cpu", "cuda": None,
                               "versions": {"robustlab": "0.1.0", "torch": "2.10.0", "torchattacks": "3.5.1"}},
                  runs=runs, summary=summarize(runs, names[0]), checks=_overall(runs))


# --- JSON, Markdown, CSV --------------------------------------------------------------------------


def test_report_json_round_trip() -> None:
    report = make_report()
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_markdown_has_a_comparison_row_per_regularizer_and_the_sections() -> None:
    md = render_markdown(make_report())
    sections = {part.split("\n", 1)[0]: part for part in md.split("\n## ")[1:]}
    assert {"Comparison", "Paired comparison vs baseline erm", "Checks", "Runs"} <= set(sections)
    rows = [line for line in sections["Comparison"].splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| erm (baseline)", "| dbp", "| jacobian"]
    assert "⚠ untrustworthy" in rows[2] and "⚠" not in rows[0]
    assert "L∞ ε=8/255" in md and "L2 ε=0.5" in md and "3f2a9c0d" in md and "torch 2.10.0" in md
    assert "Untrustworthy robust accuracy" in md and "jacobian seed 1 (large_eps_reaches_chance)" in md
    paired = [line for line in sections["Paired comparison vs baseline erm"].splitlines() if line.startswith("| ")]
    assert len(paired) == 1 + 2 * (1 + len(LINF) + len(L2))  # header + rows
    runs = [line for line in sections["Runs"].splitlines() if line.startswith("| ")][1:]
    assert len(runs) == 6


def test_csv_parses_with_one_row_per_run_and_metric() -> None:
    report = make_report()
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    # clean, robust, worst case, sensitivity, and every cost field (empty when unknown: a stable shape)
    per_run = 1 + 2 * (len(LINF) + len(L2)) + (len(LINF) + len(L2)) + 3 + len(COST_FIELDS)
    assert len(rows) == per_run * len(report.runs)
    assert tuple(rows[0]) == CSV_COLUMNS
    first = rows[0]
    assert (first["regularizer"], first["seed"], first["metric"]) == ("erm", "0", "clean_accuracy")
    assert float(first["value"]) == report.runs[0].clean_accuracy
    worst = [r for r in rows if r["metric"] == "worst_case_accuracy" and r["regularizer"] == "dbp"]
    assert {(r["norm"], float(r["eps"])) for r in worst} == {("linf", e) for e in LINF} | {("l2", e) for e in L2}
    assert {r["trustworthy"] for r in rows if r["regularizer"] == "jacobian" and r["seed"] == "1"} == {"false"}
    assert {r["metric"] for r in rows} >= {"hessian_norm", "step_time_ratio_to_baseline", "peak_memory_bytes"}


def test_csv_neutralizes_spreadsheet_formulas() -> None:
    report = make_report(("=cmd()", "dbp", "jacobian"))
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert rows[0]["regularizer"] == "'=cmd()"


def test_formatting_helpers() -> None:
    assert fmt_eps("linf", 8 / 255) == "8/255" and fmt_eps("l2", 0.5) == "0.5" and fmt_eps("linf", 0.3) == "0.3"
    # As the spec wrote it: 0.2 is 51/255 exactly, but nobody wrote "51/255" in a spec that says 0.2.
    assert fmt_eps("linf", 0.2) == "0.2" and fmt_eps("linf", 0.02) == "0.02" and fmt_eps("l2", 2.0) == "2"
    assert metric_label(worst_case_metric("linf", 0.2)) == "worst case L∞ ε=0.2"
    assert metric_label(worst_case_metric("linf", 4 / 255)) == "worst case L∞ ε=4/255"
    assert metric_label("clean") == "clean"
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.0, 8 / 255) == [0.0, 0.01, 0.02, 0.03, 0.04]
    assert nice_ticks(0.0, 3.7, 4) == [0.0, 1.0, 2.0, 3.0, 4.0]


# --- HTML -----------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Checks that every non-void tag closes in order; collects elements with their ancestors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str], list[tuple[str, dict[str, str]]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = (tag, {k: v or "" for k, v in attrs})
        self.elements.append((*element, list(self.stack)))
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, list(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a, _ in self.elements if t == tag and (cls is None or cls in a.get("class", "").split())
                and all(a.get(k) == v for k, v in attrs.items())]

    def inside(self, tag: str, cls: str, ancestor_id: str) -> list[dict[str, str]]:
        return [a for t, a, parents in self.elements if t == tag and cls in a.get("class", "").split()
                and any(p.get("id") == ancestor_id for _, p in parents)]


def _parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and [t for t, _ in parser.stack] == [], (parser.errors, parser.stack)
    return parser


def test_html_structure() -> None:
    report = make_report()
    page = _parse(render_html(report))
    assert page.find("table", id="comparison")
    rows = page.inside("tr", "regularizer-row", "comparison")
    assert [r["data-regularizer"] for r in rows] == ["erm", "dbp", "jacobian"]
    assert "untrustworthy" in rows[2]["class"] and "untrustworthy" not in rows[0]["class"]
    assert [s["data-norm"] for s in page.find("svg", "robustness-curve")] == ["linf", "l2"]
    assert len(page.find("svg", "sensitivity-chart")) == 3 and len(page.find("svg", "cost-chart")) == 1
    # One line per regularizer and norm in the combined charts, and again in the phone's small multiples.
    assert len(page.inside("g", "series", "robustness-section")) == 2 * 3 * 2
    assert len(page.find("polygon", "band")) == 6 * 2
    assert page.find("span", "badge") and page.find("span", "fail") and page.find("span", "warn")
    assert page.find("span", "pass")
    assert page.find("div", id="trust-banner") and page.find("details", id="spec")
    assert page.find("table", id="vs-baseline") and page.find("table", id="runs")
    text = "".join(page.text)
    assert "3f2a9c0d" * 8 in text and "torchattacks" in text and '"digits-quick"' in text


def test_html_is_self_contained() -> None:
    page = render_html(make_report()).lower()
    for forbidden in ("<script", "<link", "http://", "https://", "@import", "url("):
        assert forbidden not in page, forbidden
    assert page.startswith("<!doctype html>") and '<meta name="viewport"' in page


def test_report_strings_are_escaped() -> None:
    report = make_report(("erm", EVIL, "jacobian"))
    page = render_html(report)
    assert "<script" not in page.lower() and "&lt;script&gt;alert(&quot;x&quot;)" in page
    parsed = _parse(page)
    assert [r["data-regularizer"] for r in parsed.inside("tr", "regularizer-row", "comparison")][1] == EVIL
    md = render_markdown(report)
    assert "<script" not in md and "&lt;script>" in md and "&lt;/script>" in md


def test_html_without_baseline_or_measurements() -> None:
    run = _run("model", "checkpoint", 0, 0.0).model_copy(update={"sensitivity": None, "cost": Cost()})
    report = Report(kind="evaluate", spec={"name": "eval"}, spec_hash="ab", environment={}, runs=[run],
                    summary=summarize([run], None), checks=[])
    page = _parse(render_html(report))
    # An evaluate report has a page of its own (tests/unit/test_evaluation_report.py): no comparison.
    assert not page.find("table", id="comparison") and page.find("table", id="robust-accuracy")
    assert not page.find("table", id="vs-baseline") and not page.find("div", id="trust-banner")
    # Nothing trained, nothing measured: no empty "n/a" charts, no training cost.
    assert not page.find("svg", "cost-chart") and not page.find("svg", "sensitivity-chart")
    text = "".join(page.text)
    assert "n/a" not in text and "Step time" not in text
    md = render_markdown(report)
    assert "Environment: not recorded" in md and "Step time" not in md


@pytest.mark.parametrize("renderer", [render_markdown, render_csv, render_html])
def test_renderers_are_deterministic(renderer: object) -> None:
    assert callable(renderer)
    assert renderer(make_report()) == renderer(make_report())


def test_chart_colours_stay_distinct_beyond_the_palette() -> None:
    from reports.plots import color

    colours = [color(i) for i in range(64)]  # ExperimentSpec allows up to 64 regularizers
    assert len(set(colours)) == len(colours)


# --- the demo's shape: 12 regularizers × 3 seeds ----------------------------------------------------


def test_headline_has_clean_worst_case_per_radius_and_trust_for_every_regularizer() -> None:
    report = demo_report()
    page = _parse(render_html(report))
    rows = page.inside("tr", "headline-row", "headline")
    assert [r["data-regularizer"] for r in rows] == [s.regularizer for s in report.summary]
    assert ["untrustworthy" in r["class"] for r in rows] == [not s.trustworthy for s in report.summary]
    text = "".join(page.text)
    for radius in ("0.02", "0.05", "0.1", "0.2", "0.5", "1", "2"):
        assert radius in text
    assert "/255" not in text  # the radii as the spec wrote them
    assert "yellow row" in text and "validity check failed" in text  # the highlight is explained


def test_the_comparison_columns_can_be_chosen_without_script() -> None:
    page = _parse(render_html(demo_report()))
    boxes = {b["id"]: "checked" in b for b in page.find("input") if b.get("type") == "checkbox"}
    assert boxes == {"show-linf": True, "show-l2": True, "show-cost": True, "show-kind": False}
    assert {lab["for"] for lab in page.find("label")} >= set(boxes)
    assert len(page.inside("tr", "regularizer-row", "comparison")) == 12


def test_many_regularizers_get_small_multiples_and_a_legend() -> None:
    report = demo_report()
    page = _parse(render_html(report))
    panels = page.find("svg", "robustness-panel")
    assert len(panels) == 12 * 2 and {p["data-norm"] for p in panels} == {"linf", "l2"}
    assert page.find("polyline", "baseline-line") and page.find("polyline", "context-line")
    # Few regularizers: one chart per norm on a wide screen; the small charts only for a phone.
    three = _parse(render_html(make_report()))
    assert len(three.find("svg", "robustness-curve")) == 2 and three.find("div", "wide-only")
    assert all(any("phone-only" in p.get("class", "") for _, p in parents)
               for t, a, parents in three.elements if t == "svg" and a.get("class") == "robustness-panel")


def test_paired_tests_say_which_correction_and_show_the_differences_compactly() -> None:
    report = demo_report()
    page = _parse(render_html(report))
    text = "".join(page.text)
    assert "Holm–Bonferroni correction over all 88 tests" in text
    assert len(page.inside("tr", "paired-row", "paired-matrix")) == 11  # every regularizer but the baseline
    significant = sum(c.significant for s in report.summary for c in s.vs_baseline)
    assert f"({significant} of 88)" in text
    md = render_markdown(report)
    assert "p (Holm)" in md and "Holm–Bonferroni" in md


def test_cost_shows_spread_and_marks_ratios_within_noise() -> None:
    report = demo_report(regularizers=3)
    html = render_html(report)
    assert "± " in html and "varied by ± " in html and "not a measured difference" in html
    # doubleback's step time equals the baseline's up to noise: drawn pale and marked.
    runs = [r.model_copy(update={"cost": r.cost.model_copy(update={
        "step_time_ratio_to_baseline": 1.04 if r.regularizer == "doubleback" else r.cost.step_time_ratio_to_baseline})})
        for r in report.runs]
    noisy = report.model_copy(update={"runs": runs, "summary": summarize(runs, "erm")})
    assert "≈ noise" in render_html(noisy)


def test_a_run_whose_training_failed_is_listed_and_said_to_be_left_out() -> None:
    report = demo_report(regularizers=3)
    runs = [r.model_copy(update={"training_failed": r.regularizer == "doubleback" and r.seed == 2})
            for r in report.runs]
    page = render_html(report.model_copy(update={"runs": runs, "summary": summarize(runs, "erm")}))
    assert 'id="training-failed"' in page and "doubleback seed 2" in page and "⚠ training failed" in page
    assert 'id="training-failed"' not in render_html(report)


def with_attack_spend(report: Report) -> Report:
    """`report` with what its attacks spent: one suite entry per norm, three members at its largest radius."""
    runs = []
    for r in report.runs:
        members = [SuiteMember(suite="suite-standard", member=name, norm=norm, eps=eps, attacked=attacked,
                               broken=broken, pruned=pruned, gradient_evaluations=1000 * attacked,
                               forwards=7 * attacked + r.seed, seconds=seconds)
                   for norm, eps in (("linf", LINF[-1]), ("l2", L2[-1]))
                   for name, attacked, broken, pruned, seconds in (("apgd-ce", 512, 300, 0, 12.25),
                                                                   ("apgd-t", 212, 9, 0, 3.5),
                                                                   ("square-5000", 203, 4, 180, 0.75))]
        costs = [AttackCost(label="suite-standard", norm=norm, gradient_evaluations=1_234_567, forwards=8910,
                            seconds=16.5) for norm in ("linf", "l2")]
        runs.append(r.model_copy(update={"suite_members": members, "attack_costs": costs}))
    return report.model_copy(update={"runs": runs})


def _cells(page: str, table_id: str) -> list[list[str]]:
    """The text of each body row of the table with this id."""
    body = page.split(f'<table id="{table_id}">', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    return [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_html_shows_the_suite_members_and_attack_costs_like_the_markdown() -> None:
    report = with_attack_spend(make_report())
    page = render_html(report)
    parsed = _parse(page)
    for table_id in ("suite-members", "attack-costs"):  # collapsed, in their own section
        assert [t for t, a, parents in parsed.elements if t == "table" and a.get("id") == table_id
                and [p[0] for p in parents if p[0] in ("section", "details")] == ["section", "details"]
                and any(p.get("id") == "attack-cost-section" for _, p in parents)]
    members = _cells(page, "suite-members")
    assert len(members) == len(report.runs) * 2 * 3
    assert members[0] == ["erm", "0", "apgd-ce", "linf", "8/255", "512", "300", "0", "512,000", "3,584", "12.2"]
    assert members[-1] == ["jacobian", "1", "square-5000", "l2", "0.5", "203", "4", "180", "203,000", "1,422", "0.8"]
    costs = _cells(page, "attack-costs")
    assert len(costs) == len(report.runs) * 2
    assert costs[1] == ["erm", "0", "suite-standard", "l2", "1,234,567", "8,910", "16.5"]
    # The same rows as the Markdown tables: one source for both renderers.
    md = render_markdown(report)
    for row in (members[0], members[-1], costs[1]):
        assert "| " + " | ".join(row) + " |" in md
    assert "## Suite members" in md and "## Attack cost" in md


def test_html_attack_spend_is_escaped() -> None:
    page = render_html(with_attack_spend(make_report(("erm", EVIL, "jacobian"))))
    assert "<script" not in page.lower()
    assert _cells(page, "suite-members")[6][:3] == [EVIL, "0", "apgd-ce"]


def test_html_has_no_attack_cost_section_without_suite_members_or_costs() -> None:
    page = _parse(render_html(make_report()))
    assert not page.find("section", id="attack-cost-section")
    assert not page.find("table", id="suite-members") and not page.find("table", id="attack-costs")
    assert "## Suite members" not in render_markdown(make_report())
