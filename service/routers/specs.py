"""Spec validation without submitting: what the dashboard's editor calls on every pause in typing.

`POST /v1/specs/validate` takes the editor's text (YAML or JSON) or an already-parsed spec, and
answers 200 with `valid` and every problem, each with the spec path of the field at fault and,
for text, the line where that field is written, so the editor can mark the line. An invalid spec
is an answer here, not an error: only a malformed request body is a 4xx, and so is text that YAML
cannot read at all (a NUL, a C1 control, an unpaired surrogate: 422 naming the character).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.specs import SpecError, parse_spec
from core.specs.yaml_reading import YamlProblem, read_yaml
from service import limits
from service.auth import Tenant
from service.errors import ApiError, error_responses
from service.job_input import read_capped
from service.limits import off_loop
from service.upload_refs import server_path_problems

router = APIRouter(prefix="/v1/specs", tags=["specs"])

MAX_SPEC_BODY = 256 * 1024  # a spec is a few KiB
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_YAML_LINE = re.compile(r"at line (\d+)")
_UNREADABLE = yaml.reader.Reader.NON_PRINTABLE  # what PyYAML's reader refuses


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"spec_text": "name: demo\ndataset: {name: digits}\n..."}, {"spec": {"name": "demo"}}]})

    spec_text: str | None = Field(default=None, description="the spec as YAML or JSON text")
    spec: dict[str, Any] | None = Field(default=None, description="the spec as a JSON object")


class SpecProblem(BaseModel):
    path: str = Field(description="the field at fault, e.g. `regularizers[1].kind` ('' for the whole spec)")
    message: str
    line: int | None = Field(default=None, description="1-based line of the field in spec_text, when found")


class Validation(BaseModel):
    valid: bool
    spec: dict[str, Any] | None = Field(description="the spec with every default filled in, when valid")
    problems: list[SpecProblem]


def _segments(path: str) -> list[str | int]:
    """'regularizers[1].kind' -> ['regularizers', 1, 'kind']."""
    return [int(index) if index else name for name, index in _SEGMENT.findall(path)]


def _line_of(root: yaml.Node | None, path: str) -> int | None:
    """The line of the deepest node along `path` that the text has (a missing field: its parent's)."""
    if root is None:
        return None
    node, line = root, None
    for segment in _segments(path):
        if isinstance(segment, int) and isinstance(node, yaml.SequenceNode) and segment < len(node.value):
            node = node.value[segment]
            line = node.start_mark.line + 1
        elif isinstance(segment, str) and isinstance(node, yaml.MappingNode):
            # The last equal key wins, as in the data (a duplicate is reported at the second one).
            matches = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == segment]
            if not matches:
                break
            key, node = matches[-1]
            line = key.start_mark.line + 1
        else:
            break
    return line if line is not None else root.start_mark.line + 1


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _validate_text(text: str) -> Validation:
    if text.lstrip().startswith("{"):
        text = text.replace("\t", " ")  # JSON allows tab indentation, YAML does not (see load_spec)
    try:
        data, duplicates = read_yaml(text)
    except YamlProblem as exc:
        match = _YAML_LINE.search(str(exc))
        return Validation(valid=False, spec=None, problems=[
            SpecProblem(path="", message=str(exc), line=int(match.group(1)) if match else None)])
    limits.check_shape(data, "spec_text")  # before anything walks it: depth and expanded size
    root = _compose(text)
    problems = [SpecProblem(path=d.path, message=d.message, line=_line_of(root, d.path)) for d in duplicates]
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        problems += [SpecProblem(path=p.path, message=p.message, line=_line_of(root, p.path)) for p in exc.problems]
        return Validation(valid=False, spec=None, problems=problems)
    problems += [SpecProblem(path=path, message=message, line=_line_of(root, path))
                 for path, message in server_path_problems(spec, prefix="")]
    if problems:
        return Validation(valid=False, spec=None, problems=problems)
    return Validation(valid=True, spec=spec.model_dump(mode="json"), problems=[])


def _validate_data(data: dict[str, Any]) -> Validation:
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        return Validation(valid=False, spec=None,
                          problems=[SpecProblem(path=p.path, message=p.message) for p in exc.problems])
    paths = server_path_problems(spec, prefix="")
    if paths:
        return Validation(valid=False, spec=None, problems=[SpecProblem(path=p, message=m) for p, m in paths])
    return Validation(valid=True, spec=spec.model_dump(mode="json"), problems=[])


def _request(body: bytes) -> ValidateRequest:
    try:
        data = limits.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "malformed_json", 'the body is not valid JSON: send {"spec_text": "..."} '
                       'or {"spec": {...}}') from None
    try:
        request = ValidateRequest.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(map(str, e["loc"])) or "", str(e["msg"])) for e in exc.errors()]
        raise ApiError(422, "invalid_request", 'the body must be {"spec_text": "..."} or {"spec": {...}}',
                       problems=problems) from None
    if (request.spec_text is None) == (request.spec is None):
        raise ApiError(422, "invalid_request", "give exactly one of 'spec_text' (YAML or JSON text) and 'spec'",
                       problems=[("", "exactly one of spec_text, spec")])
    return request


@router.post("/validate", response_model=Validation, summary="Validate a spec without submitting it",
             responses=error_responses(400, 401, 413, 422, 429),
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": ValidateRequest.model_json_schema()}}}})
async def validate(request: Request, tenant: Tenant) -> Validation:
    """Body `{"spec_text": "<YAML or JSON>"}` or `{"spec": {...}}`. Always 200 for a spec, valid or
    not: `problems` lists each field at fault with its path and, for text, its line; a duplicate
    key is a problem (YAML would silently keep the last value). `spec` is the normalized spec."""
    return await off_loop(_validate_body, await read_capped(request, MAX_SPEC_BODY), pool="validate")


def unreadable(text: str, field: str = "spec_text") -> ApiError | None:
    """422 for text with a character YAML cannot read (C0/C1 controls but tab, newline, NEL; lone
    surrogates; U+FFFE/FFFF): not a spec with problems, a request that is not text YAML reads."""
    match = _UNREADABLE.search(text)
    if match is None:
        return None
    line = text.count("\n", 0, match.start()) + 1
    column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
    message = (f"{field} holds the character U+{ord(match.group()):04X} at line {line}, column {column}, which YAML "
               "cannot read: remove it (control characters and unpaired surrogates are not text)")
    return ApiError(422, "invalid_request", message, problems=[(field, message)])


def _validate_body(raw: bytes) -> Validation:
    """The whole validation, run in a parser process (service.limits.off_loop): never on the event loop."""
    body = _request(raw)
    if body.spec_text is not None:
        problem = unreadable(body.spec_text)
        if problem is not None:
            raise problem
        if limits.text_depth(body.spec_text) > limits.MAX_DEPTH:
            raise limits.too_deep("spec_text")
        return _validate_text(body.spec_text)
    assert body.spec is not None
    return _validate_data(body.spec)
