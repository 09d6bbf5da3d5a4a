"""The regularizer registry: one factory per `RegularizerKind` (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from core.enums import RegularizerKind, Task
from core.specs.regularizers import (
    AdversarialTraining,
    ConfidencePenalty,
    DataGradL1,
    DoubleBackprop,
    InputHessian,
    JacobianReg,
    MaxUp,
    RegularizerSpec,
    Sobolev,
    SpectralReg,
    WeightDecay,
)
from models.registry import Registry
from models.regularizers.augment import AdversarialTrainingRegularizer, MaxUpRegularizer
from models.regularizers.base import Batch, Objective, Regularizer, per_sample_loss
from models.regularizers.gradient import (
    ConfidencePenaltyReg,
    DataGradL1Reg,
    DoubleBackpropReg,
    Plain,
    WeightDecayOnly,
)
from models.regularizers.hessian import InputHessianRegularizer
from models.regularizers.jacobian import JacobianRegularizer, SpectralRegularizer
from models.regularizers.sobolev import SobolevRegularizer

Factory = Callable[[RegularizerSpec, Task, nn.Module | None], Regularizer]
REGULARIZERS: Registry[RegularizerKind, Factory] = Registry("regularizer", RegularizerKind)

_S = TypeVar("_S")


def _expect(spec: RegularizerSpec, expected: type[_S]) -> _S:
    """`spec` as the spec class its factory needs; a TypeError if it was registered under the wrong kind."""
    if not isinstance(spec, expected):
        raise TypeError(
            f"this regularizer factory needs a {expected.__name__} spec, "
            f"got {type(spec).__name__} (kind {spec.kind!r})"
        )
    return spec


# The teacher argument matters only to Sobolev training; the rest ignore it.
REGULARIZERS.register(RegularizerKind.NONE)(lambda spec, task, teacher: Plain(task))
REGULARIZERS.register(RegularizerKind.WEIGHT_DECAY)(lambda s, t, _: WeightDecayOnly(t, _expect(s, WeightDecay)))
REGULARIZERS.register(RegularizerKind.DOUBLE_BACKPROP)(
    lambda s, t, _: DoubleBackpropReg(t, _expect(s, DoubleBackprop))
)
REGULARIZERS.register(RegularizerKind.DATAGRAD_L1)(lambda s, t, _: DataGradL1Reg(t, _expect(s, DataGradL1)))
REGULARIZERS.register(RegularizerKind.JACOBIAN)(lambda s, t, _: JacobianRegularizer(t, _expect(s, JacobianReg)))
REGULARIZERS.register(RegularizerKind.SPECTRAL)(lambda s, t, _: SpectralRegularizer(t, _expect(s, SpectralReg)))
REGULARIZERS.register(RegularizerKind.CONFIDENCE_PENALTY)(
    lambda s, t, _: ConfidencePenaltyReg(t, _expect(s, ConfidencePenalty))
)
REGULARIZERS.register(RegularizerKind.INPUT_HESSIAN)(
    lambda s, t, _: InputHessianRegularizer(t, _expect(s, InputHessian))
)
REGULARIZERS.register(RegularizerKind.SOBOLEV)(
    lambda s, t, teacher: SobolevRegularizer(t, _expect(s, Sobolev), teacher)
)
REGULARIZERS.register(RegularizerKind.MAXUP)(lambda s, t, _: MaxUpRegularizer(t, _expect(s, MaxUp)))
REGULARIZERS.register(RegularizerKind.ADVERSARIAL_TRAINING)(
    lambda s, t, _: AdversarialTrainingRegularizer(t, _expect(s, AdversarialTraining))
)

def build_regularizer(
    spec: RegularizerSpec, task: Task, teacher: nn.Module | None = None
) -> Regularizer:
    """The objective for one run of a spec (`teacher`: the trained teacher model for Sobolev runs)."""
    return REGULARIZERS[spec.kind](spec, task, teacher)


__all__ = [
    "REGULARIZERS",
    "Batch",
    "Objective",
    "Regularizer",
    "build_regularizer",
    "per_sample_loss",
]
