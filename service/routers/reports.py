"""A job's outputs: its report in four formats and every artifact, streamed from the artifact store.

Artifacts live under the prefix the job's winning execution published to
(`jobs/<job_id>/result-<token>/`, recorded by its fenced finish). Names are checked by artifactstore.check_name
before anything else happens, so `../`, `%2e%2e` (decoded by the server before routing), absolute
paths and hidden files are a 400 and never reach the file system.
"""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from artifactstore import UnsafeName, check_name
from core.jobs import JobStatus
from jobstore.records import JobRecord
from service.auth import Tenant
from service.deps import ArtifactsDep, StoreDep
from service.errors import ApiError, error_responses, not_found
from service.schemas import Artifact, ArtifactList

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["reports"])

MEDIA_TYPES = {".json": "application/json", ".html": "text/html; charset=utf-8",
               ".md": "text/markdown; charset=utf-8", ".csv": "text/csv; charset=utf-8"}


def result_prefix(record: JobRecord) -> str | None:
    """Where the job's files are: the prefix its winning execution published under (None: none yet)."""
    return record.result_prefix


def _media_type(name: str) -> str:
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _stream(job_id: str, name: str, tenant: str, store: StoreDep, artifacts: ArtifactsDep) -> StreamingResponse:
    try:
        check_name(name)
    except UnsafeName as exc:
        raise ApiError(400, "bad_name", str(exc), problems=[("path.name", "unsafe artifact name")]) from None
    record = store.get(job_id, tenant)
    if record is None:
        raise not_found("job", job_id)
    prefix = result_prefix(record)
    if prefix is None or not artifacts.exists(prefix, name):
        if record.status is not JobStatus.SUCCEEDED:
            state = "not finished yet" if not record.status.finished else "did not succeed"
            raise ApiError(409, "not_ready", f"job {job_id} is {record.status.value} ({state}): {name} "
                           "does not exist; poll GET /v1/jobs/{id} until it succeeds")
        raise ApiError(404, "not_found", f"job {job_id} has no artifact {name!r}; see GET /v1/jobs/{job_id}/artifacts")
    size = artifacts.size(prefix, name)
    # Opened here, so that a failure to open is a proper error status rather than a broken stream.
    chunks = artifacts.iter_bytes(prefix, name)
    return StreamingResponse(chunks, media_type=_media_type(name), headers={"Content-Length": str(size)})


_FILE = {200: {"content": {"application/octet-stream": {}}, "description": "the file"},
         **error_responses(400, 401, 404, 409)}


@router.get("/report", summary="report.json of a finished job", response_class=StreamingResponse,
            responses={**_FILE, 200: {"content": {"application/json": {}}, "description": "report.json"}})
def report_json(job_id: str, tenant: Tenant, store: StoreDep, artifacts: ArtifactsDep) -> StreamingResponse:
    return _stream(job_id, "report.json", tenant, store, artifacts)


@router.get("/report.html", summary="The HTML report", response_class=StreamingResponse,
            responses={**_FILE, 200: {"content": {"text/html": {}}, "description": "report.html"}})
def report_html(job_id: str, tenant: Tenant, store: StoreDep, artifacts: ArtifactsDep) -> StreamingResponse:
    return _stream(job_id, "report.html", tenant, store, artifacts)


@router.get("/report.md", summary="The Markdown report", response_class=StreamingResponse,
            responses={**_FILE, 200: {"content": {"text/markdown": {}}, "description": "report.md"}})
def report_md(job_id: str, tenant: Tenant, store: StoreDep, artifacts: ArtifactsDep) -> StreamingResponse:
    return _stream(job_id, "report.md", tenant, store, artifacts)


@router.get("/results.csv", summary="One row per run and attack strength", response_class=StreamingResponse,
            responses={**_FILE, 200: {"content": {"text/csv": {}}, "description": "results.csv"}})
def results_csv(job_id: str, tenant: Tenant, store: StoreDep, artifacts: ArtifactsDep) -> StreamingResponse:
    return _stream(job_id, "results.csv", tenant, store, artifacts)


@router.get("/artifacts", response_model=ArtifactList, summary="Every file the job stored, with sizes",
            responses=error_responses(401, 404))
def list_artifacts(job_id: str, tenant: Tenant, store: StoreDep, artifacts: ArtifactsDep) -> ArtifactList:
    record = store.get(job_id, tenant)
    if record is None:
        raise not_found("job", job_id)
    prefix = result_prefix(record)
    items = [] if prefix is None else [
        Artifact(name=n, bytes=artifacts.size(prefix, n), url=f"/v1/jobs/{job_id}/artifacts/{n}")
        for n in artifacts.list(prefix)]
    return ArtifactList(job=job_id, items=items)


@router.get("/artifacts/{name:path}", summary="One artifact, streamed", response_class=StreamingResponse,
            responses=_FILE)
def get_artifact(job_id: str, name: str, tenant: Tenant, store: StoreDep,
                 artifacts: ArtifactsDep) -> StreamingResponse:
    """`name` as listed by /artifacts, e.g. `checkpoints/erm-seed0.safetensors`."""
    return _stream(job_id, name, tenant, store, artifacts)
