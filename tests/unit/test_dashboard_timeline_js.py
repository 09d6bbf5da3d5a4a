"""The geometry of the job page's units timeline (service/dashboard/static/timeline.js) under Node:
a lane per worker in order of first start, bars placed on one time axis, a running bar up to now,
queued units waiting apart (also one that ran before and waits to resume). Skipped without `node`.
The drawn page: tests/integration/test_dashboard_browser.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMELINE_JS = REPO / "service" / "dashboard" / "static" / "timeline.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

T0 = "2025-03-01T10:00:00Z"


def unit(name: str, status: str, worker: str | None = None, start: int | None = None, end: int | None = None,
         attempts: int = 1, kind: str = "train") -> dict[str, Any]:
    """A unit as GET /v1/jobs/{id} gives it; start and end in seconds after T0."""
    at = lambda s: None if s is None else f"2025-03-01T10:{s // 60:02d}:{s % 60:02d}Z"  # noqa: E731
    return {"name": name, "kind": kind, "status": status, "worker": worker, "started_at": at(start),
            "finished_at": at(end), "attempts": attempts}


def layout(units: list[dict[str, Any]], now: int) -> Any:
    code = (f"import * as t from {json.dumps(TIMELINE_JS.as_uri())};\n"
            f"const out = t.unitLayout({json.dumps(units)}, Date.parse({json.dumps(T0)}) + {now * 1000});\n"
            "for (const lane of out.lanes) for (const bar of lane.bars) { bar.name = bar.unit.name; "
            "bar.tip = t.unitTooltip(bar); delete bar.unit; }\n"
            "console.log(JSON.stringify(out));")
    done = subprocess.run([str(NODE), "--input-type=module", "-e", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_lanes_per_worker_on_one_time_axis() -> None:
    units = [unit("train erm seed 0", "succeeded", "host-b", 10, 70),
             unit("train erm seed 1", "succeeded", "host-a", 0, 60),
             unit("train erm seed 2", "running", "host-a", 60, None, attempts=2),
             unit("evaluate erm seed 0 [0, 500)", "queued", kind="evaluate", attempts=0),
             unit("train tv seed 0", "queued", "host-b", 5, None, attempts=1)]  # lost, waits to resume
    out = layout(units, now=120)
    assert [lane["worker"] for lane in out["lanes"]] == ["host-a", "host-b", "not started"]
    assert out["seconds"] == 120 and out["workers"] == 2
    assert out["counts"] == {"succeeded": 2, "running": 1, "queued": 2}
    a, b, waiting = (lane["bars"] for lane in out["lanes"])
    assert [(bar["name"], bar["left"], bar["width"]) for bar in a] == [
        ("train erm seed 1", 0, 50), ("train erm seed 2", 50, 50)]  # the running one reaches now
    assert a[1]["seconds"] == 60 and "2 attempts" in a[1]["tip"] and "running" in a[1]["tip"]
    assert [(bar["name"], round(bar["left"], 3), bar["width"]) for bar in b] == [("train erm seed 0", 8.333, 50)]
    assert "1 attempt ·" in b[0]["tip"]
    assert sorted(bar["name"] for bar in waiting) == ["evaluate erm seed 0 [0, 500)", "train tv seed 0"]
    assert all(bar["left"] is None for bar in waiting)


def test_a_clock_behind_the_server_never_draws_a_negative_bar() -> None:
    out = layout([unit("train erm seed 0", "running", "w1", 30, None)], now=0)  # the browser is 30 s behind
    (bar,) = out["lanes"][0]["bars"]
    assert bar["left"] == 0 and bar["width"] == 0 and out["seconds"] == 1  # at least one second of axis


def test_nothing_started_yet() -> None:
    out = layout([unit("train erm seed 0", "queued", attempts=0), unit("train erm seed 1", "queued", attempts=0)],
                 now=5)
    assert [lane["worker"] for lane in out["lanes"]] == ["not started"] and out["workers"] == 0
    assert out["seconds"] == 0
