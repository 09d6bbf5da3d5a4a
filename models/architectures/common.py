"""What every architecture module shares: the registry, activations and shape helpers.

The registry lives here rather than in `__init__` so that the architecture modules can register
themselves without a circular import; `models.architectures` re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from core.enums import Architecture
from models.registry import Registry

# A factory builds the bare network (no normalization) from validated params, the shape of one
# input (C×H×W or D) and the number of outputs.
ArchitectureFactory = Callable[[Any, tuple[int, ...], int], nn.Module]

ARCHITECTURES: Registry[Architecture, ArchitectureFactory] = Registry("architecture", Architecture)

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (the `Activation` literal of the model specs)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}: use one of {', '.join(_ACTIVATIONS)}") from None


def image_shape(input_shape: Sequence[int], architecture: str) -> tuple[int, int, int]:
    """The C×H×W of an image input, or a clear error for a vector input to a convolutional net."""
    if len(input_shape) != 3:
        raise ValueError(
            f"{architecture} needs image inputs of shape C×H×W, got input_shape {tuple(input_shape)}: "
            "use the mlp architecture for vector inputs"
        )
    channels, height, width = (int(v) for v in input_shape)
    return channels, height, width


def flat_features(features: nn.Module, input_shape: Sequence[int]) -> int:
    """Number of values `features` produces for one input, by a dummy forward.

    Computing it rather than hard-coding it is what lets every architecture accept any input
    size. The forward runs under no_grad on whatever default device is active, so building on
    the meta device (as checkpoint loading does) allocates nothing.
    """
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())
