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


class UnitKind(StrEnum):
    TRAIN = "train"  # one training run: a regularizer and a seed
    EVALUATE = "evaluate"  # the attacks on one shard of a model's test samples


class UnitWork(BaseModel):
    """What one work unit of a job computes (DESIGN §5): the planner writes it, a worker runs it.

    A job is spread over units that any worker takes from the shared queue; the job assembles its
    report once the last one succeeded. Units name the units they need first in `after`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # unique within the job: "train erm seed 0", "evaluate erm seed 0 [0, 500)"
    kind: UnitKind
    run: str = ""  # the regularizer's name (compare jobs)
    seed: int = 0
    start: int = 0  # evaluate units: test samples [start, stop)
    stop: int = 0
    finish: bool = False  # an evaluate unit holding all of a model's samples also runs its checks
    after: list[str] = Field(default_factory=list)  # names of the units that must succeed first


class Progress(BaseModel):
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    stage: str = "queued"  # queued | training | evaluating | reporting | done
    message: str = ""
    eta_seconds: float | None = None


class JobError(BaseModel):
    type: str  # e.g. SpecError, CheckpointError, Timeout, Stalled, WorkerLost, Cancelled
    message: str
