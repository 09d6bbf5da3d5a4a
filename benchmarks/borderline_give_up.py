"""When the suite's many-start stages can give up on a start: targeted DLR loss per start at a few iterations.

    python benchmarks/borderline_give_up.py --models doubleback spectreg pgd-at fgsm-at erm hessian

The near-boundary and borderline stages of the suite's targeted member (`suite.focused_targets_at`)
give each survivor close to the boundary many starts of 100 iterations, and on most of those
samples no start succeeds. This runs the standard suite on the benchmark's LeNet-5s (test
positions 500-999 by default, not the first 500 that eval_suite.py measures) and watches every
start of those two stages: its best loss after each checkpoint iteration and whether it broke its
sample. Per checkpoint and threshold it prints how many starts a rule "give up when the best loss
is still below the threshold" would stop, how many samples would then be left unbroken that the
full stage broke (lost), and the share of the stage's gradient evaluations it would save. The
last line per model checks the suite's own rule (`suite.GIVE_UP`), which the stages run with
unless --full. Checkpoints are trained and cached by eval_suite.py (same --cache).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import torch
from eval_suite import diagnosis_arguments, mnist_model, mnist_split  # this folder is on sys.path
from torch import Tensor

import models.attacks.suite as suite
from core.specs.evaluation import SuiteSpec
from models.attacks import run_attack

CHECKPOINTS = (10, 20, 30, 40, 50)
THRESHOLDS = (-0.1, -0.2, -0.3, -0.5)


class Recorder:
    """Every many-start call of apgd_run: per start (row), best loss at the checkpoints, found, sample."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.samples = 0  # samples of the current _replicated_dlr call (rows are replica-major)
        self.expected = 0  # its starts × samples: a call with fewer rows is a later group (not recorded)
        self.unrecorded = 0

    def apgd_run(self, *args: Any, **kwargs: Any) -> Any:
        n = len(args[1])
        if kwargs.get("steps") != 100 or n <= self.samples:  # screening and focus: one start per sample
            return ORIGINAL_APGD(*args, **kwargs)
        if n != self.expected:
            self.unrecorded += 1
            return ORIGINAL_APGD(*args, **kwargs)
        losses: dict[int, Tensor] = {}

        def watch(i: int, rows: Tensor, best: Tensor) -> None:
            if i in CHECKPOINTS:
                full = torch.full((n,), float("nan"))
                full[rows.cpu()] = best.cpu()
                losses[i] = full

        if not FULL:
            kwargs["give_up"] = suite.GIVE_UP
        out = ORIGINAL_APGD(*args, watch=watch, **kwargs)
        self.calls.append({"losses": losses, "found": out.found.cpu(), "sample": torch.arange(n) % self.samples})
        return out

    def replicated(self, ctx: Any, i: int, xb: Tensor, yb: Tensor, *rest: Any, **kwargs: Any) -> Any:
        self.samples, self.expected = len(yb), len(rest[0]) * len(yb)
        return ORIGINAL_REPLICATED(ctx, i, xb, yb, *rest, **kwargs)


ORIGINAL_APGD, ORIGINAL_REPLICATED = suite.apgd_run, suite._replicated_dlr
FULL = True


def summary(calls: list[dict[str, Any]], rule: Mapping[int, float]) -> tuple[int, int, int, int]:
    """(starts stopped, samples lost, gradient evaluations spent, spent by the full stages) under `rule`."""
    stopped = lost = spent = full_spent = 0
    for call in calls:
        n = len(call["found"])
        stop_at = torch.full((n,), 100)
        for checkpoint, threshold in sorted(rule.items()):
            loss = call["losses"].get(checkpoint, torch.full((n,), float("nan")))
            stop = (loss < threshold) & (stop_at == 100)
            stop_at[stop] = checkpoint
        found = call["found"]
        kept_found = found & (stop_at == 100)
        broken_full = torch.zeros(int(call["sample"].max()) + 1, dtype=torch.bool)
        broken_rule = broken_full.clone()
        broken_full[call["sample"][found]] = True
        broken_rule[call["sample"][kept_found]] = True
        stopped += int((stop_at < 100).sum())
        lost += int((broken_full & ~broken_rule).sum())
        full_spent += n * 101
        spent += int((stop_at + 1).sum())
    return stopped, lost, spent, full_spent


def main() -> None:
    global FULL
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+",
                        default=["doubleback", "spectreg", "pgd-at", "fgsm-at", "erm", "hessian"])
    parser.add_argument("--first", type=int, default=500, help="first test position")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--full", action="store_true", help="run the stages without the suite's GIVE_UP rule")
    diagnosis_arguments(parser)
    args = parser.parse_args()
    FULL = args.full
    torch.set_num_threads(args.threads)
    data = mnist_split(args.data_dir)
    x, y = data.x_test[args.first: args.first + args.samples], data.y_test[args.first: args.first + args.samples]
    for name in args.models:
        recorder = Recorder()
        suite.apgd_run, suite._replicated_dlr = recorder.apgd_run, recorder.replicated
        try:
            result = run_attack(mnist_model(name, data, args.cache), x, y, SuiteSpec(kind="suite", eps=[0.1, 0.2]),
                                seed=0, batch_size=500)
        finally:
            suite.apgd_run, suite._replicated_dlr = ORIGINAL_APGD, ORIGINAL_REPLICATED
        starts = sum(len(c["found"]) for c in recorder.calls)
        found = sum(int(c["found"].sum()) for c in recorder.calls)
        print(f"{name}: accuracy {result.accuracy()}, {len(recorder.calls)} many-start runs, {starts} starts, "
              f"{found} found ({recorder.unrecorded} not recorded)", flush=True)
        for checkpoint in CHECKPOINTS:
            parts = []
            for threshold in THRESHOLDS:
                stopped, lost, spent, full = summary(recorder.calls, {checkpoint: threshold})
                parts.append(f"<{threshold:g}: stop {stopped}, lost {lost}, saves {1 - spent / full:.0%}")
            print(f"  after {checkpoint:>2}: " + "; ".join(parts), flush=True)
        if FULL:
            stopped, lost, spent, full = summary(recorder.calls, suite.GIVE_UP)
            print(f"  the suite's rule {suite.GIVE_UP}: stops {stopped}, loses {lost}, saves {1 - spent / full:.0%}",
                  flush=True)


if __name__ == "__main__":
    main()
