"""The ε-sweep engine: one attack spec at every radius it lists, for far less than one run per ε.

Calling torchattacks once per ε repeats work that a sweep can share (DESIGN §3, §7):
- clean-misclassified samples are broken at every ε: they are never attacked;
- FGSM needs ONE input gradient per sample for all radii (x + ε·sign(g), or x + ε·g/‖g‖₂);
- radii run in ascending order and a sample broken at a smaller ε (by this attack, or by an
  earlier attack through `already_broken`) is broken at every larger ε, so it is skipped;
- within one ε, PGD drops each sample from the working batch at its first misclassified
  iterate (early stop) and restarts run only for the samples still unbroken.
Soundness is never traded for speed: a sample counts as broken only when an fp32 forward of the
model misclassifies the recorded input, which lies inside the ball and [0, 1]; for PGD that is
the first misclassified iterate, not the last one. So our robust accuracy is never higher than
torchattacks' with the same settings (tests/unit/test_attacks.py checks it).

The N samples may be a shard of a larger evaluation (`offset`: the global index of x[0]). Every
random draw about a sample is keyed by (seed, radius, stream, global index) and every decision
over several samples by a fixed DECISION_BLOCK of global indices, so shards run by any number of
workers, at any batch size, concatenate to exactly the result of one run
(tests/unit/test_sharding.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from core.enums import AttackKind
from core.specs.evaluation import AnyAttack, APGDAttack, FGSMAttack, PGDAttack
from models.attacks.context import CountingModel, SweepContext, model_device, restart_seed
from models.attacks.reference import run_autoattack
from models.attacks.square import run_square
from models.attacks.steps import PGD_START, fgsm_perturb, pgd_run
from models.attacks.suite import run_apgd, run_suite
from models.registry import Registry

log = logging.getLogger(__name__)

# On an accelerator PGD drops its found samples from the working batch every this many steps, not
# at every step: each drop makes the host wait for the device, and on small models those waits
# cost more than the steps (the issue-13 measurement: 0.83× torchattacks on cnn_small on an H100).
# The CPU has nothing to wait for, and there every dropped sample saves its steps at once.
COMPACT_EVERY = 5

AnyAttackSpec = AnyAttack

__all__ = ["ATTACKS", "AttackEntry", "AttackResult", "fgsm_examples", "restart_seed", "run_attack"]


@dataclass
class AttackResult:
    """One attack spec's outcome on N samples at each of its radii (all tensors on the CPU)."""

    kind: AttackKind
    norm: str  # "linf" | "l2"
    eps: list[float]  # ascending, = spec.eps
    label: str  # "fgsm", "pgd-20x1", "autoattack", "square-1000"
    correct: Tensor  # len(eps)×N bool: still classified correctly under this attack at that ε
    gradient_stats: dict[str, int] = field(default_factory=dict)  # samples / zero / nonfinite at x
    seconds: float = 0.0
    gradient_evaluations: int = 0  # samples × (forward + backward) passes, clean pass included
    forwards: int = 0  # samples × forward-only passes (verdicts, score-based queries)
    members: list[dict[str, Any]] = field(default_factory=list)  # a suite's per-member, per-ε record
    diagnostics: dict[str, float] = field(default_factory=dict)  # indicator counts for the checks
    white_correct: Tensor | None = None  # a suite's `correct` before its black-box member (else None)
    points: Tensor | None = None  # len(eps)×N×…: each broken sample's judged input, NaN elsewhere (keep_points)

    def accuracy(self) -> list[float]:
        """Robust accuracy at each radius."""
        return [float(row.double().mean()) if row.numel() else 0.0 for row in self.correct]


@dataclass(frozen=True)
class AttackEntry:
    """How one AttackKind runs: its report label and the runner that fills ctx.broken."""

    label: Callable[[Any], str]
    run: Callable[[SweepContext, Any], dict[str, int]]


ATTACKS: Registry[AttackKind, AttackEntry] = Registry("attack", AttackKind)


def _random_starts(ctx: SweepContext, index: Tensor, xb: Tensor, norm: str, eps_index: int, restart: int) -> Tensor:
    """PGD's random starts (torchattacks' draws per sample), from `SweepContext.starts` (keyed by global index)."""
    return ctx.starts(index, xb, norm, eps_index, restart, PGD_START)


def _run_fgsm(ctx: SweepContext, spec: FGSMAttack) -> dict[str, int]:
    """Every radius from the clean gradient the clean pass computes anyway: one gradient per sample."""

    def per_batch(ctx: SweepContext, index: Tensor, xb: Tensor, yb: Tensor, grad: Tensor) -> None:
        for i, eps in enumerate(ctx.eps):
            if i > 0:
                ctx.carry(i, index)
            todo = ~ctx.broken[i, index]
            if not todo.any():
                continue
            rows = todo.to(xb.device)
            x_adv = fgsm_perturb(xb[rows], grad[rows], eps, spec.norm)
            ctx.mark(i, index[todo], ctx.misclassified(x_adv, yb[rows]), x_adv)

    return ctx.clean_pass(per_batch)


def _run_pgd(ctx: SweepContext, spec: PGDAttack) -> dict[str, int]:
    """PGD per radius, ascending, on the unbroken samples only, with per-sample early stop."""
    stats = ctx.clean_pass()
    # Without a random start every restart retraces the same path: one is enough.
    restarts = spec.restarts if spec.random_start else 1
    compact_every = 1 if ctx.device.type == "cpu" else COMPACT_EVERY
    for i, eps in enumerate(ctx.eps):
        step_size = spec.step_size if spec.step_size is not None else 2.5 * eps / spec.steps
        for restart in range(restarts):
            todo = ctx.advance(i)
            if not todo.numel():
                break
            for index in ctx.chunks(todo):
                xb, yb = ctx.batch(index)
                start = _random_starts(ctx, index, xb, spec.norm, i, restart) if spec.random_start else xb.clone()
                found, x_found = pgd_run(ctx.model, xb, yb, start, eps=eps, norm=spec.norm, steps=spec.steps,
                                         step_size=step_size, autocast=ctx.autocast, compact_every=compact_every)
                confirmed = torch.zeros_like(found)
                if found.any():
                    confirmed[found] = ctx.misclassified(x_found[found], yb[found])
                    if (lost := int(found.sum() - confirmed.sum())) > 0:
                        log.debug("pgd ε=%g: %d iterates not confirmed by the fp32 forward", eps, lost)
                    ctx.note(pgd_unconfirmed=float(found.sum() - confirmed.sum()))
                if ctx.use_amp and not confirmed.all():
                    # bf16 iterations may miss what fp32 finds: the rest runs again in fp32 from the
                    # same starts, so amp never reports a higher accuracy than fp32 would.
                    rest = ~confirmed
                    again, x_again = pgd_run(ctx.model, xb[rest], yb[rest], start[rest], eps=eps, norm=spec.norm,
                                             steps=spec.steps, step_size=step_size, autocast=contextlib.nullcontext,
                                             compact_every=compact_every)
                    if again.any():
                        sub = torch.zeros_like(again)
                        sub[again] = ctx.misclassified(x_again[again], yb[rest][again])
                        confirmed[rest.nonzero().flatten()[sub]] = True
                        x_found[rest.nonzero().flatten()[sub]] = x_again[sub]
                ctx.note(pgd_attacked=len(index))
                ctx.mark(i, index, confirmed, x_found)
    return stats


def _run_reference(runner: Callable[[SweepContext, Any], None]) -> Callable[[SweepContext, Any], dict[str, int]]:
    def run(ctx: SweepContext, spec: Any) -> dict[str, int]:
        stats = ctx.clean_pass()
        runner(ctx, spec)
        return stats

    return run


ATTACKS.register(AttackKind.FGSM)(AttackEntry(lambda s: "fgsm", _run_fgsm))
ATTACKS.register(AttackKind.PGD)(AttackEntry(lambda s: f"pgd-{s.steps}x{s.restarts}", _run_pgd))
ATTACKS.register(AttackKind.AUTOATTACK)(AttackEntry(
    lambda s: "autoattack" if s.version == "standard" else f"autoattack-{s.version}", _run_reference(run_autoattack)))
ATTACKS.register(AttackKind.SQUARE)(AttackEntry(lambda s: f"square-{s.queries}", _run_reference(run_square)))


def _apgd_label(spec: APGDAttack) -> str:
    name = f"apgd-t{spec.targets}" if spec.targets else f"apgd-{spec.loss}"
    return f"{name}-{spec.steps}" + (f"x{spec.restarts}" if spec.restarts > 1 else "")


ATTACKS.register(AttackKind.APGD)(AttackEntry(_apgd_label, run_apgd))
ATTACKS.register(AttackKind.SUITE)(AttackEntry(lambda s: f"suite-{s.name}", run_suite))


def _check_inputs(x: Tensor, y: Tensor, eps: list[float], already_broken: Tensor | None) -> Tensor:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]} labels")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"inputs must lie in [0, 1] (got [{float(x.min()):g}, {float(x.max()):g}]): "
                         "attack in input space and normalize inside the model")
    shape = (len(eps), x.shape[0])
    if already_broken is None:
        return torch.zeros(shape, dtype=torch.bool)
    if tuple(already_broken.shape) != shape:
        raise ValueError(f"already_broken has shape {tuple(already_broken.shape)}; expected {shape} (len(eps)×N)")
    return already_broken.detach().to("cpu", dtype=torch.bool).clone()


def run_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AnyAttackSpec,
    *,
    seed: int,
    batch_size: int,
    already_broken: Tensor | None = None,
    amp: bool = False,
    eot: int = 1,
    offset: int = 0,
    start_block: int = 1,
    keep_points: bool = False,
) -> AttackResult:
    """Attack `model` with `spec` at each of spec.eps; `correct[i, b]`: sample b survives at eps[i].

    x: N×… in [0, 1] (any device; batches go to the model's device); y: N labels.
    already_broken: len(eps)×N bool, samples an earlier attack broke at that radius: they are not
    attacked and stay not correct. The model runs in eval mode (its previous mode is restored).
    amp: bf16 autocast for PGD's iterations where bf16 is native (verdicts stay fp32, and the samples
    bf16 left unbroken are attacked again in fp32 from the same starts, so amp never reports a
    higher accuracy than fp32); APGD and the suite always run in fp32.
    eot: APGD averages its gradients over this many forward passes (randomized models).
    offset: the global index of x[0] when x is a shard of a larger evaluation (samples 300 … 399:
    300). Every random draw and every decision about a sample is keyed by (seed, radius, stream,
    offset + position), so the shards of an evaluation, concatenated, give exactly the result of
    one run on all its samples, at any batch size (the suite decides per DECISION_BLOCK global
    indices: shard boundaries must be multiples of it).
    start_block: random starts per block of this many global indices (`SweepContext.starts`); the
    default 1 keys them per sample. A block ≥ N draws torchattacks' starts for the whole context
    (for comparisons with the reference; not shard-invariant).
    keep_points: also return, in `result.points`, the input each sample was judged broken at (NaN
    where it was not, or was broken through `already_broken`): what tests re-score (issue 23).
    """
    if offset < 0 or start_block < 1:
        raise ValueError(f"offset must be ≥ 0 and start_block ≥ 1 (got {offset}, {start_block})")
    started = time.perf_counter()
    eps = sorted(float(e) for e in spec.eps)
    broken = _check_inputs(x, y, eps, already_broken)
    entry = ATTACKS[spec.kind]
    was_training = model.training
    model.eval()
    counted = CountingModel(model)
    ctx = SweepContext(model=counted, x=x.detach(), y=y.detach().long(), eps=eps, broken=broken,
                       batch_size=batch_size, seed=seed, amp=amp, device=model_device(model), norm=spec.norm,
                       eot=eot, offset=offset, start_block=start_block,
                       points=torch.full((len(eps), *x.shape), float("nan")) if keep_points else None)
    try:
        stats = entry.run(ctx, spec)
    finally:
        model.train(was_training)
    for i in range(1, len(eps)):  # a radius nothing was attacked at still inherits the smaller ones
        ctx.carry(i)
    result = AttackResult(kind=AttackKind(spec.kind), norm=spec.norm, eps=eps, label=entry.label(spec),
                          correct=~ctx.broken, gradient_stats=stats, seconds=time.perf_counter() - started,
                          gradient_evaluations=counted.gradients, forwards=counted.forwards,
                          members=ctx.members, diagnostics=ctx.diagnostics,
                          white_correct=None if ctx.white_broken is None else ~ctx.white_broken, points=ctx.points)
    log.info("%s %s on %d samples: accuracy %s in %.2fs", result.label, spec.norm, x.shape[0],
             ", ".join(f"{e:g}:{a:.3f}" for e, a in zip(eps, result.accuracy(), strict=True)), result.seconds)
    return result


def fgsm_examples(
    model: nn.Module, x: Tensor, y: Tensor, eps_list: list[float], norm: str = "linf", *, batch_size: int = 256
) -> Tensor:
    """The FGSM inputs the sweep attacks with: E×N×… on the CPU, row i at eps_list[i].

    The same clean gradient and `fgsm_perturb` as `run_attack`, for every sample (none skipped),
    so tests can compare them with torchattacks.FGSM element by element.
    """
    eps = [float(e) for e in eps_list]
    out = torch.empty((len(eps), *x.shape), dtype=torch.float32)
    was_training = model.training
    model.eval()
    ctx = SweepContext(model=model, x=x.detach(), y=y.detach().long(), eps=eps,
                       broken=torch.zeros(len(eps), x.shape[0], dtype=torch.bool), batch_size=batch_size,
                       seed=0, device=model_device(model))

    def keep(ctx: SweepContext, index: Tensor, xb: Tensor, yb: Tensor, grad: Tensor) -> None:
        for i, e in enumerate(eps):
            out[i, index] = fgsm_perturb(xb, grad, e, norm).cpu()

    try:
        ctx.clean_pass(keep)
    finally:
        model.train(was_training)
    return out
