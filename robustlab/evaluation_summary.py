"""The terminal summary of an `evaluate` report: the model, then its accuracy per radius with intervals.

Torch-free (rich only), so that the local evaluate and anything that holds a report.json print it alike.
Rows run down (a row per radius), as on the report page, so a narrow terminal shows every column.
"""

from __future__ import annotations

from rich.table import Table

from core.reports import Report
from reports.evaluation import fmt_interval, interval, members_by_radius, the_run
from reports.render import column_label, pct, spec_name


def evaluation_table(report: Report) -> Table:
    """Clean accuracy and, per radius, the worst case with its 95 % interval and the attack that was
    lowest there; then what the suite's members broke. The caption names the file and its hash."""
    run = the_run(report)
    info = report.model_info
    model = f"{info.file} ({info.format}, sha256 {info.sha256[:12]})" if info is not None else (
        run.checkpoint or run.regularizer if run is not None else "no model")
    table = Table(title=f"{spec_name(report)}: {model}", title_justify="left")
    table.add_column("radius", no_wrap=True)
    table.add_column("acc. %", justify="right", no_wrap=True)
    table.add_column("95 % interval", justify="right", no_wrap=True)
    table.add_column("lowest attack")
    if run is None:
        return table
    groups = dict(members_by_radius(run))
    order = list(dict.fromkeys(m.member for m in run.suite_members))
    if groups:
        table.add_column("suite broke", justify="right", no_wrap=True)
    flag = "" if run.trustworthy else " ⚠"
    table.add_row("clean", pct(run.clean_accuracy), fmt_interval(interval(run, "clean_interval")), "",
                  *([""] if groups else []))
    for w in run.worst_case:
        attacks = [a for a in run.robust if a.norm == w.norm and a.eps == w.eps]
        lowest = min(attacks, key=lambda a: a.accuracy, default=None)
        broke = {m.member: m.broken for m in groups.get((w.norm, w.eps), [])}
        table.add_row(column_label(w.norm, w.eps), pct(w.accuracy) + flag, fmt_interval(interval(w)),
                      "" if lowest is None else lowest.label or lowest.attack,
                      *(["/".join(str(broke.get(m, "-")) for m in order)] if groups else []))
    notes = [f"{run.samples:,} samples"]
    if groups:
        notes.append(f"suite broke: samples each member broke ({'/'.join(order)})")
    if not run.trustworthy:
        notes.append("⚠ a validity check failed: the robust accuracy is not to be trusted")
    table.caption = " · ".join(notes)
    table.caption_justify = "left"
    return table
