"""The standard suite against the in-repo AutoAttack reference, on the same checkpoints and samples.

    python benchmarks/eval_suite.py                          # 8 checkpoints, 300 MNIST / 300 digits images
    python benchmarks/eval_suite.py --samples 200 --json out.json

Checkpoints are trained here (cached under --cache): on an MNIST split (LeNet-5, 1,000 training
images from one half of the official test set, evaluated on the other half) ERM, double backprop,
SpectReg, input Hessian, FGSM-AT and PGD-AT; on scikit-learn's digits (MLP) ERM and double backprop;
and two deliberately masked models: the MNIST ERM network with its logits multiplied by 10⁴ (the
softmax saturates, cross-entropy gradients underflow) and with its input rounded to 4 grey levels
(the input gradient is zero almost everywhere). Every model is attacked at L∞ ε 0.1 and 0.2 by
`{kind: suite, name: standard}` and by `{kind: autoattack}` (the original's settings: APGD-CE 100,
APGD-T 9 × 100, FAB-T 9 × 100, Square 5,000, one seed), each on its own. Per model and ε the table
gives both robust accuracies, the suite's excess (target: ≤ +0.3 pt), the samples on which they
disagree, and per model wall time, gradient evaluations and forwards (samples × passes) of each.
Without the MNIST files (../shared/data/mnist) only the digits models run. The reference's
results (per-sample outcomes, seconds, passes) are kept in --cache and reused by later runs
unless --fresh-reference is given: its cost dominates the benchmark (minutes per model on a CPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torchattacks  # noqa: F401  (imported here, not inside the first timed attack: its import takes seconds)
from pydantic import TypeAdapter
from torch import Tensor, nn

from core.enums import Task
from core.specs.dataset import DigitsDataset, ImageFileDataset
from core.specs.evaluation import AutoAttackSpec, SuiteSpec
from core.specs.model import MLPModel
from core.specs.regularizers import RegularizerSpec
from core.specs.training import TrainingSpec
from models.architectures import build_from_spec
from models.attacks import run_attack
from models.datasets import load_dataset
from models.datasets.base import DatasetBundle
from models.regularizers import build_regularizer
from models.training import fit

REPO = Path(__file__).resolve().parents[1]
EPS = [0.1, 0.2]
REGULARIZERS: dict[str, dict[str, Any]] = {
    "erm": {"kind": "none"},
    "doubleback": {"kind": "double_backprop", "weight": 5.0},
    "spectreg": {"kind": "spectral", "weight": 0.03},
    "hessian": {"kind": "input_hessian", "weight": 0.1, "power_iterations": 2},
    "fgsm-at": {"kind": "adversarial_training", "attack": "fgsm", "eps": 0.1},
    "pgd-at": {"kind": "adversarial_training", "attack": "pgd", "eps": 0.1, "steps": 7},
}


class Saturated(nn.Module):
    """Logits × 10⁴: softmax saturates, cross-entropy input gradients underflow to zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x) * 1e4
        return out


class Rounded(nn.Module):
    """Inputs rounded to `levels` grey levels first: the input gradient is zero almost everywhere."""

    def __init__(self, inner: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(torch.round(x * (self.levels - 1)) / (self.levels - 1))
        return out


def trained(name: str, data: DatasetBundle, architecture: Any, epochs: int, cache: Path, tag: str) -> nn.Module:
    """A model trained with regularizer `name` (cached by tag and name)."""
    torch.manual_seed(0)
    model = build_from_spec(architecture, data.input_shape, data.num_outputs, data.channel_stats())
    path = cache / f"{tag}-{name}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    spec = TypeAdapter(RegularizerSpec).validate_python({"name": name, **REGULARIZERS[name]})
    fit(model, build_regularizer(spec, Task.CLASSIFICATION), data,
        TrainingSpec(epochs=epochs, batch_size=50, lr=1e-3), seed=0, device=torch.device("cpu"))
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def mnist_split(data_dir: Path) -> DatasetBundle:
    """The MNIST split of the benchmark: 1,000 training images of one half of the test set, 2,000 of the other."""
    return load_dataset(ImageFileDataset(name="mnist", data_dir=data_dir, split_test_set=True,
                                         train_size=1000, test_size=2000, seed=0))


def diagnosis_arguments(parser: argparse.ArgumentParser) -> None:
    """--cache, --data-dir and --threads, for the scripts that look into this benchmark's MNIST models."""
    parser.add_argument("--cache", type=Path, default=Path("/tmp/robustlab-eval-suite"))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--threads", type=int, default=1)


def mnist_model(name: str, data: DatasetBundle, cache: Path) -> nn.Module:
    """The benchmark's LeNet-5 trained with regularizer `name` ('mnist-' prefix optional), cached in `cache`."""
    from core.specs.model import LeNet5Model

    return trained(name.removeprefix("mnist-"), data, LeNet5Model(architecture="lenet5"), 10, cache, "mnist")


def measure(model: nn.Module, x: Tensor, y: Tensor, spec: Any, batch_size: int) -> dict[str, Any]:
    started = time.perf_counter()
    result = run_attack(model, x, y, spec, seed=0, batch_size=batch_size)
    return {"seconds": time.perf_counter() - started, "correct": result.correct,
            "accuracy": result.accuracy(), "gradients": result.gradient_evaluations,
            "forwards": result.forwards, "members": result.members}


def print_merged(paths: list[Path]) -> None:
    """One markdown table (and the totals) from the --json files of several runs."""
    rows = [row for path in paths for row in json.loads(path.read_text())["rows"]]
    print("| model | ε | clean | suite | AutoAttack | suite − AA | disagree (suite-only broken) | suite s | AA s "
          "| AA s / suite s | suite grads / fwd | AA grads / fwd |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['eps']:g} | {r['clean']:.3f} | {r['suite']:.3f} | {r['autoattack']:.3f} "
              f"| {r['excess_pt']:+.1f} pt | {r['disagree']} ({r['suite_only_broken']}) | {r['suite_seconds']:.1f} "
              f"| {r['autoattack_seconds']:.1f} | {r['autoattack_seconds'] / max(r['suite_seconds'], 1e-9):.1f}× "
              f"| {r['suite_gradients']:,} / {r['suite_forwards']:,} "
              f"| {r['autoattack_gradients']:,} / {r['autoattack_forwards']:,} |")
    per_model = {r["model"]: r for r in rows}.values()
    suite_s = sum(r["suite_seconds"] for r in per_model)
    reference_s = sum(r["autoattack_seconds"] for r in per_model)
    grads = (sum(r["autoattack_gradients"] for r in per_model), sum(r["suite_gradients"] for r in per_model))
    forwards = (sum(r["autoattack_forwards"] for r in per_model), sum(r["suite_forwards"] for r in per_model))
    worst = max(rows, key=lambda r: r["excess_pt"])
    print(f"\n{len(per_model)} models: suite {suite_s:.1f} s, AutoAttack {reference_s:.1f} s "
          f"({reference_s / max(suite_s, 1e-9):.1f}× less wall time; {grads[0] / max(grads[1], 1):.1f}× fewer "
          f"gradient evaluations, {forwards[0] / max(forwards[1], 1):.1f}× fewer forwards); largest excess "
          f"{worst['excess_pt']:+.1f} pt ({worst['model']} ε {worst['eps']:g}); "
          f"rows above the reference by more than 0.3 pt: {sum(r['excess_pt'] > 0.3 + 1e-9 for r in rows)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/robustlab-eval-suite"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="model names to run (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--fresh-reference", action="store_true",
                        help="re-measure the AutoAttack reference even when --cache holds its result")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="print the markdown table and totals of earlier --json outputs (e.g. of two "
                             "processes run side by side with --only) and exit")
    args = parser.parse_args()
    if args.merge:
        print_merged(args.merge)
        return
    torch.set_num_threads(args.threads)

    models: dict[str, tuple[nn.Module, DatasetBundle]] = {}
    digits = load_dataset(DigitsDataset(name="digits", train_size=1000, test_size=500, seed=0))
    mlp = MLPModel(architecture="mlp", params={"hidden": [256, 256]})
    for name in ("erm", "doubleback"):
        models[f"digits-{name}"] = (trained(name, digits, mlp, 20, args.cache, "digits"), digits)
    if all((args.data_dir / f).exists() for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        mnist = mnist_split(args.data_dir)
        for name in REGULARIZERS:
            models[f"mnist-{name}"] = (mnist_model(name, mnist, args.cache), mnist)
        erm = models["mnist-erm"][0]
        models["masked-saturated"] = (Saturated(erm).eval(), mnist)
        models["masked-rounded"] = (Rounded(erm).eval(), mnist)
    else:
        print(f"MNIST files not found in {args.data_dir}: digits models only")

    rows: list[dict[str, Any]] = []
    header = (f"{'model':<18} {'ε':>4} {'clean':>6} {'suite':>6} {'AA':>6} {'excess':>7} {'disagree':>8} "
              f"{'suite s':>8} {'AA s':>8} {'speed-up':>8} {'suite grads':>11} {'AA grads':>10} "
              f"{'suite fwd':>10} {'AA fwd':>10}")
    print(header)
    for name, (model, data) in models.items():
        if args.only and name not in args.only:
            continue
        x, y = data.x_test[: args.samples], data.y_test[: args.samples]
        with torch.no_grad():
            clean = float((model(x).argmax(dim=1) == y).double().mean())
        suite = measure(model, x, y, SuiteSpec(kind="suite", name="standard", norm="linf", eps=EPS), 500)
        cached = args.cache / f"reference-{name}-{len(x)}.pt"  # the reference does not change: measured once
        if cached.exists() and not args.fresh_reference:
            reference = torch.load(cached, weights_only=False)
        else:
            reference = measure(model, x, y, AutoAttackSpec(kind="autoattack", norm="linf", eps=EPS), 500)
            torch.save(reference, cached)
        for i, eps in enumerate(EPS):
            s_acc, r_acc = suite["accuracy"][i], reference["accuracy"][i]
            disagree = int((suite["correct"][i] != reference["correct"][i]).sum())
            only_suite = int((reference["correct"][i] & ~suite["correct"][i]).sum())
            # the samples (test-set positions) only the reference broke: what to look at when the suite is weaker
            only_reference = (suite["correct"][i] & ~reference["correct"][i]).nonzero().flatten().tolist()
            row = {"model": name, "eps": eps, "samples": len(x), "clean": clean, "suite": s_acc, "autoattack": r_acc,
                   "excess_pt": 100 * (s_acc - r_acc), "disagree": disagree, "suite_only_broken": only_suite,
                   "reference_only_broken": only_reference,
                   "suite_seconds": suite["seconds"], "autoattack_seconds": reference["seconds"],
                   "suite_gradients": suite["gradients"], "autoattack_gradients": reference["gradients"],
                   "suite_forwards": suite["forwards"], "autoattack_forwards": reference["forwards"],
                   "members": [m for m in suite["members"] if m["eps"] == eps]}
            rows.append(row)
            print(f"{name:<18} {eps:>4g} {clean:>6.3f} {s_acc:>6.3f} {r_acc:>6.3f} {row['excess_pt']:>+7.1f} "
                  f"{disagree:>8d} {suite['seconds']:>8.1f} {reference['seconds']:>8.1f} "
                  f"{reference['seconds'] / max(suite['seconds'], 1e-9):>7.1f}× {suite['gradients']:>11d} "
                  f"{reference['gradients']:>10d} {suite['forwards']:>10d} {reference['forwards']:>10d}", flush=True)
            if only_reference:
                print(f"   ε {eps:g}: only the reference broke samples {only_reference}", flush=True)
        print("   members: " + "; ".join(f"ε {m['eps']:g} {m['member']} broke {m['broken']}/{m['attacked']} "
                                         f"({m['gradient_evaluations']} grads, {m['forwards']} fwd)"
                                         for m in suite["members"]), flush=True)
    if not rows:
        print(f"no model selected (--only {' '.join(args.only or [])}); the checkpoints are trained and cached")
        return
    total_suite = sum(r["suite_seconds"] for r in rows[::2])
    total_ref = sum(r["autoattack_seconds"] for r in rows[::2])
    worst = max(rows, key=lambda r: r["excess_pt"])
    print(f"total: suite {total_suite:.1f} s, AutoAttack {total_ref:.1f} s ({total_ref / max(total_suite, 1e-9):.1f}×"
          f" less wall time); largest excess {worst['excess_pt']:+.1f} pt ({worst['model']} ε {worst['eps']:g})")
    if args.json:
        args.json.write_text(json.dumps({"samples": args.samples, "eps": EPS, "rows": rows,
                                         "suite_seconds": total_suite, "autoattack_seconds": total_ref}, indent=1))


if __name__ == "__main__":
    main()
