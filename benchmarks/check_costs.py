"""What the validity checks and sensitivity measures cost next to the attacks they check (issue 22).

    OMP_NUM_THREADS=1 python benchmarks/check_costs.py                     # cnn_small + lenet5, 500 digits
    OMP_NUM_THREADS=1 python benchmarks/check_costs.py --checks full fast  # both modes, same models

Trains each model on sklearn's digits (8×8, a few epochs, seeded), evaluates it with the default
spec (the standard suite, L∞ ε 0.1 and 0.2) and with the README demo's FGSM / PGD attacks, and
prints per model: the attacks' seconds (report.json's `attack_costs`), everything else
(`cost.eval_seconds` minus those: clean pass, input gradients, checks, sensitivity), its ratio to
the attacks, and each part of `finish_evaluation` (ModelEvaluation.check_seconds).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from core.enums import Task
from core.specs import DigitsDataset, EvaluationSpec, TrainingSpec
from core.specs.regularizers import NoRegularizer
from models.architectures import build_model
from models.datasets import load_dataset
from models.evaluation.evaluate import evaluate_model
from models.regularizers import build_regularizer
from models.training import fit

MODELS = {"cnn_small": {"channels": [32, 64], "hidden": 256}, "lenet5": {}}
DEMO = [{"kind": "fgsm", "norm": "linf", "eps": [0.02, 0.05, 0.1, 0.2]},
        {"kind": "pgd", "norm": "linf", "eps": [0.02, 0.05, 0.1, 0.2], "steps": 20},
        {"kind": "pgd", "norm": "l2", "eps": [0.5, 1.0, 2.0], "steps": 20}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--checks", nargs="+", default=[None], help="evaluation.checks modes (default: the spec's)")
    parser.add_argument("--specs", nargs="+", default=["suite", "demo"], choices=["suite", "demo"])
    args = parser.parse_args()
    data = load_dataset(DigitsDataset(name="digits", test_fraction=0.3, seed=0))
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, MODELS[name], data.input_shape, 10)
        fit(model, build_regularizer(NoRegularizer(name="erm", kind="none"), Task.CLASSIFICATION), data,
            TrainingSpec(epochs=args.epochs, batch_size=64, lr=3e-3), seed=0, device=torch.device("cpu"))
        model.eval()
        for spec_name in args.specs:
            for mode in args.checks:
                spec: dict = {"max_samples": args.samples}
                if spec_name == "demo":
                    spec["attacks"] = DEMO
                if mode is not None:
                    spec["checks"] = mode
                started = time.perf_counter()
                result = evaluate_model(model, data, EvaluationSpec.model_validate(spec))
                wall = time.perf_counter() - started
                attacks = sum(c.seconds for c in result.attack_costs)
                other = result.seconds - attacks
                row = {"model": name, "spec": spec_name, "checks": mode or "default", "clean": result.clean_accuracy,
                       "eval_seconds": round(result.seconds, 2), "attack_seconds": round(attacks, 2),
                       "other_seconds": round(other, 2), "other_over_attacks": round(other / attacks, 3),
                       "wall": round(wall, 2), "parts": {k: round(v, 2) for k, v in result.check_seconds.items()},
                       "failed": [c.name for c in result.checks if c.status == "fail"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
