"""The watchdog every worker parent runs: lost executions, stalled ones, and queued jobs RQ forgot.

Each pass (every few seconds, in a thread of each worker; one pass at a time across all workers,
by a short Redis lock, and safe anyway because every store transition is atomic and fenced):
1. lost: a RUNNING job whose heartbeat is older than 3 beats + grace lost its execution (the
   worker or its work horse died): released, i.e. queued again, or failed for good once it used
   `max_attempts` executions (a poison job);
2. stalled: a RUNNING job that beats but made no progress for `stall_timeout_seconds` is released
   as `Stalled`; its execution notices at its next heartbeat that it was fenced out and kills
   itself, and its worker is also told to stop it (in case the horse hangs with the GIL held);
3. orphaned: a QUEUED job without a pending RQ job (the API died between create and enqueue, or
   Redis lost the entry) is enqueued again, so nothing the service accepted is lost.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import redis
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from core.job_store import JobStore, now
from core.jobs import JobError, JobStatus
from core.settings import Settings
from worker.heartbeat import lost_after
from worker.journal import Journal
from worker.queue import enqueue, rq_job_id

log = logging.getLogger(__name__)

PENDING = {RQStatus.QUEUED, RQStatus.STARTED, RQStatus.DEFERRED, RQStatus.SCHEDULED}


def reap_interval(settings: Settings) -> float:
    return min(5.0, max(0.5, settings.heartbeat_seconds))


class Reaper:
    def __init__(self, settings: Settings, store: JobStore, rq: redis.Redis, journal: Journal) -> None:
        self.settings, self.store, self.rq, self.journal = settings, store, rq, journal
        self.lock_key = f"{settings.key_prefix}reaper:lock"
        self.me = uuid.uuid4().hex

    def run_once(self) -> dict[str, list[str]]:
        """One pass; returns what it did ({'lost': [...], 'stalled': [...], 'requeued': [...]})."""
        done: dict[str, list[str]] = {"lost": [], "stalled": [], "requeued": []}
        interval_ms = int(reap_interval(self.settings) * 900)
        if not self.store.redis.set(self.lock_key, self.me, nx=True, px=interval_ms):
            return done  # another worker's reaper has this round
        for job_id in self.store.ids_in(JobStatus.RUNNING):
            self._check_running(job_id, done)
        for job_id in self.store.ids_in(JobStatus.QUEUED):
            self._check_queued(job_id, done)
        return done

    def _check_running(self, job_id: str, done: dict[str, list[str]]) -> None:
        record, token = self.store.get(job_id), self.store.execution(job_id)
        if record is None or record.status is not JobStatus.RUNNING or not token:
            return
        t = now()
        beat = self.store.heartbeat_at(job_id) or record.updated_at
        silent = (t - beat).total_seconds()
        idle = (t - record.updated_at).total_seconds()
        if silent > lost_after(self.settings):
            reason = JobError(type="WorkerLost", message=f"no heartbeat for {silent:.0f}s: the worker or "
                              "its job process died")
            if self.release(job_id, token, reason, stop=True):
                done["lost"].append(job_id)
        elif idle > self.settings.stall_timeout_seconds:
            reason = JobError(type="Stalled", message=f"no progress for {idle:.0f}s (stall timeout "
                              f"{self.settings.stall_timeout_seconds}s, ROBUSTLAB_STALL_TIMEOUT_SECONDS)")
            if self.release(job_id, token, reason, stop=True):
                done["stalled"].append(job_id)

    def release(self, job_id: str, token: str, reason: JobError, *, stop: bool = False,
                max_attempts: int | None = None) -> JobStatus | None:
        """Release one execution (fenced by its token) and queue the job again if it may be retried."""
        record = self.store.get(job_id)
        if record is None:
            return None
        attempts = self.settings.max_attempts if max_attempts is None else max_attempts
        new = self.store.release(job_id, execution=token, reason=reason, max_attempts=attempts)
        if new is None:
            return None  # someone else changed it first
        log.warning("job %s: execution %s released (%s: %s) -> %s", job_id, token[:8], reason.type,
                    reason.message, new.value)
        self.journal.event(job_id, "released", execution=token[:8], reason=reason.type, status=new.value)
        if stop:
            self._stop_execution(job_id, token)
        if new is JobStatus.QUEUED:
            enqueue(self.rq, self.settings, job_id, attempt=record.attempts)
        return new

    def _stop_execution(self, job_id: str, token: str) -> None:
        """Tell the worker running a released execution to kill its horse (if it is still there)."""
        info = self.journal.current(job_id)
        if not info or info.get("token") != token or not info.get("rq_job"):
            return
        try:
            send_stop_job_command(self.rq, info["rq_job"], serializer=JSONSerializer)
        except (NoSuchJobError, InvalidJobOperation, redis.RedisError) as exc:
            log.debug("job %s: no worker to stop (%s)", job_id, exc)

    def _check_queued(self, job_id: str, done: dict[str, list[str]]) -> None:
        record = self.store.get(job_id)
        if record is None or record.status is not JobStatus.QUEUED or record.cancel_requested:
            return
        if (now() - record.updated_at).total_seconds() < lost_after(self.settings):
            return  # just created or released: its enqueue may still be on its way
        if self._pending(rq_job_id(job_id, record.attempts)):
            return
        log.warning("job %s is queued but RQ has no pending job for it: enqueueing it again", job_id)
        self.journal.event(job_id, "requeued", reason="no pending RQ job")
        enqueue(self.rq, self.settings, job_id, attempt=record.attempts)
        done["requeued"].append(job_id)

    def _pending(self, rq_job_id: str) -> bool:
        try:
            job = Job.fetch(rq_job_id, connection=self.rq, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) in PENDING


class ReaperThread(threading.Thread):
    """Runs the reaper (and `on_tick`, e.g. the worker's presence key) until stopped."""

    def __init__(self, reaper: Reaper, on_tick: Any = None) -> None:
        super().__init__(name="reaper", daemon=True)
        self.reaper, self.on_tick = reaper, on_tick
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = reap_interval(self.reaper.settings)
        while not self.stopping.wait(interval):
            try:
                if self.on_tick is not None:
                    self.on_tick()
                self.reaper.run_once()
            except redis.RedisError as exc:
                log.warning("reaper: Redis error (%s); trying again in %.1fs", exc, interval)
            except Exception:
                log.exception("reaper pass failed; trying again in %.1fs", interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
