"""Finite-difference double backprop with the fresh gradient direction against the carried one.

    python benchmarks/fd_direction.py                    # LeNet-5, MNIST split, 3 seeds, λ 5 and 50
    python benchmarks/fd_direction.py --seeds 1 --epochs 5

`gradient: carried` steps along the direction the training step's own backward measured at the
sample's previous visit instead of measuring it again (docs/regularizers.md). This trains both on
the same data, seeds and settings (LeNet-5, 1,000 MNIST training images from one half of the test
set, evaluated on 1,000 of the other half, batch 50, Adam 1e-3) and compares, per run: clean
accuracy, PGD-20 accuracy at L∞ ε 0.1, the mean exact ‖∇ₓℓ‖² on the test images (what the penalty
is meant to shrink), the wall time of training, and, for the carried run, the mean cosine between
each sample's carried direction and its fresh gradient at the end of training. Needs the MNIST
files in ../shared/data/mnist.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from pydantic import TypeAdapter

from core.enums import Task
from core.specs.dataset import ImageFileDataset
from core.specs.evaluation import PGDAttack
from core.specs.model import LeNet5Model
from core.specs.regularizers import RegularizerSpec
from core.specs.training import TrainingSpec
from models.architectures import build_from_spec
from models.attacks import run_attack
from models.datasets import load_dataset
from models.regularizers import build_regularizer
from models.regularizers.base import input_gradient, per_sample_loss
from models.training import fit

REPO = Path(__file__).resolve().parents[1]


def gradient_norm_sq(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    x = x.detach().requires_grad_(True)
    g = input_gradient(per_sample_loss(model(x), y, Task.CLASSIFICATION).sum(), x, create_graph=False)
    return float(g.flatten(1).pow(2).sum(dim=1).mean())


def alignment(model: torch.nn.Module, regularizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cosine between the carried directions of the training samples and their fresh gradients."""
    store = regularizer.carried.store
    x = x.detach().requires_grad_(True)
    g = input_gradient(per_sample_loss(model(x), y, Task.CLASSIFICATION).sum(), x, create_graph=False).flatten(1)
    carried = store.directions[: len(x)].flatten(1).float()
    cos = (g * carried).sum(dim=1) / g.norm(dim=1).clamp_min(1e-12)
    return float(cos[store.seen[: len(x)]].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--weights", type=float, nargs="*", default=[5.0, 50.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(ImageFileDataset(name="mnist", data_dir=args.data_dir, split_test_set=True,
                                         train_size=1000, test_size=1000, seed=0))
    pgd = PGDAttack(kind="pgd", norm="linf", eps=[0.1], steps=20, step_size=0.01)
    rows = []
    print(f"{'λ':>5} {'gradient':>8} {'seed':>4} {'clean':>6} {'pgd ε0.1':>8} {'‖∇ℓ‖² test':>11} "
          f"{'train s':>8} {'cos':>6}")
    for weight in args.weights:
        for seed in range(args.seeds):
            for gradient in ("fresh", "carried"):
                spec = TypeAdapter(RegularizerSpec).validate_python(
                    {"name": "fd", "kind": "double_backprop", "method": "finite_difference", "weight": weight,
                     "gradient": gradient})
                torch.manual_seed(seed)
                model = build_from_spec(LeNet5Model(architecture="lenet5"), data.input_shape, data.num_outputs,
                                        data.channel_stats())
                regularizer = build_regularizer(spec, Task.CLASSIFICATION)
                started = time.perf_counter()
                fit(model, regularizer, data, TrainingSpec(epochs=args.epochs, batch_size=50, lr=1e-3), seed=seed,
                    device=torch.device("cpu"))
                seconds = time.perf_counter() - started
                model.eval()
                with torch.no_grad():
                    clean = float((model(data.x_test).argmax(1) == data.y_test).double().mean())
                robust = run_attack(model, data.x_test, data.y_test, pgd, seed=0, batch_size=500).accuracy()[0]
                norm = gradient_norm_sq(model, data.x_test, data.y_test)
                cos = (alignment(model, regularizer, data.x_train, data.y_train) if gradient == "carried"
                       else float("nan"))
                rows.append({"weight": weight, "gradient": gradient, "seed": seed, "clean": clean, "pgd": robust,
                             "grad_norm_sq": norm, "train_seconds": seconds, "cosine": cos})
                print(f"{weight:>5g} {gradient:>8} {seed:>4d} {clean:>6.3f} {robust:>8.3f} {norm:>11.4f} "
                      f"{seconds:>8.1f} {cos:>6.3f}", flush=True)
    print("\nmeans over seeds")
    for weight in args.weights:
        for gradient in ("fresh", "carried"):
            sel = [r for r in rows if r["weight"] == weight and r["gradient"] == gradient]
            print(f"{weight:>5g} {gradient:>8} clean {statistics.mean(r['clean'] for r in sel):.3f} "
                  f"pgd {statistics.mean(r['pgd'] for r in sel):.3f} "
                  f"‖∇ℓ‖² {statistics.mean(r['grad_norm_sq'] for r in sel):.4f} "
                  f"train {statistics.mean(r['train_seconds'] for r in sel):.1f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
