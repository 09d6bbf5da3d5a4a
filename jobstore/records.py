"""What the job store keeps in Redis: the stored job and checkpoint records and every key name.

These are internal: a record holds the fencing bookkeeping (who runs it, where its result lives,
how many deliveries it had) that the API never shows. The public job model is `service.schemas.Job`.
A record lives in one Redis hash; every change bumps `rev`, the ETag of GET /v1/jobs/{id}.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.jobs import JobError, JobKind, JobStatus, Progress, UnitWork


class JobRecord(BaseModel):
    """One job as stored (minus the fencing token, which is read on its own)."""

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
    attempts: int = 0  # executions started so far (whatever ended them)
    lost: int = 0  # executions lost to infrastructure (worker or process killed, stall, shutdown)
    deaths_here: int = 0  # consecutive losses without getting past the point of the previous one
    death_fraction: float = -1.0  # progress at the last loss (-1: none yet)
    dispatches: int = 0  # RQ deliveries created; the RQ job id of the latest is `<id>_<dispatches>`
    sequence: int = 0  # creation order within the store: list order, cursors, fair dispatch
    cancel_requested: bool = False
    artifacts: list[str] = Field(default_factory=list)  # names under result_prefix
    # Where the winning execution published its files (jobs/<id>/result-<token>): set by the fenced
    # finish, so files a superseded execution wrote elsewhere are never served.
    result_prefix: str | None = None
    rev: int = 0  # bumped by every change: the ETag
    # Work units (DESIGN §5). A job's first execution plans its units and hands them to the queue;
    # the job then waits in phase "units" (running, owned by no execution) until they succeeded,
    # and goes back to the queue once more, in phase "assemble", to merge them into its report.
    units: list[str] = Field(default_factory=list)  # the unit records' ids, in plan order
    phase: str = ""  # "" (to plan) | "units" | "assemble"
    # A unit's own record: a job record with its parent's id and what it computes. It is dispatched,
    # started, fenced, heart-beaten, released and resumed like a job, but stays out of the
    # tenant's job list and job quota.
    parent: str | None = None
    work: UnitWork | None = None
    blocked: bool = False  # waits for the units named in work.after before it joins the queue
    worker: str | None = None  # the worker of the latest execution


class CheckpointRecord(BaseModel):
    """An uploaded model file (kept under the historical name: /v1/checkpoints came first)."""

    id: str
    tenant: str
    sha256: str  # of the file as stored (a .pt upload is stored converted to safetensors)
    bytes: int
    architecture: str | None = None  # registry architecture; None for onnx / timm / torchvision
    params: dict[str, Any] = Field(default_factory=dict)
    filename: str
    created_at: datetime
    format: str = "registry"  # registry | onnx | timm | torchvision
    model: dict[str, Any] | None = None  # the spec's model section the upload was checked with
    upload_sha256: str | None = None  # of the bytes the user sent, when the stored file differs
    # What the upload checker measured (models.sources.measure): checked against the tenant's limits at
    # upload and read by the job cost estimate at submit. None on records older than the measurement.
    parameters: int | None = None  # tensor elements held once loaded (stride tricks materialized)
    forward_flops: int | None = None  # one sample's forward, 2 x multiply-adds
    flops_source: str | None = None  # graph (counted from the ONNX graph) | counted (torch) | timed
    dedupe_key: str | None = None  # sha256 of the uploaded bytes and the declaration: a repeat returns this id


class DatasetRecord(BaseModel):
    """An uploaded .npz dataset, checked by the upload checker."""

    id: str
    tenant: str
    sha256: str
    bytes: int
    filename: str
    created_at: datetime
    train_samples: int
    test_samples: int
    sample_shape: list[int]
    num_classes: int
    dedupe_key: str | None = None  # sha256 of the uploaded bytes and num_classes: a repeat returns this id


class Keys:
    """Every Redis key robustlab writes, under one prefix (so an ACL user can be limited to it)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set of the tenant's job ids, scored by creation sequence: listing and pagination."""
        return f"{self.prefix}tenant:{tenant}:jobs"

    def tenant_active(self, tenant: str) -> str:
        """Set of the tenant's queued or running job ids: the quota."""
        return f"{self.prefix}tenant:{tenant}:active"

    def tenant_waiting(self, tenant: str) -> str:
        """Sorted set (by sequence) of the tenant's queued jobs not handed to RQ yet: fair dispatch."""
        return f"{self.prefix}tenant:{tenant}:waiting"

    def tenant_dispatched(self, tenant: str) -> str:
        """Set of the tenant's jobs in the RQ queue or running: its share of the workers."""
        return f"{self.prefix}tenant:{tenant}:dispatched"

    def waiting_tenants(self) -> str:
        return f"{self.prefix}waiting-tenants"

    def status_set(self, status: JobStatus) -> str:
        """Set of all job ids in one status: metrics and the reaper."""
        return f"{self.prefix}status:{status.value}"

    def unit_status_set(self, status: JobStatus) -> str:
        """Set of all unit ids in one status: the reaper and the units metrics."""
        return f"{self.prefix}unit-status:{status.value}"

    def retention(self) -> str:
        """Sorted set of finished job ids scored by the time (epoch seconds) they may be deleted."""
        return f"{self.prefix}retention"

    def sequence(self) -> str:
        return f"{self.prefix}sequence"

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
