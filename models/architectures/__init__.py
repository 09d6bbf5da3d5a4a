"""The architecture registry and the one way to build a model: a registry network behind its
normalization layer.

Every model the lab trains, attacks or loads from a checkpoint is built here from an
`Architecture` name and validated params, never from code supplied by a user (DESIGN §6).
Importing this package registers every architecture module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from core.enums import Architecture
from core.specs.model import ARCHITECTURE_PARAMS, Normalization
from models.architectures import cnn, lenet, mlp, resnet, wide_resnet
from models.architectures.base import Normalize, NormalizedModel
from models.architectures.common import ARCHITECTURES, ArchitectureFactory

__all__ = [
    "ARCHITECTURES",
    "ArchitectureFactory",
    "Normalize",
    "NormalizedModel",
    "build_from_spec",
    "build_model",
    "validate_params",
]

logger = logging.getLogger(__name__)

# The modules above register themselves on import; name them so linters see them used.
_ARCHITECTURE_MODULES = (mlp, lenet, cnn, resnet, wide_resnet)


def _architecture(name: str) -> Architecture:
    try:
        return Architecture(name)
    except ValueError:
        known = ", ".join(m.value for m in Architecture)
        raise ValueError(f"unknown architecture {name!r}: use one of {known}") from None


def validate_params(architecture: str, params: Mapping[str, Any] | BaseModel | None) -> BaseModel:
    """The params of `architecture`, validated by its params class.

    Accepts the params object itself, a dict (as stored in checkpoint metadata; None means all
    defaults) or another pydantic model, which is re-validated so that params of the wrong
    architecture are rejected instead of silently misread.
    """
    params_class = ARCHITECTURE_PARAMS[_architecture(architecture).value]
    if isinstance(params, params_class):
        return params
    if isinstance(params, BaseModel):
        params = params.model_dump()
    return params_class.model_validate(dict(params or {}))


def _check_input(input_shape: Sequence[int], num_outputs: int) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if len(shape) not in (1, 3) or not all(isinstance(v, int) and v >= 1 for v in shape):
        raise ValueError(
            f"input_shape {shape} is not C×H×W (images) or D (vectors) of positive integers"
        )
    if not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"num_outputs must be a positive integer, got {num_outputs!r}")
    return shape


def _check_stats(mean: Sequence[float], std: Sequence[float], shape: tuple[int, ...], source: str) -> None:
    """One mean/std per image channel (or 1 or D values for vectors), std > 0."""
    if len(mean) != len(std):
        raise ValueError(f"{source} mean has {len(mean)} values and std {len(std)}: give one of each")
    if len(shape) == 3 and len(mean) != shape[0]:
        raise ValueError(
            f"{source} has {len(mean)} values but the input has {shape[0]} channels "
            f"(input_shape {shape}): give one mean/std per channel"
        )
    if len(shape) == 1 and len(mean) not in (1, shape[0]):
        raise ValueError(
            f"{source} has {len(mean)} values but the inputs are vectors of {shape[0]}: "
            f"give 1 or {shape[0]} values"
        )
    if any(not s > 0 for s in std):
        raise ValueError(f"{source} std must be > 0, got {list(std)}")


def build_model(
    architecture: str,
    params: Mapping[str, Any] | BaseModel | None,
    input_shape: Sequence[int],
    num_outputs: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> NormalizedModel:
    """The registry network for `architecture`, behind a normalization layer.

    `mean`/`std` None means identity normalization (0 / 1), so inputs stay in [0, 1] for attacks
    either way. Raises ValueError (pydantic's ValidationError is one) for an unknown architecture,
    bad params, a bad input shape or statistics that do not match the channels.
    """
    arch = _architecture(architecture)
    validated = validate_params(arch.value, params)
    shape = _check_input(input_shape, num_outputs)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither (identity normalization)")
    channels = shape[0] if len(shape) == 3 else 1
    mean = [0.0] * channels if mean is None else [float(v) for v in mean]
    std = [1.0] * channels if std is None else [float(v) for v in std]
    _check_stats(mean, std, shape, "normalization")
    net = ARCHITECTURES[arch](validated, shape, num_outputs)
    logger.debug("built %s %s for input %s → %d outputs", arch.value, validated, shape, num_outputs)
    return NormalizedModel(Normalize(mean, std, input_dims=len(shape)), net)


def build_from_spec(
    model_spec: Any,
    input_shape: Sequence[int],
    num_outputs: int,
    dataset_stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> NormalizedModel:
    """Build the model a `ModelSpec` describes, resolving its `normalization` choice.

    'dataset' uses `dataset_stats` (per-channel mean and std of the training inputs), 'none' is
    the identity, and an explicit {mean, std} is used as given; the number of values must match
    the input channels.
    """
    choice = model_spec.normalization
    shape = _check_input(input_shape, num_outputs)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    if choice == "dataset":
        if dataset_stats is None:
            raise ValueError(
                "normalization 'dataset' needs the dataset's per-channel (mean, std): pass dataset_stats"
            )
        mean, std = dataset_stats
        _check_stats(mean, std, shape, "dataset normalization")
    elif isinstance(choice, Normalization):
        mean, std = choice.mean, choice.std
        _check_stats(mean, std, shape, "explicit normalization")
    elif choice != "none":
        raise ValueError(f"unknown normalization {choice!r}: use 'dataset', 'none' or {{mean, std}}")
    return build_model(model_spec.architecture, model_spec.params, shape, num_outputs, mean, std)
