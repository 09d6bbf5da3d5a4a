"""Who runs a job now, and what each execution did: a small worker-side journal in Redis.

Two keys per job, next to the job record (same prefix) and outside it, so the record's schema and
ETag stay the API's business:
- `<prefix>job:<id>:execution` (hash): the execution that started last: fencing token, RQ job id,
  worker name, pid, attempt, start time. The worker parent reads it after its work horse exits,
  and the reaper uses it to tell the right worker to stop a stalled execution.
- `<prefix>job:<id>:events` (list of JSON objects): started, resumed (which epoch each run
  continued from), restored, duplicate delivery skipped, released, finished. Tests read it to prove
  that a retried job did not redo finished epochs; operators read it to see what happened.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

EVENTS_KEPT = 200


class Journal:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis: Any = client  # decode_responses=True client (see JobStore)
        self.prefix = prefix

    def _current_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:execution"

    def _events_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:events"

    def begin(self, job_id: str, *, token: str, rq_job: str, worker: str, attempt: int) -> None:
        import os

        info = {"token": token, "rq_job": rq_job, "worker": worker, "pid": str(os.getpid()),
                "attempt": str(attempt), "started": f"{time.time():.3f}"}
        self.redis.hset(self._current_key(job_id), mapping=info)

    def _fused_key(self, rq_job: str) -> str:
        return f"{self.prefix}rq:{rq_job}:fused"

    def fused(self, rq_job: str, job_id: str) -> None:
        """An execution that one RQ delivery ran after the job it named (a job's first unit after its
        plan, its assembly after its last unit): the worker parent settles these too."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self._fused_key(rq_job), job_id)
        pipe.expire(self._fused_key(rq_job), 7 * 24 * 3600)
        pipe.execute()

    def fused_with(self, rq_job: str) -> list[str]:
        return [str(i) for i in self.redis.lrange(self._fused_key(rq_job), 0, -1)]

    def current(self, job_id: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(self._current_key(job_id))
        return {str(k): str(v) for k, v in raw.items()} if raw else None

    def event(self, job_id: str, kind: str, **data: Any) -> None:
        entry = json.dumps({"at": round(time.time(), 3), "event": kind, **data}, default=str)
        key = self._events_key(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, entry)
        pipe.ltrim(key, -EVENTS_KEPT, -1)
        pipe.execute()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(self._events_key(job_id), 0, -1)]
