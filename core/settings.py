"""The one place configuration comes from: environment variables (prefix ROBUSTLAB_) and defaults.

`get_settings()` is cached so that every part of a process sees the same values; tests change the
environment and call `get_settings.cache_clear()`. REDIS_URL is read without the prefix too, since
that is the name every Redis deployment already uses.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
MODEL_LIMITS = ("max_model_parameters", "max_forward_flops")  # per tenant, like max_job_*


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBUSTLAB_", extra="ignore", frozen=True)

    # Redis: unset means "start an embedded one" for `robustlab up`; library code requires it.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("ROBUSTLAB_REDIS_URL", "REDIS_URL"))
    key_prefix: str = "robustlab:"  # every key we write starts with it (an ACL user can be limited to it)
    queue: str = "robustlab"  # the RQ queue of this worker pool

    # Where things live: job work directories and, unless artifact_store says otherwise, artifacts.
    data_dir: Path = Path("robustlab-data")
    artifact_store: str | None = None  # a directory or an fsspec URL (s3://bucket/prefix); default data_dir/artifacts

    # API keys: "tenantA:key1,tenantB:key2" and/or a file with one "tenant:key" per line.
    api_keys: str = ""
    api_keys_file: Path | None = None

    max_upload_bytes: int = Field(default=256 * MiB, gt=0)
    # Upload checker (a child process per upload): how many at once, how many may wait, its limits.
    max_concurrent_checks: int = Field(default=2, ge=1)
    max_waiting_checks: int = Field(default=8, ge=0)  # past this many waiting uploads: 429 with Retry-After
    max_checks_per_tenant: int = Field(default=2, ge=1)  # one tenant's checks running or waiting at once
    check_memory_mb: int = Field(default=3072, ge=256)  # address-space limit of a checker process
    # CPU time of one check: imports and loading take a few seconds; a graph that computes for longer
    # (one whose cost cannot be counted from its structure) is refused (benchmarks/upload_limits.py)
    check_cpu_seconds: int = Field(default=20, ge=1)
    check_wall_seconds: int = Field(default=120, ge=1)  # a check running (not waiting) longer is stopped: 503
    max_dataset_samples: int = Field(default=200_000, gt=0)  # train + test samples of one uploaded dataset
    # Stored uploads (models and datasets together) per tenant, and how long one is kept after its last use.
    max_stored_uploads_per_tenant: int = Field(default=100, gt=0)
    max_stored_upload_bytes_per_tenant: int = Field(default=4 * 1024 * MiB, gt=0)
    upload_ttl_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    # Request bounds enforced by the HTTP server itself (service.http_server): request line + headers.
    max_request_head_bytes: int = Field(default=64 * 1024, ge=4096)
    max_queued_jobs_per_tenant: int = Field(default=20, gt=0)
    max_stored_jobs_per_tenant: int = Field(default=2000, gt=0)  # records kept (finished ones too, until retention)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    # Retention: a finished job's record and its artifacts are deleted this long after it finished.
    job_ttl_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    cancelled_job_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    max_list_page_bytes: int = Field(default=1 * MiB, gt=0)  # GET /v1/jobs pages stop before this size

    # Per-job limits, checked at submit against the spec's cost estimate (core.cost); each may be set
    # per tenant in tenant_limits, e.g. ROBUSTLAB_TENANT_LIMITS='{"teamA": {"max_job_parameters": 2e8}}'
    max_job_parameters: int = Field(default=100_000_000, gt=0)  # model parameters
    max_job_activation_bytes: int = Field(default=32 * 1024 * MiB, gt=0)  # activations of one training batch
    max_job_dataset_bytes: int = Field(default=2 * 1024 * MiB, gt=0)  # the inputs as float32
    max_job_train_samples: int = Field(default=1_000_000_000, gt=0)  # runs x epochs x training samples
    max_job_attack_steps: int = Field(default=2_000_000, gt=0)  # runs x sum of steps x restarts x radii
    max_job_attack_steps_per_radius: int = Field(default=100_000, gt=0)  # one attack: steps x restarts
    max_job_runs: int = Field(default=200, gt=0)  # regularizers x seeds
    # What an uploaded model may cost (measured by the upload checker; checked at upload and at submit):
    # parameters as stored once loaded (stride tricks materialized), and FLOPs of one sample's forward.
    max_model_parameters: int = Field(default=100_000_000, gt=0)
    max_forward_flops: int = Field(default=50_000_000_000, gt=0)  # 2 x multiply-adds; ResNet-50 at 224²: 8.2e9
    tenant_limits: dict[str, dict[str, int]] = Field(default_factory=dict)
    job_memory_limit_mb: int = Field(default=16 * 1024, ge=0)  # address-space limit of each job process (0: none)
    queue_depth: int = Field(default=2, ge=1)  # RQ entries handed out at once; the rest wait for fair dispatch
    # Jobs and work units one tenant may have handed out (pending in RQ or running) at once (0: no cap)
    max_units_in_flight_per_tenant: int = Field(default=64, ge=0)
    redis_outage_seconds: float = Field(default=300.0, ge=0)  # workers wait this long for Redis to come back

    # Workers
    device: str = "auto"  # auto | cpu | cuda
    job_timeout_seconds: int = Field(default=6 * 3600, gt=0)  # hard limit of one execution
    stall_timeout_seconds: int = Field(default=900, gt=0)  # no progress for this long: the execution is killed
    heartbeat_seconds: float = Field(default=2.0, gt=0)  # how often a running job proves it is alive
    # A job is failed for good (a poison job) after this many executions in a row were lost without
    # getting further than the one before; losses with progress in between never fail a job.
    max_attempts: int = Field(default=3, ge=1)

    @property
    def artifact_root(self) -> str:
        return self.artifact_store or str(self.data_dir / "artifacts")

    @field_validator("tenant_limits", mode="before")
    @classmethod
    def _limits_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value  # the environment's JSON text

    def limits_for(self, tenant: str) -> dict[str, int]:
        """The limits (max_job_*, max_model_parameters, max_forward_flops) that apply to `tenant`: the
        defaults, then its overrides."""
        limits = {name: int(getattr(self, name)) for name in type(self).model_fields
                  if name.startswith("max_job_") or name in MODEL_LIMITS}
        return limits | {k: int(v) for k, v in self.tenant_limits.get(tenant, {}).items() if k in limits}

    @property
    def work_root(self) -> Path:
        """Local scratch space of running jobs (checkpoints of unfinished epochs live here and in the store)."""
        return self.data_dir / "work"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
