"""The validity checks of DESIGN §3 (Carlini et al. 2019), each pass / warn / fail with its numbers.

The checks run on an *audit subset* where every attack runs on its own at each ε (no skipping of
samples broken by another attack or a smaller ε), so that a weak or masked attack cannot hide
behind the sweep's bookkeeping. A `fail` marks the run's robust accuracy as untrustworthy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from core.reports import Check, Status
from core.specs.evaluation import AttackSpec, PGDAttack, SquareAttack

Accuracy = Callable[[AttackSpec], float]  # own accuracy of one single-ε attack on the audit subset

LARGE_EPS = 0.5  # L∞ radius at which any honest model must fall to chance on [0, 1] inputs


def _status(excess: float, warn: float, fail: float) -> Status:
    return "fail" if excess > fail else "warn" if excess > warn else "pass"


def gradient_health(grads: Tensor) -> Check:
    """Zero, NaN or infinite input gradients at clean points (masking, saturation, quantization)."""
    flat = grads.flatten(1)
    nonfinite = int((~torch.isfinite(flat)).any(dim=1).sum())
    zero = int((flat == 0).all(dim=1).sum())
    n = len(flat)
    share = zero / max(n, 1)
    status = "fail" if nonfinite or share > 0.2 else "warn" if share > 0.01 else "pass"
    return Check(
        name="input_gradients_healthy",
        status=status,
        detail=f"{zero}/{n} samples have an all-zero input gradient, {nonfinite} a non-finite one",
        values={"zero": zero, "nonfinite": nonfinite, "samples": n},
    )


def pgd_not_weaker_than_fgsm(pairs: list[tuple[str, float, float, float]]) -> Check | None:
    """PGD accuracy ≤ FGSM accuracy at the same norm and ε: (norm, eps, fgsm_acc, pgd_acc) tuples."""
    if not pairs:
        return None
    worst = max(pairs, key=lambda p: p[3] - p[2])
    excess = worst[3] - worst[2]
    return Check(
        name="pgd_not_weaker_than_fgsm",
        # The worst case still counts FGSM's successes, so a weak PGD only costs trust when the gap
        # is large; a small gap is a configuration warning (other checks look for masking).
        status=_status(excess, 0.005, 0.10),
        detail=f"largest PGD − FGSM accuracy gap {excess:+.3f} at {worst[0]} ε={worst[1]:g} "
        f"(FGSM {worst[2]:.3f}, PGD {worst[3]:.3f})"
        + ("; PGD is weaker than one FGSM step: raise its steps or step_size (steps × step_size "
           "should exceed ε), or suspect gradient masking" if excess > 0.005 else ""),
        values={"pairs": [{"norm": n, "eps": e, "fgsm": f, "pgd": p} for n, e, f, p in pairs]},
    )


def accuracy_decreases_with_eps(curves: dict[str, list[tuple[float, float]]]) -> Check | None:
    """Each attack's own accuracy is non-increasing in ε: {label: [(eps, accuracy), ...]}."""
    rises = [
        (label, a[0], b[0], b[1] - a[1])
        for label, curve in curves.items()
        for a, b in itertools.pairwise(curve)
    ]
    if not rises:
        return None
    label, e0, e1, rise = max(rises, key=lambda r: r[3])
    return Check(
        name="accuracy_monotone_in_eps",
        status=_status(rise, 0.0, 0.02),
        detail=f"largest rise {max(rise, 0.0):.3f} ({label}, ε {e0:g} → {e1:g})",
        values={"curves": {k: [list(p) for p in v] for k, v in curves.items()}},
    )


def large_eps_reaches_chance(accuracy: float, chance: float) -> Check:
    excess = accuracy - chance
    return Check(
        name="large_eps_reaches_chance",
        status=_status(excess, 0.05, 0.10),
        detail=f"PGD L∞ ε={LARGE_EPS} accuracy {accuracy:.3f} vs chance {chance:.3f}"
        + ("; gradient masking suspected" if excess > 0.10 else ""),
        values={"eps": LARGE_EPS, "accuracy": accuracy, "chance": chance},
    )


def pgd_converged(base: float, stronger: float, eps: float, norm: str) -> Check:
    drop = base - stronger
    return Check(
        name="pgd_converged",
        status=_status(drop, 0.02, 0.05),
        detail=f"more steps and restarts lower PGD {norm} ε={eps:g} accuracy by {drop:.3f} "
        f"({base:.3f} → {stronger:.3f})",
        values={"base": base, "stronger": stronger, "eps": eps, "norm": norm},
    )


def black_box_not_stronger(white_box: float, black_box: float, eps: float, norm: str) -> Check:
    gap = white_box - black_box
    return Check(
        name="black_box_not_stronger",
        status=_status(gap, 0.01, 0.03),
        detail=f"Square {norm} ε={eps:g} accuracy {black_box:.3f} vs white-box PGD {white_box:.3f}",
        values={"white_box": white_box, "black_box": black_box, "eps": eps, "norm": norm},
    )


def audit_checks(attacks: list[AttackSpec], accuracy: Accuracy, chance: float) -> list[Check]:
    """Every attack-based check, computed through `accuracy` on the audit subset."""
    checks: list[Check] = []
    own: dict[tuple[str, str, float], float] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    for i, spec in enumerate(attacks):
        if spec.kind not in ("fgsm", "pgd"):
            continue
        label = f"{i}:{spec.kind}-{spec.norm}"
        for eps in spec.eps:
            acc = accuracy(spec.model_copy(update={"eps": [eps]}))
            own[spec.kind, spec.norm, eps] = min(acc, own.get((spec.kind, spec.norm, eps), 1.0))
            curves.setdefault(label, []).append((eps, acc))
    pairs = [
        (norm, eps, fgsm, own["pgd", norm, eps])
        for (kind, norm, eps), fgsm in own.items()
        if kind == "fgsm" and ("pgd", norm, eps) in own
    ]
    for check in (pgd_not_weaker_than_fgsm(pairs), accuracy_decreases_with_eps(curves)):
        if check is not None:
            checks.append(check)
    checks.append(large_eps_reaches_chance(
        accuracy(PGDAttack(kind="pgd", norm="linf", eps=[LARGE_EPS], steps=20)), chance))
    pgds = [s for s in attacks if isinstance(s, PGDAttack)]
    if pgds:
        spec = pgds[0]
        eps = spec.eps[len(spec.eps) // 2]
        base = spec.model_copy(update={"eps": [eps]})
        stronger = base.model_copy(update={"steps": spec.steps * 2, "restarts": spec.restarts + 2,
                                           "step_size": None})
        base_acc, strong_acc = accuracy(base), accuracy(stronger)
        checks.append(pgd_converged(base_acc, strong_acc, eps, spec.norm))
        square = SquareAttack(kind="square", norm=spec.norm, eps=[eps], queries=500)
        checks.append(black_box_not_stronger(min(base_acc, strong_acc), accuracy(square), eps, spec.norm))
    return checks
