"""Reading specs from YAML/JSON, and turning validation errors into messages a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.specs.experiment import ExperimentSpec


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


# Tags that pydantic inserts into error locations for discriminated unions: they are the value of
# the discriminator, not a field, so they are dropped from the path a person reads.
_UNION_TAGS = {
    "digits", "mnist", "fashion_mnist", "cifar10", "npz", "synthetic", "function_regression",
    "mlp", "lenet5", "cnn_small", "resnet18", "wide_resnet",
    "none", "weight_decay", "double_backprop", "datagrad_l1", "jacobian", "spectral",
    "confidence_penalty", "input_hessian", "sobolev", "maxup", "adversarial_training",
    "fgsm", "pgd", "autoattack", "square",
    "literal['dataset','none']", "Normalization",
}


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in _UNION_TAGS or "[" in item:
            continue  # a union tag or a validator wrapper, not a field
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def _message(error: Any) -> str:
    kind = error["type"]
    msg: str = error["msg"]
    if kind == "extra_forbidden":
        return "unknown field: remove it (check its spelling against `robustlab list`)"
    if kind == "missing":
        return "required field is missing: add it"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return (
            f"unknown {ctx.get('discriminator', 'kind')} {ctx.get('tag')!r}: "
            f"use one of {ctx.get('expected_tags')}"
        )
    if kind == "union_tag_not_found":
        ctx = error.get("ctx", {})
        return f"missing {ctx.get('discriminator')}: add it to say which kind this is"
    if msg.startswith("Value error, "):
        return msg.removeprefix("Value error, ")
    got = error.get("input")
    if isinstance(got, str | int | float | bool) or got is None:
        return f"{msg} (got {got!r})"
    return msg


def problems_of(error: ValidationError) -> list[Problem]:
    errors = error.errors()
    problems = [Problem(_path(e["loc"]), _message(e)) for e in errors]
    # A value that may be a literal or a mapping fails both branches of its union; when the
    # mapping branch has a deeper error, the literal branch's complaint is noise.
    return [
        p for p, e in zip(problems, errors, strict=True)
        if not (e["type"] == "literal_error" and any(q.path.startswith(p.path + ".") for q in problems))
    ]


def parse_spec(data: Any, source: str = "spec") -> ExperimentSpec:
    """Validate a spec given as a mapping; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [Problem("", f"a spec is a mapping of fields, got {type(data).__name__}")])
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, problems_of(exc)) from None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML (or JSON) spec file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [Problem("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(str(path), [Problem("", f"not valid YAML{where}: fix the syntax")]) from None
    return parse_spec(data, str(path))
