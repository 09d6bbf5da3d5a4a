"""Job and checkpoint records in Redis, shared by the API (create, read, cancel) and the workers.

Every state change is one Lua script run atomically in Redis, guarded by two conditions:
- the job's current status is one the change may start from (a finished job never changes again);
- result fencing (DESIGN §5): an execution changes a running job only while it owns it, i.e. while
  the record's `execution` token is the one it got from `start`. A duplicate or superseded
  execution is refused and leaves the record alone.
The status sets (one per status) and the per-tenant active set move in the same script, so metrics
and quotas never disagree with the records. This module talks to Redis but never to RQ.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from core.jobs import (
    ACTIVE_STATUSES,
    CheckpointRecord,
    JobError,
    JobKind,
    JobRecord,
    JobRequest,
    JobStatus,
    Keys,
    Progress,
)

# KEYS[1] job hash. ARGV[1] key prefix, ARGV[2] required execution ('*': any), ARGV[3] statuses the
# change may start from (comma-separated), ARGV[4] new status ('' keeps it), then field/value pairs;
# a field written '+name' is incremented by its value. Returns {1, status} done, {0, status} refused,
# {-1} no such job.
_TRANSITION = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'execution', 'tenant')
if not cur[1] then return {-1} end
if ARGV[2] ~= '*' and cur[2] ~= ARGV[2] then return {0, cur[1]} end
if not string.find(',' .. ARGV[3] .. ',', ',' .. cur[1] .. ',', 1, true) then return {0, cur[1]} end
for i = 5, #ARGV, 2 do
  local field = ARGV[i]
  if string.sub(field, 1, 1) == '+' then
    redis.call('HINCRBY', KEYS[1], string.sub(field, 2), tonumber(ARGV[i + 1]))
  else
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
  end
end
redis.call('HINCRBY', KEYS[1], 'rev', 1)
local new = ARGV[4]
if new ~= '' and new ~= cur[1] then
  redis.call('SMOVE', ARGV[1] .. 'status:' .. cur[1], ARGV[1] .. 'status:' .. new, redis.call('HGET', KEYS[1], 'id'))
  redis.call('HSET', KEYS[1], 'status', new)
  local active = ARGV[1] .. 'tenant:' .. cur[3] .. ':active'
  if new == 'queued' or new == 'running' then
    redis.call('SADD', active, redis.call('HGET', KEYS[1], 'id'))
  else
    redis.call('SREM', active, redis.call('HGET', KEYS[1], 'id'))
  end
  return {1, new}
end
return {1, cur[1]}
"""

ALL = ",".join(s.value for s in JobStatus)
ACTIVE = ",".join(s.value for s in ACTIVE_STATUSES)
DURATIONS_KEPT = 1000


class QuotaExceeded(Exception):
    """The tenant already has as many queued or running jobs as it may."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


def now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat()


def request_fingerprint(request: JobRequest) -> str:
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


class JobStore:
    def __init__(self, client: redis.Redis, prefix: str = "robustlab:") -> None:
        # Any: redis-py types every command as "result or Awaitable[result]" (sync and asyncio share
        # the stubs), which mypy cannot narrow; this is the sync client.
        self.redis: Any = client
        self.keys = Keys(prefix)
        self._transition = client.register_script(_TRANSITION)

    # ---------------------------------------------------------------- create and read
    def create(self, tenant: str, request: JobRequest, *, max_active: int, idempotency_key: str | None = None,
               idempotency_ttl: int = 24 * 3600) -> tuple[JobRecord, bool]:
        """A new queued job; (record, True). With a known Idempotency-Key: (the earlier job, False)."""
        fingerprint = request_fingerprint(request)
        job_id = str(uuid.uuid4())
        if idempotency_key is not None:
            key = self.keys.idempotency(tenant, idempotency_key)
            if not self.redis.set(key, f"{job_id} {fingerprint}", nx=True, ex=idempotency_ttl):
                earlier_id, earlier_fingerprint = str(self.redis.get(key) or " ").split(" ", 1)
                if earlier_fingerprint != fingerprint:
                    raise IdempotencyConflict(idempotency_key)
                earlier = self.get(earlier_id, tenant)
                if earlier is not None:
                    return earlier, False
        if self.redis.scard(self.keys.tenant_active(tenant)) >= max_active:
            if idempotency_key is not None:
                self.redis.delete(self.keys.idempotency(tenant, idempotency_key))
            raise QuotaExceeded(tenant)
        created = now()
        record = JobRecord(id=job_id, tenant=tenant, kind=request.kind, status=JobStatus.QUEUED,
                           spec=request.spec.model_dump(mode="json"), checkpoint=request.checkpoint,
                           created_at=created, updated_at=created)
        sequence = self.redis.incr(f"{self.keys.prefix}sequence")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.job(job_id), mapping=self._fields(record) | {"execution": "", "sequence": sequence})
        pipe.zadd(self.keys.tenant_jobs(tenant), {job_id: sequence})
        pipe.sadd(self.keys.tenant_active(tenant), job_id)
        pipe.sadd(self.keys.status_set(JobStatus.QUEUED), job_id)
        pipe.execute()
        return record, True

    def get(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """The record; None when it does not exist or (with tenant) belongs to another tenant."""
        raw = self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        record = self._record(raw)
        return None if tenant is not None and record.tenant != tenant else record

    def execution(self, job_id: str) -> str | None:
        """The fencing token of the execution that owns the job now ('' or None: nobody)."""
        value = self.redis.hget(self.keys.job(job_id), "execution")
        return str(value) if value else None

    def list_jobs(self, tenant: str, *, status: JobStatus | None = None, cursor: str | None = None,
             limit: int = 50) -> tuple[list[JobRecord], str | None]:
        """The tenant's jobs, newest first; the cursor is the last page's oldest sequence number."""
        key = self.keys.tenant_jobs(tenant)
        top: str = f"({int(cursor)}" if cursor else "+inf"
        out: list[JobRecord] = []
        while len(out) < limit:
            page = self.redis.zrevrangebyscore(key, top, "-inf", start=0, num=limit, withscores=True)
            if not page:
                return out, None
            for job_id, score in page:
                record = self.get(str(job_id), tenant)
                top = f"({int(score)}"
                if record is not None and (status is None or record.status is status):
                    out.append(record)
                    if len(out) == limit:
                        more = self.redis.zcount(key, "-inf", top) > 0
                        return out, (str(int(score)) if more else None)
        return out, None

    def ids_in(self, status: JobStatus) -> list[str]:
        return sorted(str(i) for i in self.redis.smembers(self.keys.status_set(status)))

    def count_by_status(self) -> dict[JobStatus, int]:
        return {s: int(self.redis.scard(self.keys.status_set(s))) for s in JobStatus}

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
        args: list[Any] = [self.keys.prefix, execution, allowed, status.value if status else ""]
        for name, value in fields.items():
            args += [name, value]
        result = self._transition(keys=[self.keys.job(job_id)], args=args)
        if result[0] == -1:
            return False, None
        return result[0] == 1, JobStatus(str(result[1]))

    def start(self, job_id: str) -> str | None:
        """Take ownership of a queued (or abandoned running) job: a new fencing token, or None.

        A running job can be taken over: that happens when its execution was lost (worker killed)
        and the job was delivered again; from now on the old execution's writes are refused.
        """
        token = uuid.uuid4().hex
        t = _iso(now())
        record = self.get(job_id)
        if record is None or record.cancel_requested:
            return None
        fields: dict[str, Any] = {"execution": token, "+attempts": 1, "updated_at": t, "heartbeat_at": t}
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
        return done

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """A queued job is cancelled at once; a running one is flagged for its execution to stop."""
        t = _iso(now())
        cancelled = JobError(type="Cancelled", message="cancelled by request").model_dump_json()
        done, _ = self._apply(job_id, execution="*", allowed=JobStatus.QUEUED.value, status=JobStatus.CANCELLED,
                              fields={"cancel_requested": "1", "finished_at": t, "updated_at": t, "error": cancelled})
        if not done:
            self._apply(job_id, execution="*", allowed=JobStatus.RUNNING.value, status=None,
                        fields={"cancel_requested": "1", "updated_at": t})
        return self.get(job_id)

    def release(self, job_id: str, *, execution: str = "*", reason: JobError, max_attempts: int) -> JobStatus | None:
        """An execution was lost (worker died, stalled, timed out): queue the job again, or fail it
        for good once it has used max_attempts executions (a poison job). Returns the new status."""
        record = self.get(job_id)
        if record is None or record.status is not JobStatus.RUNNING:
            return None
        t = _iso(now())
        if record.cancel_requested:
            new = JobStatus.CANCELLED
        elif record.attempts >= max_attempts:
            new = JobStatus.FAILED
        else:
            new = JobStatus.QUEUED
        fields: dict[str, Any] = {"execution": "", "updated_at": t, "error": reason.model_dump_json()}
        if new.finished:
            fields["finished_at"] = t
        if new is JobStatus.FAILED:
            fields["error"] = JobError(type=reason.type, message=f"{reason.message} (gave up after "
                                       f"{record.attempts} attempts)").model_dump_json()
        done, _ = self._apply(job_id, execution=execution, allowed=JobStatus.RUNNING.value, status=new, fields=fields)
        return new if done else None

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
        return out

    @staticmethod
    def _record(raw: dict[Any, Any]) -> JobRecord:
        def opt_time(name: str) -> datetime | None:
            return datetime.fromisoformat(raw[name]) if raw.get(name) else None

        return JobRecord(
            id=raw["id"], tenant=raw["tenant"], kind=JobKind(raw["kind"]), status=JobStatus(raw["status"]),
            spec=json.loads(raw["spec"]), checkpoint=raw.get("checkpoint") or None,
            created_at=datetime.fromisoformat(raw["created_at"]), started_at=opt_time("started_at"),
            finished_at=opt_time("finished_at"), updated_at=datetime.fromisoformat(raw["updated_at"]),
            progress=Progress.model_validate_json(raw["progress"]),
            error=JobError.model_validate_json(raw["error"]) if raw.get("error") else None,
            attempts=int(raw.get("attempts", 0)), cancel_requested=raw.get("cancel_requested") == "1",
            artifacts=json.loads(raw.get("artifacts") or "[]"), rev=int(raw.get("rev", 0)),
            result_prefix=raw.get("result_prefix") or None,
        )
