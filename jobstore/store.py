"""The job lifecycle: one state machine over records in Redis, each transition one atomic script.

    create ──> queued ──dispatch──> (RQ) ──start──> running ──finish──> succeeded | failed | cancelled
                 ^                                     │
                 └──────────── release (lost) ─────────┘   (poison: lost again and again at one point → failed)

- `create` checks the idempotency key, the tenant's quotas, writes the record and puts the job in its
  tenant's waiting line, in one Lua script: 30 identical requests with one key make one job, and a
  quota cannot be overrun by concurrent requests. `dispatch` (jobstore.dispatch) then hands waiting
  jobs to RQ fairly between tenants, in one WATCH/MULTI transaction with RQ's own writes.
- every change after that is guarded by two conditions: the job's current status is one the change
  may start from (a finished job never changes again), and result fencing (DESIGN §5): an
  execution changes a running job only while the record's `execution` token is the one it got from
  `start`. A duplicate or superseded execution is refused and leaves the record alone.
- the status sets, the tenant's active, waiting and dispatched sets and the retention index move in
  the same script, so metrics, quotas and scheduling never disagree with the records.
- `release` tells losses apart from failures: an execution lost to the infrastructure (worker or
  process killed, stall, shutdown, Redis away) queues the job again to resume; only repeated losses
  without getting past the previous loss's progress (a poison job) fail it. The job's own errors
  fail it at once (worker.runner).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from core.jobs import ACTIVE_STATUSES, JobError, JobRequest, JobStatus, Progress, UnitWork
from core.settings import Settings
from jobstore import scripts
from jobstore.records import CheckpointRecord, JobRecord, Keys

ALL = ",".join(s.value for s in JobStatus)
ACTIVE = ",".join(s.value for s in ACTIVE_STATUSES)
DURATIONS_KEPT = 1000
EXPIRY_GRACE = 7 * 24 * 3600  # a finished record expires by itself this long after its retention time
PROGRESS_EPSILON = 1e-4
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # uuid4, as create makes them


class QuotaExceeded(Exception):
    """The tenant already has as many queued or running jobs as it may."""


class StoredJobsExceeded(Exception):
    """The tenant keeps as many job records as it may (finished ones count until retention deletes them)."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


def now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat()


def request_fingerprint(request: JobRequest) -> str:
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


class JobStore:
    """`client` must decode responses; `rq` (bytes) is the connection RQ deliveries are written with."""

    def __init__(self, client: redis.Redis, prefix: str = "robustlab:", *, settings: Settings | None = None,
                 rq: redis.Redis | None = None) -> None:
        # Any: redis-py types every command as "result or Awaitable[result]" (sync and asyncio share
        # the stubs), which mypy cannot narrow; this is the sync client.
        self.redis: Any = client
        self.keys = Keys(prefix)
        self.settings = settings or Settings(key_prefix=prefix)
        if rq is None:
            kwargs = {**client.connection_pool.connection_kwargs, "decode_responses": False}
            rq = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))
        self.rq: Any = rq
        self._create = client.register_script(scripts.CREATE)
        self._transition = client.register_script(scripts.TRANSITION)
        self._rewait = client.register_script(scripts.REWAIT)
        self._forget = client.register_script(scripts.FORGET)

    # ---------------------------------------------------------------- create and read
    def create(self, tenant: str, request: JobRequest, *, max_active: int, idempotency_key: str | None = None,
               idempotency_ttl: int = 24 * 3600, max_stored: int | None = None,
               dispatch: bool = True) -> tuple[JobRecord, bool]:
        """A new queued job; (record, True). With a known Idempotency-Key: (the earlier job, False)."""
        fingerprint = request_fingerprint(request)
        job_id = str(uuid.uuid4())
        created = now()
        record = JobRecord(id=job_id, tenant=tenant, kind=request.kind, status=JobStatus.QUEUED,
                           spec=request.spec.model_dump(mode="json"), checkpoint=request.checkpoint,
                           created_at=created, updated_at=created)
        k = self.keys
        idem = k.idempotency(tenant, idempotency_key) if idempotency_key is not None else k.idempotency(tenant, "-")
        args: list[Any] = [job_id, fingerprint, idempotency_ttl, max_active,
                           max_stored or self.settings.max_stored_jobs_per_tenant, tenant,
                           "1" if idempotency_key is not None else "0", k.prefix]
        for name, value in (self._fields(record) | {"execution": ""}).items():
            args += [name, value]
        outcome, found = self._create(keys=[idem, k.tenant_active(tenant), k.tenant_jobs(tenant), k.sequence(),
                                            k.job(job_id), k.status_set(JobStatus.QUEUED),
                                            k.tenant_waiting(tenant), k.waiting_tenants()], args=args)
        if outcome == "conflict":
            raise IdempotencyConflict(idempotency_key)
        if outcome == "quota":
            raise QuotaExceeded(tenant)
        if outcome == "stored":
            raise StoredJobsExceeded(tenant)
        if outcome == "existing":
            earlier = self.get(str(found), tenant)
            if earlier is not None:
                return earlier, False
        if dispatch:
            self.dispatch()
        return self.get(job_id) or record, True

    def dispatch(self) -> list[str]:
        """Hand waiting jobs to RQ, fairly between tenants (see jobstore.dispatch)."""
        from jobstore.dispatch import dispatch

        return dispatch(self)

    def get(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """The record; None when it does not exist, (with tenant) belongs to another tenant, or the id
        is not a job id at all (`<id>:events` names another key: never read as a record)."""
        if not JOB_ID.match(job_id):
            return None
        raw = self.redis.hgetall(self.keys.job(job_id))
        if not raw or "id" not in raw:
            return None
        record = self._record(raw)
        return None if tenant is not None and record.tenant != tenant else record

    def execution(self, job_id: str) -> str | None:
        """The fencing token of the execution that owns the job now ('' or None: nobody)."""
        value = self.redis.hget(self.keys.job(job_id), "execution")
        return str(value) if value else None

    def list_jobs(self, tenant: str, *, status: JobStatus | None = None, cursor: str | None = None,
                  limit: int = 50, max_bytes: int | None = None) -> tuple[list[JobRecord], str | None]:
        """The tenant's jobs, newest first; the cursor is the last page's oldest sequence number.

        A page ends at `limit` records or once its records' specs add up to `max_bytes`."""
        key = self.keys.tenant_jobs(tenant)
        top: str = f"({int(cursor)}" if cursor else "+inf"
        out: list[JobRecord] = []
        size = 0
        budget = max_bytes or self.settings.max_list_page_bytes
        while len(out) < limit:
            page = self.redis.zrevrangebyscore(key, top, "-inf", start=0, num=limit, withscores=True)
            if not page:
                return out, None
            for job_id, score in page:
                record = self.get(str(job_id), tenant)
                top = f"({int(score)}"
                if record is None or (status is not None and record.status is not status):
                    continue
                cost = len(json.dumps(record.spec)) + 1024
                if out and size + cost > budget:
                    return out, str(out[-1].sequence)
                out.append(record)
                size += cost
                if len(out) == limit:
                    more = self.redis.zcount(key, "-inf", top) > 0
                    return out, (str(int(score)) if more else None)
        return out, None

    def ids_in(self, status: JobStatus) -> list[str]:
        return sorted(str(i) for i in self.redis.smembers(self.keys.status_set(status)))

    def count_by_status(self) -> dict[JobStatus, int]:
        return {s: int(self.redis.scard(self.keys.status_set(s))) for s in JobStatus}

    def waiting_for_dispatch(self) -> int:
        """Queued jobs of every tenant not yet handed to RQ (fair dispatch holds them back)."""
        tenants = [str(t) for t in self.redis.smembers(self.keys.waiting_tenants())]
        return sum(int(self.redis.zcard(self.keys.tenant_waiting(t))) for t in tenants)

    def waiting(self, tenant: str) -> list[str]:
        return [str(i) for i in self.redis.zrange(self.keys.tenant_waiting(tenant), 0, -1)]

    def live_workers(self, queue: str) -> list[str]:
        """Workers on `queue` whose presence key (renewed every few seconds, expiring ~10 s after the
        last renewal) still exists. RQ's own registry keeps a SIGKILLed worker for minutes."""
        alive = []
        for name in sorted(str(n) for n in self.redis.smembers(self.keys.workers())):
            raw = self.redis.get(self.keys.worker_heartbeat(name))
            if raw is None:
                self.redis.srem(self.keys.workers(), name)  # expired: it died without saying goodbye
            elif json.loads(raw).get("queue") == queue:
                alive.append(name)
        return alive

    def durations(self) -> list[float]:
        return [float(d) for d in self.redis.lrange(self.keys.durations(), 0, -1)]

    # ---------------------------------------------------------------- transitions
    def _apply(self, job_id: str, *, execution: str, allowed: str, status: JobStatus | None,
               fields: dict[str, Any]) -> tuple[bool, JobStatus | None]:
        ttl = (self.settings.cancelled_job_ttl_seconds if status is JobStatus.CANCELLED
               else self.settings.job_ttl_seconds)
        args: list[Any] = [self.keys.prefix, execution, allowed, status.value if status else "",
                           int(time.time()) + ttl, ttl + EXPIRY_GRACE]
        for name, value in fields.items():
            args += [name, value]
        result = self._transition(keys=[self.keys.job(job_id)], args=args)
        if result[0] == -1:
            return False, None
        return result[0] == 1, JobStatus(str(result[1]))

    def start(self, job_id: str, worker: str = "") -> str | None:
        """Take ownership of a queued (or abandoned running) job: a new fencing token, or None.

        A running job can be taken over: that happens when its execution was lost (worker killed)
        and the job was delivered again; from now on the old execution's writes are refused.
        """
        token = uuid.uuid4().hex
        t = _iso(now())
        record = self.get(job_id)
        if record is None or record.cancel_requested:
            return None
        # the execution that merges a job's finished units into its report is not another attempt at the job
        attempt = 0 if record.phase == "assemble" else 1
        fields: dict[str, Any] = {"execution": token, "+attempts": attempt, "updated_at": t, "heartbeat_at": t}
        if worker:
            fields["worker"] = worker
        if record.started_at is None:
            fields["started_at"] = t
        done, _ = self._apply(job_id, execution="*", allowed=ACTIVE, status=JobStatus.RUNNING, fields=fields)
        return token if done else None

    def progress(self, job_id: str, execution: str, progress: Progress) -> bool:
        """Record progress (and a heartbeat). False: this execution no longer owns the job, or it was cancelled."""
        t = _iso(now())
        done, _ = self._apply(job_id, execution=execution, allowed=JobStatus.RUNNING.value, status=None,
                              fields={"progress": progress.model_dump_json(), "updated_at": t, "heartbeat_at": t})
        return done and not self.cancel_requested(job_id)

    def heartbeat(self, job_id: str, execution: str) -> bool:
        """Proof of life without a progress change; does not bump `rev` (pollers see no change)."""
        key = self.keys.job(job_id)
        if self.execution(job_id) != execution:
            return False
        self.redis.hset(key, "heartbeat_at", _iso(now()))
        return True

    def heartbeat_at(self, job_id: str) -> datetime | None:
        value = self.redis.hget(self.keys.job(job_id), "heartbeat_at")
        return datetime.fromisoformat(str(value)) if value else None

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.hget(self.keys.job(job_id), "cancel_requested") == "1")

    def finish(self, job_id: str, execution: str, status: JobStatus, *, error: JobError | None = None,
               artifacts: Iterable[str] = (), progress: Progress | None = None,
               result_prefix: str | None = None) -> bool:
        """The execution that owns the running job ends it; refused (False) for anyone else."""
        record = self.get(job_id)
        t = now()
        fields: dict[str, Any] = {"finished_at": _iso(t), "updated_at": _iso(t), "execution": "",
                                  "artifacts": json.dumps(sorted(artifacts))}
        # no error: clear the one a lost earlier execution left (a retried job that succeeded shows none)
        fields["error"] = error.model_dump_json() if error is not None else ""
        if progress is not None:
            fields["progress"] = progress.model_dump_json()
        if result_prefix is not None:
            fields["result_prefix"] = result_prefix
        done, _ = self._apply(job_id, execution=execution, allowed=JobStatus.RUNNING.value, status=status,
                              fields=fields)
        if done and record is not None and record.started_at is not None:
            self.redis.lpush(self.keys.durations(), (t - record.started_at).total_seconds())
            self.redis.ltrim(self.keys.durations(), 0, DURATIONS_KEPT - 1)
        if done:
            self.dispatch()  # its tenant's place is free: the next job may go
        return done

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """A queued job is cancelled at once; a running one is flagged for its execution to stop.
        A job waiting for its units (owned by no execution) is cancelled at once with all its units."""
        record = self.get(job_id)
        if record is not None and record.units and record.status is JobStatus.RUNNING and record.phase == "units":
            from jobstore.units import cancel_units

            return cancel_units(self, record)
        t = _iso(now())
        cancelled = JobError(type="Cancelled", message="cancelled by request").model_dump_json()
        done, _ = self._apply(job_id, execution="*", allowed=JobStatus.QUEUED.value, status=JobStatus.CANCELLED,
                              fields={"cancel_requested": "1", "finished_at": t, "updated_at": t, "error": cancelled})
        if not done:
            self._apply(job_id, execution="*", allowed=JobStatus.RUNNING.value, status=None,
                        fields={"cancel_requested": "1", "updated_at": t})
        return self.get(job_id)

    def release(self, job_id: str, *, execution: str = "*", reason: JobError, max_attempts: int,
                counts: bool = True) -> JobStatus | None:
        """An execution was lost (worker died, stalled, shut down): queue the job again to resume.

        The job fails for good only as a poison job: `max_attempts` losses in a row, each without
        getting past the progress of the one before. `counts=False` (a warm shutdown) never counts.
        Returns the new status, or None when the execution no longer owned the job."""
        record = self.get(job_id)
        if record is None or record.status is not JobStatus.RUNNING:
            return None
        t = _iso(now())
        point = record.progress.fraction
        deaths = record.deaths_here
        if counts:
            deaths = deaths + 1 if point <= record.death_fraction + PROGRESS_EPSILON else 1
        if record.cancel_requested:
            new = JobStatus.CANCELLED
        elif deaths >= max_attempts:
            new = JobStatus.FAILED
        else:
            new = JobStatus.QUEUED
        fields: dict[str, Any] = {"execution": "", "updated_at": t, "error": reason.model_dump_json(),
                                  "+lost": 1, "deaths_here": deaths,
                                  "death_fraction": max(point, record.death_fraction) if counts else
                                  record.death_fraction}
        if new.finished:
            fields["finished_at"] = t
        if new is JobStatus.FAILED:
            fields["error"] = JobError(type="Poison", message=f"{reason.message}; the job was lost {deaths} times "
                                       f"in a row at the same point ({point:.0%} done, "
                                       f"{record.progress.message or record.progress.stage!r}): given up"
                                       ).model_dump_json()
        done, _ = self._apply(job_id, execution=execution, allowed=JobStatus.RUNNING.value, status=new, fields=fields)
        if done:
            self.dispatch()
        return new if done else None

    def rewait(self, job_id: str) -> bool:
        """A queued job whose RQ delivery was lost waits for dispatch again."""
        return bool(self._rewait(keys=[self.keys.job(job_id)], args=[self.keys.prefix]))

    def forget(self, job_id: str) -> bool:
        """Retention: delete a finished job's record (its artifacts are the caller's business)."""
        return bool(self._forget(keys=[self.keys.job(job_id)], args=[self.keys.prefix]))

    def due_for_retention(self, limit: int = 100) -> list[str]:
        return [str(i) for i in self.redis.zrangebyscore(self.keys.retention(), "-inf", time.time(), 0, limit)]

    # ---------------------------------------------------------------- checkpoints
    def add_checkpoint(self, record: CheckpointRecord) -> None:
        self.redis.set(self.keys.checkpoint(record.id), record.model_dump_json())

    def get_checkpoint(self, checkpoint_id: str, tenant: str | None = None) -> CheckpointRecord | None:
        raw = self.redis.get(self.keys.checkpoint(checkpoint_id))
        if raw is None:
            return None
        record = CheckpointRecord.model_validate_json(raw)
        return None if tenant is not None and record.tenant != tenant else record

    # ---------------------------------------------------------------- encoding
    @staticmethod
    def _fields(record: JobRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": record.id, "tenant": record.tenant, "kind": record.kind.value, "status": record.status.value,
            "spec": json.dumps(record.spec), "checkpoint": record.checkpoint or "",
            "created_at": _iso(record.created_at), "updated_at": _iso(record.updated_at),
            "progress": record.progress.model_dump_json(), "attempts": record.attempts,
            "cancel_requested": "1" if record.cancel_requested else "0",
            "artifacts": json.dumps(record.artifacts), "rev": record.rev,
        }
        if record.parent:
            out |= {"parent": record.parent, "work": record.work.model_dump_json() if record.work else "",
                    "blocked": "1" if record.blocked else "0", "sequence": record.sequence}
        return out

    @staticmethod
    def _record(raw: dict[Any, Any]) -> JobRecord:
        def opt_time(name: str) -> datetime | None:
            return datetime.fromisoformat(raw[name]) if raw.get(name) else None

        return JobRecord(
            id=raw["id"], tenant=raw["tenant"], kind=raw["kind"], status=raw["status"],
            spec=json.loads(raw["spec"]), checkpoint=raw.get("checkpoint") or None,
            created_at=datetime.fromisoformat(raw["created_at"]), started_at=opt_time("started_at"),
            finished_at=opt_time("finished_at"), updated_at=datetime.fromisoformat(raw["updated_at"]),
            progress=Progress.model_validate_json(raw["progress"]),
            error=JobError.model_validate_json(raw["error"]) if raw.get("error") else None,
            attempts=int(raw.get("attempts", 0)), lost=int(raw.get("lost", 0)),
            deaths_here=int(raw.get("deaths_here", 0)), death_fraction=float(raw.get("death_fraction", -1.0)),
            dispatches=int(raw.get("dispatches", 0)), sequence=int(float(raw.get("sequence", 0))),
            cancel_requested=raw.get("cancel_requested") == "1",
            artifacts=json.loads(raw.get("artifacts") or "[]"), rev=int(raw.get("rev", 0)),
            result_prefix=raw.get("result_prefix") or None,
            units=json.loads(raw.get("units") or "[]"), phase=raw.get("phase") or "",
            parent=raw.get("parent") or None,
            work=UnitWork.model_validate_json(raw["work"]) if raw.get("work") else None,
            blocked=raw.get("blocked") == "1", worker=raw.get("worker") or None,
        )
