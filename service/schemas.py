"""Response models of the API and the examples its OpenAPI document shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from core.jobs import JobError, JobKind, JobStatus, Progress
from jobstore.records import JobRecord

# A spec small enough to finish in seconds on a CPU: the example of POST /v1/jobs.
EXAMPLE_SPEC: dict[str, Any] = {
    "name": "digits-tiny",
    "dataset": {"name": "digits", "train_size": 200, "test_size": 100, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [16]}},
    # 10 epochs at lr 0.02: ~90 % clean accuracy in a fraction of a second per run, so the example a new user
    # submits first (the dashboard's "Load example") shows a sound model, not a 27 % one that fails checks.
    "training": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 0.02},
    "regularizers": [{"name": "erm", "kind": "none"},
                     {"name": "doubleback", "kind": "double_backprop", "weight": 5.0}],
    "seeds": [0],
    "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.05, 0.1]},
                               {"kind": "pgd", "norm": "linf", "eps": [0.1], "steps": 5}]},
}
EXAMPLE_ID = "5d0c6f3e-8a51-4f7e-9d6b-2f1f0b7c9a11"


def job_links(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "cancel": f"{base}/cancel", "report": f"{base}/report",
            "report.html": f"{base}/report.html", "artifacts": f"{base}/artifacts"}


class JobUnit(BaseModel):
    """One work unit of a job (a training run, or the evaluation of a shard of test samples): what
    one worker process ran, on which worker, when, and how many executions it took."""

    name: str = Field(description="e.g. 'train erm seed 0' or 'evaluate erm seed 0 [0, 500)'")
    kind: Literal["train", "evaluate"]
    status: JobStatus
    worker: str | None = Field(None, description="the worker that ran (or runs) its latest execution")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(0, description="executions started (1 when it never had to be resumed)")


class Job(BaseModel):
    """A job as the API returns it. Built from the stored record field by field: the record's
    internal bookkeeping (fencing token, result prefix, deliveries) never reaches a response."""

    id: str
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
    attempts: int = Field(0, description="executions started so far")
    restarts: int = Field(0, description="executions lost to the infrastructure (a killed worker, a stall) "
                          "and resumed from the last finished epoch")
    cancel_requested: bool = False
    artifacts: list[str] = Field(default_factory=list)
    units: list[JobUnit] = Field(default_factory=list, description="the job's work units, spread over the "
                                 "workers (empty until the job is planned)")
    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, record: JobRecord, units: list[JobRecord] | None = None) -> Job:
        """The public view of a record; with its unit records, `units` and the progress over them."""
        units = units or []
        # a job back in the queue to merge its finished units is, for its user, still running
        status = JobStatus.RUNNING if record.phase == "assemble" and record.status is JobStatus.QUEUED \
            else record.status
        progress = unit_progress(record, units) if units and record.phase == "units" else record.progress
        return cls(id=record.id, kind=record.kind, status=status, spec=record.spec,
                   checkpoint=record.checkpoint, created_at=record.created_at, started_at=record.started_at,
                   finished_at=record.finished_at, updated_at=record.updated_at, progress=progress,
                   error=record.error, attempts=record.attempts, restarts=record.lost,
                   cancel_requested=record.cancel_requested, artifacts=record.artifacts,
                   units=[JobUnit(name=u.work.name, kind=u.work.kind.value, status=u.status, worker=u.worker,
                                  started_at=u.started_at, finished_at=u.finished_at, attempts=u.attempts)
                          for u in units if u.work is not None],
                   links=job_links(record.id))


def unit_progress(record: JobRecord, units: list[JobRecord]) -> Progress:
    """A job's progress from its units': the mean of their fractions (a finished unit counts 1), and
    an ETA from the units already finished (their mean duration × the work left ÷ the units running)."""
    done = [u for u in units if u.status is JobStatus.SUCCEEDED]
    running = [u for u in units if u.status is JobStatus.RUNNING]
    fractions = [1.0 if u.status is JobStatus.SUCCEEDED else u.progress.fraction if u in running else 0.0
                 for u in units]
    left = sum(1.0 - f for f in fractions)
    durations = [(u.finished_at - u.started_at).total_seconds() for u in done if u.finished_at and u.started_at]
    eta = None
    if durations and left > 0:
        eta = round(sum(durations) / len(durations) * left / max(len(running), 1), 1)
    training = any(u.work is not None and u.work.kind.value == "train" and not u.status.finished for u in units)
    message = f"{len(done)}/{len(units)} units done, {len(running)} running"
    if running and running[0].progress.message:
        message += f"; {running[0].progress.message}"
    return Progress(fraction=round(0.98 * sum(fractions) / len(units), 4),
                    stage="training" if training else "evaluating", message=message[:300], eta_seconds=eta)


class JobAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "id": EXAMPLE_ID, "status": "queued", "links": dict(job_links(EXAMPLE_ID))}})

    id: str
    status: JobStatus
    links: dict[str, str]


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null on the last")


class UploadedModel(BaseModel):
    """An uploaded model as the API shows it."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "id": "0b8e1b0c-3f0e-4c55-9a55-6f2d1d2b7e42", "sha256": "9f86d081884c7d659a2feaa0c55ad015...",
        "bytes": 53412, "filename": "cnn.onnx", "format": "onnx", "architecture": None,
        "model": {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10}}})

    id: str
    sha256: str = Field(description="SHA-256 of the stored file, hex (a .pt upload is stored as safetensors)")
    bytes: int
    filename: str
    format: str = Field(description="registry | onnx | timm | torchvision")
    architecture: str | None = Field(description="the registry architecture (registry checkpoints only)")
    model: dict[str, Any] | None = Field(description="the model section the upload was checked with (user formats)")
    parameters: int | None = Field(None, description="tensor elements the model holds once loaded, as measured "
                                   "by the upload check (checked against MAX_MODEL_PARAMETERS)")
    forward_flops: int | None = Field(None, description="FLOPs (2 x multiply-adds) of one sample's forward pass "
                                      "(checked against MAX_FORWARD_FLOPS)")
    flops_source: str | None = Field(None, description="how forward_flops was obtained: graph (counted from the "
                                     "ONNX graph), counted (torch's FLOP counter) or timed (a timed forward pass)")
    created_at: datetime

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(id=record.id, sha256=record.sha256, bytes=record.bytes, filename=record.filename,
                   format=record.format, architecture=record.architecture, model=record.model,
                   parameters=record.parameters, forward_flops=record.forward_flops,
                   flops_source=record.flops_source, created_at=record.created_at)


class ModelCreated(UploadedModel):
    """POST /v1/models: the stored model, plus the SHA-256 and size of the bytes that were sent."""

    uploaded_sha256: str = Field(description="SHA-256 of the uploaded bytes, hex")
    uploaded_bytes: int

    @classmethod
    def created(cls, record: Any, uploaded_sha256: str, uploaded_bytes: int) -> ModelCreated:
        base = UploadedModel.of(record).model_dump()
        return cls(**base, uploaded_sha256=uploaded_sha256, uploaded_bytes=uploaded_bytes)




class UploadedDataset(BaseModel):
    """An uploaded .npz dataset as the API shows it; name it in a spec as {name: upload, id: ...}."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "id": "5d0c7a8e-8f7a-4d2c-9c52-2b8f0b1d6a10", "sha256": "e3b0c44298fc1c149afbf4c8996fb924...",
        "bytes": 230512, "filename": "digits.npz", "train_samples": 1000, "test_samples": 500,
        "sample_shape": [1, 8, 8], "num_classes": 10}})

    id: str
    sha256: str
    bytes: int
    filename: str
    train_samples: int
    test_samples: int
    sample_shape: list[int]
    num_classes: int
    created_at: datetime

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record.model_dump(exclude={"tenant", "dedupe_key"}))


class Artifact(BaseModel):
    name: str
    bytes: int
    url: str


class ArtifactList(BaseModel):
    job: str
    items: list[Artifact]


class CatalogEntry(BaseModel):
    name: str
    description: str
    parameters: list[dict[str, Any]] = Field(description="name, type, default, required, description, bounds")


class Catalog(BaseModel):
    regularizers: list[CatalogEntry]
    attacks: list[CatalogEntry]
    architectures: list[CatalogEntry]
    datasets: list[CatalogEntry]


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict, description="each part checked and what was found")
