"""One error body for every 4xx/5xx the API returns, and the handlers that produce it.

    {"error": {"type": "invalid_spec", "message": "...", "problems": [{"path": "spec.seeds", "message": "..."}]}}

`type` is a stable machine-readable word, `message` one sentence for a person, `problems` the
fields at fault (paths like `spec.regularizers[1].weight`, the style of core.specs). FastAPI's own
validation errors (query parameters, headers) and Starlette's 404/405 are reshaped to match, so a
client needs to understand one format only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ProblemOut(BaseModel):
    path: str = Field(description="the field at fault, e.g. `spec.regularizers[1].weight` ('' for the whole body)")
    message: str


class ErrorDetail(BaseModel):
    type: str = Field(description="stable machine-readable kind, e.g. `unauthorized`, `invalid_spec`, `not_found`")
    message: str
    problems: list[ProblemOut] = Field(default_factory=list)


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised anywhere in a request; becomes `status` with the one error body."""

    def __init__(self, status: int, type_: str, message: str, *, problems: Iterable[tuple[str, str]] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(error=ErrorDetail(type=type_, message=message,
                                                problems=[ProblemOut(path=p, message=m) for p, m in problems]))
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(self.body.model_dump(), status_code=self.status, headers=self.headers)

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a parser process (service.limits): pickled back
        return (_rebuild, (self.status, self.body.model_dump(), self.headers))


def _rebuild(status: int, body: dict[str, Any], headers: dict[str, str]) -> ApiError:
    error = body["error"]
    return ApiError(status, error["type"], error["message"],
                    problems=[(p["path"], p["message"]) for p in error["problems"]], headers=headers)


def not_found(what: str, ident: str) -> ApiError:
    # Another tenant's resource gets exactly this answer too: its existence is not revealed.
    return ApiError(404, "not_found", f"no {what} with id {ident!r} (for this API key)")


def _loc_path(loc: Sequence[int | str]) -> str:
    """('query', 'limit') -> 'query.limit'; ('body', 'items', 2) -> 'body.items[2]'."""
    path = ""
    for item in loc:
        path += f"[{item}]" if isinstance(item, int) else ("." if path else "") + str(item)
    return path


def _validation_problems(errors: Sequence[Any]) -> list[tuple[str, str]]:
    out = []
    for e in errors:
        got = f" (got {e['input']!r})" if isinstance(e.get("input"), str | int | float | bool) else ""
        out.append((_loc_path(e.get("loc", ())), f"{e['msg']}{got}"))
    return out


# What the common statuses mean, for the OpenAPI documentation of each route.
_DESCRIPTIONS = {
    304: "Not modified: the job has the ETag given in If-None-Match",
    400: "Malformed request (bad JSON, unsafe artifact name, bad header)",
    401: "Missing or wrong API key (`Authorization: Bearer <key>`)",
    404: "No such resource for this API key (another tenant's is a 404 too)",
    409: "Conflict with the resource's state (job finished, not finished, idempotency key reused)",
    413: "Upload larger than the configured maximum",
    422: "Invalid input; `problems` lists each field at fault",
    429: "Too many queued or running jobs for this tenant; retry after Retry-After seconds",
    503: "Redis (or a needed part of the service) is unavailable",
}

_EXAMPLES = {
    401: ("unauthorized", "missing API key: send the header 'Authorization: Bearer <key>'", []),
    404: ("not_found", "no job with id '5d0c...' (for this API key)", []),
    409: ("conflict", "job 5d0c... is already succeeded: it cannot be cancelled", []),
    413: ("too_large", "the upload exceeds the limit of 268435456 bytes (ROBUSTLAB_MAX_UPLOAD_BYTES)", []),
    422: ("invalid_spec", "the spec has 1 problem(s)",
          [{"path": "spec.regularizers[1].weight", "message": "Input should be greater than or equal to 0 (got -1)"}]),
    429: ("quota_exceeded", "tenant 'teamA' already has 20 queued or running jobs: wait for some to finish", []),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given statuses, with the error body and an example."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": _DESCRIPTIONS.get(status, "Error")}
        if status != 304:
            entry["model"] = ErrorBody
            if status in _EXAMPLES:
                type_, message, problems = _EXAMPLES[status]
                entry["content"] = {"application/json": {"example": {
                    "error": {"type": type_, "message": message, "problems": problems}}}}
        out[status] = entry
    return out


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _validation_problems(exc.errors())
        return ApiError(422, "invalid_request", "the request has invalid parameters; see `problems`",
                        problems=problems).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        error = ApiError(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail),
                         headers=exc.headers)
        return error.response()

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, exc)
        return ApiError(503, "unavailable", "Redis is unavailable: try again shortly",
                        headers={"Retry-After": "5"}).response()
