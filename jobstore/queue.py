"""Handing a job id to RQ: the one place that knows the task's dotted path and queue options.

Torch-free: the API imports it to enqueue. RQ carries only the job id (JSON serializer, never
pickle); everything else is in our job record. RQ's own retry is not used: a lost or failed
execution is requeued by `worker.reaper` against our record's attempt count, so every path that
retries counts the same attempts.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from core.settings import Settings

TASK = "worker.tasks.run_job"


def rq_connection(url: str) -> redis.Redis:
    """RQ needs bytes responses (decode_responses=False); the job store uses its own client."""
    return redis.Redis.from_url(url)


def job_queue(connection: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue, connection=connection, serializer=JSONSerializer)


def rq_job_id(job_id: str, attempt: int) -> str:
    """The RQ job id of one execution; RQ 3 allows only letters, digits, '_' and '-' (no '.')."""
    return f"{job_id}_{attempt}"


def enqueue(connection: redis.Redis, settings: Settings, job_id: str, *, attempt: int = 0) -> None:
    """Queue one execution of job_id; the RQ job id is unique per attempt so a re-delivery is explicit."""
    job_queue(connection, settings).enqueue_call(
        TASK, args=(job_id,), job_id=rq_job_id(job_id, attempt), timeout=settings.job_timeout_seconds,
        result_ttl=3600, failure_ttl=7 * 24 * 3600, description=f"robustlab job {job_id}",
    )


def withdraw(connection: redis.Redis, settings: Settings, job_id: str, *, attempt: int) -> None:
    """Take a cancelled job's pending execution out of the queue, so no worker forks just to skip it.

    Only an optimisation: a worker that gets it anyway finds the record cancelled and does nothing.
    """
    job_queue(connection, settings).remove(rq_job_id(job_id, attempt))
