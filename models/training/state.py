"""Training state for exact resume: weights, optimizer, random generators, progress.

Written with torch.save and read back with torch.load(weights_only=True): the file holds only
tensors, numbers, strings and lists, never objects, so loading it cannot run code.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

STATE_VERSION = 1


def save_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
    step: int,
    history: list[Any],
    spec_hash: str,
    regularizer: dict[str, Any] | None = None,
) -> None:
    """Atomically write the state after `epoch` epochs (1-based count of finished epochs)."""
    state = {
        "version": STATE_VERSION,
        "spec_hash": spec_hash,
        "epoch": epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": [asdict(h) for h in history],
        "regularizer": regularizer or {},  # per-sample state some regularizers carry across steps
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous epoch's state intact


def load_state(path: Path, spec_hash: str) -> dict[str, Any] | None:
    """The saved state, or None when there is none or it belongs to another spec."""
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, weights_only=True, map_location="cpu")
    if state.get("version") != STATE_VERSION or state.get("spec_hash") != spec_hash:
        return None
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["cpu_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
