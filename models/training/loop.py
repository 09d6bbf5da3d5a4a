"""The training loop: one function, flat and explicit about shapes and seeds (nanoGPT style)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.enums import Task
from core.specs.training import TrainingSpec
from models.datasets.base import DatasetBundle
from models.regularizers.base import Batch, Regularizer
from models.training.schedule import build_optimizer, lr_factor, set_lr
from models.training.state import load_state, restore_rng, save_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """What the loop reports while it runs (the worker forwards it to the job record)."""

    epoch: int  # 1-based epoch being run
    epochs: int
    step: int  # 1-based step within the epoch
    steps_per_epoch: int
    loss: float  # the objective
    task_loss: float
    penalty: float
    samples_per_second: float
    lr: float

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) * self.steps_per_epoch + self.step) / (self.epochs * self.steps_per_epoch)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    task_loss: float
    penalty: float
    seconds: float
    samples_per_second: float


@dataclass
class FitResult:
    model: nn.Module
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from_epoch: int = 0  # finished epochs loaded from a checkpoint (0: fresh start)
    seconds: float = 0.0  # wall time of the epochs run in this call
    step_seconds: float = 0.0  # mean wall time of one optimizer step in this call
    state_seconds: float = 0.0  # of `seconds`, the time spent writing the per-epoch resume state
    peak_memory_bytes: int | None = None  # CUDA: max_memory_allocated; CPU: peak RSS sampled each step
    memory_measure: str | None = None  # "cuda_max_allocated" | "cpu_peak_rss"


ProgressCallback = Callable[[ProgressEvent], None]


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a function of (seed, epoch) alone, so resume replays it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def resident_bytes() -> int:
    """The process's resident set size now (Linux /proc; 0 where that is missing).

    On the CPU there is no allocator peak counter like CUDA's, so the loop samples RSS after every
    step: the process's peak while this run trained (it includes the data and earlier runs' leftovers).
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# Datasets up to this size (or a quarter of the free GPU memory, whichever is less) are moved to
# the GPU once per run, so a step gathers its batch on the device instead of copying it over.
PRELOAD_MAX_BYTES = 2 * 2**30


def _on_device(data: DatasetBundle, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training tensors, on `device` when they already are or fit comfortably; else where they are."""
    tensors = (data.x_train, data.y_train, data.dydx_train)
    if device.type == "cpu" or data.x_train.device == device:
        return tensors
    size = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    limit = PRELOAD_MAX_BYTES
    if device.type == "cuda":
        limit = min(limit, torch.cuda.mem_get_info(device)[0] // 4)
    if size > limit:
        return tensors
    x, y, dydx = (None if t is None else t.to(device) for t in tensors)
    assert x is not None and y is not None
    return x, y, dydx


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`: no copy when it is there already; pinned and asynchronous from the CPU to a GPU."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on `device` when `enabled` (CPU autocast needs a bf16-capable CPU to be fast)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def fit(
    model: nn.Module,
    regularizer: Regularizer,
    data: DatasetBundle,
    training: TrainingSpec,
    *,
    seed: int,
    device: torch.device,
    state_path: Path | None = None,
    spec_hash: str = "",
    progress: ProgressCallback | None = None,
    stop_after_epoch: int | None = None,
    progress_seconds: float = 1.0,
    amp: bool | None = None,
) -> FitResult:
    """Train `model` in place with `regularizer`'s objective; checkpoint after every epoch.

    With `state_path`, the state is saved after each epoch and, when one from the same spec is
    there, training resumes after its last finished epoch with identical results (same sample
    order, random draws, optimizer and regularizer state). `stop_after_epoch` ends early (tests of resume).

    The loop does not wait for the device on every step: losses are summed on the device and read
    back (one host sync) after the first step, then at most every `progress_seconds` and at each
    epoch's end; `progress` is called at those syncs with the means since the previous one
    (`progress_seconds=0`: every step). `amp`: bf16 autocast; None follows `training.amp`, which
    applies on CUDA only; True also turns it on for the CPU (tests, bf16-capable CPUs).
    """
    model.to(device).train()
    optimizer = build_optimizer(model.parameters(), training, regularizer.weight_decay(training.weight_decay))
    generator = torch.Generator(device=device).manual_seed(seed + 7919)  # regularizer randomness
    n = data.x_train.shape[0]
    x_train, y_train, dydx_train = _on_device(data, device)
    steps_per_epoch = -(-n // training.batch_size)
    total_steps = training.epochs * steps_per_epoch
    use_amp = (training.amp and device.type == "cuda") if amp is None else amp
    # Back-propagate into the weights only: penalties make the inputs a leaf that requires grad,
    # and accumulating an unused gradient there costs an extra input-gradient pass per graph.
    weights = [p for p in model.parameters() if p.requires_grad]
    result = FitResult(model)
    # MPS has no float64; elsewhere the epoch sums are float64 so long epochs lose nothing.
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64

    start_epoch, step = 0, 0
    state = load_state(state_path, spec_hash) if state_path is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state, generator)
        regularizer.load_state_dict(state.get("regularizer", {}), device)
        start_epoch, step = state["epoch"], state["step"]
        result.history = [EpochRecord(**h) for h in state["history"]]
        result.resumed_from_epoch = start_epoch
        log.info("resuming after epoch %d of %d from %s", start_epoch, training.epochs, state_path)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    last_epoch = training.epochs if stop_after_epoch is None else min(stop_after_epoch, training.epochs)
    steps_run, started = 0, time.perf_counter()
    peak_rss = resident_bytes()
    for epoch in range(start_epoch + 1, last_epoch + 1):
        order = _epoch_order(n, seed, epoch)  # on the CPU: regularizers keep per-sample bookkeeping there
        if x_train.device.type == "cuda":
            order = order.pin_memory()  # so each step's slice goes to the GPU without a sync
        sums = torch.zeros(3, dtype=sum_dtype, device=device)  # loss, task loss, penalty (summed over steps)
        reported = torch.zeros(3, dtype=sum_dtype)  # the sums at the last sync (host)
        reported_step, last_sync = 0, time.perf_counter()
        epoch_start = last_sync
        for i in range(steps_per_epoch):
            idx = order[i * training.batch_size : (i + 1) * training.batch_size]
            gather = idx.to(x_train.device, non_blocking=True)
            batch = Batch(
                x=_to(x_train[gather], device),  # B×C×H×W (or B×D)
                y=_to(y_train[gather], device),  # B (labels) or B×K (targets)
                dydx=None if dydx_train is None else _to(dydx_train[gather], device),
                index=idx,  # positions in the training set, on the CPU (per-sample regularizer state)
            )
            lr = training.lr * lr_factor(training, step, total_steps)
            set_lr(optimizer, lr)
            with autocast_context(device, use_amp):
                objective = regularizer.objective(model, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(objective.loss, inputs=[*weights, *objective.probes])
            if training.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
            optimizer.step()
            step += 1
            steps_run += 1
            sums += torch.stack([objective.loss.detach(), objective.task_loss, objective.penalty]).to(sum_dtype)
            if device.type == "cpu":
                peak_rss = max(peak_rss, resident_bytes())
            now = time.perf_counter()
            last = i + 1 == steps_per_epoch
            if progress is not None and (last or i == 0 or now - last_sync >= progress_seconds):
                current = sums.to("cpu", copy=True)  # the host sync: waits for the queued steps
                loss, task_loss, penalty = ((current - reported) / (i + 1 - reported_step)).tolist()
                reported, reported_step, last_sync = current, i + 1, time.perf_counter()
                progress(ProgressEvent(
                    epoch, training.epochs, i + 1, steps_per_epoch, loss, task_loss, penalty,
                    min(n, (i + 1) * training.batch_size) / max(last_sync - epoch_start, 1e-9), lr,
                ))
        mean = (sums.to("cpu", copy=True) / steps_per_epoch).tolist()  # the epoch's sync
        seconds = time.perf_counter() - epoch_start
        record = EpochRecord(epoch, mean[0], mean[1], mean[2], seconds, n / max(seconds, 1e-9))
        result.history.append(record)
        if not all(map(math.isfinite, mean)):
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (loss {mean[0]}): lower lr or the penalty weight"
            )
        if state_path is not None:
            saving = time.perf_counter()
            save_state(state_path, model=model, optimizer=optimizer, generator=generator, epoch=epoch,
                       step=step, history=result.history, spec_hash=spec_hash,
                       regularizer=regularizer.state_dict())
            result.state_seconds += time.perf_counter() - saving
        log.info("epoch %d/%d loss %.4f penalty %.4g (%.1fs)", epoch, training.epochs, mean[0], mean[2], seconds)

    result.seconds = time.perf_counter() - started
    result.step_seconds = result.seconds / max(steps_run, 1)
    if device.type == "cuda":
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
        result.memory_measure = "cuda_max_allocated"
    elif peak_rss:
        result.peak_memory_bytes, result.memory_measure = peak_rss, "cpu_peak_rss"
    model.eval()
    return result


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Model outputs on x in eval mode, batched, on the model's device; returned on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def clean_score(model: nn.Module, data: DatasetBundle) -> float:
    """Test accuracy (classification) or test mean squared error (regression)."""
    out = predict(model, data.x_test)
    if data.task == Task.CLASSIFICATION:
        return float((out.argmax(dim=1) == data.y_test).double().mean())
    return float((out - data.y_test.reshape(out.shape)).pow(2).mean())
