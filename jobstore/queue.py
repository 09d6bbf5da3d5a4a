"""Redis connections and the RQ side of the job store: the task's dotted path, queue, job ids.

Torch-free: the API and the workers both use it. RQ carries only the job id (JSON serializer, never
pickle); everything else is in our job record. RQ's own retry is not used: a lost execution is
handed to RQ again by the job store's dispatcher, against the record's own accounting.

Connections retry: a worker-side client (`outage_seconds` > 0) waits out a Redis restart, retrying
each command with a capped backoff, so a progress write or RQ's own bookkeeping pauses instead of
failing the job; the API's client gives up quickly (it answers 503 and the client retries).
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rq import Queue
from rq.serializers import JSONSerializer

from core.settings import Settings

TASK = "worker.tasks.run_job"
RESULT_TTL = 3600
FAILURE_TTL = 7 * 24 * 3600
BACKOFF_CAP = 1.0  # seconds between two tries of a command while Redis is away


def redis_client(url: str, *, decode: bool = True, outage_seconds: float = 0.0) -> redis.Redis:
    """A client that retries a failed command for about `outage_seconds` (at least 2 quick tries)."""
    retries = max(2, int(outage_seconds / BACKOFF_CAP) + 4)
    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=0.05), retries)
    return redis.Redis.from_url(
        url, decode_responses=decode, retry=retry, health_check_interval=30,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], socket_connect_timeout=2.0,
        socket_keepalive=True,
    )


def rq_connection(url: str, *, outage_seconds: float = 0.0) -> redis.Redis:
    """RQ needs bytes responses (decode_responses=False); the job store uses its own client."""
    return redis_client(url, decode=False, outage_seconds=outage_seconds)


def job_queue(connection: redis.Redis, settings: Settings | str) -> Queue:
    name = settings if isinstance(settings, str) else settings.queue
    return Queue(name, connection=connection, serializer=JSONSerializer)


def rq_job_id(job_id: str, delivery: int) -> str:
    """The RQ job id of one delivery; RQ 3 allows only letters, digits, '_' and '-' (no '.')."""
    return f"{job_id}_{delivery}"


def job_id_of(rq_id: str) -> str:
    return rq_id.rsplit("_", 1)[0]


def withdraw(connection: redis.Redis, queue: str, job_id: str, *, delivery: int) -> None:
    """Take a cancelled job's pending delivery out of the RQ queue, so no worker forks just to skip it.

    Only an optimisation: a worker that gets it anyway finds the record cancelled and does nothing.
    """
    job_queue(connection, queue).remove(rq_job_id(job_id, delivery))
