"""The watchdog every worker parent runs: lost executions, stalled ones, lost deliveries, retention.

Each pass (every few seconds, in a thread of each worker; one pass at a time across all workers,
by a short Redis lock, and safe anyway because every store transition is atomic and fenced):
1. lost: a RUNNING job whose heartbeat is older than 3 beats + grace lost its execution (the
   worker or its work horse died): released, i.e. queued again to resume from its last epoch.
   Only a poison job (lost again and again without getting further) is failed (JobStore.release).
   Right after Redis itself was unreachable no heartbeat is judged: the silence was Redis's;
2. stalled: a RUNNING job that beats but made no progress for `stall_timeout_seconds` is released
   as `Stalled`; its execution notices at its next heartbeat that it was fenced out and kills
   itself, and its worker is also told to stop it (in case the horse hangs with the GIL held);
3. lost deliveries: a QUEUED job handed to RQ whose RQ job is gone (Redis lost it) waits for
   dispatch again; then waiting jobs are dispatched (jobstore.dispatch);
4. units: a job waiting for its work units is moved along (jobstore.units.advance) in case the
   execution of its last unit died between its fenced finish and passing that on;
5. retention: finished jobs past their retention time lose their record, units and artifacts.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import redis
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from artifactstore import ArtifactStore
from core.jobs import JobError, JobStatus
from core.settings import Settings
from jobstore.queue import rq_job_id
from jobstore.store import JobStore, now
from jobstore.units import advance, forget_units, unit_ids_in, waiting_parents
from jobstore.uploads import UploadStore
from worker.heartbeat import lost_after
from worker.journal import Journal
from worker.upload_retention import expire_uploads

log = logging.getLogger(__name__)

PENDING = {RQStatus.QUEUED, RQStatus.STARTED, RQStatus.DEFERRED, RQStatus.SCHEDULED}


def reap_interval(settings: Settings) -> float:
    return min(5.0, max(0.5, settings.heartbeat_seconds))


class Reaper:
    def __init__(self, settings: Settings, store: JobStore, rq: redis.Redis, journal: Journal,
                 artifacts: ArtifactStore | None = None) -> None:
        self.settings, self.store, self.rq, self.journal = settings, store, rq, journal
        self.artifacts = artifacts
        self.lock_key = f"{settings.key_prefix}reaper:lock"
        self.me = uuid.uuid4().hex
        self.redis_failed_at = 0.0  # monotonic time of the last Redis error this worker saw

    def run_once(self) -> dict[str, list[str]]:
        """One pass; returns what it did ({'lost', 'stalled', 'requeued', 'dispatched', 'deleted'})."""
        done: dict[str, list[str]] = {"lost": [], "stalled": [], "requeued": [], "dispatched": [], "deleted": []}
        interval_ms = int(reap_interval(self.settings) * 900)
        asked = time.monotonic()
        got_lock = self.store.redis.set(self.lock_key, self.me, nx=True, px=interval_ms)
        if time.monotonic() - asked > 1.0:  # the client waited for Redis to come back: it was away
            self.redis_failed_at = time.monotonic()
        if not got_lock:
            return done  # another worker's reaper has this round
        redis_was_away = time.monotonic() - self.redis_failed_at < lost_after(self.settings) + 1.0
        for job_id in self.store.ids_in(JobStatus.RUNNING) + unit_ids_in(self.store, JobStatus.RUNNING):
            self._check_running(job_id, done, judge_silence=not redis_was_away)
        for job_id in self.store.ids_in(JobStatus.QUEUED) + unit_ids_in(self.store, JobStatus.QUEUED):
            self._check_queued(job_id, done)
        for job_id in waiting_parents(self.store):  # a unit's end its own execution could not pass on
            advance(self.store, job_id)
        done["dispatched"] = self.store.dispatch()
        self._retention(done)
        done["deleted"] += expire_uploads(UploadStore(self.store.redis, self.settings.key_prefix), self.artifacts,
                                          self.settings)
        return done

    def _check_running(self, job_id: str, done: dict[str, list[str]], *, judge_silence: bool) -> None:
        record, token = self.store.get(job_id), self.store.execution(job_id)
        if record is None or record.status is not JobStatus.RUNNING or not token:
            return
        t = now()
        beat = self.store.heartbeat_at(job_id) or record.updated_at
        silent = (t - beat).total_seconds()
        idle = (t - record.updated_at).total_seconds()
        if silent > lost_after(self.settings):
            if not judge_silence:
                return
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
                counts: bool = True) -> JobStatus | None:
        """Release one execution (fenced by its token); the store queues the job again unless it is poison."""
        new = self.store.release(job_id, execution=token, reason=reason, max_attempts=self.settings.max_attempts,
                                 counts=counts)
        if new is None:
            return None  # someone else changed it first
        log.warning("job %s: execution %s released (%s: %s) -> %s", job_id, token[:8], reason.type,
                    reason.message, new.value)
        self.journal.event(job_id, "released", execution=token[:8], reason=reason.type, status=new.value)
        if stop:
            self._stop_execution(job_id, token)
        record = self.store.get(job_id)
        if record is not None and record.parent:
            advance(self.store, record.parent)  # a unit failed for good (poison): so does its job
        if new.finished and self.artifacts is not None:  # a poison job (or cancelled): nothing will resume
            try:
                self.artifacts.delete_prefix(f"jobs/{job_id}/resume")
            except OSError as exc:
                log.warning("job %s: could not delete its resume state: %s", job_id, exc)
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
        if record.blocked:
            return  # a unit waiting for the units before it: not in any line, by design
        if job_id in self.store.waiting(record.tenant) or record.dispatches == 0:
            if record.dispatches == 0 and self.store.rewait(job_id):  # not in its line: repair
                pass
            return
        if (now() - record.updated_at).total_seconds() < lost_after(self.settings):
            return  # just released: its delivery may still be on its way
        if self._pending(rq_job_id(job_id, record.dispatches)):
            return
        log.warning("job %s is queued but RQ has no pending job for it: it waits for dispatch again", job_id)
        self.journal.event(job_id, "requeued", reason="no pending RQ job")
        if self.store.rewait(job_id):
            done["requeued"].append(job_id)

    def _pending(self, rq_id: str) -> bool:
        try:
            job = Job.fetch(rq_id, connection=self.rq, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) in PENDING

    def _retention(self, done: dict[str, list[str]]) -> None:
        for job_id in self.store.due_for_retention():
            if self.artifacts is not None:
                try:
                    self.artifacts.delete_prefix(f"jobs/{job_id}")
                except OSError as exc:
                    log.warning("retention: could not delete the artifacts of job %s: %s", job_id, exc)
                    continue
            record = self.store.get(job_id)
            if record is not None:
                forget_units(self.store, record)
            self.store.forget(job_id)
            self.store.redis.zrem(self.store.keys.retention(), job_id)
            done["deleted"].append(job_id)


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
                self.reaper.redis_failed_at = time.monotonic()
                log.warning("reaper: Redis error (%s); trying again in %.1fs", exc, interval)
            except Exception:
                log.exception("reaper pass failed; trying again in %.1fs", interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
