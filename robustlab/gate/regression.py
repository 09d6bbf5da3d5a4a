"""Regression against a baseline, judged paired on the same samples. Pure: no I/O.

Both reports keep each sample's outcome by its index in the test set (clean correct, and correct
under the worst case at each ε), so the two models are compared on the samples they both saw: of
the samples where they disagree, `worse` went from correct to wrong and `better` the other way.
The exact McNemar test (one-sided, for a drop) gives the chance of so many drops if the model were
no worse; the criterion fails when that p is under the policy's `significance` *and* the drop is
more than `max_regression` (the smallest drop that matters). It passes early when the drop's upper
bound is within `max_regression`, and with no samples left it passes when no drop was found: two
evaluations of the same model never fail.

Where the outcomes are missing (a baseline from before report schema 1.1, a per-attack metric, which
the reports keep as counts only, another dataset), today's rule applies, and the detail says so: the
accuracy may fall by at most `max_regression`.
"""

from __future__ import annotations

from core.reports import Report, RunReport, unpack_bits
from reports.statistics import clopper_pearson, mcnemar_drop_p
from robustlab.gate.policy import GatePolicy, same_eps


def outcome_bits(run: RunReport | None, metric: tuple[str, float] | None,
                 attack: str = "worst_case") -> list[bool] | None:
    """A run's per-sample outcomes: clean (metric None), or at (norm, eps) the worst case or one
    attack kind's (reports since schema 1.3 keep those); None if absent."""
    outcomes = run.outcomes if run is not None else None
    if outcomes is None:
        return None
    if metric is None:
        return outcomes.clean_correct()
    norm, eps = metric
    rows = outcomes.worst_case if attack == "worst_case" else [r for r in outcomes.attacks if r.attack == attack]
    for row in rows:
        if row.norm == norm and same_eps(row.eps, eps):
            return unpack_bits(row.correct, outcomes.samples)
    return None


def paired_reason(report: Report, baseline: Report, now: list[bool] | None, before: list[bool] | None) -> str:
    """Why the metric cannot be compared paired ("" when it can)."""
    if before is None:
        return ("the baseline has no per-sample outcomes for it (a report from before schema 1.1, or 1.3 for a "
                "single attack's accuracy)")
    if now is None:
        return "the evaluated report has no per-sample outcomes for it"
    if report.spec.get("dataset") != baseline.spec.get("dataset"):
        return "the baseline was evaluated on another dataset (its spec's dataset section differs)"
    return ""


def paired(name: str, now: list[bool], before: list[bool], policy: GatePolicy, *,
           final: bool) -> dict[str, object]:
    """The fields of a regression criterion compared on the samples both evaluated (the first n)."""
    n = min(len(now), len(before))
    allowed, level = policy.max_regression or 0.0, policy.significance
    worse = sum(b and not a for a, b in zip(now[:n], before[:n], strict=True))
    better = sum(a and not b for a, b in zip(now[:n], before[:n], strict=True))
    now_acc, base_acc = sum(now[:n]) / n, sum(before[:n]) / n
    drop = (worse - better) / n
    p = mcnemar_drop_p(worse, better)
    # The drop's upper bound: the most the worse-rate can be, minus the least the better-rate can be.
    high = clopper_pearson(worse, n, 1 - level)[1] - clopper_pearson(better, n, 1 - level)[0]
    detail = (f"paired on {n} samples: {worse} got worse, {better} better than the baseline "
              f"({base_acc:.4f} there), drop {drop:.4f}; McNemar p = {p:.3g} (exact, one-sided), "
              f"significance {level:g}, max_regression {allowed:g}")
    if p < level and drop > allowed + 1e-12:
        status, detail = "fail", detail + ": a significant drop that matters"
    elif high <= allowed + 1e-12:
        status = "pass"
    elif final:
        status, detail = "pass", detail + ": no drop that is both significant and beyond max_regression"
    else:
        status, detail = "undecided", detail + ": more samples decide it"
    return {"name": name, "required": base_acc - allowed, "actual": now_acc, "status": status, "detail": detail,
            "p_value": p}


def unpaired(name: str, value: float, interval: tuple[float, float] | None, base_value: float,
             policy: GatePolicy, reason: str, *, final: bool) -> dict[str, object]:
    """Today's rule (the drop of the estimates at most max_regression); before the last round, on the
    accuracy's interval, so that an early stop is no guess."""
    allowed = policy.max_regression or 0.0
    required = base_value - allowed
    detail = (f"baseline {base_value:.4f}, drop {max(base_value - value, 0.0):.4f}, allowed {allowed:g}; "
              f"compared as numbers: {reason}")
    if final or interval is None:
        status = "pass" if value >= required - 1e-12 else "fail"
    elif interval[0] >= required - 1e-12:
        status = "pass"
    elif interval[1] < required - 1e-12:
        status = "fail"
    else:
        status = "undecided"
    return {"name": name, "required": required, "actual": value, "status": status, "detail": detail,
            "interval": interval}
