"""Progress of a running job: one fraction over the whole job, throttled writes, resume bookkeeping.

The science reports per run (`ProgressEvent`: epoch, step) and per evaluation stage (a text); the
job record wants one number for the whole job, a stage, a message and an ETA. Writes are throttled
(at most ~2 per second) because every write bumps the record's ETag that pollers watch. A write
that the store refuses means this execution must stop: it was fenced out or cancel was requested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.jobs import Progress
from jobstore.store import JobStore

log = logging.getLogger(__name__)

# Of a compare job's fraction: training; the rest is evaluation and reporting. Measured in the reports
# of docs/results.md, training took 18-40 % of train + evaluation time (the attack sweep, the
# 200-sample audit with every attack alone, Square), so ETAs from a larger share came out far too low.
TRAIN_SHARE = 0.3
MIN_INTERVAL = 0.5  # seconds between two progress writes


class ExecutionStopped(Exception):
    """This execution must stop: it no longer owns the job, or a cancel was requested."""


class ProgressReporter:
    def __init__(self, store: JobStore, job_id: str, token: str, *, runs: list[tuple[str, int]],
                 stage_steps: int, train_share: float = TRAIN_SHARE,
                 on_epoch: Callable[[], object] = lambda: None,
                 on_event: Callable[..., None] = lambda kind, **data: None) -> None:
        self.store, self.job_id, self.token = store, job_id, token
        self.runs = runs  # training order: (regularizer name, seed)
        self.stage_steps = max(stage_steps, 1)  # evaluation stage messages per run
        self.train_share = train_share if runs else 0.0
        self.on_epoch = on_epoch  # a training epoch (or run) finished: sync the resume state
        self.on_event = on_event  # journal entries (e.g. which epoch a run resumed from)
        self.fraction = 0.0
        self._started = time.monotonic()
        self._start_fraction: float | None = None
        self._last_write = 0.0
        self._epochs: dict[tuple[str, int], int] = {}
        self._stage_calls = 0

    # ------------------------------------------------------------------ writing
    def report(self, stage: str, message: str, fraction: float | None = None, *, force: bool = False) -> None:
        if fraction is not None:
            self.fraction = min(max(fraction, self.fraction), 1.0)  # never goes backwards
        if self._start_fraction is None:
            self._start_fraction = self.fraction
        t = time.monotonic()
        if not force and t - self._last_write < MIN_INTERVAL:
            return
        self._last_write = t
        progress = Progress(fraction=round(self.fraction, 4), stage=stage, message=message[:300],
                            eta_seconds=self._eta())
        if not self.store.progress(self.job_id, self.token, progress):
            raise ExecutionStopped(f"job {self.job_id}: this execution was fenced out or cancelled")

    def _eta(self) -> float | None:
        done = self.fraction - (self._start_fraction or 0.0)
        if done < 0.01 or self.fraction >= 1.0:
            return None
        elapsed = time.monotonic() - self._started
        return round(elapsed / done * (1.0 - self.fraction), 1)

    # ------------------------------------------------------------------ the science's callbacks
    def run_progress(self, name: str, seed: int) -> Callable[[Any], None]:
        """compare's `run_progress`: called when a run starts training (skipped for finished runs)."""
        index = self.runs.index((name, seed)) if (name, seed) in self.runs else 0
        self.on_epoch()  # the previous run's checkpoint is written: mirror it
        key = (name, seed)

        def on_step(event: Any) -> None:  # models.training.loop.ProgressEvent
            last = self._epochs.get(key)
            if last is None:
                if event.epoch > 1:
                    log.info("%s seed %d resumes after epoch %d of %d", name, seed, event.epoch - 1, event.epochs)
                self.on_event("run_started", run=f"{name}-seed{seed}", first_epoch=event.epoch, epochs=event.epochs)
            elif event.epoch != last:
                self.on_epoch()  # the previous epoch's state was saved just before this step
            self._epochs[key] = event.epoch
            fraction = self.train_share * (index + event.fraction) / len(self.runs)
            self.report("training", f"{name} seed {seed}: epoch {event.epoch}/{event.epochs}", fraction,
                        force=last is None)

        return on_step

    def stage(self, text: str) -> None:
        """compare's and evaluate's `stage` callback: evaluation steps, e.g. 'erm seed 0: pgd linf ...'."""
        if self._stage_calls == 0:
            self.on_epoch()  # training is over: mirror the last run's checkpoint
        self._stage_calls += 1
        total = self.stage_steps * max(len(self.runs), 1)
        share = 0.98 - self.train_share
        self.report("evaluating", text, self.train_share + share * min(self._stage_calls / total, 1.0))
