"""Models that are not ours, as users bring them: a small custom CNN trained on digits, exported to
ONNX in three input conventions, plus the digits data. Shared by the unit and integration tests."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.specs import parse_spec
from models.datasets import load_dataset
from models.datasets.base import DatasetBundle

BASE_SPEC: dict[str, Any] = {
    "name": "user-model",
    "dataset": {"name": "digits", "train_size": 500, "test_size": 60, "seed": 0},
    "model": {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10},
    "training": {"epochs": 1},
    "regularizers": [{"name": "candidate", "kind": "none"}],
    "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.05, 0.1]},
                               {"kind": "pgd", "norm": "linf", "eps": [0.05, 0.1], "steps": 10}],
                   "seed": 3},
}
# The model sections of the three conventions (the examples, as users write them).
SECTIONS: dict[str, dict[str, Any]] = {
    "plain": {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10},
    "nhwc255": {"format": "onnx", "input_shape": [8, 8, 1], "layout": "nhwc", "num_classes": 10,
                "input_range": [0, 255], "mean": [127.5], "std": [64.0], "outputs": "logits"},
    "probabilities": {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10, "outputs": "probabilities"},
}


class TinyCNN(nn.Module):
    """Not a registry architecture: conv, ReLU, max-pool, linear, on 1×8×8 inputs in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.max_pool2d(torch.relu(self.conv(x)), 2), 1))


class Nhwc255(nn.Module):
    """The same function for NHWC inputs in [0, 255], normalized by (z - 127.5) / 64 before it arrives."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pixels = (z * 64.0 + 127.5) / 255.0  # back to [0, 1]
        return self.cnn(pixels.permute(0, 3, 1, 2))


class Probabilities(nn.Module):
    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.cnn(x), dim=1)


def spec_dict(section: dict[str, Any], **evaluation: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec["model"] = copy.deepcopy(section)
    spec["evaluation"].update(evaluation)
    return spec


def digits() -> DatasetBundle:
    return load_dataset(parse_spec(BASE_SPEC).dataset)


def trained_cnn(data: DatasetBundle, steps: int = 150, seed: int = 0) -> TinyCNN:
    """A few seconds of Adam on the digits: a real classifier (about 90 % clean), not a random net."""
    torch.manual_seed(seed)
    net = TinyCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(data.x_train), (64,), generator=generator)
        loss = nn.functional.cross_entropy(net(data.x_train[index]), data.y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def exported(cnn: nn.Module, variant: str) -> nn.Module:
    """The module a user with these conventions would export (same function as `cnn` on [0, 1] NCHW)."""
    return {"plain": cnn, "nhwc255": Nhwc255(cnn), "probabilities": Probabilities(cnn)}[variant].eval()


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def example_input(variant: str) -> torch.Tensor:
    return torch.rand(2, 8, 8, 1) if variant == "nhwc255" else torch.rand(2, 1, 8, 8)
