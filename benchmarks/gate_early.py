"""Time to a gate decision: the early-stopping `gate --local` against a full evaluation, in one run.

The example model of examples/ci/ (model.onnx, 500 digits test samples) is judged against a policy
far below its accuracy (its full-evaluation accuracies minus 0.25), twice: with the evaluation of
examples/ci/spec.yaml (FGSM + PGD-50, cheap attacks: the validity checks are most of the time) and
with the default evaluation (the standard suite, what a spec without `evaluation.attacks` gets). The
early gate attacks rounds of 100, 200, 400, … samples and stops once every threshold is decided; the
full evaluation attacks all of them (what `gate --local` did before, and what `robustlab evaluate`
does). Everything runs in this process with the same thread count, one after the other.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gate_early.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ci"


def measure(label: str, spec, model: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(full seconds, early-gate seconds) of one evaluation spec, with their table rows printed."""
    from models.evaluation.compare import evaluate_checkpoint
    from robustlab.gate.early import evaluate_early
    from robustlab.gate.policy import parse_policy
    from robustlab.gate.verdict import judge

    started = time.perf_counter()
    full = evaluate_checkpoint(spec, model)
    full_seconds = time.perf_counter() - started
    run = full.runs[0]
    worst = min(run.worst_case, key=lambda w: w.eps)
    policy = parse_policy({"min_clean_accuracy": round(max(0.0, run.clean_accuracy - 0.25), 2),
                           "min_robust_accuracy": [{"attack": "worst_case", "norm": worst.norm, "eps": worst.eps,
                                                    "min": round(max(0.0, worst.accuracy - 0.25), 2)}],
                           "require_checks_pass": False})
    full_verdict = judge(full, policy)
    attacks = sum(c.seconds for c in run.attack_costs)
    started = time.perf_counter()
    early = evaluate_early(spec, model, policy, None)
    early_seconds = time.perf_counter() - started
    print(f"| {label} | clean ≥ {policy.min_clean_accuracy}, {worst.norm} {worst.eps:g} ≥ "
          f"{policy.min_robust_accuracy[0].min} | full | {full_seconds:.1f} (attacks {attacks:.1f}) | "
          f"{run.samples} | {full_verdict.exit_code} | |")
    print(f"| | | early gate | {early_seconds:.1f} (attacks {early.attack_seconds:.1f}) | {early.samples_used} of "
          f"{early.samples_available} (rounds {early.rounds}) | {early.verdict.exit_code} | "
          f"**{early_seconds / full_seconds:.2f} ×** |")
    return full_seconds, early_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from core.specs import load_spec
    from core.specs.evaluation import EvaluationSpec
    from models.evaluation.compare import evaluate_checkpoint

    spec, model = load_spec(EXAMPLE / "spec.yaml"), EXAMPLE / "model.onnx"
    default = spec.model_copy(update={"evaluation": EvaluationSpec(seed=spec.evaluation.seed)})
    evaluate_checkpoint(spec, model)  # warm-up: imports, ONNX conversion, dataset cache
    print(f"model {model.relative_to(REPO)}, {args.threads} thread(s); seconds")
    print("| evaluation | policy | run | seconds | samples | exit | time to decision |")
    print("|---|---|---|---:|---:|---:|---:|")
    measure("examples/ci/spec.yaml (FGSM + PGD-50)", spec, model)
    measure("default (standard suite)", default, model)


if __name__ == "__main__":
    main()
