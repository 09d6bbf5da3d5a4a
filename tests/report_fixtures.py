"""Synthetic reports shaped like the README demo's (12 regularizers × 3 seeds, L∞ and L2 radii).

Made without training anything, so report rendering can be tested at full size (page layout on a
laptop and a phone, small multiples, 88 paired tests) in milliseconds.
"""

from __future__ import annotations

from core.reports import AttackAccuracy, Check, Cost, Report, RunReport, Sensitivity, WorstCase
from reports.statistics import summarize

DEMO_REGULARIZERS = (
    ("erm", "none"), ("doubleback", "double_backprop"), ("doubleback-fd", "double_backprop"),
    ("datagrad-l1", "datagrad_l1"), ("jacreg", "jacobian"), ("spectreg", "spectral"),
    ("cnfreg", "confidence_penalty"), ("hessian", "input_hessian"), ("maxup", "maxup"), ("sobolev", "sobolev"),
    ("fgsm-at", "adversarial_training"), ("pgd-at", "adversarial_training"),
)
DEMO_LINF = (0.02, 0.05, 0.1, 0.2)
DEMO_L2 = (0.5, 1.0, 2.0)


def demo_run(index: int, name: str, kind: str, seed: int, *, failed: bool = False) -> RunReport:
    strength = index / len(DEMO_REGULARIZERS)  # later regularizers are more robust and slower
    clean = 0.975 - 0.03 * strength + 0.003 * ((seed * 7 + index) % 3)
    robust, worst = [], []
    for norm, radii, scale in (("linf", DEMO_LINF, 5.0), ("l2", DEMO_L2, 0.45)):
        for eps in radii:
            pgd = max(0.0, clean - scale * eps * (1.2 - strength) - 0.004 * ((seed + index) % 3))
            robust += [AttackAccuracy(attack="fgsm", norm=norm, eps=eps, accuracy=min(clean, pgd + 0.03)),
                       AttackAccuracy(attack="pgd", label="pgd-20x1", norm=norm, eps=eps, accuracy=pgd)]
            worst.append(WorstCase(norm=norm, eps=eps, accuracy=pgd))
    checks = [
        Check(name="pgd_not_weaker_than_fgsm", status="pass", detail="largest PGD − FGSM gap −0.030"),
        Check(name="large_eps_reaches_chance", status="fail" if failed else "pass",
              detail=f"accuracy {0.35 if failed else 0.1:.2f} at L∞ ε=0.5 vs chance 0.10"),
    ]
    step = 0.002 * (1 + 3 * strength) * (1 + 0.15 * ((seed + index) % 3))  # timing noise of a shared machine
    return RunReport(
        regularizer=name, kind=kind, seed=seed, clean_accuracy=clean, samples=500, robust=robust, worst_case=worst,
        sensitivity=Sensitivity(input_gradient_norm=2.0 / (1 + 3 * strength), hessian_norm=30.0 / (1 + strength),
                                jacobian_frobenius=8.0 - 4 * strength + 0.1 * seed, samples=128),
        cost=Cost(train_seconds=step * 160 * 20, step_seconds=step, step_time_ratio_to_baseline=step / 0.002,
                  peak_memory_bytes=2**27, memory_measure="cpu_peak_rss", eval_seconds=3.0),
        checks=checks, trustworthy=not failed, checkpoint=f"checkpoints/{name}-seed{seed}.safetensors",
    )


def demo_report(regularizers: int = 12, seeds: int = 3, *, failing: str | None = "maxup") -> Report:
    chosen = DEMO_REGULARIZERS[:regularizers]
    runs = [demo_run(i, name, kind, seed, failed=(name == failing and seed == 1))
            for i, (name, kind) in enumerate(chosen) for seed in range(seeds)]
    spec = {"name": "digits-quick", "dataset": {"name": "digits", "train_size": 500, "test_size": 500},
            "model": {"architecture": "mlp"}, "regularizers": [{"name": n, "kind": k} for n, k in chosen],
            "seeds": list(range(seeds)),
            "evaluation": {"attacks": [{"kind": "pgd", "norm": "linf", "eps": list(DEMO_LINF)},
                                       {"kind": "pgd", "norm": "l2", "eps": list(DEMO_L2)}]}}
    names = {r.regularizer for r in runs}
    checks = [Check(name="large_eps_reaches_chance", status="fail" if failing in names else "pass",
                    detail="1 of 36 runs keeps accuracy above chance at a huge radius" if failing in names
                    else "every run reaches chance"),
              Check(name="pgd_not_weaker_than_fgsm", status="pass", detail=f"{len(runs)}/{len(runs)} runs pass")]
    return Report(kind="compare", spec=spec, spec_hash="9b1e" * 16, baseline="erm",
                  environment={"python": "3.11.7", "device": "cpu", "versions": {"robustlab": "0.1.0"}},
                  runs=runs, summary=summarize(runs, "erm"), checks=checks)


def _with_interval(model: type, interval: tuple[float, float], **fields: object) -> object:
    """An accuracy entry with its 95 % interval when the schema has intervals (issue 22)."""
    return model(**fields, **({"interval": interval} if "interval" in model.model_fields else {}))


def evaluate_fixture(samples: int = 500, *, intervals: bool = True, untrustworthy: bool = False) -> Report:
    """An `evaluate` report of one ONNX model on an uploaded .npz: two attacks and the standard suite at
    three L∞ radii and one L2 radius, per-sample outcomes, suite members, attack costs, model_info."""
    from core.reports import AttackCost, ModelInfo, OutcomeBits, SampleOutcomes, SuiteMember, pack_bits

    radii = [("linf", 0.02), ("linf", 8 / 255), ("linf", 0.05), ("l2", 0.5)]
    clean_bits = [i % 10 != 0 for i in range(samples)]  # 90 % clean
    robust, worst, rows, members = [], [], [], []
    bits: list[bool] = clean_bits
    for k, (norm, eps) in enumerate(radii):
        previous = clean_bits if norm == "l2" or k == 0 else bits  # worst case: monotone in ε
        bits = [b and i % (k + 3) != 1 for i, b in enumerate(previous)]
        accuracy = sum(bits) / samples
        iv = (max(0.0, accuracy - 0.04), min(1.0, accuracy + 0.04)) if intervals else None
        for label, bonus in (("fgsm", 0.05), ("suite-standard", 0.0)):
            fields = {"attack": label.split("-")[0], "label": label, "norm": norm, "eps": eps,
                      "accuracy": accuracy + bonus}
            robust.append(_with_interval(AttackAccuracy, iv, **fields) if iv else AttackAccuracy(**fields))
        fields = {"norm": norm, "eps": eps, "accuracy": accuracy}
        worst.append(_with_interval(WorstCase, iv, **fields) if iv else WorstCase(**fields))
        rows.append(OutcomeBits(norm=norm, eps=eps, correct=pack_bits(bits)))
        members += [SuiteMember(suite="suite-standard", member=m, norm=norm, eps=eps, attacked=400 - 60 * j,
                                broken=60 - 10 * j, pruned=3 if m == "square" else 0, gradient_evaluations=40_000,
                                forwards=1_200_000 if m == "square" else 4_000, seconds=1.5 * (j + 1))
                    for j, m in enumerate(("apgd-ce", "apgd-t", "square"))]
    checks = [Check(name="pgd_not_weaker_than_fgsm", status="pass", detail="largest PGD − FGSM gap −0.050"),
              Check(name="large_eps_reaches_chance", status="fail" if untrustworthy else "pass",
                    detail=f"accuracy {0.35 if untrustworthy else 0.1:.2f} at L∞ ε=0.5 vs chance 0.10")]
    run_fields: dict[str, object] = {}
    if intervals and "clean_interval" in RunReport.model_fields:
        run_fields["clean_interval"] = (0.87, 0.925)
    run = RunReport(
        regularizer="cnn", kind="checkpoint", seed=0, clean_accuracy=sum(clean_bits) / samples, samples=samples,
        robust=robust, worst_case=worst, cost=Cost(eval_seconds=12.5), checks=checks, trustworthy=not untrustworthy,
        attack_costs=[AttackCost(label="fgsm", norm="linf", gradient_evaluations=1500, forwards=3000, seconds=0.4),
                      AttackCost(label="suite-standard", norm="linf", gradient_evaluations=360_000,
                                 forwards=3_600_000, seconds=18.2)],
        suite_members=members, checkpoint="cnn.onnx",
        outcomes=SampleOutcomes(samples=samples, clean=pack_bits(clean_bits), worst_case=rows), **run_fields)
    spec = {"name": "my-cnn", "dataset": {"name": "upload", "id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                                           "test_size": samples},
            "model": {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10, "layout": "nchw",
                      "input_range": [0.0, 255.0], "outputs": "logits"},
            "regularizers": [{"name": "mine", "kind": "none"}], "seeds": [0],
            "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.02, 0.05, 8 / 255]},
                                       {"kind": "suite", "norm": "linf", "eps": [0.02, 0.05, 8 / 255]}]}}
    return Report(kind="evaluate", spec=spec, spec_hash="5eed" * 16, baseline=None,
                  environment={"python": "3.11.7", "device": "cpu", "versions": {"robustlab": "0.1.0"}},
                  runs=[run], summary=summarize([run], None), checks=checks,
                  model_info=ModelInfo(file="cnn.onnx", sha256="ab12" * 16, format="onnx", bytes=123_456))
