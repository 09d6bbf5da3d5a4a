"""The HTTP API: `create_app(settings)` builds it; `uvicorn --factory service.app:create_app` serves it.

Never imports torch (DESIGN §4): jobs go to the workers through Redis, and uploaded checkpoints are
checked by the safe loaders in a child process (service.upload_check).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from artifactstore import ArtifactStore
from core.jobs import JobRequest
from core.settings import Settings, get_settings
from jobstore.queue import redis_client, rq_connection
from jobstore.store import JobStore
from service import dashboard, docs, limits
from service.auth import KeyRing
from service.check_pool import CheckPool
from service.deps import Services
from service.errors import install_handlers
from service.metrics import make_registry
from service.routers import catalog, datasets, jobs, models, ops, reports, specs
from service.short_ids import ShortJobIds

logger = logging.getLogger(__name__)

DESCRIPTION = """
Train models with input-gradient regularizers, attack them, compare — as a service.

Authenticate with `Authorization: Bearer <key>` (keys: `ROBUSTLAB_API_KEYS`). Submit a job with
`POST /v1/jobs`, poll `GET /v1/jobs/{id}` (send the ETag back in `If-None-Match` for cheap 304s),
then fetch `/report`, `/report.html` or any artifact. Every error has the body
`{"error": {"type", "message", "problems": [{"path", "message"}]}}`.
"""


class MissingRedis(RuntimeError):
    """The API needs a Redis URL; `robustlab up` provides one (embedded) when none is set."""


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the JobRequest schema that POST /v1/jobs reads itself (see job_input)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                             tags=app.openapi_tags)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        request_schema = JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in request_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["JobRequest"] = request_schema
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise MissingRedis("no Redis URL: set REDIS_URL (or ROBUSTLAB_REDIS_URL), or run `robustlab up`, "
                           "which starts an embedded Redis")
    keyring = KeyRing.from_settings(settings)  # refuses to start without keys
    client = redis_client(settings.redis_url)
    rq = rq_connection(settings.redis_url)
    services = Services(settings=settings, store=JobStore(client, settings.key_prefix, settings=settings, rq=rq),
                        rq=rq, artifacts=ArtifactStore(settings.artifact_root),
                        checks=CheckPool(settings.max_concurrent_checks, settings.max_waiting_checks,
                                         per_tenant=settings.max_checks_per_tenant))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("robustlab API ready: queue %r, artifacts at %s", settings.queue, settings.artifact_root)
        yield
        limits.shutdown()  # the parser processes end with the API (no orphan left behind on SIGTERM)
        client.close()
        services.rq.close()

    app = FastAPI(title="robustlab", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # service.docs serves them without a CDN
                  openapi_tags=[
                      {"name": "jobs", "description": "Submit, list, poll and cancel jobs"},
                      {"name": "reports", "description": "Reports and artifacts of a job"},
                      {"name": "models", "description": "Upload models (checkpoints, ONNX, timm / torchvision "
                       "weights) for evaluate jobs"},
                      {"name": "datasets", "description": "Upload your own evaluation / training data (.npz)"},
                      {"name": "catalog", "description": "What a spec may name"},
                      {"name": "specs", "description": "Validate a spec without submitting it"},
                      {"name": "operations", "description": "Health, readiness, metrics (no API key)"},
                  ])
    app.state.services = services
    app.state.keyring = keyring
    app.state.metrics = make_registry(services)
    install_handlers(app)
    for module in (jobs, reports, models, datasets, catalog, specs, ops):
        app.include_router(module.router)
    dashboard.mount(app)  # GET / and /dashboard/*: the web UI (service/dashboard)
    docs.mount(app)  # GET /docs and /redoc, their assets shipped locally (offline)
    app.add_middleware(ShortJobIds)  # /v1/jobs/3f2a9c1e/...: the 8 characters the dashboard and CLI show
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
