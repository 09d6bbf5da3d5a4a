"""The price of ONNX: one small CNN attacked as native torch and as its converted ONNX export.

    python benchmarks/onnx_overhead.py                       # MNIST if ../shared/data/mnist has it, else digits
    python benchmarks/onnx_overhead.py --dataset digits --samples 500 --json out.json

A small custom CNN (not a registry architecture: conv 16 → conv 32 → linear 100 → 10) is trained
briefly (ERM, Adam), exported with torch.onnx.export(dynamo=False), and loaded back the way the
service loads a user's upload: `models.sources.load_user_model` (graph checks, onnx2torch,
the InputConventions wrapper). Both models are attacked with the same seeded PGD (L∞, 20 steps,
random start, 3 radii) on the same samples by `models.attacks.run_attack`, the engine of every
evaluation; each side is timed `--repeats` times, alternating; the ratios of the medians and of the fastest
runs are reported (on a shared machine the fastest run is the least disturbed one).

Reported: time ratio ONNX / native (target ≤ 1.3×), clean and robust accuracy of both, and in how
many samples the two verdicts differ (the converted graph computes the same function up to float
rounding, so 0 is expected). Exit 1 when the accuracies disagree by more than one sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.specs.dataset import DigitsDataset, ImageFileDataset  # noqa: E402
from core.specs.evaluation import PGDAttack  # noqa: E402
from core.specs.model import OnnxModel  # noqa: E402
from models.attacks import run_attack  # noqa: E402
from models.datasets import load_dataset  # noqa: E402
from models.sources import load_user_model  # noqa: E402

MNIST = REPO.parent / "shared" / "data" / "mnist"
TARGET = 1.3


class SmallCNN(nn.Module):
    """conv(16, 3×3) → pool → conv(32, 3×3) → pool → linear 100 → classes."""

    def __init__(self, channels: int, side: int, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * (side // 4) ** 2, 100)
        self.out = nn.Linear(100, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.out(F.relu(self.fc(x.flatten(1))))


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(128):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("auto", "mnist", "digits"), default="auto")
    parser.add_argument("--samples", type=int, default=1000, help="test samples attacked")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed by other load)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    use_mnist = args.dataset == "mnist" or (args.dataset == "auto" and (MNIST / "t10k-images-idx3-ubyte.gz").exists())
    spec = (ImageFileDataset(name="mnist", data_dir=MNIST, split_test_set=True, train_size=args.train_size,
                             test_size=args.samples, seed=args.seed) if use_mnist
            else DigitsDataset(name="digits", test_fraction=0.3, test_size=min(args.samples, 539), seed=args.seed))
    data = load_dataset(spec)
    channels, side = data.input_shape[0], data.input_shape[1]
    native = SmallCNN(channels, side, data.num_outputs)
    train(native, data.x_train, data.y_train, args.epochs if use_mnist else 4 * args.epochs, args.seed)
    for parameter in native.parameters():
        parameter.requires_grad_(False)  # as the loader leaves the converted model: input gradients only

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "small_cnn.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(native, (data.x_test[:1],), str(path), dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
        onnx_bytes = path.stat().st_size
        section = OnnxModel(format="onnx", input_shape=list(data.input_shape), num_classes=data.num_outputs)
        started = time.perf_counter()
        converted = load_user_model(path, section)
        load_seconds = time.perf_counter() - started

    attack = PGDAttack(kind="pgd", norm="linf", eps=[0.05, 0.1, 0.2] if use_mnist else [0.02, 0.05, 0.1],
                       steps=args.steps)
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        clean = {name: (m(x).argmax(1) == y) for name, m in (("native", native), ("onnx", converted))}
    times: dict[str, list[float]] = {"native": [], "onnx": []}
    verdicts: dict[str, Tensor] = {}
    run_attack(native, x[:args.batch_size], y[:args.batch_size], attack, seed=args.seed, batch_size=args.batch_size)
    run_attack(converted, x[:args.batch_size], y[:args.batch_size], attack, seed=args.seed,
               batch_size=args.batch_size)  # warm-up of both
    for _ in range(args.repeats):
        for name, model in (("native", native), ("onnx", converted)):  # alternating: drift hits both alike
            started = time.perf_counter()
            result = run_attack(model, x, y, attack, seed=args.seed, batch_size=args.batch_size)
            times[name].append(time.perf_counter() - started)
            verdicts[name] = result.correct
    median = {name: statistics.median(t) for name, t in times.items()}
    ratio = median["onnx"] / median["native"]
    ratio_min = min(times["onnx"]) / min(times["native"])  # the least disturbed run of each: less noise
    robust = {name: [float(v.double().mean()) for v in verdicts[name]] for name in verdicts}
    differ = int((verdicts["native"] != verdicts["onnx"]).sum())
    clean_differ = int((clean["native"] != clean["onnx"]).sum())
    out = {
        "dataset": data.name, "samples": len(x), "input_shape": list(data.input_shape),
        "attack": {"kind": "pgd", "norm": "linf", "eps": attack.eps, "steps": attack.steps, "seed": args.seed},
        "threads": args.threads, "repeats": args.repeats, "onnx_bytes": onnx_bytes,
        "onnx_load_seconds": round(load_seconds, 3),
        "seconds": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
        "median_seconds": {name: round(t, 3) for name, t in median.items()},
        "ratio_onnx_over_native": round(ratio, 3), "ratio_of_fastest_runs": round(ratio_min, 3),
        "target": TARGET, "meets_target": max(ratio, ratio_min) <= TARGET,
        "clean_accuracy": {name: float(c.double().mean()) for name, c in clean.items()},
        "robust_accuracy": dict(zip(("native", "onnx"), (robust["native"], robust["onnx"]), strict=True)),
        "verdicts_differing": differ, "clean_verdicts_differing": clean_differ,
    }
    print(f"{data.name}: {len(x)} samples {list(data.input_shape)}, PGD-{attack.steps} L∞ ε {attack.eps}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"  native torch  {median['native']:7.3f} s   clean {out['clean_accuracy']['native']:.4f}   "
          f"robust {' / '.join(f'{a:.4f}' for a in robust['native'])}")
    print(f"  ONNX → torch  {median['onnx']:7.3f} s   clean {out['clean_accuracy']['onnx']:.4f}   "
          f"robust {' / '.join(f'{a:.4f}' for a in robust['onnx'])}   (load {load_seconds:.2f} s)")
    met = max(ratio, ratio_min) <= TARGET
    print(f"  ratio {ratio:.2f}× of medians, {ratio_min:.2f}× of the fastest runs "
          f"(target ≤ {TARGET}×: {'met' if met else 'MISSED'}); "
          f"verdicts differing: {differ} of {verdicts['native'].numel()} (clean: {clean_differ})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    agree = differ <= 1 and clean_differ == 0
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
