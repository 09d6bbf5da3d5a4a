"""Response models of the API and the examples its OpenAPI document shows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.jobs import JobRecord, JobStatus

# A spec small enough to finish in seconds on a CPU: the example of POST /v1/jobs.
EXAMPLE_SPEC: dict[str, Any] = {
    "name": "digits-tiny",
    "dataset": {"name": "digits", "train_size": 200, "test_size": 100, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [16]}},
    "training": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.001},
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


class Job(JobRecord):
    """A job as the API returns it: the record plus links to what can be done with it."""

    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, record: JobRecord) -> Job:
        return cls(**dict(record), links=job_links(record.id))


class JobAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "id": EXAMPLE_ID, "status": "queued", "links": dict(job_links(EXAMPLE_ID))}})

    id: str
    status: JobStatus
    links: dict[str, str]


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null on the last")


class CheckpointCreated(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "id": "0b8e1b0c-3f0e-4c55-9a55-6f2d1d2b7e42", "sha256": "9f86d081884c7d659a2feaa0c55ad015...",
        "bytes": 53412, "architecture": "mlp"}})

    id: str
    sha256: str = Field(description="SHA-256 of the uploaded bytes, hex")
    bytes: int
    architecture: str


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
