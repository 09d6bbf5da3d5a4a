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

from models.attacks.keyed import mix_seed
from models.attacks.steps import StartNoise, finite_gradient

RANKED_CLASSES = 20  # the clean pass keeps each sample's top classes: the targets of targeted attacks

# (context, sample indices on the CPU, inputs and labels on the device, clean input gradient)
CleanBatchHook = Callable[["SweepContext", Tensor, Tensor, Tensor, Tensor], None]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, else of its first buffer (an ONNX graph whose weights
    are Constant nodes has no parameters), else the CPU."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return next((b.device for b in model.buffers()), torch.device("cpu"))


def bf16_autocast_available(device: torch.device) -> bool:
    """CUDA, or a CPU with native bf16 matrix units (AVX512-BF16 / AMX): where bf16 is faster, not emulated."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def restart_seed(seed: int, eps_index: int, restart: int, block: int = 0) -> int:
    """The generator seed of one (ε, stream, block of samples; a block is one sample by default):
    a well-mixed function of the four (`keyed.mix_seed`), < 2⁶³."""
    return mix_seed(seed, eps_index, restart, block)


class CountingModel(nn.Module):
    """The model, counting the samples that pass through it: forwards with an input that requires
    a gradient are gradient evaluations (each is followed by one backward), the rest are forwards."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.gradients = 0
        self.forwards = 0

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradients += int(x.shape[0])
        else:
            self.forwards += int(x.shape[0])
        out: Tensor = self.inner(x)
        return out

    def counts(self) -> tuple[int, int]:
        return self.gradients, self.forwards


# A randomized model's final point is broken when more than half of this many draws misclassify it
# (docs/evaluation.md): one noisy pass that misclassifies is not a broken point.
VERDICT_DRAWS = 50


def majority_wrong(model: nn.Module, x: Tensor, y: Tensor, draws: int = VERDICT_DRAWS) -> Tensor:
    """Per sample: misclassified on more than half of `draws` forward passes (fp32, no gradient)."""
    with torch.no_grad():
        count = sum((model(x).float().argmax(dim=1) != y).int() for _ in range(draws))
    return torch.as_tensor(count, device=y.device) * 2 > draws


@dataclass
class SweepContext:
    """One attack run: N samples, E radii, the model in eval mode on its device.

    The N samples may be a shard of a larger evaluation: x[0] is sample `offset` of it, and
    everything random or decided about a sample is keyed by its global index offset + position
    (`starts`, Square's keys, the suite's DECISION_BLOCK decisions), so a shard computes for its
    samples exactly what the whole evaluation computes for them, at any batch size.
    """

    model: nn.Module
    x: Tensor  # N×… inputs in [0, 1], where the caller keeps them (usually the CPU)
    y: Tensor  # N int64 labels
    eps: list[float]  # ascending
    broken: Tensor  # E×N bool on the CPU: broken at that radius (by this attack or given)
    batch_size: int
    seed: int
    amp: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    norm: str = "linf"
    num_classes: int = 0  # set by the clean pass
    ranked: Tensor | None = None  # N×k int64 on the CPU: the k most likely classes at x (clean pass)
    eot: int = 1  # gradients averaged over this many forward passes (randomized models)
    diagnostics: dict[str, float] = field(default_factory=dict)  # summed indicator counts (see `note`)
    members: list[dict[str, object]] = field(default_factory=list)  # a suite's per-member record
    white_broken: Tensor | None = None  # E×N: broken before a suite's black-box member ran
    offset: int = 0  # the global sample index of x[0] (a shard of samples 300 … 399: 300)
    start_block: int = 1  # random starts are drawn per block of this many global indices (`starts`)
    # E×N×… or None: the input each broken sample was judged broken at (NaN where none), kept only
    # when asked (run_attack(keep_points=True)): tests re-score a randomized model's final points
    # over fresh draws; an evaluation never pays for it.
    points: Tensor | None = None

    def keys(self, index: Tensor) -> Tensor:
        """The global sample indices of the context positions `index` (CPU int64)."""
        return index.long() + self.offset

    def note(self, **counts: float) -> None:
        """Add to the indicator counts the checks read (unconfirmed iterates, late loss gains ...)."""
        for key, value in counts.items():
            self.diagnostics[key] = self.diagnostics.get(key, 0.0) + float(value)

    def starts(self, index: Tensor, xb: Tensor, norm: str, eps_index: int, stream: int, noise: StartNoise) -> Tensor:
        """Random starts x + δ (clipped to [0, 1]) of the samples at positions `index` (CPU), xb their inputs.

        Each sample's δ is a function of (seed, ε index, stream, global sample index) only: with the
        default start_block 1 it is drawn from a CPU generator seeded with restart_seed(seed, ε index,
        stream, offset + position) (`noise.rows`), whatever the batch, the shard or the samples still
        left beside it, and on any device (drawn on the CPU, moved once per batch). A larger start_block B
        draws one noise block per B global indices (block c: c·B … c·B+B−1, cut at the context's
        end) from restart_seed(seed, ε index, stream, c) on the device (`noise.block`), as torchattacks draws its
        batch: with one block (B ≥ N, offset 0) the starts are the reference's after
        torch.manual_seed(restart_seed(seed, ε index, stream)); those starts depend on the context's
        size, so that mode is for comparisons with the reference, not for sharded evaluations.
        """
        eps = self.eps[eps_index]
        keys = self.keys(index)
        if self.start_block == 1:
            seeds = [restart_seed(self.seed, eps_index, stream, key) for key in keys.tolist()]
            drawn = noise.rows(torch.empty((len(seeds), *xb.shape[1:]), dtype=xb.dtype), seeds, eps, norm)
            return torch.clamp(xb + drawn.to(self.device, non_blocking=True), min=0, max=1)
        size, end = self.start_block, self.offset + self.x.shape[0]
        start = torch.empty_like(xb)
        blocks = keys // size
        for block in torch.unique(blocks).tolist():
            rows_of = (blocks == block).nonzero().flatten()
            low, high = block * size, min(end, (block + 1) * size)
            generator = torch.Generator(device=self.device).manual_seed(
                restart_seed(self.seed, eps_index, stream, block))
            shape = torch.empty((high - low, *xb.shape[1:]), device=self.device, dtype=xb.dtype)
            drawn = noise.block(shape, eps, norm, generator)[(keys[rows_of] - low).to(self.device)]
            on_device = rows_of.to(self.device)
            start[on_device] = torch.clamp(xb[on_device] + drawn, min=0, max=1)
        return start

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
        """The verdict: fp32, no autocast, no gradient; True where argmax ≠ y. Shape N bool (device).
        A randomized model (eot > 1) is judged by its expected accuracy: the point counts as broken
        when it is misclassified on more than half of VERDICT_DRAWS fresh forward passes, twice."""
        if self.eot <= 1:
            with torch.no_grad():
                wrong: Tensor = self.model(x_adv).float().argmax(dim=1) != y
            return wrong
        # An attack asks for a verdict at many points of a sample (every member, start, target and
        # query), so a borderline point that one majority passed by luck would slip through; a point
        # that passed is judged again on VERDICT_DRAWS fresh passes and counts only if it passes that
        # one too (independent of the selection, so it is an unbiased majority test of that point).
        wrong = self._majority_wrong(x_adv, y)
        if wrong.any():
            confirmed = self._majority_wrong(x_adv[wrong], y[wrong])
            wrong[wrong.nonzero().flatten()[~confirmed]] = False
        return wrong

    def _majority_wrong(self, x: Tensor, y: Tensor) -> Tensor:
        return majority_wrong(self.model, x, y)

    def carry(self, i: int, index: Tensor | None = None) -> None:
        """Radius i−1's broken samples (of `index`, default all) are broken at radius i, at the same point."""
        index = torch.arange(self.x.shape[0]) if index is None else index
        new = index[self.broken[i - 1, index] & ~self.broken[i, index]]
        self.broken[i, new] = True
        if self.points is not None:
            self.points[i, new] = self.points[i - 1, new]

    def advance(self, i: int) -> Tensor:
        """Carry radius i−1's broken samples over to radius i; return the indices still to attack."""
        if i > 0:
            self.carry(i)
        return (~self.broken[i]).nonzero().flatten()

    def mark(self, i: int, index: Tensor, broken: Tensor, points: Tensor) -> None:
        """Record that the samples `index[broken]` are broken at radius i; `points` (a row per entry
        of `index`) are the inputs the verdict judged, kept where the context keeps points."""
        self.broken[i, index[broken.cpu()]] = True
        if self.points is not None:
            self.points[i, index[broken.cpu()]] = points[broken.to(points.device)].detach().float().cpu()

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
            top = logits.detach().float().argsort(dim=1, descending=True)[:, :RANKED_CLASSES].cpu()
            if self.ranked is None:
                self.ranked = torch.zeros((n, top.shape[1]), dtype=torch.long)
            self.ranked[index] = top
            # the verdict's own forward (no gradient, fp32): a model that answers gradient-enabled
            # passes differently must not have its clean errors decided by them
            wrong = self.misclassified(xb, yb)
            for i in range(len(self.eps)):
                self.mark(i, index, wrong, xb)
            flat = grad.detach().flatten(1)
            zero += int((flat == 0).all(dim=1).sum())
            nonfinite += int((~torch.isfinite(flat)).any(dim=1).sum())
            if on_batch is not None:
                on_batch(self, index, xb, yb, finite_gradient(grad.detach()))
        return {"samples": n, "zero": zero, "nonfinite": nonfinite}
