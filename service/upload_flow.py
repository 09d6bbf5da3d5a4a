"""What uploading a model and uploading a dataset have in common, from check to stored record.

- the check runs in a checker slot fair to the tenant (service.check_pool) and is killed as soon as
  its client disconnects (nobody would ever learn the stored id);
- a check refused by a tenant limit is a `422 over_limits` naming the limit, like an over-limit job;
- the tenant's quota of stored uploads is checked before the check runs and again, atomically,
  when the record is stored (jobstore.uploads);
- the same bytes with the same declaration return the tenant's stored upload (200), before any
  check runs, and again if an identical upload was stored while this one was being checked;
- DELETE refuses an upload a queued or running job names (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request

from jobstore.records import CheckpointRecord
from jobstore.uploads import Kind, Quota, UploadInUse, UploadQuotaExceeded, UploadStore
from service.deps import Services
from service.errors import ApiError
from service.upload_check import CheckResult

logger = logging.getLogger(__name__)
T = TypeVar("T")
PREFIX = {"model": "checkpoints", "dataset": "datasets"}  # artifact store prefixes: <prefix>/<id>/<file>


def uploads(services: Services) -> UploadStore:
    return UploadStore(services.store.redis, services.settings.key_prefix)


def quota(services: Services) -> Quota:
    settings = services.settings
    return Quota(settings.max_stored_uploads_per_tenant, settings.max_stored_upload_bytes_per_tenant,
                 settings.upload_ttl_seconds)


def dedupe_key(sha256: str, declaration: str) -> str:
    """The same bytes declared the same way (a model section, num_classes) are the same upload."""
    return hashlib.sha256(f"{sha256}\n{declaration}".encode()).hexdigest()


def quota_error(exc: UploadQuotaExceeded, services: Services) -> ApiError:
    settings = services.settings
    if exc.what == "count":
        message = (f"this tenant stores {exc.used} uploads, its limit (ROBUSTLAB_MAX_STORED_UPLOADS_PER_TENANT is "
                   f"{settings.max_stored_uploads_per_tenant}): delete some (DELETE /v1/models/{{id}}, "
                   "/v1/datasets/{id})")
    else:
        message = (f"this upload would take the tenant's stored uploads past "
                   f"{settings.max_stored_upload_bytes_per_tenant:,} bytes ({exc.used:,} stored; "
                   "ROBUSTLAB_MAX_STORED_UPLOAD_BYTES_PER_TENANT): delete some first")
    return ApiError(429, "quota_exceeded", message, headers={"Retry-After": "60"})


def check_quota(services: Services, tenant: str, size: int) -> None:
    try:
        uploads(services).check_quota(tenant, size, quota(services))
    except UploadQuotaExceeded as exc:
        raise quota_error(exc, services) from None


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body was read already: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; cancel it (a running check's process is killed) as soon as the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    logger.warning("%s %s: the client left while its upload was checked; the check was stopped",
                request.method, request.url.path)
    raise ApiError(499, "client_closed", "the client closed the connection before the upload was checked")


async def run_check(request: Request, services: Services, tenant: str, command: list[str]) -> CheckResult:
    """The checker's answer for this upload, in a slot fair to `tenant`; 503 when it takes too long."""
    try:
        result: CheckResult = await unless_client_leaves(
            request, services.checks.run(command, services.settings, tenant))
    except TimeoutError:
        raise ApiError(503, "unavailable", "checking the upload took too long: try again later",
                       headers={"Retry-After": "30"}) from None
    return result


def refusal(result: CheckResult, error: str, kind: Kind) -> ApiError:
    """The 422 for a refused upload: over_limits naming the limit, or what is wrong with the file."""
    if result.over_limit is not None:
        field = str(result.over_limit.get("field", ""))
        return ApiError(422, "over_limits", f"the {kind} is larger than this tenant may upload ({field.upper()} "
                        f"{result.over_limit.get('limit')}): {error}", problems=[(field, error)])
    return ApiError(422, "invalid_checkpoint" if kind == "model" else "invalid_dataset", error,
                    problems=[("file", error)])


def delete(services: Services, kind: Kind, upload_id: str, tenant: str) -> None:
    """DELETE /v1/models/{id}, /v1/datasets/{id}: 404 if the tenant has none, 409 while a job uses it."""
    try:
        deleted = uploads(services).delete(kind, upload_id, tenant)
    except UploadInUse as exc:
        raise ApiError(409, "conflict", f"{kind} {upload_id} is used by job {exc.job_id}, which is queued or "
                       "running: delete it when the job has finished (or cancel the job)",
                       problems=[("id", f"in use by job {exc.job_id}")]) from None
    if not deleted:
        raise ApiError(404, "not_found", f"no {kind} {upload_id!r} for this API key")
    services.artifacts.delete_prefix(f"{PREFIX[kind]}/{upload_id}")
    logger.info("%s %s deleted by %s", kind, upload_id, tenant)


def stored_or_duplicate(services: Services, record: Any) -> tuple[Any, bool]:
    """(record, True) once stored (its file is in the artifact store already); (the tenant's identical
    upload, False) if one was stored meanwhile (this copy's files are removed); 429 past the quota."""
    store = uploads(services)
    kind: Kind = "model" if isinstance(record, CheckpointRecord) else "dataset"
    try:
        stored_id = store.add(record, quota(services))
    except UploadQuotaExceeded as exc:
        services.artifacts.delete_prefix(f"{PREFIX[kind]}/{record.id}")
        raise quota_error(exc, services) from None
    if stored_id == record.id:
        return record, True
    services.artifacts.delete_prefix(f"{PREFIX[kind]}/{record.id}")
    return store.get(kind, stored_id, record.tenant) or record, False
