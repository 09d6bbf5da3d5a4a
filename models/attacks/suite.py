"""APGD in the sweep engine, and the standard suite built from it.

`run_apgd` runs one APGD spec by the sweep's rules: radii ascending, only the samples unbroken at
a radius are attacked, each restart and each target class only for the samples every earlier one
left unbroken, each sample dropped at its first misclassified iterate, starts seeded by position.

The standard suite (`STANDARD`) is the cheapest ordering found that is as strong as AutoAttack
standard (benchmarks/eval_suite.py measures it against `reference.run_autoattack`): at each
radius, APGD-CE, then targeted APGD-DLR on the few most likely wrong classes of the survivors
(DLR is invariant to the logits' scale, which defeats saturated-softmax masking), then Square as
the gradient-free control on whatever is still unbroken. Each member's contribution (samples it
broke) and cost (gradient evaluations, forwards, seconds) is recorded per radius in `ctx.members`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from core.specs.evaluation import APGDAttack, SuiteSpec
from models.attacks.apgd import apgd_run, apgd_start_noise
from models.attacks.context import CountingModel, SweepContext
from models.attacks.reference import square_at

# Streams of random starts: each member draws its own, independent of the others.
_STREAM_CE, _STREAM_DLR, _STREAM_TARGETED, _STREAM_SQUARE = 0, 1_000, 2_000, 9_000


@dataclass(frozen=True)
class Member:
    """One step of a suite: APGD (loss, iterations, restarts, targets) or Square (queries)."""

    name: str
    kind: str  # "apgd" | "square"
    loss: str = "ce"
    steps: int = 0
    restarts: int = 1
    targets: int = 0
    queries: int = 0


# The standard suite: APGD-CE, then APGD-T on the top-3 wrong classes, then Square as control.
STANDARD = (
    Member("apgd-ce", "apgd", loss="ce", steps=30),
    Member("apgd-t", "apgd", loss="dlr", steps=30, targets=3),
    Member("square", "square", queries=300),
)


def apgd_at(ctx: SweepContext, i: int, *, loss: str, steps: int, restarts: int = 1, targets: int = 0,
            rho: float = 0.75, stream: int = 0) -> None:
    """APGD at radius i on the samples unbroken there; targeted DLR over ranks 2 … targets+1."""
    eps, norm = ctx.eps[i], ctx.norm
    width = ctx.ranked.shape[1] if ctx.ranked is not None else 0
    ranks: list[int | None] = list(range(1, min(targets + 1, width))) if targets else [None]
    for restart in range(restarts):
        for rank in ranks:
            todo = ctx.advance(i)
            if not todo.numel():
                return
            for index in ctx.chunks(todo):
                xb, yb = ctx.batch(index)
                target = None
                if rank is not None:
                    assert ctx.ranked is not None
                    ranked = ctx.ranked[index].to(ctx.device)
                    # rank r: the r-th most likely class other than y (the top class is y for survivors)
                    target = torch.where(ranked[:, 0] == yb, ranked[:, rank], ranked[:, rank - 1])
                start = ctx.starts(index, xb, norm, i, stream + 100 * restart + (rank or 0), apgd_start_noise)
                out = apgd_run(ctx.model, xb, yb, start, eps=eps, norm=norm, steps=steps, loss=loss, target=target,
                               rho=rho, eot=ctx.eot)
                confirmed = torch.zeros_like(out.found)
                if out.found.any():
                    confirmed[out.found] = ctx.misclassified(out.x_found[out.found], yb[out.found])
                survived = ~out.found
                late = (out.loss_best - out.loss_late)[survived]
                total = (out.loss_best - out.loss_start)[survived]
                ctx.note(**{
                    f"{loss}_unconfirmed": float((out.found & ~confirmed).sum()),
                    f"{loss}_attacked": float(len(index)),
                    f"{loss}_survivors": float(survived.sum()),
                    # survivors whose best loss still rose by > 5 % of its total gain in the last 20 %
                    f"{loss}_late_gainers": float(((late > 0.05 * total.abs()) & (total > 0)).sum()),
                })
                ctx.mark(i, index, confirmed)


def run_apgd(ctx: SweepContext, spec: APGDAttack) -> dict[str, int]:
    """An APGD spec at each of its radii (ascending), with the sweep's rules."""
    stats = ctx.clean_pass()
    for i in range(len(ctx.eps)):
        apgd_at(ctx, i, loss=spec.loss, steps=spec.steps, restarts=spec.restarts, targets=spec.targets,
                rho=spec.rho, stream=_STREAM_TARGETED if spec.targets else _STREAM_DLR if spec.loss == "dlr" else 0)
    return stats


def members_for(num_classes: int) -> tuple[Member, ...]:
    """The standard members for this many classes: DLR needs ≥ 4 (targeted) or ≥ 3 classes."""
    if num_classes >= 4:
        return STANDARD
    ce, _, square = STANDARD
    if num_classes == 3:
        return ce, Member("apgd-dlr", "apgd", loss="dlr", steps=ce.steps), square
    return Member(ce.name, "apgd", loss="ce", steps=ce.steps, restarts=2), square


def run_suite(ctx: SweepContext, spec: SuiteSpec) -> dict[str, int]:
    """The standard suite at each radius, ascending: every member on the survivors of the earlier ones."""
    stats = ctx.clean_pass()
    counter = ctx.model if isinstance(ctx.model, CountingModel) else None
    members = members_for(ctx.num_classes)
    for i, eps in enumerate(ctx.eps):
        for member in members:
            before = int(ctx.advance(i).numel())
            grads, forwards = counter.counts() if counter else (0, 0)
            started = time.perf_counter()
            if before:
                if member.kind == "square":
                    square_at(ctx, i, ctx.norm, member.queries, stream=_STREAM_SQUARE)
                else:
                    stream = _STREAM_TARGETED if member.targets else _STREAM_DLR if member.loss == "dlr" else _STREAM_CE
                    apgd_at(ctx, i, loss=member.loss, steps=member.steps, restarts=member.restarts,
                            targets=member.targets, stream=stream)
            after = int(ctx.advance(i).numel())
            g2, f2 = counter.counts() if counter else (0, 0)
            ctx.members.append({"member": member.name, "eps": eps, "attacked": before, "broken": before - after,
                                "gradient_evaluations": g2 - grads, "forwards": f2 - forwards,
                                "seconds": time.perf_counter() - started})
    return stats
