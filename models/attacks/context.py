"""The state one attack's ε-sweep shares: the samples, the broken-so-far matrix, device handling.

Every attack runner gets a `SweepContext`; it owns the [len(eps), N] `broken` matrix and the two
rules that make a sweep cheap and sound at once:
- monotone in ε: before radius i is attacked, whatever is broken at radius i−1 is broken at i
  (the perturbation is still admissible), so only the rest is attacked (`advance`);
- nothing counts as broken unless an fp32 forward pass of the model misclassifies the very input
  that is recorded (`misclassified`), whatever precision the attack itself ran in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attacks.steps import finite_gradient

# (context, sample indices on the CPU, inputs and labels on the device, clean input gradient)
CleanBatchHook = Callable[["SweepContext", Tensor, Tensor, Tensor, Tensor], None]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def bf16_autocast_available(device: torch.device) -> bool:
    """CUDA, or a CPU with native bf16 matrix units (AVX512-BF16 / AMX): where bf16 is faster, not emulated."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class SweepContext:
    """One attack run: N samples, E radii, the model in eval mode on its device."""

    model: nn.Module
    x: Tensor  # N×… inputs in [0, 1], where the caller keeps them (usually the CPU)
    y: Tensor  # N int64 labels
    eps: list[float]  # ascending
    broken: Tensor  # E×N bool on the CPU: broken at that radius (by this attack or given)
    batch_size: int
    seed: int
    amp: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    num_classes: int = 0  # set by the clean pass

    @property
    def use_amp(self) -> bool:
        return self.amp and bf16_autocast_available(self.device)

    def autocast(self) -> AbstractContextManager[object]:
        """bf16 autocast for PGD's iterations when amp is on and the device has bf16; else a no-op.

        Only the search runs in bf16: the clean pass (FGSM's gradient, the masking statistics) and
        every verdict stay fp32.
        """
        if self.use_amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The inputs and labels of `index` on the model's device (channels_last for CUDA images)."""
        xb = self.x[index].to(self.device, dtype=torch.float32, non_blocking=True)
        if self.device.type == "cuda" and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, self.y[index].to(self.device, non_blocking=True)

    def chunks(self, index: Tensor) -> list[Tensor]:
        """`index` split into pieces of at most batch_size samples."""
        return list(torch.split(index, self.batch_size)) if index.numel() else []

    def misclassified(self, x_adv: Tensor, y: Tensor) -> Tensor:
        """The verdict: fp32, no autocast, no gradient; True where argmax ≠ y. Shape N bool (device)."""
        with torch.no_grad():
            logits = self.model(x_adv)
        wrong: Tensor = logits.float().argmax(dim=1) != y
        return wrong

    def advance(self, i: int) -> Tensor:
        """Carry radius i−1's broken samples over to radius i; return the indices still to attack."""
        if i > 0:
            self.broken[i] |= self.broken[i - 1]
        return (~self.broken[i]).nonzero().flatten()

    def mark(self, i: int, index: Tensor, broken: Tensor) -> None:
        """Record that the samples `index[broken]` are broken at radius i."""
        self.broken[i, index[broken.cpu()]] = True

    def clean_pass(self, on_batch: CleanBatchHook | None = None) -> dict[str, int]:
        """Clean predictions and clean input gradients of every sample, in batches.

        Clean-misclassified samples are marked broken at every radius (no attack needed). The
        gradient of the per-sample cross-entropy at x is computed for all samples: its zero and
        non-finite counts are the gradient-masking statistics of DESIGN §3, and FGSM reuses it as
        its one gradient per sample (`on_batch`). Returns the statistics.
        """
        n = self.x.shape[0]
        zero = nonfinite = 0
        for index in self.chunks(torch.arange(n)):
            xb, yb = self.batch(index)
            leaf = xb.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(leaf)
                loss = F.cross_entropy(logits.float(), yb, reduction="sum")
            (grad,) = torch.autograd.grad(loss, leaf)
            self.num_classes = int(logits.shape[1])
            wrong = logits.detach().argmax(dim=1) != yb
            self.broken[:, index[wrong.cpu()]] = True
            flat = grad.detach().flatten(1)
            zero += int((flat == 0).all(dim=1).sum())
            nonfinite += int((~torch.isfinite(flat)).any(dim=1).sum())
            if on_batch is not None:
                on_batch(self, index, xb, yb, finite_gradient(grad.detach()))
        return {"samples": n, "zero": zero, "nonfinite": nonfinite}
