"""Per target class, how often fresh targeted APGD-DLR starts break given samples, and how 10 iterations rank it.

    python benchmarks/target_starts.py --model mnist-spectreg --eps 0.2 --samples 450
    python benchmarks/target_starts.py --model mnist-fgsm-at --eps 0.2 --samples 291 --starts 20

For a sample the suite left unbroken and AutoAttack broke (`eval_suite.py` lists them per row as
`reference_only_broken`): which of its 9 most likely wrong classes it falls to. Each target gets
--starts random starts of 100 iterations; the line also gives the median targeted DLR loss after
the suite's 10 screening iterations from the same starts (the suite ranks targets by it). Uses a
checkpoint trained and cached by benchmarks/eval_suite.py (same --cache; trained here if missing).
"""

from __future__ import annotations

import argparse

import torch
from eval_suite import diagnosis_arguments, mnist_model, mnist_split  # this folder is on sys.path

from models.attacks.apgd import apgd_run, apgd_start_noise
from models.attacks.suite import STANDARD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist-spectreg", help="mnist-<regularizer> of eval_suite.py")
    parser.add_argument("--eps", type=float, default=0.2)
    parser.add_argument("--samples", nargs="+", type=int, default=[450], help="test-set positions")
    parser.add_argument("--starts", type=int, default=20)
    diagnosis_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targeted = STANDARD[1]
    data = mnist_split(args.data_dir)
    model = mnist_model(args.model, data, args.cache)
    for position in args.samples:
        x, y = data.x_test[position:position + 1], data.y_test[position:position + 1]
        with torch.no_grad():
            ranked = model(x).argsort(dim=1, descending=True)[0]
        xs, ys = x.repeat(args.starts, *([1] * (x.dim() - 1))), y.repeat(args.starts)
        parts = []
        for rank in range(1, targeted.targets + 1):
            noise = apgd_start_noise(xs, args.eps, "linf", torch.Generator().manual_seed(1000 * position + rank))
            start, target = (xs + noise).clamp(0, 1), ranked[rank].repeat(args.starts)
            screen = apgd_run(model, xs, ys, start, eps=args.eps, norm="linf", steps=targeted.screen_steps,
                              loss="dlr", target=target)
            full = apgd_run(model, xs, ys, start, eps=args.eps, norm="linf", steps=targeted.steps, loss="dlr",
                            target=target)
            parts.append(f"#{rank} class {int(ranked[rank])}: screened {float(screen.loss_best.median()):+.3f}, "
                         f"broken by {int(full.found.sum())}/{args.starts}")
        print(f"{args.model} ε {args.eps:g} sample {position} (class {int(y)}):\n   " + "\n   ".join(parts), flush=True)


if __name__ == "__main__":
    main()
