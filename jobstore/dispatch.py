"""Fair dispatch: hand waiting jobs to RQ a few at a time, the tenant with the fewest jobs out first.

Jobs wait in per-tenant lines (`tenant:<t>:waiting`, oldest first) until the dispatcher moves one
into the RQ queue. It keeps at most `queue_depth` deliveries pending in RQ; the next waiting job goes
to the tenant that has the fewest jobs handed out (pending or running), the oldest job breaking
ties. So one tenant's twenty long jobs never stand between another tenant and its first job: that
job is next as soon as a worker takes the pending delivery in front of it.

A job's work units (jobstore.units) wait in the same lines and count in the same dispatched sets,
so a tenant's 72-unit compare takes the workers only while nobody else waits: another tenant's
first item goes to the front of the RQ queue (it has nothing out), and the next free worker takes
it. `max_units_in_flight_per_tenant` caps what one tenant has out at once.

Each hand-over is one optimistic transaction (WATCH the lines, the RQ queue and the job, then MULTI):
the job leaves its line, joins its tenant's dispatched set and its RQ job is written and pushed —
RQ's `enqueue_call(pipeline=...)` writes into the same MULTI — or none of it happens. It runs after
every create, finish, release and cancel, when a worker takes a job, and in every reaper pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis

from jobstore.queue import FAILURE_TTL, RESULT_TTL, TASK, job_queue, rq_job_id

if TYPE_CHECKING:
    from jobstore.store import JobStore

log = logging.getLogger(__name__)

MAX_TRIES = 100  # optimistic retries of one hand-over before giving up until the next call
MAX_PER_CALL = 64


def dispatch(store: JobStore) -> list[str]:
    """Hand waiting jobs to RQ until `queue_depth` are pending or none waits; returns their ids."""
    handed: list[str] = []
    while len(handed) < MAX_PER_CALL:
        job_id = _dispatch_one(store)
        if job_id is None:
            break
        handed.append(job_id)
    return handed


def _dispatch_one(store: JobStore) -> str | None:
    keys, settings = store.keys, store.settings
    queue = job_queue(store.rq, settings.queue)
    for _ in range(MAX_TRIES):
        pipe: Any = store.redis.pipeline(transaction=True)
        try:
            pipe.watch(keys.waiting_tenants(), queue.key)
            if pipe.llen(queue.key) >= settings.queue_depth:
                return None
            tenants = sorted(str(t) for t in pipe.smembers(keys.waiting_tenants()))
            if not tenants:
                return None
            pipe.watch(*(keys.tenant_waiting(t) for t in tenants), *(keys.tenant_dispatched(t) for t in tenants))
            best: tuple[int, float, str, str] | None = None
            empty = []
            cap = settings.max_units_in_flight_per_tenant
            for tenant in tenants:
                head = pipe.zrange(keys.tenant_waiting(tenant), 0, 0, withscores=True)
                if not head:
                    empty.append(tenant)
                    continue
                out = int(pipe.scard(keys.tenant_dispatched(tenant)))
                if cap and out >= cap:
                    continue  # its share of the fleet is taken: it waits for one of its own to end
                candidate = (out, float(head[0][1]), tenant, str(head[0][0]))
                best = candidate if best is None or candidate < best else best
            if best is None:
                if empty:
                    pipe.multi()
                    pipe.srem(keys.waiting_tenants(), *empty)
                    pipe.execute()
                return None
            out, _, tenant, job_id = best
            pipe.watch(keys.job(job_id))
            status, delivered = pipe.hmget(keys.job(job_id), "status", "dispatches")
            pipe.multi()
            pipe.zrem(keys.tenant_waiting(tenant), job_id)
            if status != "queued":  # finished or started meanwhile: it should not be in the line
                pipe.execute()
                continue
            delivery = int(delivered or 0) + 1
            pipe.sadd(keys.tenant_dispatched(tenant), job_id)
            pipe.hset(keys.job(job_id), "dispatches", delivery)
            queue.enqueue_call(TASK, args=(job_id,), job_id=rq_job_id(job_id, delivery),
                               timeout=settings.job_timeout_seconds, result_ttl=RESULT_TTL,
                               failure_ttl=FAILURE_TTL, description=f"robustlab job {job_id}", pipeline=pipe,
                               at_front=out == 0)
            pipe.execute()
            log.info("job %s of tenant %s handed to RQ (delivery %d)", job_id, tenant, delivery)
            return job_id
        except redis.WatchError:
            continue
        finally:
            pipe.reset()
    log.warning("dispatch: gave up after %d conflicting tries; the next call continues", MAX_TRIES)
    return None
