"""The interface of a regularizer: turn a batch into the objective to back-propagate.

A regularizer owns the whole objective, not just an additive penalty, because some of them
(MaxUp, adversarial training, Sobolev) change the task loss itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.enums import Task


@dataclass(frozen=True)
class Batch:
    x: Tensor  # B×… inputs in [0, 1]
    y: Tensor  # B labels (int64) or B×K regression targets
    dydx: Tensor | None = None  # B×D exact target gradients (regression sets that have them)
    index: Tensor | None = None  # B positions of the samples in the training set, a CPU tensor (None: unknown)


@dataclass(frozen=True)
class Objective:
    loss: Tensor  # scalar, differentiable w.r.t. the parameters: what training back-propagates
    task_loss: Tensor  # scalar, detached: mean task loss on the clean batch (for logging)
    penalty: Tensor  # scalar, detached: the regularization term (0 for plain training)
    # Leaves besides the parameters whose gradient the backward of `loss` must also compute: the
    # regularizer reads them in hooks (the input gradient it carries to the sample's next visit).
    # Pass them to the backward with the parameters: `inputs=[*parameters, *objective.probes]`.
    probes: tuple[Tensor, ...] = ()


def per_sample_loss(outputs: Tensor, y: Tensor, task: Task) -> Tensor:
    """ℓ_b for every sample: cross-entropy, or squared error summed over outputs. Shape B."""
    if task == Task.CLASSIFICATION:
        return F.cross_entropy(outputs, y, reduction="none")
    return (outputs - y.reshape(outputs.shape)).pow(2).flatten(1).sum(dim=1)


def input_gradient(loss_sum: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """∇ₓ of Σ_b ℓ_b: row b is sample b's own gradient (no cross-sample coupling in eval/LN models)."""
    (grad,) = torch.autograd.grad(loss_sum, x, create_graph=create_graph, retain_graph=True)
    return grad


class Regularizer(ABC):
    """One training objective. `generator` drives all of its randomness (resumable, seeded)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    @abstractmethod
    def objective(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> Objective: ...

    def weight_decay(self, default: float) -> float:
        """The optimizer's weight decay for this run (the `weight_decay` kind overrides it)."""
        return default

    def state_dict(self) -> dict[str, Tensor]:
        """State carried from one step to the next (saved with the training state for exact resume)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device) -> None:
        """Restore what `state_dict` returned (an empty dict: start afresh)."""
        del state, device  # stateless by default
