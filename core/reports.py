"""The report schema (versioned): what `robustlab compare` / `evaluate` write as report.json.

Torch-free so that the service, the dashboard and the CI gate read reports without the science.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.3"  # 1.3: per-attack sample outcomes; 1.2: accuracy intervals; 1.1: per-sample outcomes

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
    interval: tuple[float, float] | None = None  # 95 % Clopper-Pearson over the samples (None: older reports)


class WorstCase(_Model):
    norm: Literal["linf", "l2"]
    eps: float
    accuracy: float  # samples correct under every attack at every eps' ≤ eps (monotone)
    interval: tuple[float, float] | None = None  # 95 % Clopper-Pearson over the samples (None: older reports)


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


def pack_bits(bits: list[bool]) -> str:
    """Booleans as hex, 4 samples per digit, sample i in bit i % 4 of digit i // 4 (compact in JSON)."""
    digits = []
    for i in range(0, len(bits), 4):
        digits.append("0123456789abcdef"[sum(1 << k for k, bit in enumerate(bits[i:i + 4]) if bit)])
    return "".join(digits)


def unpack_bits(text: str, count: int) -> list[bool]:
    """The inverse of pack_bits, for `count` samples."""
    values = [int(c, 16) for c in text]
    return [bool(values[i // 4] >> (i % 4) & 1) for i in range(count)]


class OutcomeBits(_Model):
    norm: Literal["linf", "l2"]
    eps: float
    correct: str  # pack_bits of: still correct under every attack at every ε' ≤ eps, by sample index


class AttackOutcomeBits(OutcomeBits):
    """One attack kind's outcome at one radius: still correct under every attack of that kind there
    (the per-attack accuracies of the run, sample by sample)."""

    attack: str  # fgsm, pgd, apgd, square, autoattack, suite


class SampleOutcomes(_Model):
    """Each evaluated sample's outcome by its index in the test set (0 … samples−1): what paired tests
    against a baseline and the merging of evaluation shards read."""

    samples: int
    clean: str  # pack_bits of: classified correctly without attack
    worst_case: list[OutcomeBits] = Field(default_factory=list)
    attacks: list[AttackOutcomeBits] = Field(default_factory=list)  # since schema 1.3

    def clean_correct(self) -> list[bool]:
        return unpack_bits(self.clean, self.samples)

    def correct_at(self, norm: str, eps: float) -> list[bool]:
        for row in self.worst_case:
            if row.norm == norm and row.eps == eps:
                return unpack_bits(row.correct, self.samples)
        raise KeyError(f"no per-sample outcome at {norm} ε={eps}")


class Escalation(_Model):
    """A step the evaluation took because a check saw masking or randomness (models/evaluation/evaluate.py):
    what it attacked and broke at one radius, beyond everything before it."""

    name: str  # bpda-suite, square-5000, eot
    norm: Literal["linf", "l2"]
    eps: float
    attacked: int
    broken: int
    seconds: float = 0.0
    detail: str = ""


class RadiusTrust(_Model):
    """How far one radius's number can be believed: trusted (no check saw a problem), escalated (a check
    saw masking or randomness and the number is the lowest the escalation reached), flagged (a check
    failed that no escalation answers)."""

    norm: Literal["linf", "l2"]
    eps: float
    status: Literal["trusted", "escalated", "flagged"]
    detail: str = ""


class RunReport(_Model):
    regularizer: str
    kind: str
    seed: int
    clean_accuracy: float
    clean_interval: tuple[float, float] | None = None  # 95 % Clopper-Pearson (reports.statistics.with_intervals)
    samples: int
    robust: list[AttackAccuracy]
    worst_case: list[WorstCase]
    sensitivity: Sensitivity | None = None
    cost: Cost = Field(default_factory=Cost)
    checks: list[Check] = Field(default_factory=list)
    trustworthy: bool = True  # False when any check failed: robust accuracy is not to be believed
    checked: bool = True  # False: evaluated with `checks: off`, no validity check ran ("unchecked")
    escalated: bool = False  # an escalation ran (the numbers are the lowest it reached): status "escalated"
    escalations: list[Escalation] = Field(default_factory=list)
    radius_trust: list[RadiusTrust] = Field(default_factory=list)
    training_failed: bool = False  # the training_healthy check failed: shown, left out of comparisons
    attack_costs: list[AttackCost] = Field(default_factory=list)
    suite_members: list[SuiteMember] = Field(default_factory=list)
    checkpoint: str | None = None
    outcomes: SampleOutcomes | None = None  # per sample, by index (reports from before 1.1 have none)


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


class ModelInfo(_Model):
    """The model file an evaluate job judged: which file exactly (its hash), and how it was read."""

    file: str  # the file's name, e.g. "cnn.onnx"
    sha256: str
    format: str  # "onnx", "timm", "torchvision", or "registry" (a robustlab checkpoint or state_dict)
    bytes: int | None = None


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
    model_info: ModelInfo | None = None  # evaluate reports: the model file (None in compare reports)
