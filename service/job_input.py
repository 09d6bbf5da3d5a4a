"""Reading POST /v1/jobs bodies: size-capped, JSON checked, problems reported with spec field paths.

The body is parsed here rather than by FastAPI so that an invalid spec is reported the way the
CLI reports it (core.specs: `spec.regularizers[1].weight`, typo suggestions), not with pydantic's
union-tag locations.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from core.jobs import JobRequest
from core.specs import SpecError, parse_spec
from service import limits
from service.errors import ApiError

MAX_JOB_BODY = 1024 * 1024  # a spec is a few KiB; anything near this is a mistake


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds `limit` (or declares that it will)."""
    too_large = ApiError(413, "too_large", f"the request body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for item in loc:
        path += f"[{item}]" if isinstance(item, int) else ("." if path else "") + str(item)
    return path


def _envelope_problems(exc: ValidationError, data: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems outside `spec` (kind, checkpoint, unknown fields); the spec's own come from parse_spec."""
    problems = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        if loc and loc[0] == "spec" and "spec" in data:
            continue
        if e["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}: the fields here are 'kind', 'spec', 'checkpoint'"
        elif e["type"] == "missing":
            message = "required field is missing: add it"
        else:
            message = str(e["msg"]).removeprefix("Value error, ")
            if isinstance(e.get("input"), str | int | float | bool) and e["type"] != "value_error":
                message += f" (got {e['input']!r})"
        # JobRequest's only model-level check is about `checkpoint` matching `kind`.
        problems.append((_path(loc) or "checkpoint", message))
    return problems


def parse_job_request(body: bytes) -> JobRequest:
    """A validated JobRequest, or ApiError 400 (not JSON) / 422 (every problem with its path)."""
    try:
        data = limits.loads(body)  # 422 past the nesting limit
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body is not UTF-8 text: send a JSON object") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                       f"column {exc.colno}", problems=[("", exc.msg)]) from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", f"the body must be a JSON object with 'kind' and 'spec', "
                       f"got a {type(data).__name__}", problems=[("", "expected a JSON object")])
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        problems = _envelope_problems(exc, data)
        spec_problems: list[tuple[str, str]] = []
        if "spec" in data:
            try:
                parse_spec(data["spec"])
            except SpecError as err:
                spec_problems = [(f"spec.{p.path}" if p.path else "spec", p.message) for p in err.problems]
        kind = "invalid_spec" if spec_problems else "invalid_request"
        problems = spec_problems + problems
        raise ApiError(422, kind, f"the job request has {len(problems)} problem(s); see `problems`",
                       problems=problems) from None
