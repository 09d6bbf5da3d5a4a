"""The training section of a spec."""

from typing import Literal

from pydantic import Field, model_validator

from core.specs.base import FieldError, Spec


class TrainingSpec(Spec):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="through the optimizer (L2 for sgd/adam)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    schedule: Literal["constant", "step", "cosine", "one_cycle"] = "constant"
    milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75], max_length=16,
        description="step schedule: fractions of training after which lr is multiplied by gamma",
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step schedule: lr factor at each milestone")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the gradient norm (None: off)")
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU / MPS)")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

    @model_validator(mode="after")
    def _milestones_are_fractions(self) -> "TrainingSpec":
        if any(not 0.0 < m < 1.0 for m in self.milestones) or self.milestones != sorted(self.milestones):
            raise FieldError(
                f"milestones {self.milestones} must be increasing fractions of training in (0, 1), "
                "e.g. [0.5, 0.75]",
                "milestones",
            )
        return self
