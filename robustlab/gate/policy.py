"""The CI gate's policy: what a checkpoint must reach for `robustlab gate` to pass.

    min_clean_accuracy: 0.9
    min_robust_accuracy:
      - {attack: pgd, norm: linf, eps: 0.1, min: 0.5}
    baseline: reports/main.json     # an earlier report.json, or the id of a finished job
    max_regression: 0.02            # the smallest drop against the baseline that matters
    significance: 0.05              # a drop fails only when the paired (McNemar) test finds it at this level
    require_checks_pass: true       # a failed validity check fails the gate
    decide: interval                # a threshold passes when the 95 % interval clears it (point: the estimate)

Read like a spec: YAML (or JSON) with duplicate keys refused, frozen models with unknown fields
refused, and every problem reported with its field path (`min_robust_accuracy[0].eps: ...`).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.specs.base import FieldError
from core.specs.yaml_reading import YamlProblem, read_yaml

GatedAttack = Literal["fgsm", "pgd", "autoattack", "square", "worst_case"]
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def same_eps(a: float, b: float) -> bool:
    """8/255 in a spec is 0.0314 in a policy: radii within 0.1 % of each other are the same radius.

    No sweep uses radii that close, so the tolerance cannot pick the wrong one.
    """
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-9)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RobustRequirement(_Model):
    """Accuracy under one attack at one radius; `worst_case` is the worst over every attack of the norm."""

    attack: GatedAttack
    norm: Literal["linf", "l2"]
    eps: float = Field(gt=0.0, le=100.0)
    min: float = Field(ge=0.0, le=1.0, description="the least accuracy that passes, in [0, 1]")

    @property
    def name(self) -> str:
        return f"robust_accuracy {self.attack} {self.norm} eps={self.eps:g}"


class GatePolicy(_Model):
    min_clean_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    min_robust_accuracy: list[RobustRequirement] = Field(default_factory=list, max_length=256)
    baseline: str | None = Field(None, min_length=1, description="an earlier report.json, or a job id")
    max_regression: float | None = Field(None, ge=0.0, le=1.0)
    require_checks_pass: bool = True
    decide: Literal["interval", "point"] = "interval"
    significance: float = Field(0.05, gt=0.0, lt=0.5, description="level of the paired regression test")

    @model_validator(mode="after")
    def _consistent(self) -> GatePolicy:
        # A baseline alone would either gate nothing or silently allow no drop at all. max_regression alone
        # is fine: the baseline may come with `robustlab gate --baseline` (the gate says so when none does).
        if self.baseline is not None and self.max_regression is None:
            raise ValueError("a baseline needs max_regression: the absolute drop allowed, e.g. 0.02 (0 allows none)")
        wants = self.min_robust_accuracy
        for i, a in enumerate(wants):
            if any(a.attack == b.attack and a.norm == b.norm and same_eps(a.eps, b.eps) for b in wants[:i]):
                raise FieldError(f"names {a.attack} {a.norm} eps={a.eps:g} a second time: keep one",
                                 "min_robust_accuracy", i)
        return self


class PolicyError(ValueError):
    """A policy that cannot be used; `problems` are (path, message) pairs, path "" for the whole file."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(f"{p}: {m}" if p else m for p, m in problems))


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for item in loc:
        path += f"[{item}]" if isinstance(item, int) else ("." if path else "") + str(item)
    return path


def _problem(error: Any) -> tuple[str, str]:
    loc = tuple(error["loc"])
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        model = RobustRequirement if len(loc) > 1 else GatePolicy
        fields = list(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return _path(loc), f"unknown field {loc[-1]!r}: {hint}the fields here are {', '.join(fields)}"
    if kind == "missing":
        return _path(loc), "required field is missing: add it"
    if kind == "literal_error":
        return _path(loc), f"{got!r} is not allowed: use one of {ctx.get('expected')}"
    if kind == "value_error":
        if isinstance(ctx.get("error"), FieldError):  # a model validator that knows the field at fault
            loc = loc + ctx["error"].loc
        return _path(loc), str(error["msg"]).removeprefix("Value error, ")
    shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
    return _path(loc), f"{error['msg']}{shown}"


def parse_policy(data: Any, source: str = "policy") -> GatePolicy:
    if not isinstance(data, dict):
        what = "an empty document" if data is None else f"a {type(data).__name__}"
        raise PolicyError(source, [("", f"a policy is a mapping of fields (min_clean_accuracy, "
                                        f"min_robust_accuracy, baseline, ...), got {what}")])
    try:
        return GatePolicy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, [_problem(e) for e in exc.errors()]) from None


def load_policy(path: str | Path) -> GatePolicy:
    """Read and validate a policy file; a duplicate key is a problem, not a silent override."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [("", f"cannot read the policy file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise PolicyError(str(path), [("", "not UTF-8 text: save the policy as UTF-8 YAML or JSON")]) from None
    try:
        data, duplicates = read_yaml(text)
    except YamlProblem as exc:
        raise PolicyError(str(path), [("", str(exc))]) from None
    if duplicates:
        raise PolicyError(str(path), [(d.path, d.message) for d in duplicates])
    return parse_policy(data, str(path))
