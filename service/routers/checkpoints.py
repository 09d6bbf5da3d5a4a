"""Checkpoints: streamed, size-capped uploads, checked by the safe loader before they are accepted."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from core.artifacts import check_name
from core.enums import Architecture
from core.job_store import now
from core.jobs import CheckpointRecord
from core.specs import ARCHITECTURE_PARAMS
from service.auth import Tenant
from service.checkpoint_check import run_check
from service.deps import ServicesDep
from service.errors import ApiError, error_responses
from service.schemas import CheckpointCreated
from service.uploads import Upload, receive_upload, safe_filename

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])

SUFFIXES = (".safetensors", ".pt", ".pth")

_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object", "required": ["file", "architecture"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "a .safetensors checkpoint (saved by robustlab: it describes itself) or a "
                                        ".pt/.pth state_dict (read with torch.load(weights_only=True) only)"},
                "architecture": {"type": "string", "enum": [a.value for a in Architecture]},
                "params": {"type": "string", "description": "JSON object of architecture parameters, "
                           "e.g. {\"hidden\": [16]}; defaults when omitted", "example": "{\"hidden\": [16]}"},
                "input_shape": {"type": "string", "description": "JSON list, e.g. [64]: needed for files "
                                "without robustlab metadata (.pt)", "example": "[64]"},
                "num_outputs": {"type": "integer", "description": "number of classes: needed for files without "
                                "robustlab metadata (.pt)", "example": 10},
            },
        },
    }},
}


def _json_field(fields: dict[str, str], name: str, kind: type) -> Any:
    raw = fields.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"field {name!r} is not valid JSON: {exc.msg}",
                       problems=[(name, f"not valid JSON: {exc.msg}")]) from None
    if not isinstance(value, kind):
        raise ApiError(422, "invalid_request", f"field {name!r} must be a JSON {kind.__name__}",
                       problems=[(name, f"must be a JSON {kind.__name__}")])
    return value


def _form(upload: Upload) -> tuple[str, dict[str, Any] | None, list[int] | None, int | None]:
    """architecture, params, input_shape, num_outputs from the text fields, checked without torch."""
    fields = upload.fields
    unknown = sorted(set(fields) - {"architecture", "params", "input_shape", "num_outputs"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown form field(s) {', '.join(map(repr, unknown))}",
                       problems=[(u, "unknown field: the fields are file, architecture, params, input_shape, "
                                  "num_outputs") for u in unknown])
    architecture = fields.get("architecture", "").strip()
    names = [a.value for a in Architecture]
    if architecture not in names:
        message = "required field is missing" if not architecture else f"unknown architecture {architecture!r}"
        raise ApiError(422, "invalid_request", f"{message}: use one of {', '.join(names)}",
                       problems=[("architecture", f"{message}: use one of {', '.join(names)}")])
    params = _json_field(fields, "params", dict)
    if params is not None:
        try:
            ARCHITECTURE_PARAMS[architecture].model_validate(params)
        except ValidationError as exc:
            problems = [("params." + ".".join(map(str, e["loc"])), str(e["msg"])) for e in exc.errors()]
            raise ApiError(422, "invalid_request", f"params do not fit {architecture}", problems=problems) from None
    shape = _json_field(fields, "input_shape", list)
    if shape is not None and not (1 <= len(shape) <= 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise ApiError(422, "invalid_request", "input_shape must be 1-3 positive integers, e.g. [64] or [1, 28, 28]",
                       problems=[("input_shape", "must be 1-3 positive integers")])
    outputs_raw = fields.get("num_outputs", "").strip()
    if outputs_raw and not (outputs_raw.isdigit() and int(outputs_raw) > 0):
        raise ApiError(422, "invalid_request", "num_outputs must be a positive integer",
                       problems=[("num_outputs", f"must be a positive integer (got {outputs_raw!r})")])
    return architecture, params, shape, int(outputs_raw) if outputs_raw else None


@router.post("", status_code=201, response_model=CheckpointCreated, summary="Upload a checkpoint",
             openapi_extra={"requestBody": _BODY}, responses=error_responses(400, 401, 413, 422, 503))
async def upload_checkpoint(request: Request, tenant: Tenant, services: ServicesDep,
                            response: Response) -> CheckpointCreated:
    """Streamed to disk with a size cap (413 past ROBUSTLAB_MAX_UPLOAD_BYTES), its SHA-256 computed,
    then loaded by the safe loader in a separate process: keys, shapes, dtypes and finiteness are
    checked and pickled code never runs (a pickle payload is a 422). A `.pt` state_dict is stored
    re-saved as a self-describing safetensors file. Use the returned id in evaluate jobs."""
    settings = services.settings
    tmp_dir = settings.data_dir / "uploads"
    upload = await receive_upload(request, tmp_dir, settings.max_upload_bytes)
    checked = upload.path.with_name(upload.path.name + ".checked.safetensors")
    try:
        architecture, params, shape, outputs = _form(upload)
        filename = safe_filename(upload.filename)
        suffix = Path(filename).suffix
        if suffix not in SUFFIXES:
            raise ApiError(422, "invalid_request", f"unsupported checkpoint type {suffix or '(no suffix)'!r}: "
                           "upload a .safetensors file or a .pt/.pth state_dict",
                           problems=[("file", "the file name must end in .safetensors, .pt or .pth")])
        try:
            result = await run_check(upload.path, architecture, params, input_shape=shape,
                                     num_outputs=outputs, out=checked)
        except TimeoutError:
            raise ApiError(503, "unavailable", "checking the checkpoint took too long: try again later",
                           headers={"Retry-After": "30"}) from None
        if not result.ok:
            # The loader saw our temporary file; the user knows their own file name.
            error = result.error.replace(str(upload.path), filename).replace(upload.path.name, filename)
            logger.info("rejected checkpoint upload from %s: %s", tenant, error)
            raise ApiError(422, "invalid_checkpoint", error, problems=[("file", error)])
        details = result.details or {}
        checkpoint_id = str(uuid.uuid4())
        stored_name = check_name(Path(filename).stem + ".safetensors" if details.get("converted") else filename)
        source = checked if details.get("converted") else upload.path
        services.artifacts.put_file(f"checkpoints/{checkpoint_id}", stored_name, source)
        record = CheckpointRecord(id=checkpoint_id, tenant=tenant, sha256=upload.sha256, bytes=upload.size,
                                  architecture=architecture, params=details.get("params") or {},
                                  filename=stored_name, created_at=now())
        services.store.add_checkpoint(record)
    finally:
        upload.path.unlink(missing_ok=True)
        checked.unlink(missing_ok=True)
    logger.info("checkpoint %s (%s, %d bytes) uploaded by %s", checkpoint_id, architecture, upload.size, tenant)
    response.headers["Location"] = f"/v1/checkpoints/{checkpoint_id}"
    return CheckpointCreated(id=checkpoint_id, sha256=upload.sha256, bytes=upload.size, architecture=architecture)
