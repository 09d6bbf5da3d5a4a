"""The one place configuration comes from: environment variables (prefix ROBUSTLAB_) and defaults.

`get_settings()` is cached so that every part of a process sees the same values; tests change the
environment and call `get_settings.cache_clear()`. REDIS_URL is read without the prefix too, since
that is the name every Redis deployment already uses.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


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
    max_queued_jobs_per_tenant: int = Field(default=20, gt=0)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)

    # Workers
    device: str = "auto"  # auto | cpu | cuda
    job_timeout_seconds: int = Field(default=6 * 3600, gt=0)  # hard limit of one execution
    stall_timeout_seconds: int = Field(default=900, gt=0)  # no progress for this long: the execution is killed
    heartbeat_seconds: float = Field(default=2.0, gt=0)  # how often a running job proves it is alive
    max_attempts: int = Field(default=3, ge=1)  # executions of one job before it is failed for good

    @property
    def artifact_root(self) -> str:
        return self.artifact_store or str(self.data_dir / "artifacts")

    @property
    def work_root(self) -> Path:
        """Local scratch space of running jobs (checkpoints of unfinished epochs live here and in the store)."""
        return self.data_dir / "work"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
