"""`robustlab status ID --units`: a job's work units (GET /v1/jobs/{id} `units`) as a plain-text table.

One row per unit: name, kind, status, worker, start (local time; the date too when it is not today),
duration (to now while the unit runs) and attempts. Plain columns padded with spaces, so the
output reads in a terminal and a CI log alike, and `awk` can take it apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

COLUMNS = ("UNIT", "KIND", "STATUS", "WORKER", "START", "DURATION", "ATTEMPTS")


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m: short, and sortable by eye within one table."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def unit_row(unit: dict[str, Any], now: datetime) -> tuple[str, ...]:
    started, finished = _time(unit.get("started_at")), _time(unit.get("finished_at"))
    start = "-"
    if started is not None:
        local = started.astimezone()
        start = local.strftime("%H:%M:%S") if local.date() == now.astimezone().date() else \
            local.strftime("%Y-%m-%d %H:%M:%S")
    length = "-"
    if started is not None and finished is not None:
        length = duration((finished - started).total_seconds())
    elif started is not None and unit.get("status") == "running":
        length = duration((now - started).total_seconds()) + "+"  # still running
    return (str(unit.get("name", "")), str(unit.get("kind", "")), str(unit.get("status", "")),
            str(unit.get("worker") or "-"), start, length, str(unit.get("attempts", 0)))


def units_table(units: Sequence[dict[str, Any]], now: datetime | None = None) -> str:
    """The table, or a line saying why there is none."""
    if not units:
        return "no units yet: the job is not planned yet (or it runs as one piece)"
    now = now or datetime.now(UTC)
    rows = [COLUMNS, *(unit_row(unit, now) for unit in units)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    right = {len(COLUMNS) - 1}  # numbers right-aligned
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
    workers = {unit.get("worker") for unit in units if unit.get("worker")}
    counts: dict[str, int] = {}
    for unit in units:
        counts[str(unit.get("status"))] = counts.get(str(unit.get("status")), 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines.append(f"{len(units)} unit{'s' if len(units) != 1 else ''} ({summary}) on {len(workers)} "
                 f"worker{'s' if len(workers) != 1 else ''}")
    return "\n".join(lines)
