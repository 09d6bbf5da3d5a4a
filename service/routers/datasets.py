"""Uploaded datasets: a tenant's own .npz, checked in the upload checker, named in specs by id.

Specs sent over HTTP never name files on the server (DESIGN §6): a dataset of one's own is uploaded
here and used as `dataset: {name: upload, id: <id>}`. The checker reads the archive's declared
sizes before decompressing anything, refuses object (pickled) arrays, NaNs, labels out of range
more samples than ROBUSTLAB_MAX_DATASET_SAMPLES and more than 100,000 classes, and reports what it
found: the shape, classes and sample counts that a job's cost estimate reads (core.cost).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from fastapi import APIRouter, Request, Response

from artifactstore import check_name
from core.specs.model import MAX_CLASSES
from jobstore.records import DatasetRecord
from jobstore.store import now
from jobstore.uploads import DatasetStore
from service.auth import Tenant
from service.deps import ServicesDep
from service.errors import ApiError, error_responses
from service.routers.models import _is_id, _problem
from service.schemas import UploadedDataset
from service.upload_flow import check_quota, dedupe_key, delete, refusal, run_check, stored_or_duplicate, uploads
from service.uploads import ascii_int, receive_upload, safe_filename

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
FIELDS = ("num_classes",)

_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": ".npz with x_test, y_test (and optionally x_train, y_train): images N×C×H×W, "
                                        "N×H×W or vectors N×D, float in [0, 1] or uint8; integer labels"},
                "num_classes": {"type": "integer", "minimum": 2, "maximum": 100_000,
                                "description": "labels must be 0..num_classes-1 (default: the largest label + 1)",
                                "example": 10},
            },
        },
    }},
}


def _datasets(services: ServicesDep) -> DatasetStore:
    return DatasetStore(services.store.redis, services.settings.key_prefix)


@router.post("", status_code=201, response_model=UploadedDataset, summary="Upload a dataset (.npz)",
             openapi_extra={"requestBody": _BODY},
             responses={200: {"description": "The same file with the same num_classes was uploaded before: the "
                              "stored dataset", "model": UploadedDataset},
                        **error_responses(400, 401, 413, 422, 429, 503)})
async def upload_dataset(request: Request, tenant: Tenant, services: ServicesDep,
                         response: Response) -> UploadedDataset:
    """Streamed with the upload size cap, checked in a separate memory-limited process (np.load with
    allow_pickle=False; declared sizes read before decompression), stored in the artifact store.
    Labels must be below num_classes (at most 100,000). The same file with the same num_classes
    returns the stored dataset (200). Name it in a spec as `dataset: {name: upload, id: <id>}`."""
    settings = services.settings
    upload = await receive_upload(request, settings.data_dir / "uploads", settings.max_upload_bytes, FIELDS)
    try:
        classes = ascii_int(upload.fields, "num_classes", 2, MAX_CLASSES)
        filename = safe_filename(upload.filename, default_stem="dataset")
        if Path(filename).suffix != ".npz":
            raise _problem("file", f"a dataset must be an .npz file (np.savez), got {Path(filename).suffix!r}")
        key = dedupe_key(upload.sha256, f"num_classes={classes}")
        existing = uploads(services).find_duplicate("dataset", tenant, key)
        if existing is not None:
            response.status_code = 200
            response.headers["Location"] = f"/v1/datasets/{existing.id}"
            return UploadedDataset.of(existing)
        check_quota(services, tenant, upload.size)
        command = ["dataset", str(upload.path.resolve()), "--max-bytes", str(4 * settings.max_upload_bytes),
                   "--max-samples", str(settings.max_dataset_samples)]
        if classes is not None:
            command += ["--num-classes", str(classes)]
        result = await run_check(request, services, tenant, command)
        if not result.ok:
            error = result.error.replace(str(upload.path.resolve()), filename).replace(upload.path.name, filename)
            logger.info("rejected dataset upload from %s: %s", tenant, error)
            raise refusal(result, error, "dataset")
        details = result.details or {}
        dataset_id = str(uuid.uuid4())
        stored_name = check_name(filename)
        services.artifacts.put_file(f"datasets/{dataset_id}", stored_name, upload.path)
        record = DatasetRecord(
            id=dataset_id, tenant=tenant, sha256=upload.sha256, bytes=upload.size, filename=stored_name,
            created_at=now(), train_samples=int(details["train_samples"]), test_samples=int(details["test_samples"]),
            sample_shape=[int(v) for v in details["sample_shape"]], num_classes=int(details["num_classes"]),
            dedupe_key=key)
        record, created = stored_or_duplicate(services, record)
    finally:
        upload.path.unlink(missing_ok=True)
    if created:
        logger.info("dataset %s (%d bytes) uploaded by %s", record.id, upload.size, tenant)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    return UploadedDataset.of(record)


@router.get("", response_model=list[UploadedDataset], summary="This tenant's datasets",
            responses=error_responses(401))
async def list_datasets(tenant: Tenant, services: ServicesDep) -> list[UploadedDataset]:
    return [UploadedDataset.of(r) for r in _datasets(services).list(tenant)]


@router.get("/{dataset_id}", response_model=UploadedDataset, summary="An uploaded dataset",
            responses=error_responses(401, 404))
async def get_dataset(dataset_id: str, tenant: Tenant, services: ServicesDep) -> UploadedDataset:
    record = _datasets(services).get(dataset_id, tenant) if _is_id(dataset_id) else None
    if record is None:
        raise ApiError(404, "not_found", f"no dataset {dataset_id!r} for this API key")
    return UploadedDataset.of(record)


@router.delete("/{dataset_id}", status_code=204, summary="Delete an uploaded dataset",
               responses=error_responses(401, 404, 409))
async def delete_dataset(dataset_id: str, tenant: Tenant, services: ServicesDep) -> Response:
    """Deletes the record and the file. 409 while a queued or running job of this tenant uses it."""
    if not _is_id(dataset_id):
        raise ApiError(404, "not_found", f"no dataset {dataset_id!r} for this API key")
    delete(services, "dataset", dataset_id, tenant)
    return Response(status_code=204)
