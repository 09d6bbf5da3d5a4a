"""Make examples/ci/model.onnx: the model the CI examples gate, as a user would bring one.

A small CNN of our own (not a robustlab architecture) trained for a few seconds on the training part of
the split that examples/ci/spec.yaml evaluates (the bundled UCI digits, 8×8, no download), with FGSM
adversarial training so that it has some robustness to gate, exported to ONNX with torch's
TorchScript-based exporter. Deterministic on one machine and torch version (seeded, one thread).

    python examples/ci/make_model.py            # writes examples/ci/model.onnx (about 10 kB)
    python examples/ci/make_model.py --out x.onnx --steps 400
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from torch import nn

from core.specs import load_spec
from models.datasets import load_dataset

HERE = Path(__file__).resolve().parent


class SmallCNN(nn.Module):
    """conv 3×3 (1→8), ReLU, max-pool, conv 3×3 (8→16), ReLU, max-pool, linear (64→10): 1×8×8 in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


def train(steps: int, eps: float, seed: int) -> nn.Module:
    data = load_dataset(load_spec(HERE / "spec.yaml").dataset)  # the spec's own split: no test sample seen
    torch.manual_seed(seed)
    net = SmallCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    for step in range(steps):
        index = torch.randint(0, len(x), (128,), generator=generator)
        xb, yb = x[index], y[index]
        if step >= steps // 4:  # FGSM with a random start (Wong et al. 2020) after a clean warm-up
            delta = (torch.rand(xb.shape, generator=generator) * 2 - 1) * eps
            delta.requires_grad_(True)
            loss = nn.functional.cross_entropy(net((xb + delta).clamp(0, 1)), yb)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta + 1.25 * eps * grad.sign()).clamp(-eps, eps).detach()
            xb = (xb + delta).clamp(0, 1)
        loss = nn.functional.cross_entropy(net(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "model.onnx")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eps", type=float, default=0.1, help="FGSM training radius (L∞, inputs in [0, 1])")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = train(args.steps, args.eps, args.seed)
    with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(args.out), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
