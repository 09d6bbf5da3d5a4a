"""Reading specs from YAML/JSON, and turning validation errors into messages a person can act on.

Every problem names the field at fault (`regularizers[3].teacher`), says what is wrong and what
would be right. Pydantic's own error locations contain union tags and validator names, and its
messages do not know the spec; `_locate` walks the spec's type tree along an error's location to
find the field, its description and, for a typo, the fields that exist there.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo

from core.specs.base import FieldError
from core.specs.experiment import ExperimentSpec
from core.specs.model import MODEL_FORMATS
from core.specs.yaml_reading import YamlProblem, read_yaml


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where, what, and what would be right."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """A spec that cannot be used; `problems` lists every reason."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


@dataclass(frozen=True)
class _Place:
    """Where an error location points in the spec: the readable path and what is expected there."""

    path: str
    annotation: Any = None  # the type expected here; None when the walk lost track
    discriminator: str | None = None  # set when the type is a discriminated union
    description: str | None = None


def _unwrap(annotation: Any) -> tuple[Any, str | None, str | None]:
    """Strip `Annotated[...]`, keeping the discriminator and description of its Field."""
    discriminator = description = None
    while get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        for meta in metadata:
            if isinstance(meta, FieldInfo):
                if isinstance(meta.discriminator, str):
                    discriminator = meta.discriminator
                description = meta.description or description
    return annotation, discriminator, description


def _tag(member: Any) -> str | None:
    """The `Tag` of a member of a union with a callable discriminator (the model section's `format`)."""
    if get_origin(member) is Annotated:
        for meta in get_args(member)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
    return None


def _members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for m in get_args(annotation) if m is not type(None)]
    return [annotation]


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _tags(member: Any, discriminator: str) -> list[str]:
    """The discriminator values that select `member` of a discriminated union."""
    model = _model(member)
    if model is None or discriminator not in model.model_fields:
        return []
    annotation = model.model_fields[discriminator].annotation
    return [str(v) for v in get_args(annotation)] if get_origin(annotation) is Literal else []


def _union_tags(place: _Place) -> list[str]:
    if place.discriminator is None:
        return []
    return [t for m in _members(place.annotation) for t in _tags(m, place.discriminator)]


def _locate(loc: tuple[int | str, ...]) -> _Place:
    """Follow an error location from ExperimentSpec down; union tags and validator labels are skipped."""
    path = ""
    annotation: Any = ExperimentSpec
    discriminator: str | None = None
    description: str | None = None
    for item in loc:
        annotation, inner, about = _unwrap(annotation)
        discriminator, description = inner or discriminator, about or description
        members = _members(annotation)
        if len(members) > 1 and isinstance(item, str):
            tagged = [m for m in members if _tag(m) == item]
            if tagged:
                annotation, discriminator = tagged[0], None
                continue
            if discriminator is not None:
                chosen = [m for m in members if item in _tags(m, discriminator)]
            else:  # a smart-mode union labels a branch by its class name, e.g. `...[..., Normalization]`
                chosen = [m for m in members if _model(m) and re.search(rf"\b{m.__name__}\b", item)]
            if chosen or "[" in item:
                annotation, discriminator = (chosen[0] if chosen else None), None
                continue
        annotation = members[0] if len(members) == 1 else None
        model = _model(annotation)
        if isinstance(item, int):
            path += f"[{item}]"
            args = get_args(annotation)
            annotation = args[0] if get_origin(annotation) is list and args else None
            discriminator = description = None
        elif model is not None and item in model.model_fields:
            field = model.model_fields[item]
            path += ("." if path else "") + item
            annotation, description = field.annotation, field.description
            discriminator = field.discriminator if isinstance(field.discriminator, str) else None
        elif "[" in item:
            continue  # a validator wrapper such as `function-after[...]`, not a field
        else:
            path += ("." if path else "") + item
            annotation = discriminator = description = None
    annotation, inner, about = _unwrap(annotation)
    return _Place(path, annotation, inner or discriminator, about or description)


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _got(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return f" (got {value!r})"
    if isinstance(value, dict):
        return " (got a mapping)"
    return " (got a list)" if isinstance(value, list) else ""


def _problem(error: Any) -> Problem:
    """One pydantic error as a Problem: readable path, what is wrong, what would be right."""
    kind: str = error["type"]
    loc: tuple[int | str, ...] = tuple(error["loc"])
    ctx: dict[str, Any] = error.get("ctx") or {}
    got: Any = error.get("input")
    if kind == "extra_forbidden":
        field, parent = str(loc[-1]), _locate(loc[:-1])
        model = _model(parent.annotation)
        if model is None:
            return Problem(_locate(loc).path, "unknown field: remove it")
        fields = list(model.model_fields)
        return Problem(
            _locate(loc).path,
            f"unknown field {field!r}: {_did_you_mean(field, fields)}"
            f"the fields here are {_quoted(fields)}",
        )
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        place = _locate(loc)
        name = str(ctx.get("discriminator", "kind")).strip("'")
        tags = _union_tags(place) or re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        path = f"{place.path}.{name}" if place.path else name
        if kind == "union_tag_not_found":
            return Problem(path, f"required field is missing: add it, one of {_quoted(tags)}")
        tag = str(ctx.get("tag"))
        return Problem(path, f"unknown {name} {tag!r}: {_did_you_mean(tag, tags)}use one of {_quoted(tags)}")
    if kind == "invalid_model_format":  # the model section's callable discriminator (core.specs.model)
        place = _locate(loc)
        if not isinstance(got, dict):
            return Problem(place.path, f"must be a mapping of fields, e.g. {{architecture: mlp}}{_got(got)}")
        fmt = str(got.get("format"))
        suggestion = _did_you_mean(fmt, list(MODEL_FORMATS))
        return Problem(f"{place.path}.format", f"unknown model format {fmt!r}: {suggestion}"
                       f"use one of {_quoted(list(MODEL_FORMATS))}, or leave `format` out and name a registry "
                       "`architecture`")
    if kind == "value_error" and isinstance(ctx.get("error"), FieldError):
        loc = loc + ctx["error"].loc
    place = _locate(loc)
    if kind == "missing":
        about = f" ({place.description})" if place.description else ""
        return Problem(place.path, f"required field is missing: add it{about}")
    if kind == "value_error":
        return Problem(place.path, str(error["msg"]).removeprefix("Value error, "))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        tags = _union_tags(place)
        if isinstance(got, str) and got in tags:
            return Problem(place.path, f"must be a mapping of fields: write {{{place.discriminator}: {got}}}")
        return Problem(place.path, f"must be a mapping of fields{_got(got)}")
    if kind == "list_type":
        return Problem(place.path, f"must be a list, e.g. [a, b]{_got(got)}")
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        return Problem(place.path, f"must have {bound} {limit} item(s), has {ctx.get('actual_length')}")
    if kind == "string_pattern_mismatch" and place.description:
        return Problem(place.path, f"{got!r} is not allowed: expected {place.description}")
    return Problem(place.path, f"{error['msg']}{_got(got)}")


def problems_of(error: ValidationError) -> list[Problem]:
    """Every problem of a validation error, in pydantic's order, without duplicates or noise."""
    errors = error.errors()
    problems = [_problem(e) for e in errors]
    merged: list[Problem] = []
    for problem, e in zip(problems, errors, strict=True):
        if e["type"] == "literal_error":
            # A value that may be a literal or a mapping fails both branches of its union: when the
            # mapping branch has a deeper error, the literal branch's complaint is noise; when both
            # fail at the same place, say so in one problem.
            if any(q.path.startswith(problem.path + ".") for q in problems):
                continue
            if any(q.path == problem.path and q is not problem for q in problems):
                place = _locate(tuple(e["loc"]))
                expected = place.description or f"{e.get('ctx', {}).get('expected')} or a mapping of fields"
                problem = Problem(problem.path, f"{e['input']!r} is not allowed: expected {expected}")
        elif any(q.path == problem.path and f["type"] == "literal_error"
                 for q, f in zip(problems, errors, strict=True)):
            continue  # folded into the literal branch's problem above
        if problem not in merged:
            merged.append(problem)
    return merged


def _duplicate_names(data: dict[str, Any]) -> list[Problem]:
    """Repeated regularizer names, read from the raw data: the spec's own check of them runs only once
    every field is valid, so with any other problem they would otherwise go unlisted."""
    regularizers = data.get("regularizers")
    first: dict[str, int] = {}
    out = []
    for index, entry in enumerate(regularizers if isinstance(regularizers, list) else []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            out.append(Problem(f"regularizers[{index}].name", f"regularizer names must be unique; {name!r} is "
                               f"already the name of regularizers[{first[name]}]: rename one"))
        else:
            first[name] = index
    return out


def parse_spec(data: Any, source: str = "spec") -> ExperimentSpec:
    """Validate a spec given as a mapping; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        what = "an empty document" if data is None else f"a {type(data).__name__}"
        message = f"a spec is a mapping of fields (name, dataset, model, regularizers, ...), got {what}"
        raise SpecError(source, [Problem("", message)])
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc)
        listed = {p.path for p in problems}
        raise SpecError(source, problems + [p for p in _duplicate_names(data) if p.path not in listed]) from None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML (or JSON) spec file; a duplicate key is a problem, not a silent override."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(str(path), [Problem("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte {exc.start}): save the spec as UTF-8 YAML or JSON"
        raise SpecError(str(path), [Problem("", message)]) from None
    if path.suffix.lower() == ".json":
        # JSON is read as YAML (same data, plus duplicate-key checks), but YAML forbids the tab
        # indentation JSON allows; in valid JSON a raw tab can only be whitespace, so a space is equal.
        text = text.replace("\t", " ")
    try:
        data, duplicates = read_yaml(text)
    except YamlProblem as exc:
        raise SpecError(str(path), [Problem("", str(exc))]) from None
    problems = [Problem(d.path, d.message) for d in duplicates]
    try:
        spec = parse_spec(data, str(path))
    except SpecError as exc:
        raise SpecError(str(path), problems + exc.problems) from None
    if problems:
        raise SpecError(str(path), problems)
    return spec
