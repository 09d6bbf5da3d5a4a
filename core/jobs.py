"""Jobs as the API, the workers and the dashboard see them: request, record, progress, Redis keys.

The record is ours, not RQ's: RQ only carries the job id to a worker (DESIGN §5). A record lives in
one Redis hash; every change bumps `rev`, which is the ETag of GET /v1/jobs/{id}.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.specs.experiment import ExperimentSpec


class JobKind(StrEnum):
    COMPARE = "compare"  # train every regularizer × seed of the spec, evaluate, report
    EVALUATE = "evaluate"  # evaluate an uploaded checkpoint with the spec's dataset and evaluation


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobRequest(BaseModel):
    """POST /v1/jobs. `checkpoint` (an id from POST /v1/checkpoints) is required for `evaluate`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: JobKind
    spec: ExperimentSpec
    checkpoint: str | None = Field(default=None, description="id of an uploaded checkpoint (evaluate jobs)")

    @model_validator(mode="after")
    def _checkpoint_matches_kind(self) -> JobRequest:
        if self.kind is JobKind.EVALUATE and not self.checkpoint:
            raise ValueError("an evaluate job needs `checkpoint`: the id that POST /v1/checkpoints returned")
        if self.kind is JobKind.COMPARE and self.checkpoint:
            raise ValueError("a compare job trains its own models: drop `checkpoint` (or use kind 'evaluate')")
        return self


class Progress(BaseModel):
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    stage: str = "queued"  # queued | training | evaluating | reporting | done
    message: str = ""
    eta_seconds: float | None = None


class JobError(BaseModel):
    type: str  # e.g. SpecError, CheckpointError, Timeout, Stalled, WorkerLost, Cancelled
    message: str


class JobRecord(BaseModel):
    """One job as stored (minus the internal fencing token) and as returned by the API."""

    id: str
    tenant: str
    kind: JobKind
    status: JobStatus
    spec: dict[str, Any]
    checkpoint: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    progress: Progress = Field(default_factory=Progress)
    error: JobError | None = None
    attempts: int = 0  # executions started so far
    cancel_requested: bool = False
    artifacts: list[str] = Field(default_factory=list)  # names under result_prefix
    # Where the winning execution published its files (jobs/<id>/result-<token>): set by the fenced
    # finish, so files a superseded execution wrote elsewhere are never served.
    result_prefix: str | None = None
    rev: int = 0  # bumped by every change: the ETag


class CheckpointRecord(BaseModel):
    id: str
    tenant: str
    sha256: str
    bytes: int
    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    filename: str
    created_at: datetime


class Keys:
    """Every Redis key robustlab writes, under one prefix (so an ACL user can be limited to it)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set of the tenant's job ids, scored by creation time (ms): listing and pagination."""
        return f"{self.prefix}tenant:{tenant}:jobs"

    def tenant_active(self, tenant: str) -> str:
        """Set of the tenant's queued or running job ids: the quota."""
        return f"{self.prefix}tenant:{tenant}:active"

    def status_set(self, status: JobStatus) -> str:
        """Set of all job ids in one status: metrics and the reaper."""
        return f"{self.prefix}status:{status.value}"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}idem:{tenant}:{key}"

    def checkpoint(self, checkpoint_id: str) -> str:
        return f"{self.prefix}checkpoint:{checkpoint_id}"

    def durations(self) -> str:
        """List of finished jobs' run durations in seconds (bounded), for /metrics."""
        return f"{self.prefix}durations"

    def worker_heartbeat(self, name: str) -> str:
        return f"{self.prefix}worker:{name}"

    def workers(self) -> str:
        return f"{self.prefix}workers"
