"""Which unbroken samples a 5,000-query Square can give up on early, measured on masked models.

    python benchmarks/square_pruning.py --models erm doubleback pgd-at --eps 0.1 --first 500 --samples 500

On a model no gradient can attack the suite escalates Square to AutoAttack's 5,000 queries, and
nearly all of that goes to samples Square never breaks. This runs the full search (our Square,
which is torchattacks' query for query) on the benchmark's LeNet-5s behind 4-level input rounding
(eval_suite.py's `Rounded`, zero input gradient), records each sample's margin as a share of its
starting margin at a few checkpoints, and prints, per checkpoint and threshold, how many samples a
rule "prune if margin > threshold × start margin" would drop, how many of those the full search
broke later (lost), and the share of queries it would save. By default it looks at test positions
500-999, not the first 500 that eval_suite.py measures, so a rule chosen here is checked there on
samples it was not chosen on. The last line per model applies the suite's own rule
(`suite.SQUARE_PRUNE`, each sample dropped at the first checkpoint it fails) and compares the
full search with the suite's escalation: `ESCALATED_RESTARTS` pruned searches with other random
draws, each on what the earlier ones left. Checkpoints are
trained and cached by eval_suite.py (same --cache).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from eval_suite import Rounded, diagnosis_arguments, mnist_model, mnist_split  # this folder is on sys.path
from torch import Tensor

from models.attacks.square import square_attack
from models.attacks.suite import ESCALATED_RESTARTS, SQUARE_PRUNE

THRESHOLDS = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)


def record(ratios: dict[int, Tensor], checkpoints: set[int], iteration: int, margin: Tensor, start: Tensor) -> None:
    """Keep margin / start margin at the checkpoints (0 where already broken)."""
    if iteration in checkpoints:
        ratios[iteration] = (margin / start).where(margin > 0, torch.zeros_like(margin))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["erm", "doubleback", "pgd-at"])
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--first", type=int, default=500, help="first test position")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[100, 250, 500, 1000, 2000, 3000])
    diagnosis_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist_split(args.data_dir)
    x_all = data.x_test[args.first: args.first + args.samples]
    y_all = data.y_test[args.first: args.first + args.samples]
    for name in args.models:
        model = Rounded(mnist_model(name, data, args.cache)).eval()
        with torch.no_grad():
            right = model(x_all).argmax(1) == y_all
        x, y = x_all[right], y_all[right]
        ratios: dict[int, Tensor] = {}
        with torch.no_grad():
            out = square_attack(model, x, y, eps=args.eps, norm="linf", queries=args.queries, seed=0,
                                watch=partial(record, ratios, {*args.checkpoints, *SQUARE_PRUNE}))
        broken = out.margin <= 0
        total = int(out.queries.sum())
        print(f"rounded {name} ε {args.eps:g}: {len(y)} correct, Square-{args.queries} broke {int(broken.sum())}, "
              f"{total:,} queries", flush=True)
        for checkpoint in args.checkpoints:
            if checkpoint not in ratios:
                continue
            ratio, alive = ratios[checkpoint], ratios[checkpoint] > 0
            parts = []
            for threshold in THRESHOLDS:
                drop = alive & (ratio > threshold)
                lost = int((drop & broken).sum())
                saved = int((out.queries[drop] - checkpoint - 1).sum())
                parts.append(f">{threshold:g}: drop {int(drop.sum())}, lost {lost}, saves {saved / total:.0%}")
            late = broken & alive
            worst = float(ratio[late].max()) if late.any() else float("nan")
            print(f"  at {checkpoint:>5}: {int(alive.sum())} unbroken, {int(late.sum())} broken later "
                  f"(highest ratio among them {worst:.3f}); " + "; ".join(parts), flush=True)
        spent, dropped = out.queries.clone(), torch.zeros_like(broken)
        for checkpoint, threshold in sorted(SQUARE_PRUNE.items()):
            if checkpoint in ratios:
                drop = ~dropped & (ratios[checkpoint] > threshold)
                spent[drop], dropped = checkpoint + 1, dropped | drop
        print(f"  the suite's rule {SQUARE_PRUNE}: drops {int(dropped.sum())}, loses {int((dropped & broken).sum())}, "
              f"spends {int(spent.sum()):,} queries ({int(spent.sum()) / total:.0%} of the full search)", flush=True)
        escalated, queries = torch.zeros_like(broken), 0
        for restart in range(ESCALATED_RESTARTS):  # the suite's escalation: pruned searches with other draws
            left = (~escalated).nonzero().flatten()
            with torch.no_grad():
                run = square_attack(model, x[left], y[left], eps=args.eps, norm="linf", queries=args.queries,
                                    seed=1 + restart, prune=SQUARE_PRUNE)
            escalated[left[run.margin <= 0]] = True
            queries += int(run.queries.sum())
        print(f"  the suite's {ESCALATED_RESTARTS} pruned searches (other draws) broke {int(escalated.sum())} "
              f"({int((escalated & ~broken).sum())} the full search did not, {int((broken & ~escalated).sum())} "
              f"the other way round) with {queries:,} queries ({queries / total:.0%})", flush=True)


if __name__ == "__main__":
    main()
