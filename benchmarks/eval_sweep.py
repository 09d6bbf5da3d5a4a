"""The ε-sweep engine against torchattacks called once per ε: same model, samples, settings, one run.

    python benchmarks/eval_sweep.py                       # lenet5, 2,000 MNIST images, 2 threads
    python benchmarks/eval_sweep.py --samples 500 --json out.json

Rows "sweep-fp32" and "sweep-bf16" time the whole sweep as `compare` runs it (FGSM, then PGD on
the samples FGSM left) against torchattacks FGSM + PGD once per ε; their accuracy is the worst
case of both, compared with torchattacks PGD. bf16 (autocast for PGD iterations, verdicts fp32)
needs CUDA or a CPU with native bf16; elsewhere the bf16 row equals fp32.

A LeNet-5 is trained briefly (ERM, Adam) on one half of the MNIST test set and attacked on 2,000
images of the other half, with FGSM and PGD-20 (L∞, step 2.5·ε/20, random start) at 5 radii.
The reference is the naive loop an evaluation would otherwise run: for every ε, torchattacks on
every sample in batches, then a forward pass to score the adversarial inputs. Our sweep must be
faster and its accuracy never higher at any ε (DESIGN §7); the table shows both and the ratio.
Needs ../shared/data/mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz; skips (exit 0) without them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchattacks
from torch import Tensor, nn

from core.specs.dataset import ImageFileDataset
from core.specs.evaluation import FGSMAttack, PGDAttack
from models.architectures import build_model
from models.attacks import run_attack
from models.attacks.sweep import restart_seed
from models.datasets import load_dataset

REPO = Path(__file__).resolve().parents[1]

MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int) -> float:
    """Plain ERM with Adam (lr 3e-3), batch 128; returns the seconds spent."""
    started = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(128):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - started


def naive_loop(
    model: nn.Module, x: Tensor, y: Tensor, eps_list: list[float], make: Callable[[float], torchattacks.Attack],
    batch_size: int, seed: int,
) -> tuple[list[float], list[float]]:
    """torchattacks once per ε over all samples, scored by a forward pass: (accuracy, seconds) per ε.

    Before each batch the global RNG is seeded as the sweep seeds that block of samples, so PGD
    starts from the same random points in both and the comparison is sample for sample.
    """
    accuracy, seconds = [], []
    for i, eps in enumerate(eps_list):
        started = time.perf_counter()
        attack, correct = make(eps), 0
        for lo in range(0, len(x), batch_size):
            torch.manual_seed(restart_seed(seed, i, 0, lo // batch_size))
            xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
            x_adv = attack(xb, yb)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(dim=1) == yb).sum())
        seconds.append(time.perf_counter() - started)
        accuracy.append(correct / len(x))
    return accuracy, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--samples", type=int, default=2000, help="attacked test images")
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the fastest of this many runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    missing = [name for name in MNIST_FILES if not (args.data_dir / name).exists()]
    if missing:
        print(f"SKIP: MNIST files missing in {args.data_dir}: {', '.join(missing)}")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset(ImageFileDataset(name="mnist", data_dir=args.data_dir, split_test_set=True,
                                         train_size=args.train_size, test_size=args.samples, seed=args.seed))
    model = build_model("lenet5", {}, (1, 28, 28), 10)
    train_seconds = train(model, data.x_train, data.y_train, args.epochs, args.seed)
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        clean = float((model(x).argmax(dim=1) == y).double().mean())
    eps = sorted(args.eps)
    steps, bs, seed = args.steps, args.batch_size, args.seed
    print(f"lenet5 trained {args.epochs} epochs on {len(data.x_train)} images in {train_seconds:.1f}s; "
          f"attacking {len(x)} images, clean accuracy {clean:.4f}, {torch.get_num_threads()} threads, batch {bs}, "
          f"fastest of {args.repeats} runs")

    rows: dict[str, dict[str, object]] = {}
    pgd_spec = PGDAttack(kind="pgd", eps=eps, steps=steps)
    specs = {
        "fgsm": (FGSMAttack(kind="fgsm", eps=eps), lambda e: torchattacks.FGSM(model, eps=e)),
        f"pgd-{steps}": (pgd_spec, lambda e: torchattacks.PGD(model, eps=e, alpha=2.5 * e / steps, steps=steps)),
    }
    for name, (spec, make) in specs.items():
        ours_times: list[float] = []
        theirs_times: list[list[float]] = []
        for _ in range(args.repeats):  # alternate, keep the fastest of each: machine noise only adds time
            started = time.perf_counter()
            result = run_attack(model, x, y, spec, seed=seed, batch_size=bs, start_block=bs)
            ours_times.append(time.perf_counter() - started)
            theirs_accuracy, seconds = naive_loop(model, x, y, eps, make, bs, seed)
            theirs_times.append(seconds)
        ours_seconds = min(ours_times)
        theirs_seconds = [min(per_eps) for per_eps in zip(*theirs_times, strict=True)]
        rows[name] = {
            "eps": eps, "ours_accuracy": result.accuracy(), "torchattacks_accuracy": theirs_accuracy,
            "ours_seconds": ours_seconds, "torchattacks_seconds": theirs_seconds,
            "speedup": sum(theirs_seconds) / ours_seconds,
            "never_higher": all(o <= t for o, t in zip(result.accuracy(), theirs_accuracy, strict=True)),
            "gradient_stats": result.gradient_stats,
        }

    # The sweep as `compare` runs it: FGSM first, then PGD on what FGSM left, fp32 and bf16 (amp).
    theirs_total = sum(sum(row["torchattacks_seconds"]) for row in rows.values())  # type: ignore[call-overload]
    theirs_pgd = rows[f"pgd-{steps}"]["torchattacks_accuracy"]
    for amp in (False, True):
        times, result = [], None
        for _ in range(args.repeats):
            started = time.perf_counter()
            fgsm = run_attack(model, x, y, specs["fgsm"][0], seed=seed, batch_size=bs, start_block=bs)
            result = run_attack(model, x, y, pgd_spec, seed=seed, batch_size=bs, already_broken=~fgsm.correct, amp=amp,
                                start_block=bs)  # torchattacks' starts per batch, as naive_loop seeds them
            times.append(time.perf_counter() - started)
        assert result is not None
        rows[f"sweep-{'bf16' if amp else 'fp32'}"] = {
            "eps": eps, "ours_accuracy": result.accuracy(), "torchattacks_accuracy": theirs_pgd,
            "ours_seconds": min(times), "torchattacks_seconds": [theirs_total / len(eps)] * len(eps),
            "speedup": theirs_total / min(times),
            "never_higher": all(o <= t for o, t in zip(result.accuracy(), theirs_pgd, strict=True)),  # type: ignore[call-overload]
            "gradient_stats": result.gradient_stats,
        }

    print(f"\n{'attack':<8} {'eps':>5} {'ours acc':>9} {'ta acc':>8} {'ta s':>7}")
    for name, row in rows.items():
        for e, o, t, s in zip(row["eps"], row["ours_accuracy"], row["torchattacks_accuracy"],  # type: ignore[call-overload]
                              row["torchattacks_seconds"], strict=True):
            print(f"{name:<8} {e:>5.2f} {o:>9.4f} {t:>8.4f} {s:>7.2f}")
    print(f"\n{'attack':<8} {'ours s':>8} {'ta s':>8} {'speed-up':>9}  ours ≤ torchattacks at every ε")
    for name, row in rows.items():
        print(f"{name:<8} {row['ours_seconds']:>8.2f} {sum(row['torchattacks_seconds']):>8.2f} "  # type: ignore[call-overload]
              f"{row['speedup']:>8.2f}×  {'yes' if row['never_higher'] else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({
            "model": "lenet5", "samples": len(x), "clean_accuracy": clean, "threads": torch.get_num_threads(),
            "batch_size": bs, "steps": steps, "repeats": args.repeats, "train_seconds": train_seconds, "attacks": rows,
            "torch": torch.__version__, "torchattacks": torchattacks.__version__,
        }, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(row["never_higher"] for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
