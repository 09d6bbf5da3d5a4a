"""Uploaded models: streamed, size-capped, checked by the safe loaders before they are accepted.

`POST /v1/models` takes every format a spec's model section can describe: a registry checkpoint
(.safetensors saved by robustlab, or a .pt/.pth state_dict), an ONNX graph, or timm / torchvision
weights. `POST /v1/checkpoints` is the same endpoint under its first name. The file is checked in a
child process (service.upload_check): a registry state_dict is re-saved as self-describing
safetensors; user formats are loaded, wrapped in their declared input conventions and run forward
once, so a wrong declaration fails here, not minutes into a job.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter, ValidationError

from artifactstore import check_name
from core.enums import Architecture
from core.specs import ARCHITECTURE_PARAMS, UserModelSpec
from core.specs.model import MAX_CLASSES, MAX_DIMENSION
from jobstore.records import CheckpointRecord
from jobstore.store import now
from service.auth import Tenant
from service.deps import Services, ServicesDep
from service.errors import ApiError, error_responses
from service.schemas import ModelCreated, UploadedModel
from service.upload_flow import check_quota, dedupe_key, delete, refusal, run_check, stored_or_duplicate, uploads
from service.uploads import Upload, ascii_int, receive_upload, safe_filename, sha256_of

logger = logging.getLogger(__name__)
router = APIRouter(tags=["models"])

REGISTRY_SUFFIXES = (".safetensors", ".pt", ".pth")
SUFFIXES = {"registry": REGISTRY_SUFFIXES, "onnx": (".onnx",), "timm": REGISTRY_SUFFIXES,
            "torchvision": REGISTRY_SUFFIXES}
REFUSED = {".pt2": "torch.export archives (.pt2) are refused: torch's loader may unpickle their payloads",
           ".ts": "TorchScript is refused: loading it runs code", ".pkl": "pickled files are refused",
           ".pickle": "pickled files are refused"}
FIELDS = ("model", "architecture", "params", "input_shape", "num_outputs")
_REPEAT: dict[int | str, dict[str, Any]] = {
    200: {"description": "The same file with the same declaration was uploaded before: the stored model",
          "model": ModelCreated}}

_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": ".safetensors (robustlab checkpoints describe themselves), .pt/.pth "
                                        "state_dict (torch.load(weights_only=True) only), or .onnx"},
                "model": {"type": "string", "description": "JSON of the spec's model section: required for "
                          "onnx / timm / torchvision, e.g. {\"format\": \"onnx\", \"input_shape\": [1, 8, 8], "
                          "\"num_classes\": 10}", "example": "{\"format\": \"onnx\", \"input_shape\": [1, 8, 8], "
                          "\"num_classes\": 10}"},
                "architecture": {"type": "string", "enum": [a.value for a in Architecture],
                                 "description": "registry checkpoints: the architecture (or give `model`)"},
                "params": {"type": "string", "description": "registry: JSON object of architecture parameters"},
                "input_shape": {"type": "string", "description": "registry .pt: JSON list, e.g. [64]"},
                "num_outputs": {"type": "integer", "minimum": 1, "maximum": 100_000,
                                "description": "registry .pt: number of classes"},
            },
        },
    }},
}


def _problem(field: str, message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(422, code, f"{field}: {message}", problems=[(field, message)])


def _json_field(fields: dict[str, str], name: str, kind: type) -> Any:
    raw = fields.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _problem(name, f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, kind):
        raise _problem(name, f"must be a JSON {kind.__name__}")
    return value


def _problems(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    return [(prefix + "." + ".".join(map(str, e["loc"])), str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()]


class _Declared:
    """What the form says the file is: a user-format model section, or registry arguments."""

    def __init__(self, fields: dict[str, str]) -> None:
        # receive_upload refused any other field before buffering it
        section = _json_field(fields, "model", dict)
        self.user: dict[str, Any] | None = None
        self.architecture = fields.get("architecture", "").strip()
        self.params: dict[str, Any] | None = _json_field(fields, "params", dict)
        if section is not None and "format" in section:
            try:
                self.user = TypeAdapter(UserModelSpec).validate_python(section).model_dump(mode="json")
            except ValidationError as exc:
                raise ApiError(422, "invalid_request", "the model section is invalid",
                               problems=_problems(exc, "model")) from None
            self.format = str(self.user["format"])
            return
        if section is not None:  # a registry section: {architecture, params}
            self.architecture = str(section.get("architecture", self.architecture))
            self.params = section.get("params", self.params)
        self.format = "registry"
        names = [a.value for a in Architecture]
        if self.architecture not in names:
            message = "required: the registry architecture (or a model section with its format)" \
                if not self.architecture else f"unknown architecture {self.architecture!r}"
            raise _problem("architecture", f"{message}; use one of {', '.join(names)}, or send "
                           "model={\"format\": \"onnx\" | \"timm\" | \"torchvision\", ...}")
        if self.params is not None:
            try:
                ARCHITECTURE_PARAMS[self.architecture].model_validate(self.params)
            except ValidationError as exc:
                raise ApiError(422, "invalid_request", f"params do not fit {self.architecture}",
                               problems=_problems(exc, "params")) from None
        shape = _json_field(fields, "input_shape", list)
        if shape is not None and not (1 <= len(shape) <= 3 and all(type(v) is int and 0 < v <= MAX_DIMENSION
                                                                   for v in shape)):
            raise _problem("input_shape", f"must be 1-3 integers from 1 to {MAX_DIMENSION:,}, e.g. [64] or "
                           "[1, 28, 28]")
        self.input_shape: list[int] | None = shape
        self.num_outputs = ascii_int(fields, "num_outputs", 1, MAX_CLASSES)

    def declaration(self) -> str:
        """What was declared with the file, canonical: part of the dedupe key."""
        return json.dumps({"user": self.user, "architecture": self.architecture, "params": self.params,
                           "input_shape": getattr(self, "input_shape", None),
                           "num_outputs": getattr(self, "num_outputs", None)}, sort_keys=True)

    def command(self, path: Path, out: Path, max_bytes: int, limits: dict[str, int]) -> list[str]:
        command = ["model", str(path.resolve()), "--max-bytes", str(max_bytes),
                   "--max-parameters", str(limits["max_model_parameters"]),
                   "--max-flops", str(limits["max_forward_flops"])]
        if self.user is not None:
            return [*command, "--model", json.dumps(self.user)]
        command += ["--architecture", self.architecture, "--out", str(out.resolve())]
        if self.params is not None:
            command += ["--params", json.dumps(self.params)]
        if self.input_shape is not None:
            command += ["--input-shape", json.dumps(self.input_shape)]
        if self.num_outputs is not None:
            command += ["--num-outputs", str(self.num_outputs)]
        return command


def _needs_shape(declared: _Declared, filename: str) -> None:
    if declared.format == "registry" and Path(filename).suffix in (".pt", ".pth") and \
            (declared.input_shape is None or declared.num_outputs is None):
        raise _problem("input_shape" if declared.input_shape is None else "num_outputs",
                       "a .pt state_dict does not say what it was trained on: send input_shape (one sample, e.g. "
                       "[1, 8, 8]) and num_outputs (the number of classes) with it")


def _filename(upload: Upload, fmt: str) -> str:
    filename = safe_filename(upload.filename, default_stem="model")
    suffix = Path(filename).suffix
    if suffix in REFUSED:
        raise _problem("file", f"{REFUSED[suffix]}; upload .onnx, .safetensors or a .pt state_dict")
    if suffix not in SUFFIXES[fmt]:
        raise _problem("file", f"a {fmt} model must be a {' / '.join(SUFFIXES[fmt])} file, got "
                       f"{suffix or '(no suffix)'!r}" + (": set the model section's format to onnx"
                                                          if suffix == ".onnx" else ""))
    return filename


async def _upload_model(request: Request, tenant: str, services: Services, response: Response) -> ModelCreated:
    settings = services.settings
    upload = await receive_upload(request, settings.data_dir / "uploads", settings.max_upload_bytes, FIELDS)
    checked = upload.path.with_name(upload.path.name + ".checked.safetensors")
    try:
        declared = _Declared(upload.fields)
        filename = _filename(upload, declared.format)
        _needs_shape(declared, filename)
        key = dedupe_key(upload.sha256, declared.declaration())
        existing = uploads(services).find_duplicate("model", tenant, key)
        if existing is not None:
            response.status_code = 200
            response.headers["Location"] = f"/v1/models/{existing.id}"
            return ModelCreated.created(existing, upload.sha256, upload.size)
        check_quota(services, tenant, upload.size)
        limits = settings.limits_for(tenant)
        result = await run_check(request, services, tenant,
                                 declared.command(upload.path, checked, settings.max_upload_bytes, limits))
        if not result.ok:
            # The loader saw our temporary file; the user knows their own file name.
            error = result.error.replace(str(upload.path.resolve()), filename).replace(upload.path.name, filename)
            logger.info("rejected model upload from %s: %s", tenant, error)
            raise refusal(result, error, "model")
        details = result.details or {}
        converted = bool(details.get("converted"))
        model_id = str(uuid.uuid4())
        stored_name = check_name(f"{Path(filename).stem[:100]}.safetensors" if converted else filename)
        source = checked if converted else upload.path
        stored_sha = sha256_of(source) if converted else upload.sha256
        services.artifacts.put_file(f"checkpoints/{model_id}", stored_name, source)
        record = CheckpointRecord(
            id=model_id, tenant=tenant, sha256=stored_sha, bytes=source.stat().st_size,
            architecture=declared.architecture if declared.format == "registry" else None,
            params=details.get("params") or {}, filename=stored_name, created_at=now(), format=declared.format,
            model=declared.user, upload_sha256=upload.sha256 if converted else None,
            parameters=_count(details.get("parameters")), forward_flops=_count(details.get("forward_flops")),
            flops_source=str(details.get("flops_source") or "") or None, dedupe_key=key)
        record, created = stored_or_duplicate(services, record)
    finally:
        upload.path.unlink(missing_ok=True)
        checked.unlink(missing_ok=True)
    if created:
        logger.info("model %s (%s, %d bytes) uploaded by %s", record.id, declared.format, upload.size, tenant)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/models/{record.id}"
    return ModelCreated.created(record, upload.sha256, upload.size)


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


@router.post("/v1/models", status_code=201, response_model=ModelCreated, summary="Upload a model",
             openapi_extra={"requestBody": _BODY}, responses={**_REPEAT, **error_responses(400, 401, 413, 422, 429,
                                                                                          503)})
async def upload_model(request: Request, tenant: Tenant, services: ServicesDep, response: Response) -> ModelCreated:
    """Streamed to disk with a size cap (413 past ROBUSTLAB_MAX_UPLOAD_BYTES), its SHA-256 computed, then
    checked by the safe loaders in a separate, memory-limited process: nothing in the file ever runs
    (a pickle payload is a 422). ONNX files with external data, oversized declared tensors or
    unsupported operators are refused with the reason; a model over the tenant's MAX_MODEL_PARAMETERS or
    MAX_FORWARD_FLOPS is a 422 over_limits. The same file with the same declaration returns the stored
    model (200). Use the returned id in evaluate jobs (`checkpoint`)."""
    return await _upload_model(request, tenant, services, response)


@router.post("/v1/checkpoints", status_code=201, response_model=ModelCreated, summary="Upload a model (old name)",
             openapi_extra={"requestBody": _BODY}, responses={**_REPEAT, **error_responses(400, 401, 413, 422, 429,
                                                                                          503)})
async def upload_checkpoint(request: Request, tenant: Tenant, services: ServicesDep,
                            response: Response) -> ModelCreated:
    """The same as POST /v1/models (kept for existing clients)."""
    return await _upload_model(request, tenant, services, response)


@router.get("/v1/models", response_model=list[UploadedModel], summary="This tenant's models, newest first",
            responses=error_responses(401))
async def list_models(tenant: Tenant, services: ServicesDep) -> list[UploadedModel]:
    return [UploadedModel.of(r) for r in uploads(services).listed("model", tenant)]


@router.get("/v1/models/{model_id}", response_model=UploadedModel, summary="An uploaded model",
            responses=error_responses(401, 404))
async def get_model(model_id: str, tenant: Tenant, services: ServicesDep) -> UploadedModel:
    record = services.store.get_checkpoint(model_id, tenant) if _is_id(model_id) else None
    if record is None:
        raise ApiError(404, "not_found", f"no model {model_id!r} for this API key")
    return UploadedModel.of(record)


@router.delete("/v1/models/{model_id}", status_code=204, summary="Delete an uploaded model",
               responses=error_responses(401, 404, 409))
async def delete_model(model_id: str, tenant: Tenant, services: ServicesDep) -> Response:
    """Deletes the record and the file. 409 while a queued or running job of this tenant uses it."""
    if not _is_id(model_id):
        raise ApiError(404, "not_found", f"no model {model_id!r} for this API key")
    delete(services, "model", model_id, tenant)
    return Response(status_code=204)


def _is_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
