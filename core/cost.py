"""What a job will cost, estimated from its spec alone (no torch): checked against limits at submit.

A tenant must not be able to submit a job that exhausts a worker (DESIGN §6): a 4-billion-parameter
MLP, a dataset of 10⁹ floats, 6,400 runs of 10,000 epochs, PGD with 10,000 steps × 100 restarts.
The estimate is deliberately simple and errs on the large side; each figure has its own limit
(`Settings.max_job_*`, overridable per tenant with ROBUSTLAB_TENANT_LIMITS), and a job over a limit
is refused with a 422 that names the field at fault and the limit.

- parameters: of the model (registry architectures; user models are bounded by their upload size);
- activation_bytes: activations kept for the backward pass of one training batch (x3 when a
  regularizer differentiates the input gradient again);
- dataset_bytes: the training and test inputs as float32;
- train_samples: runs (regularizers x seeds) x epochs x training samples;
- attack_steps: runs x the sum over attacks of steps x restarts x radii (x targets for APGD-T), and
  attack_steps_per_radius: the largest steps x restarts of one attack.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from core.specs.experiment import ExperimentSpec

FLOAT = 4
DIGITS = (1, 8, 8), 10, 1797
IMAGES = {"mnist": ((1, 28, 28), 10, 70_000), "fashion_mnist": ((1, 28, 28), 10, 70_000),
          "cifar10": ((3, 32, 32), 10, 60_000)}
SECOND_ORDER = {"double_backprop", "datagrad_l1", "jacobian", "input_hessian", "sobolev", "confidence_penalty"}
SUITE_STEPS = 100 + 9 * 100 + 9 * 100 + 5000  # APGD-CE, APGD-T, FAB-T, Square (AutoAttack standard), per radius


@dataclass(frozen=True)
class JobCost:
    parameters: int
    activation_bytes: int
    dataset_bytes: int
    train_samples: int
    attack_steps: int
    attack_steps_per_radius: int
    runs: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# field of JobCost -> (Settings attribute, spec path shown to the user, what to change)
LIMITS: dict[str, tuple[str, str, str]] = {
    "runs": ("max_job_runs", "spec.regularizers", "fewer regularizers or seeds"),
    "parameters": ("max_job_parameters", "spec.model.params", "a smaller model"),
    "activation_bytes": ("max_job_activation_bytes", "spec.training.batch_size", "a smaller batch or model"),
    "dataset_bytes": ("max_job_dataset_bytes", "spec.dataset", "fewer samples or features"),
    "train_samples": ("max_job_train_samples", "spec.training.epochs", "fewer epochs, runs or samples"),
    "attack_steps": ("max_job_attack_steps", "spec.evaluation.attacks", "fewer steps, restarts or radii"),
    "attack_steps_per_radius": ("max_job_attack_steps_per_radius", "spec.evaluation.attacks",
                                "fewer steps or restarts per attack"),
}


def _shape(spec: ExperimentSpec) -> tuple[tuple[int, ...], int, int]:
    """(input shape, outputs, samples available) of the dataset; uploads use the model's declared shape."""
    data: Any = spec.dataset
    name = data.name
    if name == "digits":
        return DIGITS
    if name in IMAGES:
        return IMAGES[name]
    if name == "synthetic":
        return (int(data.n_features),), int(data.n_classes), int(data.n_samples)
    if name == "function_regression":
        return (int(data.dim),), 1, int(data.n_samples)
    model: Any = spec.model
    declared = tuple(getattr(model, "input_shape", None) or (3, 32, 32))
    samples = (getattr(data, "train_size", None) or 0) + (getattr(data, "test_size", None) or 0)
    return declared, int(getattr(model, "num_classes", 10) or 10), samples or 60_000


def _mlp(inputs: int, hidden: list[int], outputs: int) -> tuple[int, int]:
    """(parameters, activations per sample)."""
    sizes = [inputs, *hidden, outputs]
    parameters = sum(a * b + b for a, b in pairwise(sizes))
    return parameters, 2 * sum(sizes[1:])


def _model(spec: ExperimentSpec, shape: tuple[int, ...], outputs: int) -> tuple[int, int]:
    """(parameters, activation floats per sample) of the spec's model (rough, on the large side)."""
    model: Any = spec.model
    architecture = getattr(model, "architecture", None)
    params: Any = getattr(model, "params", None)
    channels, pixels = (shape[0], math.prod(shape[1:])) if len(shape) == 3 else (1, math.prod(shape))
    if architecture == "mlp":
        return _mlp(math.prod(shape), list(params.hidden), outputs)
    if architecture == "lenet5":
        return 62_000 + 84 * outputs, 6 * pixels * 3 + 16 * pixels // 4 * 3
    if architecture == "cnn_small":
        widths = [channels, *params.channels]
        convs = sum(9 * a * b + b for a, b in pairwise(widths))
        flat = widths[-1] * max(pixels // 4 ** len(params.channels), 1)
        dense, _ = _mlp(flat, [params.hidden], outputs)
        return convs + dense, 3 * sum(w * max(pixels // 4 ** i, 1) for i, w in enumerate(widths[1:]))
    if architecture == "resnet18":
        width = int(params.width)
        return int(11_200_000 * (width / 64) ** 2) + 8 * width * outputs, 25 * width * pixels
    if architecture == "wide_resnet":
        k, blocks = int(params.widen_factor), (int(params.depth) - 4) // 6
        return int(36_500_000 * (k / 10) ** 2 * blocks / 4), 6 * 16 * k * pixels * blocks
    # a user model (ONNX, timm, torchvision): its size is bounded by the upload; activations by a
    # ResNet-50-like guess over its declared input
    return 0, 60 * pixels * channels


def estimate(spec: ExperimentSpec) -> JobCost:
    shape, outputs, available = _shape(spec)
    data: Any = spec.dataset
    train = getattr(data, "train_size", None) or int(available * 0.8)
    test = getattr(data, "test_size", None) or max(available - train, 1)
    parameters, per_sample = _model(spec, shape, outputs)
    kinds = {getattr(r, "kind", "") for r in spec.regularizers}
    factor = 3 if kinds & SECOND_ORDER else 1
    runs = len(spec.regularizers) * len(spec.seeds)
    steps = widest = 0
    for attack in spec.evaluation.attacks:
        a: Any = attack
        if a.kind in ("suite", "autoattack"):
            one = SUITE_STEPS
        elif a.kind == "square":
            one = int(a.queries) * int(getattr(a, "restarts", 1))
        else:
            one = int(getattr(a, "steps", 1)) * int(getattr(a, "restarts", 1)) * max(int(getattr(a, "targets", 0)), 1)
        widest = max(widest, one)
        steps += one * len(a.eps)
    return JobCost(
        parameters=parameters,
        activation_bytes=FLOAT * factor * per_sample * int(spec.training.batch_size),
        dataset_bytes=FLOAT * math.prod(shape) * (train + test),
        train_samples=runs * int(spec.training.epochs) * train,
        attack_steps=runs * steps,
        attack_steps_per_radius=widest,
        runs=runs,
    )


def over_limits(cost: JobCost, limits: dict[str, int]) -> list[tuple[str, str]]:
    """(spec path, message) for every figure over its limit; `limits` maps Settings attributes to values."""
    problems = []
    for name, (setting, path, advice) in LIMITS.items():
        value, limit = getattr(cost, name), limits.get(setting)
        if limit is not None and value > limit:
            problems.append((path, f"the job's estimated {name.replace('_', ' ')} is {value:,}, over this "
                             f"tenant's limit of {limit:,} ({setting.upper()}): use {advice}"))
    return problems
