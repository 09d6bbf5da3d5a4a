"""A job's work units: planned once, queued through fair dispatch, merged when the last one succeeded.

    job queued ──(its 1st execution plans)──> running, phase "units" (owned by no execution)
       units: queued (blocked until the units in `after` succeeded) ──> running ──> succeeded
    every unit succeeded ──> job queued, phase "assemble" ──(an execution merges)──> succeeded
    a unit failed ──> job failed (the error names the unit), its other units cancelled

Units are job records with a `parent` (jobstore.records.JobRecord): the same lifecycle scripts
dispatch, start, fence, heartbeat, release and resume them, so a unit lost with its worker resumes
on another from its last checkpoint, and a finished one never runs again. They stay out of the
tenant's job list and quota, and count in its dispatched set: fair dispatch and the per-tenant cap
on units in flight see them. Plans and merges run on RQ and Redis alone: no scheduler process.
After every unit's end its execution calls `advance`; each reaper pass calls it too, for the case
where that execution died between its fenced finish and the call.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from core.jobs import JobError, JobStatus, Progress, UnitWork
from jobstore import scripts
from jobstore.records import JobRecord

if TYPE_CHECKING:
    from jobstore.store import JobStore

log = logging.getLogger(__name__)

# A unit's place in its tenant's line: job sequence + ROUND × (its index in the plan + 1). Jobs not
# yet planned (score = their sequence) come first, then the tenant's jobs take turns: the first
# unit of every job before the second unit of any, and so on, so a small job submitted while a big
# compare of the same tenant runs (the demo of `robustlab up`) starts at once instead of waiting
# for the compare's 72 units. ROUND exceeds any gap between the sequences of jobs alive together.
ROUND = 1e9


def plan(store: JobStore, record: JobRecord, token: str, works: list[UnitWork]) -> list[str] | None:
    """Create the job's units and hand the job over to them, in one transaction; the execution `token`
    must still own the running job (and no cancel be requested). Returns the unit ids, or None."""
    names = [w.name for w in works]
    if len(set(names)) != len(names):
        raise ValueError(f"unit names repeat within job {record.id}: {names}")
    ids = {w.name: str(uuid.uuid4()) for w in works}
    k = store.keys
    created = datetime.now(record.created_at.tzinfo).isoformat()
    pipe: Any = store.redis.pipeline(transaction=True)
    try:
        pipe.watch(k.job(record.id))
        execution, status, cancel = pipe.hmget(k.job(record.id), "execution", "status", "cancel_requested")
        if execution != token or status != JobStatus.RUNNING.value or cancel == "1":
            return None
        pipe.multi()
        for index, work in enumerate(works):
            unit = JobRecord(id=ids[work.name], tenant=record.tenant, kind=record.kind, status=JobStatus.QUEUED,
                             spec=record.spec, checkpoint=record.checkpoint, created_at=record.created_at,
                             updated_at=record.created_at, parent=record.id, work=work, blocked=bool(work.after),
                             progress=Progress(stage="queued", message=work.name))
            fields = store._fields(unit) | {"execution": "", "created_at": created, "updated_at": created,
                                            "sequence": repr(float(record.sequence + ROUND * (index + 1)))}
            pipe.hset(k.job(unit.id), mapping=fields)
            pipe.sadd(k.unit_status_set(JobStatus.QUEUED), unit.id)
            if not work.after:
                pipe.zadd(k.tenant_waiting(record.tenant), {unit.id: float(fields["sequence"])})
        pipe.sadd(k.waiting_tenants(), record.tenant)
        pipe.hset(k.job(record.id), mapping={"units": json.dumps([ids[n] for n in names]), "phase": "units",
                                             "execution": "", "updated_at": created})
        pipe.hincrby(k.job(record.id), "rev", 1)
        pipe.srem(k.tenant_dispatched(record.tenant), record.id)  # its units hold the tenant's places now
        pipe.execute()
    except redis.WatchError:
        return None
    finally:
        pipe.reset()
    store.dispatch()
    return [ids[n] for n in names]


def units_of(store: JobStore, record: JobRecord) -> list[JobRecord]:
    """The job's unit records that still exist, in plan order (one round trip to Redis)."""
    if not record.units:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for unit_id in record.units:
        pipe.hgetall(store.keys.job(unit_id))
    found = [store._record(raw) for raw in pipe.execute() if raw and "id" in raw]
    return [u for u in found if u.parent == record.id]


def advance(store: JobStore, parent_id: str) -> str:
    """Move a job waiting for its units along: queue the units whose predecessors all succeeded, fail
    the job when a unit failed, queue it for assembly when every unit succeeded. Idempotent."""
    record = store.get(parent_id)
    if record is None or record.status is not JobStatus.RUNNING or record.phase != "units":
        return "nothing"
    units = units_of(store, record)
    if len(units) != len(record.units):
        return _fail(store, record, units, JobError(type="UnitLost", message="a unit record of this job is gone"))
    broken = next((u for u in units if u.status in (JobStatus.FAILED, JobStatus.CANCELLED)), None)
    if broken is not None:
        cause = broken.error or JobError(type=broken.status.value.title(), message="")
        name = broken.work.name if broken.work else broken.id
        return _fail(store, record, units, JobError(type=cause.type, message=f"unit {name!r} {broken.status.value}: "
                                                     f"{cause.message}"))
    done = {u.work.name for u in units if u.work and u.status is JobStatus.SUCCEEDED}
    if len(done) == len(units):
        progress = Progress(fraction=0.99, stage="reporting", message="merging the units into the report")
        queued, _ = store._apply(parent_id, execution="", allowed=JobStatus.RUNNING.value, status=JobStatus.QUEUED,
                                 fields={"phase": "assemble", "progress": progress.model_dump_json(),
                                         "updated_at": datetime.now(record.created_at.tzinfo).isoformat()})
        if queued:
            store.dispatch()
        return "assemble" if queued else "nothing"
    unblock = store.redis.register_script(scripts.UNBLOCK)
    released = 0
    for unit in units:
        if unit.blocked and unit.work is not None and all(name in done for name in unit.work.after):
            released += int(unblock(keys=[store.keys.job(unit.id)], args=[store.keys.prefix]))
    if released:
        store.dispatch()
    return "released" if released else "waiting"


def _fail(store: JobStore, record: JobRecord, units: list[JobRecord], error: JobError) -> str:
    t = datetime.now(record.created_at.tzinfo).isoformat()
    done, _ = store._apply(record.id, execution="", allowed=JobStatus.RUNNING.value, status=JobStatus.FAILED,
                           fields={"finished_at": t, "updated_at": t, "error": error.model_dump_json()})
    if done:
        log.warning("job %s failed: %s: %s", record.id, error.type, error.message)
        _stop_units(store, units)
        store.dispatch()
    return "failed" if done else "nothing"


def _stop_units(store: JobStore, units: list[JobRecord]) -> None:
    for unit in units:
        if not unit.status.finished:
            store.request_cancel(unit.id)


def cancel_units(store: JobStore, record: JobRecord) -> JobRecord | None:
    """Cancel a job waiting for its units: the job at once, queued units at once, running units
    flagged (their heartbeat thread stops them within about one beat)."""
    t = datetime.now(record.created_at.tzinfo).isoformat()
    error = JobError(type="Cancelled", message="cancelled by request")
    store._apply(record.id, execution="", allowed=JobStatus.RUNNING.value, status=JobStatus.CANCELLED,
                 fields={"cancel_requested": "1", "finished_at": t, "updated_at": t,
                         "error": error.model_dump_json()})
    _stop_units(store, units_of(store, record))
    store.dispatch()
    return store.get(record.id)


def waiting_parents(store: JobStore) -> list[str]:
    """Running jobs in phase "units" (the reaper advances them in case a unit's execution could not)."""
    out = []
    for job_id in store.ids_in(JobStatus.RUNNING):
        if store.redis.hget(store.keys.job(job_id), "phase") == "units":
            out.append(job_id)
    return out


def unit_ids_in(store: JobStore, status: JobStatus) -> list[str]:
    return sorted(str(i) for i in store.redis.smembers(store.keys.unit_status_set(status)))


def units_by_tenant(store: JobStore) -> dict[tuple[str, str], int]:
    """(tenant, status) -> units queued or running: the /metrics gauge."""
    counts: dict[tuple[str, str], int] = {}
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        for unit_id in unit_ids_in(store, status):
            tenant = store.redis.hget(store.keys.job(unit_id), "tenant")
            if tenant:
                counts[str(tenant), status.value] = counts.get((str(tenant), status.value), 0) + 1
    return counts


def forget_units(store: JobStore, record: JobRecord) -> None:
    """Retention of a finished job: its unit records go with it."""
    for unit_id in record.units:
        store.forget(unit_id)
