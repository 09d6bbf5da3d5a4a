"""The small trained classifier the attack tests share: an MLP with ~95 % clean accuracy on digits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.specs.dataset import DigitsDataset
from models.architectures import build_model
from models.datasets import load_dataset


def trained_digits_mlp(samples: int) -> tuple[nn.Module, Tensor, Tensor]:
    """(model in eval mode, the first `samples` test inputs, their labels); seeded, a few seconds."""
    data = load_dataset(DigitsDataset(name="digits", seed=0))
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [64]}, (1, 8, 8), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        for idx in torch.randperm(len(data.x_train), generator=g).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            optimizer.step()
    return model.eval(), data.x_test[:samples], data.y_test[:samples]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (the CPU kernels are then bitwise deterministic), restored after.
    Modules that compare results bit for bit use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

