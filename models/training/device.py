"""Device choice: CUDA when present, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch


def select_device(preference: str = "auto") -> torch.device:
    """The device to train on; asking for one that is absent is an error, not a silent fallback."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible: use 'auto' or 'cpu'")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was asked for but MPS is not available: use 'auto' or 'cpu'")
    return torch.device(preference)
