"""`robustlab status ID --units`: the job's units as a table, through the real CLI and HTTP client
against a stub server (httpx.MockTransport) whose job is validated by the API's own `Job` model.
The same command against a real service with a real unit-split job: tests/integration/test_cli_client.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from robustlab import client_commands
from robustlab.cli import app
from robustlab.units_table import duration, units_table
from service.client import RobustlabClient
from service.schemas import Job

JOB_ID = "3f1c2a9e-5b7d-4c1e-9a0b-2d6e8f4a1c3b"
NOW = datetime(2025, 3, 1, 10, 5, 0, tzinfo=UTC)


def _at(seconds: int) -> str:
    return (NOW - timedelta(minutes=5) + timedelta(seconds=seconds)).isoformat()


UNITS: list[dict[str, Any]] = [
    {"name": "train erm seed 0", "kind": "train", "status": "succeeded", "worker": "gpu-host-1.gpu0",
     "started_at": _at(0), "finished_at": _at(95), "attempts": 1},
    {"name": "train tv seed 0", "kind": "train", "status": "succeeded", "worker": "gpu-host-2.gpu0",
     "started_at": _at(3), "finished_at": _at(140), "attempts": 2},
    {"name": "evaluate erm seed 0 [0, 500)", "kind": "evaluate", "status": "running", "worker": "gpu-host-1.gpu0",
     "started_at": _at(100), "finished_at": None, "attempts": 1},
    {"name": "evaluate tv seed 0 [0, 500)", "kind": "evaluate", "status": "queued", "worker": None,
     "started_at": None, "finished_at": None, "attempts": 0},
]


def _job(units: list[dict[str, Any]], status: str = "running") -> dict[str, Any]:
    job = {"id": JOB_ID, "kind": "compare", "status": status, "spec": {"name": "fleet"},
           "created_at": _at(-5), "started_at": _at(0), "updated_at": _at(200),
           "progress": {"fraction": 0.5, "stage": "evaluating", "message": "2 of 4 units done"},
           "attempts": 1, "units": units}
    return Job.model_validate(job).model_dump(mode="json")  # exactly what the API can send


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(job: dict[str, Any]) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == f"/v1/jobs/{JOB_ID}" and request.headers["Authorization"] == "Bearer k"
            return httpx.Response(200, content=json.dumps(job), headers={"Content-Type": "application/json"})

        monkeypatch.setattr(client_commands, "_connect", lambda server, api_key: RobustlabClient(
            "http://robustlab.test", "k", transport=httpx.MockTransport(handler), retry_for=0))

    return install


def test_status_units_prints_one_row_per_unit(serve: Any) -> None:
    serve(_job(UNITS))
    result = CliRunner().invoke(app, ["status", JOB_ID, "--units"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("UNIT"))
    assert lines[header].split() == ["UNIT", "KIND", "STATUS", "WORKER", "START", "DURATION", "ATTEMPTS"]
    starts = [lines[header].index(c) for c in ("UNIT", "KIND", "STATUS", "WORKER", "START", "DURATION", "ATTEMPTS")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    rows = [[line[a:b].strip() for a, b in bounds] for line in lines[header + 1:header + 5]]
    assert [row[0] for row in rows] == [u["name"] for u in UNITS]
    assert [row[1:4] for row in rows] == [["train", "succeeded", "gpu-host-1.gpu0"],
                                          ["train", "succeeded", "gpu-host-2.gpu0"],
                                          ["evaluate", "running", "gpu-host-1.gpu0"], ["evaluate", "queued", "-"]]
    assert [row[5:] for row in rows[:2]] == [["1m35s", "1"], ["2m17s", "2"]]
    assert rows[2][5].endswith("+") and rows[2][6] == "1"  # to now: still running
    assert rows[3][4:] == ["-", "-", "0"]
    assert all(row[4].endswith(("10:00:00", "10:00:03", "10:01:40")) for row in rows[:3])  # local time of day
    assert lines[header + 5] == "4 units (2 succeeded, 1 running, 1 queued) on 2 workers"
    assert result.stdout.startswith(JOB_ID)  # the usual status line comes first


def test_status_without_units_flag_is_unchanged_and_a_job_without_units_says_so(serve: Any) -> None:
    serve(_job(UNITS))
    plain = CliRunner().invoke(app, ["status", JOB_ID])
    assert plain.exit_code == 0 and "UNIT" not in plain.stdout
    serve(_job([]))
    result = CliRunner().invoke(app, ["status", JOB_ID, "--units"])
    assert result.exit_code == 0 and "no units yet" in result.stdout


def test_a_failed_job_still_lists_its_units_and_exits_1(serve: Any) -> None:
    failed = [{**UNITS[0], "status": "failed", "attempts": 3}]
    serve({**_job(failed, status="failed"), "error": {"type": "UnitFailed", "message": "train erm seed 0 failed"}})
    result = CliRunner().invoke(app, ["status", JOB_ID, "--units"])
    assert result.exit_code == 1
    assert "train erm seed 0" in result.stdout and "failed" in result.stdout.splitlines()[-2]


def test_table_times_and_durations() -> None:
    assert [duration(s) for s in (0, 59.6, 61, 3599, 3600, 7380)] == ["0s", "1m00s", "1m01s", "59m59s", "1h00m",
                                                                       "2h03m"]
    yesterday = [{**UNITS[0], "started_at": _at(-86400), "finished_at": _at(-86000)}]
    row = units_table(yesterday, now=NOW).splitlines()[1]
    assert str((NOW - timedelta(days=1)).astimezone().date()) in row  # not today: the date is shown
    assert "6m40s" in row
