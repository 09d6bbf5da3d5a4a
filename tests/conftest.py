"""Shared test set-up: few threads (CI has 2 cores), deterministic seeds."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    try:
        import torch
    except ImportError:  # torch-free test environments
        return
    torch.set_num_threads(1)
