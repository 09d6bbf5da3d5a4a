"""Which survivors the suite's focus stage can break, by their screened targeted DLR loss (FOCUS_WITHIN).

    python benchmarks/focus_threshold.py                                  # 4 MNIST models, ε 0.1 and 0.2
    python benchmarks/focus_threshold.py --models doubleback --samples 200

Uses checkpoints trained and cached by benchmarks/eval_suite.py (same --cache; trained here if
missing). Per model and ε it runs the first stages of the standard suite's targeted member on its
first --samples test images: APGD-CE (the suite's iterations), the screening (every one of the 9
targets for the suite's screening iterations from one random start), and the focus on every
survivor (100 iterations on its best target, warm-started), then prints the screened loss of each
sample the focus broke and, per threshold, how many survivors screened above it, how many of the
focus's breaks and near-boundary finishers (loss above −NEAR_BOUNDARY after the focus) screened
below it. A threshold below which nothing is broken or brought near is one the focus can skip.
"""

from __future__ import annotations

import argparse

import torch
from eval_suite import diagnosis_arguments, mnist_model, mnist_split  # this folder is on sys.path

from models.attacks.apgd import apgd_run, apgd_start_noise
from models.attacks.suite import NEAR_BOUNDARY, STANDARD

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.7)


def starts(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    return (x + apgd_start_noise(x, eps, "linf", torch.Generator().manual_seed(seed))).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["doubleback", "spectreg", "pgd-at", "erm"],
                        help="regularizer names of eval_suite.py's MNIST models")
    parser.add_argument("--eps", nargs="+", type=float, default=[0.1, 0.2])
    parser.add_argument("--samples", type=int, default=500)
    diagnosis_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ce_member, targeted, _ = STANDARD
    data = mnist_split(args.data_dir)
    for name in args.models:
        model = mnist_model(name, data, args.cache)
        x, y = data.x_test[: args.samples], data.y_test[: args.samples]
        with torch.no_grad():
            ranked = model(x).argsort(dim=1, descending=True)
        for eps in args.eps:
            ce = apgd_run(model, x, y, starts(x, eps, 0), eps=eps, norm="linf", steps=ce_member.steps, loss="ce")
            survivors = (~ce.found & (ranked[:, 0] == y)).nonzero().flatten()
            xs, ys, start = x[survivors], y[survivors], starts(x[survivors], eps, 1)
            screened, points = [], []
            broken = torch.zeros(len(survivors), dtype=torch.bool)
            for rank in range(1, targeted.targets + 1):
                out = apgd_run(model, xs, ys, start, eps=eps, norm="linf", steps=targeted.screen_steps, loss="dlr",
                               target=ranked[survivors, rank])
                broken |= out.found
                screened.append(out.loss_best)
                points.append(out.x_best)
            best, best_rank = torch.stack(screened).max(dim=0)
            alive = (~broken).nonzero().flatten()
            warm = torch.stack(points)[best_rank[alive], alive]
            focus = apgd_run(model, xs[alive], ys[alive], warm, eps=eps, norm="linf", steps=targeted.steps,
                             loss="dlr", target=ranked[survivors[alive], best_rank[alive] + 1])
            loss, hit = best[alive], focus.found
            near = ~hit & (focus.loss_best > -NEAR_BOUNDARY)
            print(f"{name} ε {eps:g}: {len(survivors)} survivors of APGD-CE, screening broke {int(broken.sum())}, "
                  f"the focus broke {int(hit.sum())} of {len(alive)} and brought {int(near.sum())} within "
                  f"{NEAR_BOUNDARY}")
            print("   screened loss of the samples the focus broke: "
                  + ", ".join(f"{v:+.3f}" for v in sorted(loss[hit].tolist())))
            for t in THRESHOLDS:
                below = loss <= -t
                print(f"   screened ≤ −{t}: {int(below.sum())} of {len(alive)} survivors; among them broken by the "
                      f"focus {int((below & hit).sum())}, brought near {int((below & near).sum())}", flush=True)


if __name__ == "__main__":
    main()
