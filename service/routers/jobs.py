"""Jobs: submit, list, read (with ETag for cheap polling), cancel."""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from core.cost import estimate, over_limits
from core.jobs import JobRequest, JobStatus
from jobstore.queue import withdraw
from jobstore.records import JobRecord
from jobstore.store import IdempotencyConflict, QuotaExceeded, StoredJobsExceeded
from jobstore.units import units_of
from jobstore.uploads import DatasetStore, UploadStore
from service.auth import Tenant
from service.deps import Services, ServicesDep, StoreDep
from service.errors import ApiError, error_responses, not_found
from service.job_input import MAX_JOB_BODY, parse_job_request, read_capped
from service.limits import off_loop
from service.schemas import EXAMPLE_ID, EXAMPLE_SPEC, Job, JobAccepted, JobPage
from service.upload_refs import References, check_references

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
QUOTA_RETRY_AFTER = "30"
MAX_STORED_SPEC = 64 * 1024  # bytes of one stored spec: every list in a spec is capped, this caps the rest

_BODY = {
    "required": True,
    "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/JobRequest"},
        "examples": {
            "compare": {"summary": "Compare two regularizers on digits (finishes in seconds)",
                        "value": {"kind": "compare", "spec": EXAMPLE_SPEC}},
            "evaluate": {"summary": "Evaluate an uploaded checkpoint",
                         "value": {"kind": "evaluate", "spec": EXAMPLE_SPEC,
                                   "checkpoint": "0b8e1b0c-3f0e-4c55-9a55-6f2d1d2b7e42"}},
        },
    }},
}


async def _job_request(request: Request) -> JobRequest:
    # parsing and validating up to 1 MiB of spec: in a parser process, never on the event loop
    return await off_loop(parse_job_request, await read_capped(request, MAX_JOB_BODY))


def etag(record: JobRecord) -> str:
    return f'W/"{record.id}-{record.rev}"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    bare = tag.removeprefix("W/")
    return any(t.strip() in ("*", tag) or t.strip().removeprefix("W/") == bare for t in if_none_match.split(","))


def _owned(store: StoreDep, job_id: str, tenant: str) -> JobRecord:
    record = store.get(job_id, tenant)
    if record is None or record.parent:  # a unit is part of its job, not a job of its own
        raise not_found("job", job_id)
    return record


@router.post("", status_code=202, response_model=JobAccepted, openapi_extra={"requestBody": _BODY},
             summary="Submit a job",
             responses={200: {"description": "Idempotent replay: the job created earlier with this "
                              "Idempotency-Key", "model": JobAccepted},
                        **error_responses(400, 401, 409, 413, 422, 429, 503)})
def submit(
    tenant: Tenant, services: ServicesDep, response: Response,
    job: Annotated[JobRequest, Depends(_job_request)],
    idempotency_key: Annotated[str | None, Header(description="Retrying with the same key and body returns "
                                                   "the same job; another body with it is a 409")] = None,
) -> JobAccepted:
    """Queue a `compare` (train and evaluate every regularizer of the spec) or an `evaluate` (an
    uploaded checkpoint, named by `checkpoint`) job. Returns at once; poll `links.self`."""
    settings, store = services.settings, services.store
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApiError(400, "bad_header", "Idempotency-Key must be 1-200 letters, digits, '.', '_', ':', '-'",
                       problems=[("header.idempotency-key", "invalid characters or length")])
    references = check_references(job, tenant, store, DatasetStore(store.redis, settings.key_prefix))
    stored = len(job.spec.model_dump_json())
    if stored > MAX_STORED_SPEC:
        raise ApiError(422, "too_large", f"the spec takes {stored:,} bytes with its defaults filled in, more than "
                       f"{MAX_STORED_SPEC:,}: a spec needs a few KiB", problems=[("spec", "too large")])
    problems = over_limits(estimate(job.spec, **references.cost_facts()), settings.limits_for(tenant))
    if problems:
        raise ApiError(422, "over_limits", f"the job is larger than this tenant may run ({len(problems)} limit(s) "
                       "exceeded); see `problems`", problems=problems)
    try:
        record, created = store.create(tenant, job, max_active=settings.max_queued_jobs_per_tenant,
                                       idempotency_key=idempotency_key,
                                       idempotency_ttl=settings.idempotency_ttl_seconds,
                                       max_stored=settings.max_stored_jobs_per_tenant)
    except IdempotencyConflict:
        raise ApiError(409, "idempotency_conflict", f"Idempotency-Key {idempotency_key!r} was already used with "
                       "a different request body: use a new key for a new job") from None
    except QuotaExceeded:
        raise ApiError(429, "quota_exceeded", f"tenant {tenant!r} already has "
                       f"{settings.max_queued_jobs_per_tenant} queued or running jobs: wait for some to finish "
                       "or cancel some", headers={"Retry-After": QUOTA_RETRY_AFTER}) from None
    except StoredJobsExceeded:
        raise ApiError(429, "quota_exceeded", f"tenant {tenant!r} keeps {settings.max_stored_jobs_per_tenant} jobs "
                       "(ROBUSTLAB_MAX_STORED_JOBS_PER_TENANT, cancelled and finished ones included until retention "
                       "deletes them)", headers={"Retry-After": QUOTA_RETRY_AFTER}) from None
    if created:
        _keep_uploads(services, references, record, tenant)
        logger.info("job %s (%s) queued for tenant %s", record.id, record.kind.value, tenant)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return JobAccepted(id=record.id, status=record.status, links=Job.of(record).links)


def _keep_uploads(services: Services, references: References, record: JobRecord, tenant: str) -> None:
    """The uploads the new job names are kept for another retention period; one deleted between the
    reference check and the job's creation (DELETE refuses once the job exists) cancels the job: 404."""
    uploads = UploadStore(services.store.redis, services.settings.key_prefix)
    for kind, upload_id in references.ids():
        uploads.touch(kind, upload_id, services.settings.upload_ttl_seconds)
        if uploads.get(kind, upload_id, tenant) is None:
            after = services.store.request_cancel(record.id)
            if after is not None and after.dispatches:
                withdraw(services.rq, services.settings.queue, record.id, delivery=after.dispatches)
            raise ApiError(404, "not_found", f"{kind} {upload_id} was deleted while the job was submitted: "
                           "upload it again", problems=[("spec", f"unknown {kind} id {upload_id}")])


@router.get("", response_model=JobPage, summary="List your jobs, newest first",
            responses=error_responses(401, 422))
def list_jobs(
    tenant: Tenant, store: StoreDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$", description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobPage:
    records, next_cursor = store.list_jobs(tenant, status=status, cursor=cursor, limit=limit)
    return JobPage(items=[Job.of(r, units_of(store, r) if r.phase == "units" else None) for r in records],
                   next_cursor=next_cursor)


@router.get("/{job_id}", response_model=Job, summary="A job's status, progress and error",
            responses={**error_responses(304, 401, 404)})
def get_job(
    job_id: str, tenant: Tenant, store: StoreDep, response: Response,
    if_none_match: Annotated[str | None, Header(description=f'an ETag from an earlier answer, e.g. '
                                                f'W/"{EXAMPLE_ID}-3": 304 while unchanged')] = None,
) -> Job | Response:
    """`status` is queued | running | succeeded | failed | cancelled. The ETag changes with every
    change of the job: poll with If-None-Match to get a bodiless 304 while nothing changed."""
    record = _owned(store, job_id, tenant)
    tag = etag(record)
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    response.headers["ETag"] = tag
    return Job.of(record, units_of(store, record))


@router.post("/{job_id}/cancel", response_model=Job, summary="Cancel a queued or running job",
             responses=error_responses(401, 404, 409))
def cancel(job_id: str, tenant: Tenant, services: ServicesDep) -> Job:
    """A queued job becomes `cancelled` at once; a running one gets `cancel_requested: true` and its
    worker stops it within seconds (poll for `cancelled`). A finished job is a 409."""
    store = services.store
    record = _owned(store, job_id, tenant)
    if record.status.finished:
        raise ApiError(409, "conflict", f"job {job_id} is already {record.status.value}: it cannot be cancelled")
    after = store.request_cancel(job_id) or record
    if record.status is JobStatus.QUEUED and after.status is JobStatus.CANCELLED and after.dispatches:
        withdraw(services.rq, services.settings.queue, job_id, delivery=after.dispatches)
    logger.info("cancel of job %s requested by %s: now %s", job_id, tenant, after.status.value)
    return Job.of(after, units_of(store, after))
