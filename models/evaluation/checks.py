"""The validity checks of DESIGN §3 (Carlini et al. 2019), each pass / warn / fail with its numbers.

The checks run on an *audit subset* where every attack runs on its own at each ε (no skipping of
samples broken by another attack or a smaller ε), so that a weak or masked attack cannot hide
behind the sweep's bookkeeping. A `fail` marks the run's robust accuracy as untrustworthy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from core.reports import Check, Status
from core.specs.evaluation import AttackSpec, PGDAttack

# Per audit sample: correct under one single-ε attack run on its own (the samples of the optional
# mask are counted broken and not attacked: the attack then adds to what is already known).
Correct = Callable[[AttackSpec, Tensor | None], Tensor]

# The losses the suite attacks with: cross-entropy, and a scale-invariant one (DLR; margin for the
# gradient check) that a saturated softmax (logits × 1000) does not mislead. The large-ε, unbounded
# and gradient checks fail only when no loss the suite uses works.
CHECK_LOSSES = ("ce", "dlr")
LARGE_EPS = 0.5  # L∞ radius at which any honest model must fall to chance on [0, 1] inputs
UNBOUNDED_EPS = 1.0  # L∞ radius that holds the whole [0, 1] box: every sample can be broken
ZERO_ENTRIES_WARN, ZERO_ENTRIES_FAIL = 0.2, 0.5  # share of input-gradient entries that are exactly 0
CHANCE_MARGIN = 0.1  # clean accuracy below chance + 10 % of (1 − chance): the training failed


def _status(excess: float, warn: float, fail: float) -> Status:
    return "fail" if excess > fail else "warn" if excess > warn else "pass"


def gradient_stats(grads: Tensor) -> dict[str, float]:
    """The counts gradient_health judges, as sums over samples (so shards of a test set add up)."""
    flat = grads.flatten(1)
    return {"samples": float(len(flat)), "zero": float((flat == 0).all(dim=1).sum()),
            "nonfinite": float((~torch.isfinite(flat)).any(dim=1).sum()),
            "zero_entries": float((flat == 0).sum()), "entries": float(flat.numel())}


def gradient_health(grads: Tensor | dict[str, float]) -> Check:
    """Unavailable gradients (Pintor et al. 2022) at clean points: all-zero, NaN or infinite input
    gradients (each entry the cross-entropy gradient's, or the margin loss's where that one is zero
    or not finite: a saturated softmax zeroes the first, not the second), and the share of zero
    entries (quantized or shattered inputs zero most of them without zeroing all: 74 % zero entries
    passed a check that counted all-zero gradients only).
    `grads`: the gradients, or their `gradient_stats` (summed over shards)."""
    stats = gradient_stats(grads) if isinstance(grads, Tensor) else grads
    nonfinite, zero, n = int(stats["nonfinite"]), int(stats["zero"]), int(stats["samples"])
    share = zero / max(n, 1)
    zero_entries = stats["zero_entries"] / stats["entries"] if stats["entries"] else 0.0
    bad = nonfinite or share > 0.2 or zero_entries > ZERO_ENTRIES_FAIL
    status = "fail" if bad else "warn" if share > 0.01 or zero_entries > ZERO_ENTRIES_WARN else "pass"
    ce_zero = int(stats.get("ce_zero", zero))
    return Check(
        name="input_gradients_healthy",
        status=status,
        detail=f"{zero}/{n} samples have an all-zero input gradient under every loss (cross-entropy alone: "
        f"{ce_zero}), {nonfinite} a non-finite one; {100 * zero_entries:.1f} % of all gradient entries are zero",
        values={"zero": zero, "nonfinite": nonfinite, "samples": n, "zero_entries": zero_entries, "ce_zero": ce_zero},
    )


def training_healthy(clean_accuracy: float, chance: float, history: Sequence[Any] = (),
                     num_classes: int = 0) -> Check:
    """A failed training run is a failed run, not a data point: clean accuracy near chance, a
    non-finite loss in any epoch, or a collapse against the run's own earlier epochs (the task loss
    of the last epoch gave back more than half of what the best earlier epoch had gained over
    ln(classes), the loss of a uniform prediction). `history`: records with .epoch, .loss, .task_loss."""
    near_chance = clean_accuracy < chance + CHANCE_MARGIN * (1 - chance)
    losses = [(int(h.epoch), float(h.loss), float(h.task_loss)) for h in history]
    nonfinite = [e for e, loss, task in losses if not (math.isfinite(loss) and math.isfinite(task))]
    given_back = 0.0
    if len(losses) >= 2 and not nonfinite:
        best = min(task for _, _, task in losses[:-1])
        last = losses[-1][2]
        start = math.log(num_classes) if num_classes > 1 else max(task for _, _, task in losses)
        if start > best:
            given_back = max(0.0, (last - best) / (start - best))
    status: Status = "fail" if near_chance or nonfinite or given_back > 0.5 else (
        "warn" if given_back > 0.2 else "pass")
    parts = [f"clean accuracy {clean_accuracy:.3f} vs chance {chance:.3f}"
             + (" (near chance: training failed)" if near_chance else "")]
    if nonfinite:
        parts.append(f"non-finite loss in epoch {', '.join(map(str, nonfinite))}")
    if len(losses) >= 2:
        parts.append(f"last epoch gave back {100 * given_back:.0f} % of the best earlier epoch's loss gain")
    return Check(name="training_healthy", status=status, detail="; ".join(parts),
                 values={"clean_accuracy": clean_accuracy, "chance": chance, "nonfinite_epochs": nonfinite,
                         "given_back": given_back, "epochs": len(losses)})


def predictions_stable(model: nn.Module, x: Tensor, passes: int = 3, batch_size: int = 256) -> Check:
    """Randomized or unstable predictions: repeated fp32 forward passes of the same inputs must agree.

    A model whose outputs vary between passes (random transformations, dropout left on) needs
    attacks with expectation over transformations, and its robust accuracy is itself random:
    different predictions fail, logits that differ (with the same predictions) warn.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outs = []
    with torch.no_grad():
        for _ in range(passes):
            outs.append(torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                                   for i in range(0, len(x), batch_size)]))
    preds = torch.stack([o.argmax(dim=1) for o in outs])
    unstable = int((preds != preds[0]).any(dim=0).sum())
    scale = float(outs[0].abs().max()) or 1.0
    spread = max(float((o - outs[0]).abs().max()) for o in outs) / scale
    share = unstable / max(len(x), 1)
    status: Status = "fail" if share > 0.01 else "warn" if unstable or spread > 1e-4 else "pass"
    return Check(
        name="predictions_deterministic",
        status=status,
        detail=f"{unstable}/{len(x)} predictions change between {passes} identical forward passes "
        f"(largest logit change {spread:.2e} of the logit scale)"
        + ("; randomized model: attacked with expectation over transformations" if status != "pass" else ""),
        values={"unstable": unstable, "samples": len(x), "relative_spread": spread, "passes": passes},
    )


def silent_success(unconfirmed: float, attacked: float, *, randomized: bool = False) -> Check:
    """Iterates the attack's own forward pass saw misclassified but the fp32 verdict did not: the
    model answers attacks differently from verdicts (randomness, a check evader, precision).
    `randomized`: predictions change between passes and the attacks ran with EOT: one noisy pass and
    the majority verdict disagree near the boundary by design, so the check warns at most (the
    randomness itself is predictions_deterministic's finding, and the number is EOT's)."""
    share = unconfirmed / max(attacked, 1.0)
    status = _status(share, 0.0, 0.01)
    detail = (f"{int(unconfirmed)} of {int(attacked)} attacked samples had an iterate the attack saw "
              "misclassified that the verdict's forward pass classified correctly")
    if randomized and status == "fail":
        status = "warn"
        detail += " (a randomized model: one noisy pass and the majority of the verdict's draws disagree near " \
                  "the boundary)"
    return Check(name="silent_success", status=status, detail=detail,
                 values={"unconfirmed": unconfirmed, "attacked": attacked})


def incomplete_optimization(late_gainers: float, survivors: float) -> Check:
    """Survivors of APGD-CE whose best loss still rose by > 5 % of its gain in the last 20 % of the
    iterations: the attack stopped while still making progress (Pintor et al. 2022)."""
    share = late_gainers / max(survivors, 1.0)
    return Check(
        name="incomplete_optimization",
        status=_status(share, 0.2, 0.5),
        detail=f"{int(late_gainers)}/{int(survivors)} samples that survived APGD-CE were still gaining "
        "loss in its last 20 % of iterations",
        values={"late_gainers": late_gainers, "survivors": survivors},
    )


def unbounded_eps_breaks_all(accuracy: float, norm: str, eps: float, losses: Sequence[str] = ("ce",),
                             samples: int = 0) -> Check:
    """At a radius that contains the whole input box every sample can be moved to another class:
    an attack that leaves samples unbroken there is failing, not the model robust. `losses`: the
    APGD losses run one after the other (each on what the earlier left)."""
    return Check(
        name="unbounded_eps_breaks_all",
        status=_status(accuracy, 0.0, 0.02),
        detail=f"APGD ({' then '.join(loss.upper() for loss in losses)}) {norm} ε={eps:g} (the whole [0, 1] box) "
        f"leaves accuracy {accuracy:.3f} (should be 0)" + (f" on {samples} samples" if samples else ""),
        values={"accuracy": accuracy, "eps": eps, "norm": norm, "losses": list(losses), "samples": samples},
    )


def transfer_not_stronger(extra: int, samples: int, eps: float, norm: str, surrogate: str) -> Check:
    """Adversarial inputs crafted on another model (the baseline) must not break samples that the
    white-box attack on this model left robust: if they do, its gradients mislead the attack."""
    share = extra / max(samples, 1)
    return Check(
        name="transfer_not_stronger",
        status=_status(share, 0.01, 0.03),
        detail=f"APGD-CE on {surrogate} transfers to {extra}/{samples} samples at {norm} ε={eps:g} that the "
        "white-box attacks left robust",
        values={"extra": extra, "samples": samples, "eps": eps, "norm": norm, "surrogate": surrogate},
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


def large_eps_reaches_chance(accuracy: float, chance: float, losses: Sequence[str] = ("ce",),
                             samples: int = 0) -> Check:
    """At L∞ ε = 0.5 any honest model falls to chance: the white-box attacks' breaks at L∞ radii
    ≤ 0.5, then APGD with each loss of `losses` on what is left."""
    excess = accuracy - chance
    return Check(
        name="large_eps_reaches_chance",
        status=_status(excess, 0.05, 0.10),
        detail=f"APGD ({' then '.join(loss.upper() for loss in losses)}) L∞ ε={LARGE_EPS} accuracy {accuracy:.3f} "
        f"vs chance {chance:.3f}" + (f" on {samples} samples" if samples else "")
        + ("; gradient masking suspected" if excess > 0.10 else ""),
        values={"eps": LARGE_EPS, "accuracy": accuracy, "chance": chance, "losses": list(losses),
                "samples": samples},
    )


def pgd_converged(rows: list[tuple[str, float, float, float]]) -> Check | None:
    """More PGD steps and restarts do not lower accuracy much, at every radius where PGD left
    something to break: (norm, eps, base accuracy, stronger accuracy) rows."""
    if not rows:
        return None
    norm, eps, base, stronger = max(rows, key=lambda r: r[2] - r[3])
    drop = base - stronger
    return Check(
        name="pgd_converged",
        status=_status(drop, 0.02, 0.05),
        detail=f"more steps and restarts lower PGD accuracy by at most {drop:.3f} "
        f"({norm} ε={eps:g}: {base:.3f} → {stronger:.3f}; {len(rows)} radii checked)",
        values={"radii": [{"norm": n, "eps": e, "base": b, "stronger": s} for n, e, b, s in rows]},
    )


def black_box_not_stronger(rows: list[tuple[str, float, int, int]]) -> Check | None:
    """Square (gradient-free) must not break samples every white-box attack left robust, at any
    radius: (norm, eps, samples Square broke beyond the white-box attacks, samples) rows."""
    if not rows:
        return None
    norm, eps, extra, samples = max(rows, key=lambda r: r[2] / max(r[3], 1))
    share = extra / max(samples, 1)
    return Check(
        name="black_box_not_stronger",
        status=_status(share, 0.01, 0.03),
        detail=f"Square broke at most {extra}/{samples} samples the white-box attacks left robust "
        f"({norm} ε={eps:g}; {len(rows)} radii checked)" + ("; gradient masking suspected" if share > 0.03 else ""),
        values={"radii": [{"norm": n, "eps": e, "extra": x, "samples": m} for n, e, x, m in rows]},
    )


FAST_CONVERGENCE = 50  # checks: fast runs the convergence check's stronger PGD on the first this many


def audit_checks(attacks: list[AttackSpec], correct: Correct, *, fast: bool = False) -> list[Check]:
    """The FGSM / PGD checks, computed through `correct` on the audit subset, at every radius where
    they can fail. The stronger PGD of the convergence check attacks only what the spec's own PGD
    left (a sample either broke is broken); `fast`: at the largest radius where PGD left samples, on
    the first FAST_CONVERGENCE audit samples (its 2× steps and 2 more restarts on every survivor cost
    more than the spec's PGD on all the audit samples: half the samples halve the check's cost, and
    its thresholds are shares of the samples)."""
    checks: list[Check] = []
    own: dict[tuple[str, str, float], Tensor] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    for i, spec in enumerate(attacks):
        if spec.kind not in ("fgsm", "pgd"):
            continue
        label = f"{i}:{spec.kind}-{spec.norm}"
        for eps in spec.eps:
            mask = correct(spec.model_copy(update={"eps": [eps]}), None)
            key = (spec.kind, spec.norm, eps)
            own[key] = mask if key not in own else own[key] & mask
            curves.setdefault(label, []).append((eps, float(mask.double().mean())))
    accuracy = {key: float(mask.double().mean()) for key, mask in own.items()}
    pairs = [
        (norm, eps, fgsm, accuracy["pgd", norm, eps])
        for (kind, norm, eps), fgsm in accuracy.items()
        if kind == "fgsm" and ("pgd", norm, eps) in accuracy
    ]
    for check in (pgd_not_weaker_than_fgsm(pairs), accuracy_decreases_with_eps(curves)):
        if check is not None:
            checks.append(check)
    rows: list[tuple[str, float, float, float]] = []
    for spec in (s for s in attacks if isinstance(s, PGDAttack)):
        radii = [eps for eps in spec.eps if accuracy.get(("pgd", spec.norm, eps), 0.0) > 0.0]
        for eps in radii[-1:] if fast else radii:  # nothing left to break: the check cannot fail there
            base = own["pgd", spec.norm, eps]
            stronger = spec.model_copy(update={"eps": [eps], "steps": spec.steps * 2, "restarts": spec.restarts + 2,
                                               "step_size": None})
            subset = min(len(base), FAST_CONVERGENCE) if fast else len(base)
            left_alone = ~base
            left_alone[subset:] = True  # counted as broken: not attacked, and out of both accuracies below
            after = correct(stronger, left_alone)[:subset]
            rows.append((spec.norm, eps, float(base[:subset].double().mean()), float(after.double().mean())))
        break  # the first PGD spec: its radii are the ones the report leans on
    converged = pgd_converged(rows)
    if converged is not None:
        checks.append(converged)
    return checks


MIN_NORM_TARGETS = 3  # the check's FMN: the 3 most likely wrong classes, 100 iterations each
MIN_NORM_GIVE_UP = {20: 1.5}  # after 20 iterations a sample still 1.5× the largest radius away is left alone
MIN_NORM_FAIL = 0.02  # survivors within ε of the boundary, as a share of the audit samples: fail above


def min_norm_consistent(model: nn.Module, x: Tensor, y: Tensor, survivors: dict[str, dict[float, Tensor]],
                        batch_size: int = 256, *, strong: bool = True) -> Check | None:
    """A minimum-norm attack's distances against the reported survivors (issue 23): at every radius,
    targeted FMN (models/attacks/min_norm.py) on the audit samples every attack left standing; a
    survivor with a verified misclassified point within ε of it (an fp32 forward, inside [0, 1]) is
    an attack that failed at that radius. `survivors[norm][eps]`: N bool over x, still correct in
    the worst case. None when nothing survives anywhere. `strong`: the evaluation claims AutoAttack's
    strength (a suite or AutoAttack among its attacks), so a miss fails it; a spec of plain FGSM / PGD
    asked for those attacks, and their miss is a warning that the worst case is optimistic."""
    from models.attacks.min_norm import min_norm_distances

    rows: list[tuple[str, float, int, int]] = []  # (norm, ε, survivors, within ε)
    for norm, by_eps in survivors.items():
        radii = sorted(by_eps)
        if not radii:
            continue
        left = torch.zeros(len(x), dtype=torch.bool)
        for eps in radii:
            left |= by_eps[eps].cpu()
        if not left.any():
            continue
        found = min_norm_distances(model, x[left], y[left], norm=norm, targets=MIN_NORM_TARGETS,
                                   batch_size=batch_size, stop_below=radii[0], far=radii[-1],
                                   give_up=MIN_NORM_GIVE_UP)
        distance = torch.full((len(x),), float("inf"))
        distance[left] = found.distance
        for eps in radii:
            standing = by_eps[eps].cpu()
            within_eps = int((standing & (distance <= eps * (1 + 1e-6))).sum())
            rows.append((norm, eps, int(standing.sum()), within_eps))
    if not rows:
        return None
    samples = max(len(x), 1)
    norm, eps, alive, within = max(rows, key=lambda r: (r[3], -r[1]))
    status: Status = "fail" if strong and within > MIN_NORM_FAIL * samples else "warn" if within else "pass"
    detail = "; ".join(f"{n} ε {e:g}: {w}/{a} survivors within ε" for n, e, a, w in rows)
    return Check(
        name="min_norm_consistent",
        status=status,
        detail=f"a minimum-norm attack (FMN) found misclassified points within ε of survivors the attacks left "
        f"({detail}, of {len(x)} audit samples)",
        values={"within": within, "survivors": alive, "eps": eps, "norm": norm, "samples": len(x),
                "rows": [{"norm": n, "eps": e, "survivors": a, "within": w} for n, e, a, w in rows]},
    )
