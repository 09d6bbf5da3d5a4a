"""What a spec may name: regularizers, architectures, datasets and attacks, with their parameters.

Everything here is derived from the pydantic spec classes (their fields, constraints, defaults and
docstrings), so the listing can never drift from what validation accepts. `robustlab list` prints
it, and the service's `/v1/catalog` returns it. Torch-free, like all of core.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from core.specs.dataset import DatasetSpec
from core.specs.evaluation import AttackSpec
from core.specs.model import ARCHITECTURE_PARAMS, RegistryModelSpec
from core.specs.regularizers import REGULARIZER_SPECS

Entry = dict[str, Any]

CATEGORIES = ("regularizers", "architectures", "datasets", "attacks")

# JSON-schema keywords that constrain a value, and the names we list them under.
_CONSTRAINTS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minItems": "min_items",
    "maxItems": "max_items",
}
_TYPES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "None"}


def _description(cls: type) -> str:
    """The first paragraph of a class docstring, on one line."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return " ".join(doc.split("\n\n")[0].split())


def _branches(prop: dict[str, Any]) -> list[dict[str, Any]]:
    return list(prop.get("anyOf", [prop]))


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A readable type: `float`, `int | None`, `list[int]`, `'gaussian' | 'uniform'`."""
    names: list[str] = []
    for branch in _branches(prop):
        if "$ref" in branch:
            names.append(str(defs.get(branch["$ref"].rsplit("/", 1)[-1], {}).get("title", "object")))
        elif "enum" in branch or "const" in branch:
            names.extend(repr(v) for v in branch.get("enum", [branch.get("const")]))
        elif branch.get("type") == "array":
            names.append(f"list[{_type(branch.get('items', {}), defs)}]")
        elif branch.get("format") == "path":
            names.append("path")
        else:
            names.append(_TYPES.get(str(branch.get("type")), str(branch.get("type", "any"))))
    return " | ".join(names)


def _constraints(prop: dict[str, Any]) -> dict[str, Any]:
    """Bounds, pattern, allowed values and list lengths, gathered from every branch of the type."""
    found: dict[str, Any] = {}
    for branch in _branches(prop):
        for keyword, name in _CONSTRAINTS.items():
            if keyword in branch:
                found[name] = branch[keyword]
        if "enum" in branch:
            found.setdefault("enum", []).extend(branch["enum"])
        items = _constraints(branch["items"]) if isinstance(branch.get("items"), dict) else {}
        if items:
            found["items"] = items
    return found


def _parameters(cls: type[BaseModel], exclude: tuple[str, ...] = ()) -> list[Entry]:
    schema = cls.model_json_schema()
    properties: dict[str, Any] = schema.get("properties", {})
    defs: dict[str, Any] = schema.get("$defs", {})
    parameters: list[Entry] = []
    for name, field in cls.model_fields.items():
        if name in exclude:
            continue
        prop = properties.get(field.alias or name, {})
        required = field.is_required()
        described = [prop, *_branches(prop)]
        parameters.append({
            "name": name,
            "type": _type(prop, defs),
            "default": None if required else to_jsonable_python(field.get_default(call_default_factory=True)),
            "required": required,
            "description": next((str(p["description"]) for p in described if "description" in p), ""),
            **_constraints(prop),
        })
    return parameters


def _union_members(union: Any) -> list[type[BaseModel]]:
    """The model classes of an `Annotated[A | B | ..., Field(discriminator=...)]` spec union."""
    members = get_args(get_args(union)[0])
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _tags(cls: type[BaseModel], discriminator: str) -> list[str]:
    annotation = cls.model_fields[discriminator].annotation
    assert get_origin(annotation) is Literal, f"{cls.__name__}.{discriminator} is not a Literal"
    return [str(tag) for tag in get_args(annotation)]


def regularizers() -> list[Entry]:
    """Every regularizer kind with its parameters (the run `name` and `kind` are left out)."""
    return [
        {"name": kind, "description": _description(cls), "parameters": _parameters(cls, ("name", "kind"))}
        for kind, cls in REGULARIZER_SPECS.items()
    ]


def architectures() -> list[Entry]:
    """Every architecture: the fields of its `params`, then `normalization` (a field of the model)."""
    models = {tag: cls for cls in _union_members(RegistryModelSpec) for tag in _tags(cls, "architecture")}
    entries: list[Entry] = []
    for name, params in ARCHITECTURE_PARAMS.items():
        normalization = _parameters(models[name], ("architecture", "params"))
        entries.append({
            "name": name,
            "description": _description(params),
            "parameters": _parameters(params) + normalization,
        })
    return entries


def datasets() -> list[Entry]:
    """Every dataset name with the fields of its class (one class may serve several names)."""
    return [
        {"name": tag, "description": _description(cls), "parameters": _parameters(cls, ("name",))}
        for cls in _union_members(DatasetSpec)
        for tag in _tags(cls, "name")
    ]


def attacks() -> list[Entry]:
    """Every attack kind of the evaluation section with its parameters."""
    return [
        {"name": tag, "description": _description(cls), "parameters": _parameters(cls, ("kind",))}
        for cls in _union_members(AttackSpec)
        for tag in _tags(cls, "kind")
    ]


def catalog(category: str) -> list[Entry]:
    """The listing of one category; KeyError names the valid categories."""
    listings = {"regularizers": regularizers, "architectures": architectures,
                "datasets": datasets, "attacks": attacks}
    if category not in listings:
        raise KeyError(f"unknown category {category!r}: use one of {', '.join(CATEGORIES)}")
    return listings[category]()
