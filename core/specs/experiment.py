"""The whole experiment spec: what to train, how, with which regularizers, and how to attack it."""

import hashlib
import json
import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from core.specs.base import FieldError, Spec
from core.specs.dataset import UPLOAD_ID_PATTERN, DatasetSpec
from core.specs.evaluation import EvaluationSpec
from core.specs.model import ModelSpec
from core.specs.regularizers import RegularizerSpec, RunName, Sobolev
from core.specs.training import TrainingSpec

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
CONV_ARCHITECTURES = ("lenet5", "cnn_small", "resnet18", "wide_resnet")
VECTOR_DATASETS = ("synthetic", "function_regression")


class ExperimentSpec(Spec):
    name: RunName
    dataset: DatasetSpec
    model: ModelSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    regularizers: list[RegularizerSpec] = Field(min_length=1, max_length=64)
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=100
    )
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a value: list each seed once")
        return seeds

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentSpec":
        names = [r.name for r in self.regularizers]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise FieldError(
                    f"regularizer names must be unique; {name!r} is already the name of "
                    f"regularizers[{names.index(name)}]: rename one",
                    "regularizers", index, "name",
                )
        architecture = getattr(self.model, "architecture", None)  # None: a user's own model file
        if self.dataset.name in VECTOR_DATASETS and architecture in CONV_ARCHITECTURES:
            raise FieldError(
                f"architecture {architecture!r} needs images, but dataset "
                f"{self.dataset.name!r} gives vectors: use architecture 'mlp'",
                "model", "architecture",
            )
        regression = self.dataset.name == "function_regression"
        for index, reg in enumerate(self.regularizers):
            if regression and reg.kind in ("confidence_penalty", "jacobian"):
                raise FieldError(
                    f"regularizer {reg.name!r} ({reg.kind}) needs class probabilities, but "
                    "function_regression is a regression task: use double_backprop or sobolev",
                    "regularizers", index, "kind",
                )
            if isinstance(reg, Sobolev):
                self._check_teacher(reg, index, names, regression)
        self.training_order()  # raises on a teacher cycle
        return self

    def _check_teacher(self, reg: Sobolev, index: int, names: list[str], regression: bool) -> None:
        teacher = reg.teacher
        where = ("regularizers", index, "teacher")
        if teacher == reg.name:
            raise FieldError(f"sobolev run {reg.name!r} names itself as teacher: name another run", *where)
        if teacher == "dataset":
            if not regression:
                raise FieldError(
                    f"sobolev run {reg.name!r}: teacher 'dataset' needs exact target gradients, "
                    "which only function_regression has: name another run or a checkpoint",
                    *where,
                )
        elif teacher not in names and not teacher.endswith(CHECKPOINT_SUFFIXES) and not is_upload_id(teacher):
            raise FieldError(
                f"sobolev run {reg.name!r}: teacher {teacher!r} is neither a run of this spec "
                f"({', '.join(names)}), an uploaded model id, nor a checkpoint path ending in "
                f"{', '.join(CHECKPOINT_SUFFIXES)}",
                *where,
            )

    def training_order(self) -> list[str]:
        """Run names ordered so that every Sobolev teacher run comes before its students."""
        by_name = {r.name: r for r in self.regularizers}
        index = {r.name: i for i, r in enumerate(self.regularizers)}
        ordered: list[str] = []
        visiting: list[str] = []  # the chain of students being visited, for the cycle message

        def visit(name: str) -> None:
            if name in ordered:
                return
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name):], name])
                raise FieldError(
                    f"sobolev teachers form a cycle ({cycle}, each run naming the next as teacher): "
                    "give one of them a teacher outside the cycle",
                    "regularizers", index[visiting[-1]], "teacher",
                )
            visiting.append(name)
            reg = by_name[name]
            if isinstance(reg, Sobolev) and reg.teacher in by_name:
                visit(reg.teacher)
            visiting.pop()
            ordered.append(name)

        for reg in self.regularizers:
            visit(reg.name)
        return ordered

    def regularizer(self, name: str) -> RegularizerSpec:
        for reg in self.regularizers:
            if reg.name == name:
                return reg
        raise KeyError(f"no regularizer named {name!r} in spec {self.name!r}")

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the validated spec (defaults filled in)."""
        return spec_hash(self)


def is_upload_id(value: str) -> bool:
    """Whether a string is an upload id (a UUID as POST /v1/models or /v1/datasets return it)."""
    return re.fullmatch(UPLOAD_ID_PATTERN, value) is not None


def spec_hash(spec: Spec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
