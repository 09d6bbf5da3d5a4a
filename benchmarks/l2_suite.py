"""The L2 standard suite against the in-repo AutoAttack reference on an L2 PGD-trained CNN (issue 23).

    python benchmarks/l2_suite.py                         # 300 MNIST images, ε 1.5 and 2.0
    python benchmarks/l2_suite.py --samples 200 --json out.json

The model: LeNet-5 trained with L2 PGD adversarial training (ε 2.0, 7 steps of 2.5·ε/7 from a random
start on the L2 sphere's inside, a half clean / half adversarial loss) on 4,000 images of one half
of the MNIST test set (../shared/data/mnist), evaluated on the other half; the checkpoint is cached in
--cache. Both `{kind: suite, norm: l2}` and `{kind: autoattack, norm: l2}` (the original's settings:
APGD-CE 100, APGD-T 9 × 100, FAB-T 9 × 100, Square 5,000) run at L2 ε 1.5 and 2.0 on the same
images; the table gives both robust accuracies, the suite's excess (target ≤ +0.3 pt), the samples
only one of them broke, wall time, gradient evaluations and forwards. The reference's result is
cached in --cache (its cost dominates) unless --fresh-reference is given. Without --no-plain the
same comparison also runs on the ERM twin (no adversarial training).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchattacks  # noqa: F401  (imported before the timed attacks: its import takes seconds)
from torch import Tensor, nn

from core.specs.dataset import ImageFileDataset
from core.specs.evaluation import AutoAttackSpec, SuiteSpec
from core.specs.model import LeNet5Model
from models.architectures import build_from_spec
from models.attacks import run_attack
from models.datasets import load_dataset
from models.datasets.base import DatasetBundle

REPO = Path(__file__).resolve().parents[1]
EPS = [1.5, 2.0]
TRAIN_EPS, TRAIN_STEPS = 2.0, 7


def mnist(data_dir: Path) -> DatasetBundle:
    return load_dataset(ImageFileDataset(name="mnist", data_dir=data_dir, split_test_set=True,
                                         train_size=4000, test_size=1000, seed=0))


def _l2_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, generator: torch.Generator) -> Tensor:
    """L2 PGD from a random point inside the ball, step 2.5·ε/steps (training-time, no early stop)."""
    delta = torch.randn(x.shape, generator=generator)
    delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.rand(len(x), 1, 1, 1,
                                                                                       generator=generator)
    x_adv = torch.clamp(x + delta, 0, 1)
    step = 2.5 * eps / steps
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        grad = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        delta = x_adv.detach() + step * grad - x
        size = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * torch.clamp(eps / size.clamp(min=1e-12), max=1.0)
        x_adv = torch.clamp(x + delta, 0, 1)
    return x_adv.detach()


def trained(data: DatasetBundle, cache: Path, epochs: int, adversarial: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_from_spec(LeNet5Model(architecture="lenet5"), data.input_shape, data.num_outputs,
                            data.channel_stats())
    path = cache / f"lenet5-{'l2pgd' if adversarial else 'erm'}-{epochs}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        started, total = time.perf_counter(), 0.0
        for idx in torch.randperm(len(data.x_train), generator=generator).split(50):
            x, y = data.x_train[idx], data.y_train[idx]
            model.train()
            if adversarial:
                model.eval()
                x_adv = _l2_pgd(model, x, y, TRAIN_EPS, TRAIN_STEPS, generator)
                model.train()
                loss = 0.5 * F.cross_entropy(model(x), y) + 0.5 * F.cross_entropy(model(x_adv), y)
            else:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss) * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(data.x_train):.3f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def measure(model: nn.Module, x: Tensor, y: Tensor, spec: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = run_attack(model, x, y, spec, seed=0, batch_size=500)
    return {"seconds": time.perf_counter() - started, "correct": result.correct, "accuracy": result.accuracy(),
            "gradients": result.gradient_evaluations, "forwards": result.forwards, "members": result.members}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/robustlab-l2-suite"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-plain", action="store_true", help="only the adversarially trained model")
    parser.add_argument("--train-only", action="store_true", help="train (and cache) the models, then exit")
    parser.add_argument("--fresh-reference", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist(args.data_dir)
    models = {"l2-pgd-at": trained(data, args.cache, args.epochs, adversarial=True)}
    if not args.no_plain:
        models["erm"] = trained(data, args.cache, args.epochs, adversarial=False)
    if args.train_only:
        return
    x, y = data.x_test[: args.samples], data.y_test[: args.samples]
    rows: list[dict[str, Any]] = []
    print("| model | ε | clean | suite | AutoAttack | suite − AA | only AA broke | only suite broke | suite s | AA s "
          "| AA s / suite s | suite grads / fwd | AA grads / fwd |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        with torch.no_grad():
            clean = float((model(x).argmax(dim=1) == y).double().mean())
        suite = measure(model, x, y, SuiteSpec(kind="suite", norm="l2", eps=EPS))
        print(f"   {name}: suite {suite['accuracy']} in {suite['seconds']:.1f} s", flush=True)
        cached = args.cache / f"reference-{name}-{args.epochs}-{len(x)}.pt"
        if cached.exists() and not args.fresh_reference:
            reference = torch.load(cached, weights_only=False)
        else:
            reference = measure(model, x, y, AutoAttackSpec(kind="autoattack", norm="l2", eps=EPS))
            torch.save(reference, cached)
        for i, eps in enumerate(EPS):
            s_acc, r_acc = suite["accuracy"][i], reference["accuracy"][i]
            only_ref = int((suite["correct"][i] & ~reference["correct"][i]).sum())
            only_suite = int((reference["correct"][i] & ~suite["correct"][i]).sum())
            row = {"model": name, "eps": eps, "samples": len(x), "clean": clean, "suite": s_acc, "autoattack": r_acc,
                   "excess_pt": 100 * (s_acc - r_acc), "only_reference": only_ref, "only_suite": only_suite,
                   "suite_seconds": suite["seconds"], "autoattack_seconds": reference["seconds"],
                   "suite_gradients": suite["gradients"], "suite_forwards": suite["forwards"],
                   "autoattack_gradients": reference["gradients"], "autoattack_forwards": reference["forwards"],
                   "members": [m for m in suite["members"] if m["eps"] == eps]}
            rows.append(row)
            print(f"| {name} | {eps:g} | {clean:.3f} | {s_acc:.3f} | {r_acc:.3f} | {row['excess_pt']:+.1f} pt "
                  f"| {only_ref} | {only_suite} | {suite['seconds']:.1f} | {reference['seconds']:.1f} "
                  f"| {reference['seconds'] / max(suite['seconds'], 1e-9):.1f}× "
                  f"| {suite['gradients']:,} / {suite['forwards']:,} "
                  f"| {reference['gradients']:,} / {reference['forwards']:,} |", flush=True)
        print("   members: " + "; ".join(f"ε {m['eps']:g} {m['member']} broke {m['broken']}/{m['attacked']} "
                                         f"({m['gradient_evaluations']} grads, {m['seconds']:.1f} s)"
                                         for m in suite["members"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"samples": args.samples, "eps": EPS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
