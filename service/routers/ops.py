"""Operations: liveness, readiness and Prometheus metrics (no API key: probes and scrapers use them)."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from service.deps import ServicesDep
from service.schemas import Health

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The API process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Redis reachable and at least one worker alive",
            responses={503: {"model": Health, "description": "a part is missing; `checks` says which"}})
def readyz(services: ServicesDep) -> Response:
    checks: dict[str, str] = {}
    ready = True
    try:
        services.store.redis.ping()
        checks["redis"] = "ok"
    except redis.exceptions.RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
        checks["workers"] = "unknown (Redis unreachable)"
        ready = False
    if ready:
        workers = len(services.store.live_workers(services.settings.queue))
        checks["workers"] = f"{workers} on queue {services.settings.queue!r}"
        if workers == 0:
            checks["workers"] = f"no worker alive on queue {services.settings.queue!r}: start `robustlab worker`"
            ready = False
    health = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(health.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "text exposition format"}})
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
