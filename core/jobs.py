"""Jobs as every side names them: kinds, statuses, the request, progress and errors.

Only the shared vocabulary lives here (DESIGN §4: core is shared ground). The stored record, its
Redis keys and the lifecycle that changes it belong to the job store (`jobstore`); the API's
public job model is `service.schemas.Job`.
"""

from __future__ import annotations

from enum import StrEnum

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
