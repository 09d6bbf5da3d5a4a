"""What a request handler needs, held once per app, and the `Annotated` aliases that hand it out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request

from artifactstore import ArtifactStore
from core.settings import Settings
from jobstore.store import JobStore
from service.check_pool import CheckPool


@dataclass
class Services:
    settings: Settings
    store: JobStore  # its own decode_responses=True client
    rq: redis.Redis  # bytes client: RQ needs it (jobstore.queue.rq_connection)
    artifacts: ArtifactStore
    checks: CheckPool  # the bounded, tenant-fair pool of upload-checker processes


def services(request: Request) -> Services:
    held: Services = request.app.state.services
    return held


def _settings(request: Request) -> Settings:
    return services(request).settings


def _store(request: Request) -> JobStore:
    return services(request).store


def _artifacts(request: Request) -> ArtifactStore:
    return services(request).artifacts


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(_artifacts)]
ServicesDep = Annotated[Services, Depends(services)]
