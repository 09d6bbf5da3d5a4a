"""How often one random start of targeted APGD-DLR breaks a borderline sample (why the suite restarts).

    python benchmarks/borderline_starts.py                         # mnist-doubleback, ε 0.2, 20 starts
    python benchmarks/borderline_starts.py --model mnist-erm --eps 0.1 --starts 40

Uses a checkpoint trained and cached by benchmarks/eval_suite.py (run that first; same --cache).
On its first --samples test images: APGD-CE (30 iterations) at ε, then targeted APGD-DLR (100
iterations, one start) on each survivor's three most likely wrong classes. A survivor whose best
targeted DLR loss ended within 0.05 of the boundary is borderline; each borderline sample then gets
--starts fresh random starts of 100 iterations on its best target, and the script prints how many
of them broke it.
"""

from __future__ import annotations

import argparse

import torch
from eval_suite import diagnosis_arguments, mnist_model, mnist_split  # this folder is on sys.path

from models.attacks.apgd import apgd_run, apgd_start_noise


def starts(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    noise = apgd_start_noise(x, eps, "linf", torch.Generator().manual_seed(seed))
    return (x + noise).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist-doubleback", help="mnist-<regularizer> of eval_suite.py")
    parser.add_argument("--eps", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--starts", type=int, default=20)
    diagnosis_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist_split(args.data_dir)
    model = mnist_model(args.model, data, args.cache)
    x, y, eps = data.x_test[: args.samples], data.y_test[: args.samples], args.eps
    with torch.no_grad():
        ranked = model(x).argsort(dim=1, descending=True)
    ce = apgd_run(model, x, y, starts(x, eps, 0), eps=eps, norm="linf", steps=30, loss="ce")
    survivors = (~ce.found & (ranked[:, 0] == y)).nonzero().flatten()
    xs, ys = x[survivors], y[survivors]
    best = torch.full((len(survivors),), float("-inf"))
    best_target = torch.zeros(len(survivors), dtype=torch.long)
    broken = torch.zeros(len(survivors), dtype=torch.bool)
    for rank in (1, 2, 3):
        target = ranked[survivors, rank]
        out = apgd_run(model, xs, ys, starts(xs, eps, rank), eps=eps, norm="linf", steps=100, loss="dlr",
                       target=target)
        broken |= out.found
        better = out.loss_best > best
        best[better], best_target[better] = out.loss_best[better], target[better]
    borderline = (~broken & (best > -0.05)).nonzero().flatten()
    print(f"{args.model} ε {eps:g}: {len(survivors)} survivors of APGD-CE, {int(broken.sum())} broken by one "
          f"targeted start on one of 3 targets, {len(borderline)} borderline (targeted DLR within 0.05)")
    hits_all = 0
    for j in borderline.tolist():
        xj, yj, tj = xs[j:j + 1], ys[j:j + 1], best_target[j:j + 1]
        rep = args.starts
        out = apgd_run(model, xj.repeat(rep, 1, 1, 1), yj.repeat(rep), starts(xj.repeat(rep, 1, 1, 1), eps, 1000 + j),
                       eps=eps, norm="linf", steps=100, loss="dlr", target=tj.repeat(rep))
        hits = int(out.found.sum())
        hits_all += hits
        print(f"  sample {int(survivors[j])}: best DLR {float(best[j]):+.3f} on class {int(tj)}; "
              f"{hits} of {rep} fresh starts broke it")
    if len(borderline):
        print(f"one start breaks a borderline sample {hits_all / (len(borderline) * args.starts):.0%} of the time")


if __name__ == "__main__":
    main()
