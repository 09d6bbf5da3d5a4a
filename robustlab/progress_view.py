"""Showing a job's progress in a terminal or a log: a live bar on a TTY, a line per stage otherwise.

`robustlab submit --wait` and `robustlab up --demo` both follow a job by polling the API
(`RobustlabClient.wait`, at most a few seconds apart) and hand each new state to a `ProgressView`:

- on a terminal, a rich progress bar (stage, percentage, elapsed time, the run being trained or
  attacked, the time left) redrawn a few times a second;
- otherwise (CI logs, `| tee`, a file), one line whenever the stage or the run changes, and at
  least every `LINE_EVERY` seconds while the job moves, so a log never goes silent for minutes.

Times are written for people: "about 4 min left", never "about 2954s left".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from service.client import ClientError

LINE_EVERY = 15.0  # seconds: a line at least this often (when anything changed) without a terminal


def human_duration(seconds: float) -> str:
    """45 → '45 s', 150 → '2 min 30 s', 2954 → '49 min', 4000 → '1 h 7 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 10:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def eta_text(job: dict[str, Any]) -> str:
    """'about 4 min left', or '' when the job has no estimate yet."""
    eta = (job.get("progress") or {}).get("eta_seconds")
    if eta is None or job.get("status") != "running":
        return ""
    return f"about {human_duration(float(eta))} left"


def queue_text(job: dict[str, Any]) -> str:
    """'queued behind 2 of your jobs (1 running)' / 'queued' — from `QueueAhead.annotate`."""
    ahead, running = job.get("queued_ahead"), job.get("running_jobs")
    if job.get("status") != "queued" or ahead is None:
        return str(job.get("status", ""))
    busy = f", {running} of your jobs running" if running else ""
    if ahead == 0:
        return f"queued, next of your jobs to start{busy}" if running else "queued, waiting for a free worker"
    return f"queued behind {ahead} of your jobs{busy}"


class QueueAhead:
    """How many of the caller's jobs a queued job waits behind, from the public job list (at most one
    look every `every` seconds). Other keys' jobs are not visible to a caller and share the workers
    fairly, so only one's own are counted."""

    def __init__(self, client: Any, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.every, self.clock = client, every, clock
        self._last = -float("inf")
        self._counts: tuple[int, int] | None = None

    def annotate(self, job: dict[str, Any]) -> dict[str, Any]:
        if job.get("status") != "queued":
            return job
        if self.clock() - self._last >= self.every:
            self._last = self.clock()
            try:
                queued = self.client.list_jobs(status="queued", limit=100)["items"]
                running = self.client.list_jobs(status="running", limit=100)["items"]
                mine = str(job.get("created_at") or "")
                ahead = sum(1 for j in queued if j.get("id") != job.get("id") and str(j.get("created_at")) < mine)
                self._counts = (ahead, len(running))
            except (ClientError, KeyError, TypeError):  # a count is a nicety: it never ends the wait
                self._counts = None
        if self._counts is None:
            return job
        return {**job, "queued_ahead": self._counts[0], "running_jobs": self._counts[1]}


def _run_of(message: str) -> str:
    """The run a progress message is about ('erm seed 0: epoch 3/20' → 'erm seed 0')."""
    return message.split(":", 1)[0] if ":" in message else message


def describe(job: dict[str, Any], *, full_id: bool = False) -> str:
    """One line: '3f2a9c1e running 42% training (erm seed 1: epoch 3/20), about 4 min left'."""
    progress = job.get("progress") or {}
    ident = str(job.get("id", ""))
    head = f"{ident if full_id else ident[:8]} {queue_text(job)}"
    if job.get("status") == "queued":
        return head
    line = f"{head} {100 * float(progress.get('fraction') or 0.0):.0f}%"
    stage = progress.get("stage")
    if stage and stage != job.get("status"):
        line += f" {stage}"
    if progress.get("message"):
        line += f" ({progress['message']})"
    eta = eta_text(job)
    return f"{line}, {eta}" if eta else line


class ProgressView:
    """Feed it every new job state (`update`); `close()` when the job has finished."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, label: str = "",
                 emit: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.label = label  # e.g. "demo job": put before every line
        self.emit = emit or self._write
        self.clock = clock
        self._last_key: tuple[str, str, str] | None = None
        self._last_line = ""
        self._last_time = -float("inf")
        self._bar: Progress | None = None
        self._task: Any = None
        self._width, self._bar_width = 80, 20

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _start_bar(self) -> Progress:
        console = Console(file=self.stream, force_terminal=True)
        self._width = console.width
        # On a narrow terminal the bar is shorter and the elapsed time goes: the time left and the
        # stage matter more; the message is cut to what is left of the line.
        self._bar_width = 20 if self._width >= 100 else 10
        columns: list[Any] = [TextColumn("{task.description}"), BarColumn(bar_width=self._bar_width),
                              TaskProgressColumn()]
        if self._width >= 110:
            columns.append(TimeElapsedColumn())
        columns += [TextColumn("{task.fields[eta]}"), TextColumn("[dim]{task.fields[message]}")]
        bar = Progress(*columns, console=console, transient=False, refresh_per_second=4)
        bar.start()
        self._task = bar.add_task(self.label or "job", total=1.0, message="", eta="")
        return bar

    def update(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        if self.tty:
            if self._bar is None:
                self._bar = self._start_bar()
            stage = progress.get("stage") if job.get("status") == "running" else queue_text(job)
            name = f"{self.label}: {stage}" if self.label else str(stage)
            eta = eta_text(job)
            used = len(name) + self._bar_width + 5 + len(eta) + 4 + (8 if self._width >= 110 else 0)
            room = max(0, self._width - used - 1)
            message = str(progress.get("message") or "")
            if len(message) > room:
                message = message[: max(0, room - 1)] + "…" if room > 1 else ""
            self._bar.update(self._task, completed=float(progress.get("fraction") or 0.0), description=name,
                             message=message, eta=eta)
            return
        key = (str(job.get("status")), str(progress.get("stage")), _run_of(str(progress.get("message") or "")))
        line = describe(job)
        now = self.clock()
        if key != self._last_key or (line != self._last_line and now - self._last_time >= LINE_EVERY):
            self._last_key, self._last_line, self._last_time = key, line, now
            self.emit(f"{self.label}: {line}" if self.label else line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
