"""Uploaded datasets: a tenant's own .npz, checked in the upload checker, named in specs by id.

Specs sent over HTTP never name files on the server (DESIGN §6): a dataset of one's own is uploaded
here and used as `dataset: {name: upload, id: <id>}`. The checker reads the archive's declared
sizes before decompressing anything, refuses object (pickled) arrays, NaNs, labels out of range
and more samples than ROBUSTLAB_MAX_DATASET_SAMPLES, and reports what it found.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from fastapi import APIRouter, Request, Response

from artifactstore import check_name
from jobstore.records import DatasetRecord
from jobstore.store import now
from jobstore.uploads import DatasetStore
from service.auth import Tenant
from service.deps import ServicesDep
from service.errors import ApiError, error_responses
from service.routers.models import _check, _is_id, _problem
from service.schemas import UploadedDataset
from service.uploads import receive_upload, safe_filename

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": ".npz with x_test, y_test (and optionally x_train, y_train): images N×C×H×W, "
                                        "N×H×W or vectors N×D, float in [0, 1] or uint8; integer labels"},
                "num_classes": {"type": "integer", "description": "labels must be 0..num_classes-1 "
                                "(default: the largest label + 1)", "example": 10},
            },
        },
    }},
}


def _datasets(services: ServicesDep) -> DatasetStore:
    return DatasetStore(services.store.redis, services.settings.key_prefix)


@router.post("", status_code=201, response_model=UploadedDataset, summary="Upload a dataset (.npz)",
             openapi_extra={"requestBody": _BODY}, responses=error_responses(400, 401, 413, 422, 429, 503))
async def upload_dataset(request: Request, tenant: Tenant, services: ServicesDep,
                         response: Response) -> UploadedDataset:
    """Streamed with the upload size cap, checked in a separate memory-limited process (np.load with
    allow_pickle=False; declared sizes read before decompression), stored in the artifact store.
    Name it in a spec as `dataset: {name: upload, id: <id>}`."""
    settings = services.settings
    upload = await receive_upload(request, settings.data_dir / "uploads", settings.max_upload_bytes)
    try:
        unknown = sorted(set(upload.fields) - {"num_classes"})
        if unknown:
            raise _problem(unknown[0], "unknown field: the fields are file, num_classes")
        classes_raw = upload.fields.get("num_classes", "").strip()
        if classes_raw and not (classes_raw.isdigit() and int(classes_raw) >= 2):
            raise _problem("num_classes", f"must be an integer >= 2 (got {classes_raw!r})")
        filename = safe_filename(upload.filename, default_stem="dataset")
        if Path(filename).suffix != ".npz":
            raise _problem("file", f"a dataset must be an .npz file (np.savez), got {Path(filename).suffix!r}")
        command = ["dataset", str(upload.path), "--max-bytes", str(4 * settings.max_upload_bytes),
                   "--max-samples", str(settings.max_dataset_samples)]
        if classes_raw:
            command += ["--num-classes", classes_raw]
        result = await _check(services, command)
        if not result.ok:
            error = result.error.replace(str(upload.path), filename).replace(upload.path.name, filename)
            logger.info("rejected dataset upload from %s: %s", tenant, error)
            raise ApiError(422, "invalid_dataset", error, problems=[("file", error)])
        details = result.details or {}
        dataset_id = str(uuid.uuid4())
        stored_name = check_name(filename)
        services.artifacts.put_file(f"datasets/{dataset_id}", stored_name, upload.path)
        record = DatasetRecord(
            id=dataset_id, tenant=tenant, sha256=upload.sha256, bytes=upload.size, filename=stored_name,
            created_at=now(), train_samples=int(details["train_samples"]), test_samples=int(details["test_samples"]),
            sample_shape=[int(v) for v in details["sample_shape"]], num_classes=int(details["num_classes"]))
        _datasets(services).add(record)
    finally:
        upload.path.unlink(missing_ok=True)
    logger.info("dataset %s (%d bytes) uploaded by %s", dataset_id, upload.size, tenant)
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
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
