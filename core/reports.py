"""The report schema (versioned): what `robustlab compare` / `evaluate` write as report.json.

Torch-free so that the service, the dashboard and the CI gate read reports without the science.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"

Status = Literal["pass", "warn", "fail"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Check(_Model):
    """One validity check of DESIGN §3, with the numbers behind its verdict."""

    name: str
    status: Status
    detail: str
    values: dict[str, Any] = Field(default_factory=dict)


class AttackAccuracy(_Model):
    attack: str  # attack kind: fgsm, pgd, autoattack, square
    norm: Literal["linf", "l2"]
    eps: float
    accuracy: float
    label: str = ""  # distinguishes two attacks of the same kind and norm, e.g. "pgd-20x1"


class WorstCase(_Model):
    norm: Literal["linf", "l2"]
    eps: float
    accuracy: float  # samples correct under every attack at every eps' ≤ eps (monotone)


class Sensitivity(_Model):
    input_gradient_norm: float  # mean_b ‖∇ₓℓ_b‖₂ on test points
    hessian_norm: float  # mean_b σ_max(∇ₓ²ℓ_b), power-iteration estimate
    jacobian_frobenius: float  # mean_b ‖∂f/∂x‖_F (logits)
    samples: int


class Cost(_Model):
    train_seconds: float | None = None
    step_seconds: float | None = None
    step_time_ratio_to_baseline: float | None = None
    peak_memory_bytes: int | None = None
    memory_measure: str | None = None  # "cuda_max_allocated" (GPU) or "cpu_peak_rss" (process RSS, sampled per step)
    eval_seconds: float | None = None


class AttackCost(_Model):
    """What one attack entry of the spec spent on this run (samples × passes through the model)."""

    label: str
    norm: Literal["linf", "l2"]
    gradient_evaluations: int  # forward + backward passes
    forwards: int  # forward-only passes (verdicts, score-based queries)
    seconds: float


class SuiteMember(_Model):
    """One member of an attack suite at one radius: what it was given, what it broke, what it cost."""

    suite: str  # e.g. "suite-standard"
    member: str  # e.g. "apgd-ce", "apgd-t", "square"
    norm: Literal["linf", "l2"]
    eps: float
    attacked: int  # samples still unbroken when it started
    broken: int  # of those, the samples it broke
    pruned: int = 0  # of the rest, the samples a black-box member gave up on before its budget ran out
    gradient_evaluations: int
    forwards: int
    seconds: float


class RunReport(_Model):
    regularizer: str
    kind: str
    seed: int
    clean_accuracy: float
    samples: int
    robust: list[AttackAccuracy]
    worst_case: list[WorstCase]
    sensitivity: Sensitivity | None = None
    cost: Cost = Field(default_factory=Cost)
    checks: list[Check] = Field(default_factory=list)
    trustworthy: bool = True  # False when any check failed: robust accuracy is not to be believed
    training_failed: bool = False  # the training_healthy check failed: shown, left out of comparisons
    attack_costs: list[AttackCost] = Field(default_factory=list)
    suite_members: list[SuiteMember] = Field(default_factory=list)
    checkpoint: str | None = None


class Stat(_Model):
    mean: float
    std: float
    ci95: tuple[float, float] | None = None  # Student-t interval over seeds (None for 1 seed)
    n: int = 1


class RobustStat(Stat):
    attack: str
    norm: Literal["linf", "l2"]
    eps: float
    label: str = ""


class WorstCaseStat(Stat):
    norm: Literal["linf", "l2"]
    eps: float


class BaselineComparison(_Model):
    """Paired over seeds against the baseline regularizer (same seeds)."""

    metric: str  # "clean" or "worst_case:<norm>:<eps>"
    difference: float  # mean of (this − baseline) over paired seeds
    p_value: float | None  # paired t-test, two-sided (None below 2 pairs or zero variance)
    # Holm–Bonferroni adjusted over every comparison of the report (None: no test, or an older report)
    p_adjusted: float | None = None
    significant: bool  # adjusted p < 0.05 (raw p < 0.05 in reports made before the correction)


class RegularizerSummary(_Model):
    regularizer: str
    kind: str
    clean_accuracy: Stat
    robust_accuracy: list[RobustStat]
    worst_case: list[WorstCaseStat]
    vs_baseline: list[BaselineComparison] = Field(default_factory=list)
    trustworthy: bool = True
    step_time_ratio_to_baseline: float | None = None
    train_seconds: float | None = None


class Report(_Model):
    schema_version: str = SCHEMA_VERSION
    kind: Literal["compare", "evaluate"] = "compare"
    spec: dict[str, Any]
    spec_hash: str
    environment: dict[str, Any]
    baseline: str | None = None
    runs: list[RunReport]
    summary: list[RegularizerSummary]
    checks: list[Check]
