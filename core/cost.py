"""What a job will cost, estimated from its spec alone (no torch): checked against limits at submit.

A tenant must not be able to submit a job that exhausts a worker (DESIGN §6): a 4-billion-parameter
MLP, a dataset of 10⁹ floats, 6,400 runs of 10,000 epochs, PGD with 10,000 steps × 100 restarts.
The estimate is deliberately simple and errs on the large side; each figure has its own limit
(`Settings.max_job_*`, overridable per tenant with ROBUSTLAB_TENANT_LIMITS), and a job over a limit
is refused with a 422 that names the field at fault and the limit.

- parameters: of the model (registry architectures from their parameters; an uploaded model as its
  upload check measured it, real storage once loaded);
- forward_flops: of one sample's forward pass (2 x multiply-adds; registry architectures estimated,
  uploaded models measured);
- activation_bytes: activations kept for the backward pass of one training batch (x3 when a
  regularizer differentiates the input gradient again);
- dataset_bytes: the training and test inputs as float32 (an uploaded dataset: its recorded shape,
  classes and sample counts, read exactly as a built-in dataset's);
- train_samples: runs (regularizers x seeds) x epochs x training samples;
- attack_steps: runs x the sum over attacks of steps x restarts x radii (x targets for APGD-T), and
  attack_steps_per_radius: the largest steps x restarts of one attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
class UploadedData:
    """What the upload checker recorded about an uploaded dataset (jobstore DatasetRecord)."""

    sample_shape: Sequence[int]
    num_classes: int
    train_samples: int
    test_samples: int


@dataclass(frozen=True)
class UploadedModel:
    """What the upload checker measured of an uploaded model (jobstore CheckpointRecord)."""

    parameters: int
    forward_flops: int


@dataclass(frozen=True)
class JobCost:
    parameters: int
    forward_flops: int
    activation_bytes: int
    dataset_bytes: int
    train_samples: int
    attack_steps: int
    attack_steps_per_radius: int
    runs: int
    uploaded_model_parameters: int = 0  # parameters and forward_flops again when the model is an upload
    uploaded_model_forward_flops: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# (field of JobCost, Settings attribute, spec path shown to the user, what to change). The uploaded-model
# limits apply to uploaded models only: a registry architecture's size is max_job_parameters' business.
LIMITS: list[tuple[str, str, str, str]] = [
    ("runs", "max_job_runs", "spec.regularizers", "fewer regularizers or seeds"),
    ("parameters", "max_job_parameters", "spec.model.params", "a smaller model"),
    ("uploaded_model_parameters", "max_model_parameters", "spec.model", "a smaller model"),
    ("uploaded_model_forward_flops", "max_forward_flops", "spec.model",
     "a model with a cheaper forward pass or smaller inputs"),
    ("activation_bytes", "max_job_activation_bytes", "spec.training.batch_size", "a smaller batch or model"),
    ("dataset_bytes", "max_job_dataset_bytes", "spec.dataset", "fewer samples or features"),
    ("train_samples", "max_job_train_samples", "spec.training.epochs", "fewer epochs, runs or samples"),
    ("attack_steps", "max_job_attack_steps", "spec.evaluation.attacks", "fewer steps, restarts or radii"),
    ("attack_steps_per_radius", "max_job_attack_steps_per_radius", "spec.evaluation.attacks",
     "fewer steps or restarts per attack"),
]


def _shape(spec: ExperimentSpec, upload: UploadedData | None) -> tuple[tuple[int, ...], int, int, int]:
    """(input shape, outputs, training samples, test samples) the dataset holds before train_size /
    test_size pick from it (a built-in dataset: 80 / 20 of what it has)."""
    data: Any = spec.dataset
    name = data.name
    shape: tuple[int, ...]
    if name == "upload" and upload is not None:
        return (tuple(int(v) for v in upload.sample_shape), int(upload.num_classes), int(upload.train_samples),
                int(upload.test_samples))
    if name == "digits":
        shape, outputs, available = DIGITS
    elif name in IMAGES:
        shape, outputs, available = IMAGES[name]
    elif name == "synthetic":
        shape, outputs, available = (int(data.n_features),), int(data.n_classes), int(data.n_samples)
    elif name == "function_regression":
        shape, outputs, available = (int(data.dim),), 1, int(data.n_samples)
    else:  # a local .npz (the CLI), or an upload the caller did not look up: the model's declared shape
        model: Any = spec.model
        shape = tuple(getattr(model, "input_shape", None) or (3, 32, 32))
        outputs = int(getattr(model, "num_classes", 10) or 10)
        available = ((getattr(data, "train_size", None) or 0) + (getattr(data, "test_size", None) or 0)) or 60_000
    train = int(available * 0.8)
    return shape, outputs, train, max(available - train, 1)


def _mlp(inputs: int, hidden: list[int], outputs: int) -> tuple[int, int]:
    """(parameters, activations per sample)."""
    sizes = [inputs, *hidden, outputs]
    parameters = sum(a * b + b for a, b in pairwise(sizes))
    return parameters, 2 * sum(sizes[1:])


def _model(spec: ExperimentSpec, shape: tuple[int, ...], outputs: int,
           upload: UploadedModel | None) -> tuple[int, int, int]:
    """(parameters, forward FLOPs, activation floats) per sample of the spec's model (rough, on the large side)."""
    model: Any = spec.model
    architecture = getattr(model, "architecture", None)
    params: Any = getattr(model, "params", None)
    channels, pixels = (shape[0], math.prod(shape[1:])) if len(shape) == 3 else (1, math.prod(shape))
    if architecture == "mlp":
        parameters, activations = _mlp(math.prod(shape), list(params.hidden), outputs)
        return parameters, 2 * parameters, activations
    if architecture == "lenet5":
        parameters = 62_000 + 84 * outputs
        macs = 25 * 6 * channels * pixels + 25 * 16 * 6 * pixels // 4 + parameters
        return parameters, 2 * macs, 6 * pixels * 3 + 16 * pixels // 4 * 3
    if architecture == "cnn_small":
        widths = [channels, *params.channels]
        convs = sum(9 * a * b + b for a, b in pairwise(widths))
        flat = widths[-1] * max(pixels // 4 ** len(params.channels), 1)
        dense, _ = _mlp(flat, [params.hidden], outputs)
        macs = sum(9 * a * b * max(pixels // 4 ** i, 1) for i, (a, b) in enumerate(pairwise(widths))) + dense
        return convs + dense, 2 * macs, 3 * sum(w * max(pixels // 4 ** i, 1) for i, w in enumerate(widths[1:]))
    if architecture == "resnet18":
        width = int(params.width)
        scale = (width / 64) ** 2
        return (int(11_200_000 * scale) + 8 * width * outputs, int(1.2e9 * scale * pixels / 1024),
                25 * width * pixels)
    if architecture == "wide_resnet":
        k, blocks = int(params.widen_factor), (int(params.depth) - 4) // 6
        scale = (k / 10) ** 2 * blocks / 4
        return int(36_500_000 * scale), int(10.5e9 * scale * pixels / 1024), 6 * 16 * k * pixels * blocks
    # an uploaded model (ONNX, timm, torchvision): what its upload check measured; activations by a
    # ResNet-50-like guess over its declared input
    parameters, flops = (upload.parameters, upload.forward_flops) if upload is not None else (0, 0)
    return parameters, flops, 60 * pixels * channels


def estimate(spec: ExperimentSpec, *, dataset: UploadedData | None = None,
             model: UploadedModel | None = None) -> JobCost:
    """The job's cost; `dataset` / `model`: the records of the uploads the spec names, if any."""
    shape, outputs, train_available, test_available = _shape(spec, dataset)
    data: Any = spec.dataset
    train = getattr(data, "train_size", None) or train_available
    test = getattr(data, "test_size", None) or test_available
    parameters, flops, per_sample = _model(spec, shape, outputs, model)
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
        forward_flops=flops,
        activation_bytes=FLOAT * factor * per_sample * int(spec.training.batch_size),
        dataset_bytes=FLOAT * math.prod(shape) * (train + test),
        train_samples=runs * int(spec.training.epochs) * train,
        attack_steps=runs * steps,
        attack_steps_per_radius=widest,
        runs=runs,
        uploaded_model_parameters=parameters if model is not None else 0,
        uploaded_model_forward_flops=flops if model is not None else 0,
    )


def over_limits(cost: JobCost, limits: dict[str, int]) -> list[tuple[str, str]]:
    """(spec path, message) for every figure over its limit; `limits` maps Settings attributes to values."""
    problems = []
    for name, setting, path, advice in LIMITS:
        value, limit = getattr(cost, name), limits.get(setting)
        if limit is not None and value > limit:
            problems.append((path, f"the job's estimated {name.replace('_', ' ')} is {value:,}, over this "
                             f"tenant's limit of {limit:,} ({setting.upper()}): use {advice}"))
    return problems
