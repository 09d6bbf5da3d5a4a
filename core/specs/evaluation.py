"""The evaluation section: which attacks at which radii (DESIGN §3)."""

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.specs.base import FieldError, Spec

Eps = Annotated[float, Field(gt=0.0, le=100.0)]


class _Attack(Spec):
    """Fields every attack takes: the threat model (norm) and the radii to sweep."""

    norm: Literal["linf", "l2"] = "linf"
    eps: list[Eps] = Field(min_length=1, max_length=64, description="radii in [0, 1] input space")

    @field_validator("eps")
    @classmethod
    def _sorted_unique(cls, eps: list[float]) -> list[float]:
        if len(set(eps)) != len(eps):
            raise ValueError(f"eps {eps} repeats a value: list each radius once")
        return sorted(eps)

    @model_validator(mode="after")
    def _linf_within_unit_box(self) -> "_Attack":
        if self.norm == "linf" and max(self.eps) > 1.0:
            raise FieldError(
                f"linf eps {max(self.eps)} exceeds 1, the size of the [0, 1] input box: "
                "use radii in (0, 1], or norm: l2",
                "eps",
            )
        return self


class FGSMAttack(_Attack):
    """FGSM (Goodfellow et al. 2015): one signed-gradient step (L2: one normalized-gradient step)."""

    kind: Literal["fgsm"]


class PGDAttack(_Attack):
    """PGD (Madry et al. 2018): projected gradient steps from a random start, worst over restarts."""

    kind: Literal["pgd"]
    steps: int = Field(20, ge=1, le=10_000)
    step_size: float | None = Field(
        None, gt=0.0, description="absolute step; default 2.5·eps/steps (Madry et al.)"
    )
    restarts: int = Field(1, ge=1, le=100)
    random_start: bool = True


class AutoAttackSpec(_Attack):
    """AutoAttack (Croce & Hein 2020): the parameter-free ensemble of APGD, FAB and Square."""

    kind: Literal["autoattack"]
    version: Literal["standard", "rand"] = "standard"


class SquareAttack(_Attack):
    """Square (Andriushchenko et al. 2020): a black-box, score-based control against gradient masking."""

    kind: Literal["square"]
    queries: int = Field(1000, ge=1, le=100_000)


AttackSpec = Annotated[
    FGSMAttack | PGDAttack | AutoAttackSpec | SquareAttack, Field(discriminator="kind")
]


def _default_attacks() -> list[FGSMAttack | PGDAttack | AutoAttackSpec | SquareAttack]:
    return [
        FGSMAttack(kind="fgsm", eps=[0.05, 0.1, 0.2]),
        PGDAttack(kind="pgd", eps=[0.05, 0.1, 0.2]),
    ]


class EvaluationSpec(Spec):
    attacks: list[AttackSpec] = Field(default_factory=_default_attacks, max_length=32)
    batch_size: int = Field(256, ge=1, le=65_536)
    max_samples: int | None = Field(None, ge=1, description="evaluate at most this many test samples")
    seed: int = Field(0, ge=0, description="seed of every random start")
