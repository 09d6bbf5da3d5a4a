"""robustlab.progress_view: times for people, a line per stage without a terminal, the queue in words."""

from __future__ import annotations

import io
from typing import Any

import pytest

from robustlab.progress_view import LINE_EVERY, ProgressView, QueueAhead, describe, human_duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (45, "45 s"), (60, "1 min"), (150, "2 min 30 s"), (599, "9 min 59 s"), (2954, "49 min"),
    (3600, "1 h"), (4000, "1 h 7 min"), (36 * 60, "36 min"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def _job(status: str, fraction: float = 0.0, stage: str = "", message: str = "", eta: float | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"id": "3f2a9c1e-0000-4000-8000-000000000000", "status": status, **extra,
            "progress": {"fraction": fraction, "stage": stage, "message": message, "eta_seconds": eta}}


def test_describe_says_stage_run_and_time_left() -> None:
    line = describe(_job("running", 0.42, "training", "erm seed 1: epoch 3/20", eta=2954))
    assert line == "3f2a9c1e running 42% training (erm seed 1: epoch 3/20), about 49 min left"
    assert describe(_job("queued")) == "3f2a9c1e queued"
    assert describe(_job("queued", queued_ahead=2, running_jobs=1)) == (
        "3f2a9c1e queued behind 2 of your jobs, 1 of your jobs running")
    assert describe(_job("succeeded", 1.0, "done"), full_id=True).startswith("3f2a9c1e-0000-4000")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_a_line_per_stage_and_run_and_at_least_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    view = ProgressView(out, tty=False, label="demo job", clock=clock)
    view.update(_job("queued"))
    view.update(_job("running", 0.01, "training", "erm seed 0: epoch 1/20"))
    view.update(_job("running", 0.02, "training", "erm seed 0: epoch 2/20"))  # same run, moments later: quiet
    clock.now += LINE_EVERY
    view.update(_job("running", 0.05, "training", "erm seed 0: epoch 5/20"))  # same run, but a while later
    view.update(_job("running", 0.09, "training", "doubleback seed 0: epoch 1/20"))  # another run
    view.update(_job("running", 0.5, "evaluating", "erm seed 0: pgd linf"))
    view.update(_job("succeeded", 1.0, "done", "finished"))
    view.close()
    lines = out.getvalue().splitlines()
    assert [line.split("(")[-1] for line in lines] == [
        "demo job: 3f2a9c1e queued", "erm seed 0: epoch 1/20)", "erm seed 0: epoch 5/20)",
        "doubleback seed 0: epoch 1/20)", "erm seed 0: pgd linf)", "finished)"]
    assert all(line.startswith("demo job: 3f2a9c1e ") for line in lines)


def test_on_a_terminal_a_bar_is_drawn() -> None:
    out = io.StringIO()
    view = ProgressView(out, tty=True, label="demo job")
    view.update(_job("running", 0.3, "training", "erm seed 0: epoch 3/20", eta=150))
    view.close()
    text = out.getvalue()
    assert "demo job: training" in text and "30%" in text and "about 2 min 30 s left" in text


class FakeClient:
    def __init__(self, queued: list[dict[str, Any]], running: int) -> None:
        self.queued, self.running, self.calls = queued, running, 0

    def list_jobs(self, status: str, limit: int) -> dict[str, Any]:
        self.calls += 1
        return {"items": self.queued if status == "queued" else [{}] * self.running}


def test_queue_ahead_counts_ones_earlier_queued_jobs_and_asks_rarely() -> None:
    clock = Clock()
    mine = _job("queued", created_at="2026-01-01T00:00:03")
    client = FakeClient([{"id": "a", "created_at": "2026-01-01T00:00:01"},
                         {"id": "b", "created_at": "2026-01-01T00:00:02"}, mine], running=1)
    ahead = QueueAhead(client, every=10, clock=clock)
    annotated = ahead.annotate(mine)
    assert (annotated["queued_ahead"], annotated["running_jobs"]) == (2, 1)
    ahead.annotate(mine)
    assert client.calls == 2  # one look (queued + running) per 10 s
    assert ahead.annotate(_job("running")) == _job("running")
