"""The evaluation section: which attacks at which radii (DESIGN §3)."""

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.specs.base import FieldError, Spec

# The attack suite makes its per-radius decisions (escalating Square) per block of this many sample
# indices (models.attacks.suite.DECISION_BLOCK), so an evaluation shard holds whole blocks.
SHARD_BLOCK = 100
# 500 samples per unit: a 10,000-sample evaluation spreads over 20 workers, and a small test set
# (digits' 500) stays one unit per model.
DEFAULT_SHARD_SIZE = 500

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

    @model_validator(mode="after")
    def _reaches_the_ball(self) -> "PGDAttack":
        # A fixed step that cannot cover the radius is not an attack at that radius: from x, the
        # iterates never reach the ball's surface, so PGD is weaker than one FGSM step there.
        if self.step_size is not None and self.steps * self.step_size < max(self.eps):
            far = [e for e in self.eps if self.steps * self.step_size < e]
            raise FieldError(
                f"steps × step_size = {self.steps} × {self.step_size:g} = {self.steps * self.step_size:g} "
                f"is smaller than eps {', '.join(f'{e:g}' for e in far)}: PGD cannot reach the ball's "
                "surface there; leave step_size out (default 2.5·eps/steps per radius) or raise steps",
                "step_size",
            )
        return self


class APGDAttack(_Attack):
    """APGD (Croce & Hein 2020): PGD with momentum and the step-size schedule that halves the step
    at checkpoints where the loss stalls; cross-entropy, or the scale-invariant DLR loss, optionally
    targeted at the `targets` most likely wrong classes (APGD-T), each run on survivors only."""

    kind: Literal["apgd"]
    loss: Literal["ce", "dlr"] = "ce"
    steps: int = Field(100, ge=1, le=10_000)
    restarts: int = Field(1, ge=1, le=100)
    targets: int = Field(0, ge=0, le=999, description="0: untargeted; k: targeted DLR on the top-k classes")
    rho: float = Field(0.75, gt=0.0, le=1.0, description="checkpoint threshold of the step-size schedule")

    @model_validator(mode="after")
    def _targeted_is_dlr(self) -> "APGDAttack":
        if self.targets and self.loss != "dlr":
            raise FieldError("targeted APGD (targets > 0) uses the targeted DLR loss: set loss: dlr", "loss")
        return self


class SuiteSpec(_Attack):
    """A named attack suite run as one entry. `standard`: as strong as AutoAttack standard at a
    fraction of its cost (APGD-CE, then targeted APGD-DLR and a Square control on survivors)."""

    kind: Literal["suite"]
    name: Literal["standard"] = "standard"


class AutoAttackSpec(_Attack):
    """AutoAttack (Croce & Hein 2020): the parameter-free ensemble of APGD, FAB and Square."""

    kind: Literal["autoattack"]
    version: Literal["standard", "rand"] = "standard"


class SquareAttack(_Attack):
    """Square (Andriushchenko et al. 2020): a black-box, score-based control against gradient masking."""

    kind: Literal["square"]
    queries: int = Field(1000, ge=1, le=100_000)


AnyAttack = FGSMAttack | PGDAttack | AutoAttackSpec | SquareAttack | APGDAttack | SuiteSpec
AttackSpec = Annotated[AnyAttack, Field(discriminator="kind")]

STANDARD_EPS = {"linf": [0.1, 0.2], "l2": [1.0, 2.0]}  # radii of the default suite, [0, 1] inputs


def standard_suite(norm: Literal["linf", "l2"] = "linf", eps: list[float] | None = None) -> SuiteSpec:
    """`{kind: suite, name: standard, norm: linf, eps: [0.1, 0.2]}`: the default evaluation."""
    return SuiteSpec(kind="suite", name="standard", norm=norm, eps=eps or STANDARD_EPS[norm])


def _default_attacks() -> list[AnyAttack]:
    return [standard_suite("linf")]


class EvaluationSpec(Spec):
    attacks: list[AttackSpec] = Field(default_factory=_default_attacks, max_length=32,
                                      description="empty or left out: the standard suite, L∞ ε 0.1 and 0.2")
    batch_size: int = Field(256, ge=1, le=65_536)
    max_samples: int | None = Field(None, ge=1, description="evaluate at most this many test samples")
    seed: int = Field(0, ge=0, description="seed of every random start")
    # A shard is one work unit: workers evaluate a model's shards in parallel and the job merges
    # them. The numbers do not depend on it (randomness is keyed by sample index, and the suite's
    # decisions by blocks of SHARD_BLOCK samples), so it is left out of the spec hash at its default.
    shard_size: int = Field(
        DEFAULT_SHARD_SIZE, ge=SHARD_BLOCK, le=1_000_000,
        description=f"test samples per evaluation unit (a multiple of {SHARD_BLOCK}); a model's "
        "evaluation is spread over ceil(samples / shard_size) units that any worker may run",
        exclude_if=lambda value: value == DEFAULT_SHARD_SIZE)

    # The validity checks (docs/evaluation.md): `fast` (the default) runs the costly ones on a subset
    # of the audit samples and reuses the attacks' own per-sample outcomes, `full` runs every one on
    # the whole audit subset at every radius, `off` runs none and marks the report unchecked (a gate
    # with require_checks_pass never passes it). Left out of the spec hash at its default.
    checks: Literal["full", "fast", "off"] = Field(
        "fast", description="validity checks: fast (default, ≤ half the attacks' time), full, or off (unchecked)",
        exclude_if=lambda value: value == "fast")

    # Expectation over transformations for randomized models (predictions that change between passes):
    # gradients averaged over this many forward passes (the number is in the report's escalations).
    eot: int = Field(10, ge=2, le=1000, description="EOT draws per gradient for randomized models",
                     exclude_if=lambda value: value == 10)

    @field_validator("shard_size")
    @classmethod
    def _whole_blocks(cls, size: int) -> int:
        if size % SHARD_BLOCK:
            raise ValueError(f"shard_size {size} is not a multiple of {SHARD_BLOCK}: the attack suite decides "
                             f"per block of {SHARD_BLOCK} samples, so a shard holds whole blocks "
                             f"(e.g. {max(SHARD_BLOCK, size // SHARD_BLOCK * SHARD_BLOCK)})")
        return size

    @field_validator("attacks")
    @classmethod
    def _default_when_empty(cls, attacks: list[AnyAttack]) -> list[AnyAttack]:
        return attacks or _default_attacks()
