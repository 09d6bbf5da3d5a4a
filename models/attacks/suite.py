"""APGD in the sweep engine, and the standard suite built from it.

`run_apgd` runs one APGD spec by the sweep's rules: radii ascending, only the samples unbroken at
a radius are attacked, each restart and each target class only for the samples every earlier one
left unbroken, each sample dropped at its first misclassified iterate, each start keyed by (seed,
radius, stream, global sample index).

The standard suite (`STANDARD`) is the cheapest ordering found that comes close to AutoAttack
standard (benchmarks/eval_suite.py measures it against `reference.run_autoattack`): at each
radius, APGD-CE, then targeted APGD-DLR that screens the 9 most likely wrong classes of each
survivor and pursues the most promising one (DLR is invariant to the logits' scale, which defeats
saturated-softmax masking), with fresh starts for the survivors left near the boundary, then
Square as the gradient-free control, escalated to AutoAttack's budget when it beats the rest.
Each member's contribution (samples it broke) and cost (gradient evaluations, forwards, seconds)
is recorded per radius in `ctx.members`.

Nothing a sample gets depends on the other samples of its batch or shard: its starts and Square's
draws are keyed by its global index, its replicas run in fixed groups, and the one decision taken
over many samples (escalating Square) is taken per DECISION_BLOCK of global indices. An evaluation
split into shards whose boundaries are multiples of DECISION_BLOCK, run with the matching
`offset`s and concatenated, gives exactly the result of one run on all of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from core.specs.evaluation import APGDAttack, SuiteSpec
from models.attacks.apgd import APGD_START, ApgdOutcome, apgd_run
from models.attacks.context import CountingModel, SweepContext
from models.attacks.min_norm import min_norm_at
from models.attacks.square import square_at

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
    screen_steps: int = 0  # > 0: focused targets (screen every target, then `focus` targets × steps)
    focus: int = 0


FOCUS_WITHIN = 0.4  # only survivors whose screened targeted DLR loss is above −0.4 get the focus
NEAR_BOUNDARY = 0.2  # targeted DLR loss above −0.2 after the focus: worth fresh starts
NEAR_RESTARTS = 3
BORDERLINE = 0.05  # still above −0.05 after those: a coin flip per start, worth many more
BORDERLINE_RESTARTS = 24
BORDERLINE_TARGETS = 3  # a borderline survivor is also pursued on its next two targets
# The near and borderline stages stop a start whose best targeted DLR loss is still below −0.3 after
# 10 of its 100 iterations: on six LeNet-5s at both radii (benchmarks/borderline_give_up.py, test
# images eval_suite.py does not use) no sample those stages broke was lost that way (at −0.2, 3
# were), and 15-29 % of their gradient evaluations are saved.
GIVE_UP = {10: -0.3}
# Square breaking any sample of a block that the white-box members left escalates it (issue 23: one of
# 196 broken was the only sign of a straight-through gradient with 15 % of its signs flipped)
ESCALATE_SHARE = 0.0
# Decisions over several samples (escalating Square) are taken per block of this many global sample
# indices (0-99, 100-199, ...), never over the whole context: shard boundaries must be multiples of it.
DECISION_BLOCK = 100
# Focused APGD-T screens this many targets at a time, each group on what the earlier ones left (fixed:
# which targets a sample gets must not depend on how many samples share its batch).
SCREEN_GROUP = 3
ESCALATED_QUERIES = 5000  # AutoAttack's Square budget
# The escalated Square leaves a sample alone once its margin is still above this share of its start
# margin at these queries: on four masked LeNet-5s (benchmarks/square_pruning.py) no sample Square
# broke later had been above 0.36 at 250, 0.13 at 500 or 0.01 at 1,000.
SQUARE_PRUNE = {250: 0.6, 500: 0.3, 1000: 0.1}
ESCALATED_RESTARTS = 2

# The standard suite: APGD-CE, then focused APGD-T (9 targets screened, the best one pursued), then Square.
STANDARD = (
    Member("apgd-ce", "apgd", loss="ce", steps=30),
    Member("apgd-t", "apgd", loss="dlr", steps=100, targets=9, screen_steps=10, focus=1),
    Member("square", "square", queries=1000),  # at least 1,000 queries per survivor (issue 23)
)


def _targets(ctx: SweepContext, index: Tensor, yb: Tensor, rank: int) -> Tensor:
    """The rank-th most likely class other than y at x (rank 1: the runner-up), from the clean pass."""
    assert ctx.ranked is not None
    ranked = ctx.ranked[index].to(ctx.device)
    return torch.where(ranked[:, 0] == yb, ranked[:, rank], ranked[:, rank - 1])


def _confirm(ctx: SweepContext, yb: Tensor, out: ApgdOutcome, loss: str) -> Tensor:
    """The samples whose found iterate an fp32 verdict confirms; the indicator counts on the way."""
    confirmed = torch.zeros_like(out.found)
    if out.found.any():
        confirmed[out.found] = ctx.misclassified(out.x_found[out.found], yb[out.found])
    survived = ~out.found
    late = (out.loss_best - out.loss_late)[survived]
    total = (out.loss_best - out.loss_start)[survived]
    ctx.note(**{
        f"{loss}_unconfirmed": float((out.found & ~confirmed).sum()),
        f"{loss}_attacked": float(len(yb)),
        f"{loss}_survivors": float(survived.sum()),
        # survivors whose best loss still rose by > 5 % of its total gain in the last 20 % of the steps
        f"{loss}_late_gainers": float(((late > 0.05 * total.abs()) & (total > 0)).sum()),
    })
    return confirmed


def apgd_at(ctx: SweepContext, i: int, *, loss: str, steps: int, restarts: int = 1, targets: int = 0,
            rho: float = 0.75, stream: int = 0) -> None:
    """APGD at radius i on the samples unbroken there; targeted DLR over ranks 1 … targets."""
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
                target = _targets(ctx, index, yb, rank) if rank is not None else None
                start = ctx.starts(index, xb, norm, i, stream + 100 * restart + (rank or 0), APGD_START)
                out = apgd_run(ctx.model, xb, yb, start, eps=eps, norm=norm, steps=steps, loss=loss, target=target,
                               rho=rho, eot=ctx.eot)
                ctx.mark(i, index, _confirm(ctx, yb, out, loss), out.x_found)


@dataclass
class _Replicas:
    """Per replica of a replicated APGD run (R replicas × m rows, replica-major): what it found."""

    confirmed: Tensor  # R×m bool
    loss_best: Tensor  # R×m
    x_best: Tensor  # R×m×…
    x_found: Tensor  # R×m×…: the misclassified iterate each replica found (the input where none)

    def found_point(self) -> Tensor:
        """m×…: each row's point from its first confirmed replica (replica 0's where none is confirmed)."""
        first = self.confirmed.int().argmax(dim=0)
        return self.x_found[first, torch.arange(len(first), device=first.device)]


def _replicated_dlr(ctx: SweepContext, i: int, xb: Tensor, yb: Tensor, starts: list[Tensor], targets: list[Tensor],
                    steps: int, give_up: dict[int, float] | None = None, group: int = 0) -> _Replicas:
    """Targeted APGD-DLR from each (start, target) pair on the same m rows, run as one batch.

    The samples' replicas share each iteration, so R runs cost about the wall time of one where
    the batch is small (a few survivors, a small model: the cost of an iteration is mostly fixed),
    which is where the suite spends its extra starts and targets. Replicas run in groups of
    `group` (0: all at once), each group only on the rows no earlier group broke (their later
    replicas report not found, loss −∞): which replicas a sample gets depends on its own outcomes
    only, never on the batch or the shard it is in. At most `batch_size` rows go through the model
    at once: a group on more rows runs on chunks of them (every row's run is its own).
    """
    m = len(yb)
    group = group or len(starts)
    confirmed = torch.zeros((len(starts), m), dtype=torch.bool, device=ctx.device)
    loss_best = torch.full((len(starts), m), float("-inf"), device=ctx.device)
    x_best = xb.unsqueeze(0).repeat(len(starts), *([1] * xb.dim()))
    x_found = x_best.clone()
    for first in range(0, len(starts), group):
        rows = (~confirmed[:first].any(dim=0)).nonzero().flatten()
        if not rows.numel():
            break
        count = len(starts[first:first + group])
        block = slice(first, first + count)
        for part in torch.split(rows, max(1, ctx.batch_size // count)):
            rep_y = yb[part].repeat(count)
            out = apgd_run(ctx.model, xb[part].repeat(count, *([1] * (xb.dim() - 1))), rep_y,
                           torch.cat([s[part] for s in starts[block]]), eps=ctx.eps[i], norm=ctx.norm,
                           steps=steps, loss="dlr", target=torch.cat([t[part] for t in targets[block]]),
                           eot=ctx.eot, give_up=give_up)
            confirmed[block, part] = _confirm(ctx, rep_y, out, "dlr").view(count, len(part))
            loss_best[block, part] = out.loss_best.view(count, len(part))
            x_best[block, part] = out.x_best.view(count, len(part), *xb.shape[1:])
            x_found[block, part] = out.x_found.view(count, len(part), *xb.shape[1:])
    return _Replicas(confirmed, loss_best, x_best, x_found)


def focused_targets_at(ctx: SweepContext, i: int, *, targets: int, screen_steps: int, focus: int, steps: int,
                       stream: int) -> None:
    """Targeted APGD-DLR that spends its iterations where they pay, each stage run as one batch:

    1. screen: every survivor against each of its `targets` most likely wrong classes for
       `screen_steps` iterations from one random start;
    2. focus: the `focus` targets whose DLR loss came closest to the boundary, `steps` more
       iterations warm-started from the screening's best point, for the survivors whose screened
       loss is above −FOCUS_WITHIN (on the models of benchmarks/focus_threshold.py every sample the
       focus broke, and every one it brought within NEAR_BOUNDARY, had screened above −0.3; about
       half the survivors at ε 0.1 screen below −0.4 and were never broken by it);
    3. near: survivors within NEAR_BOUNDARY of the boundary get `steps` iterations on their next
       BORDERLINE_TARGETS − 1 targets (warm: ten screening iterations rank the targets only
       roughly; a target ranked second can fall where the first does not) and NEAR_RESTARTS fresh
       starts on their best target;
    4. borderline: survivors still within BORDERLINE get `steps` more iterations on their next
       BORDERLINE_TARGETS − 1 targets as ranked now (warm: which target falls first is as much
       luck as which start) and BORDERLINE_RESTARTS fresh starts, two thirds on their best target
       and one third on the second best.

    Near the boundary the outcome is decided by the start: on the models of
    benchmarks/eval_suite.py a survivor whose targeted DLR loss came within a few hundredths of 0
    falls to one random start of 100 iterations 7 % of the time on average
    (benchmarks/borderline_starts.py; that is where AutoAttack's single start breaks samples by
    luck). Batching a stage's starts and targets makes it cost about the wall time of one run when
    the survivors are few, which is when stages 3 and 4 run.
    """
    ranks = list(range(1, min(targets + 1, ctx.ranked.shape[1] if ctx.ranked is not None else 0)))
    if not ranks:
        return
    borderline_targets = min(BORDERLINE_TARGETS, len(ranks))
    for index in ctx.chunks(ctx.advance(i)):
        xb, yb = ctx.batch(index)
        classes = torch.stack([_targets(ctx, index, yb, rank) for rank in ranks])  # R×n: the class of each rank
        start = ctx.starts(index, xb, ctx.norm, i, stream, APGD_START)
        screened = _replicated_dlr(ctx, i, xb, yb, [start] * len(ranks), list(classes), screen_steps,
                                   group=SCREEN_GROUP)
        alive = ~screened.confirmed.any(dim=0)
        ctx.mark(i, index, (~alive).cpu(), screened.found_point())
        best_loss, best_x = screened.loss_best, screened.x_best  # R×n and R×n×…: per (target, sample)
        stages = [
            (FOCUS_WITHIN, [("warm", k) for k in range(min(focus, len(ranks)))]),
            (NEAR_BOUNDARY, [("warm", k) for k in range(1, borderline_targets)] + [("fresh", 0)] * NEAR_RESTARTS),
            (BORDERLINE, [("warm", k) for k in range(1, borderline_targets)]
             + [("fresh", 0)] * (BORDERLINE_RESTARTS - BORDERLINE_RESTARTS // 3)
             + [("fresh", 1)] * (BORDERLINE_RESTARTS // 3)),
        ]
        for stage, (within, replicas) in enumerate(stages):
            chosen = alive & (best_loss.amax(dim=0) > -within)
            rows = chosen.nonzero().flatten()
            if not rows.numel() or not replicas:
                continue
            order = best_loss[:, rows].argsort(dim=0, descending=True)  # each row's targets, closest first
            picks = [order[min(k, len(ranks) - 1)] for _, k in replicas]
            starts = [best_x[pick, rows] if how == "warm" else
                      ctx.starts(index[rows.cpu()], xb[rows], ctx.norm, i, stream + 1 + 100 * stage + r,
                                 APGD_START)
                      for r, ((how, _), pick) in enumerate(zip(replicas, picks, strict=True))]
            out = _replicated_dlr(ctx, i, xb[rows], yb[rows], starts, [classes[pick, rows] for pick in picks], steps,
                                  give_up=GIVE_UP if stage else None)
            hit = out.confirmed.any(dim=0)
            ctx.mark(i, index[rows.cpu()], hit.cpu(), out.found_point())
            alive[rows[hit]] = False
            for r, pick in enumerate(picks):  # each (target, sample) keeps its best loss and point
                better = out.loss_best[r] > best_loss[pick, rows]
                best_loss[pick[better], rows[better]] = out.loss_best[r][better]
                best_x[pick[better], rows[better]] = out.x_best[r][better]


def run_apgd(ctx: SweepContext, spec: APGDAttack) -> dict[str, int]:
    """An APGD spec at each of its radii (ascending), with the sweep's rules."""
    stats = ctx.clean_pass()
    for i in range(len(ctx.eps)):
        apgd_at(ctx, i, loss=spec.loss, steps=spec.steps, restarts=spec.restarts, targets=spec.targets,
                rho=spec.rho, stream=_STREAM_TARGETED if spec.targets else _STREAM_DLR if spec.loss == "dlr" else 0)
    return stats


# L2 only: targeted FMN (models/attacks/min_norm.py) on the survivors before Square, one run for all radii:
# APGD misses points near a smooth robust boundary that AutoAttack's FAB-T finds (issue 23)
MIN_NORM = Member("fmn-t", "min_norm", steps=100, targets=9)


def members_for(num_classes: int, norm: str = "linf") -> tuple[Member, ...]:
    """The standard members for this many classes: DLR needs ≥ 4 (targeted) or ≥ 3 classes; L2 adds MIN_NORM."""
    if norm == "l2":
        *white, square = members_for(num_classes)
        return (*white, MIN_NORM, square)
    if num_classes >= 4:
        return STANDARD
    ce, _, square = STANDARD
    if num_classes == 3:
        return ce, Member("apgd-dlr", "apgd", loss="dlr", steps=ce.steps), square
    return Member(ce.name, "apgd", loss="ce", steps=ce.steps, restarts=2), square


def _run_member(ctx: SweepContext, i: int, name: str, attack: Callable[[], int | None],
                among: Tensor | None = None) -> tuple[int, int]:
    """Run one member at radius i on the samples still unbroken there (and in `among`, an N bool
    mask, if given) and record what it broke and cost in ctx.members (`attack` may return how
    many samples it gave up on early); (before, after). Every count is a sum over samples: the
    records of the shards of an evaluation add up to the whole run's."""
    counter = ctx.model if isinstance(ctx.model, CountingModel) else None
    def left() -> int:
        return int(ctx.advance(i).numel() if among is None else among[ctx.advance(i)].sum())
    before = left()
    grads, forwards = counter.counts() if counter else (0, 0)
    started = time.perf_counter()
    pruned = attack() if before else None
    after = left()
    g2, f2 = counter.counts() if counter else (0, 0)
    record: dict[str, object] = {"member": name, "eps": ctx.eps[i], "attacked": before, "broken": before - after,
                                 "gradient_evaluations": g2 - grads, "forwards": f2 - forwards,
                                 "seconds": time.perf_counter() - started}
    if pruned is not None:
        record["pruned"] = pruned
    ctx.members.append(record)
    return before, after


def escalating(ctx: SweepContext, i: int, survivors: Tensor) -> Tensor | None:
    """The samples (N bool mask) of the DECISION_BLOCKs where the Square control broke more than
    ESCALATE_SHARE of that block's `survivors` (the positions it was given at radius i) and left
    some; None if no block escalates."""
    if not survivors.numel():
        return None
    blocks = ctx.keys(survivors) // DECISION_BLOCK
    _, inverse = torch.unique(blocks, return_inverse=True)
    size = int(inverse.max()) + 1
    attacked = torch.bincount(inverse, minlength=size)
    broken = torch.bincount(inverse[ctx.broken[i, survivors]], minlength=size)
    escalate = (broken.double() > ESCALATE_SHARE * attacked.double()) & (broken < attacked)
    if not escalate.any():
        return None
    among = torch.zeros(ctx.x.shape[0], dtype=torch.bool)
    among[survivors[escalate[inverse]]] = True
    return among


def _member_attack(ctx: SweepContext, i: int, member: Member) -> Callable[[], int | None]:
    if member.kind == "min_norm":
        return lambda: min_norm_at(ctx, i, steps=member.steps, targets=member.targets)
    if member.kind == "square":
        return lambda: square_at(ctx, i, member.queries, stream=_STREAM_SQUARE)
    if member.screen_steps:
        return lambda: focused_targets_at(ctx, i, targets=member.targets, screen_steps=member.screen_steps,
                                          focus=member.focus, steps=member.steps, stream=_STREAM_TARGETED)
    stream = _STREAM_TARGETED if member.targets else _STREAM_DLR if member.loss == "dlr" else _STREAM_CE
    return lambda: apgd_at(ctx, i, loss=member.loss, steps=member.steps, restarts=member.restarts,
                           targets=member.targets, stream=stream)


def run_suite(ctx: SweepContext, spec: SuiteSpec) -> dict[str, int]:
    """The standard suite at each radius, ascending: every member on the survivors of the earlier ones;
    Square escalates on the survivors of the DECISION_BLOCKs where it beat the white-box members."""
    stats = ctx.clean_pass()
    members = members_for(ctx.num_classes, ctx.norm)
    for i in range(len(ctx.eps)):
        for member in members:
            survivors = ctx.advance(i)
            if member.kind == "square":
                if ctx.white_broken is None:
                    ctx.white_broken = torch.zeros_like(ctx.broken)
                ctx.white_broken[i] = ctx.broken[i]  # what the white-box members broke (transfer check)
            _run_member(ctx, i, member.name, _member_attack(ctx, i, member))
            among = escalating(ctx, i, survivors) if member.kind == "square" else None
            if among is None:
                continue
            # the gradient-free control beat the white-box members: their gradients mislead
            # (masking), so the black-box search gets AutoAttack's budget on the rest of those
            # blocks, and another independent search for what the first left
            for restart in range(ESCALATED_RESTARTS):
                if not among[ctx.advance(i)].any():
                    break
                name = f"square-{ESCALATED_QUERIES}" + (f"-restart-{restart}" if restart else "")
                _run_member(ctx, i, name, partial(square_at, ctx, i, ESCALATED_QUERIES,
                                                  stream=_STREAM_SQUARE + 1 + restart, prune=SQUARE_PRUNE,
                                                  among=among), among=among)
    return stats
