"""A minimum-norm attack for the sweep: FMN (Pintor et al. 2021, "Fast Minimum-norm Adversarial
Attacks through Adaptive Norm Constraints"), L2 and L∞.

Fixed-radius attacks (APGD, Square) miss points near a smooth robust boundary that AutoAttack's
FAB-T finds (issue 23: 21 more samples broken at L2 ε 2.0 on a PGD-trained CNN). A minimum-norm
attack looks for the *closest* misclassified point instead, so one run answers every radius:

- FMN keeps a per-sample norm constraint ε_k: while no adversarial point is known it grows to the
  linear estimate of the distance to the boundary (‖δ‖ + |margin| / ‖∇margin‖_dual), once one is
  known it shrinks by γ_k when the iterate is adversarial and grows by γ_k when it is not; each
  step moves δ along the normalized gradient of the logit margin (step α_k) and projects it onto
  the ε_k-ball and [0, 1]. α_k and γ_k anneal with a cosine. It starts at δ = 0: no randomness.
- `min_norm_at` is the suite member (`models/attacks/suite.py`): at the first radius where a
  survivor is left it runs FMN once on the survivors, targeted (like FAB-T) at each of the
  `targets` most likely wrong classes in turn, each only for those whose found distance is still
  above that radius; every sample stops as soon as its distance is ≤ that radius (broken there and at every
  larger one). Each sample's best point is kept: at every radius, the survivors whose distance is
  ≤ ε are broken there once an fp32 forward confirms their point, projected into the ε-ball (a
  no-op up to float slack) and [0, 1]. Later radii cost one forward per survivor.

Everything is per sample (no random draw, no decision over several samples), so shards and batch
sizes give the result of one run bit for bit (tests/unit/test_sharding.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attacks.context import SweepContext
from models.attacks.steps import finite_gradient

STEPS = 100
TARGETS = 9  # as FAB-T in AutoAttack: the 9 most likely wrong classes, one after another
ALPHA = {"l2": 1.0, "linf": 10.0}  # initial step (normalized L2 gradient), annealed to 1/100 of it
GAMMA_INIT, GAMMA_FINAL = 0.05, 0.001
NORM_GUARD = 1e-12


def _view(values: Tensor, like: Tensor) -> Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _norm(delta: Tensor, norm: str) -> Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else torch.linalg.vector_norm(flat, ord=2, dim=1)


def _dual_norm(grad: Tensor, norm: str) -> Tensor:
    flat = grad.flatten(1)
    return flat.abs().sum(dim=1) if norm == "linf" else torch.linalg.vector_norm(flat, ord=2, dim=1)


def project(x: Tensor, x_adv: Tensor, eps: Tensor | float, norm: str) -> Tensor:
    """x_adv moved into the ε-ball around x (per-sample ε) and [0, 1]."""
    delta = x_adv - x
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(len(x))
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, _view(eps_t, x)), -_view(eps_t, x))
    else:
        size = _norm(delta, "l2")
        scale = torch.where(size > eps_t, eps_t / size.clamp(min=NORM_GUARD), torch.ones_like(size))
        delta = delta * _view(scale, x)
    return torch.clamp(x + delta, min=0, max=1)


def margin(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """z_y − max_{j≠y} z_j (untargeted) or z_y − z_t (targeted at t): > 0 while y is predicted."""
    z = logits.float()
    rows = torch.arange(len(z), device=z.device)
    z_y = z[rows, y]
    if target is not None:
        return z_y - z[rows, target]
    return z_y - z.scatter(1, y.unsqueeze(1), float("-inf")).amax(dim=1)


@dataclass
class MinNormOutcome:
    """Per sample: the smallest misclassified point found and its distance (inf: none found)."""

    distance: Tensor  # N fp32
    x_best: Tensor  # N×… (x where nothing was found)


def fmn(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "l2", steps: int = STEPS,
        target: Tensor | None = None, stop_below: Tensor | float | None = None,
        alpha: float | None = None, give_up: dict[int, float] | None = None,
        far: Tensor | float | None = None) -> MinNormOutcome:
    """FMN on the batch (x in [0, 1], labels y, the model in eval mode), after adv_lib's `fmn`.

    target: per-sample target classes (targeted: the point must be classified as a class ≠ y,
    found by pushing z_t above z_y). stop_below: per-sample (or one) distance at which a sample is
    done: it leaves the batch once its best distance is ≤ it (the sweep needs no smaller one).
    give_up {k: f} (with stop_below): after k iterations a sample whose best distance is still
    above f × stop_below (or none found) leaves the batch too: it will not come down to the radius
    (`far`, per sample or one: the distance f multiplies instead of stop_below).
    Every sample's trajectory is its own, whoever else is in the batch.
    """
    n = len(x)
    alpha_init = ALPHA[norm] if alpha is None else alpha
    alpha_final = alpha_init / 100
    distance = torch.full((n,), float("inf"), device=x.device)
    x_best = x.clone()
    if not n:
        return MinNormOutcome(distance, x_best)
    stop = None if stop_below is None else torch.as_tensor(stop_below, dtype=torch.float32,
                                                          device=x.device).expand(n).clone()
    limit = stop if far is None or stop is None else torch.as_tensor(far, dtype=torch.float32,
                                                                      device=x.device).expand(n).clone()
    worst = _norm(torch.maximum(x, 1 - x), norm)
    active = torch.arange(n, device=x.device)
    delta = torch.zeros_like(x)
    eps = torch.full((n,), float("inf"), device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for k in range(steps):
        cosine = (1 + math.cos(math.pi * k / steps)) / 2
        step = alpha_final + (alpha_init - alpha_final) * cosine
        gamma = GAMMA_FINAL + (GAMMA_INIT - GAMMA_FINAL) * cosine
        xa, ya = x[active], y[active]
        d = delta[active].clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa + d)
            m = margin(logits, ya, None if target is None else target[active])
        (grad,) = torch.autograd.grad(m.sum(), d)
        m = m.detach()
        d = d.detach()
        # only the coordinates that can move along −∇ (not held by the [0, 1] box): on images with
        # many saturated pixels the full gradient overestimates what a step can do, and FMN stalls
        # short of the boundary
        grad = finite_gradient(grad)
        grad = grad * (((grad > 0) & (xa + d > 0)) | ((grad < 0) & (xa + d < 1)))
        size = _norm(d, norm)
        is_adv = logits.detach().float().argmax(dim=1) != ya
        better = is_adv & (size < distance[active])
        rows = active[better]
        distance[rows] = size[better]
        x_best[rows] = (xa + d)[better]
        found[active] |= is_adv
        to_boundary = m.abs() / _dual_norm(grad, norm).clamp(min=NORM_GUARD)
        e = eps[active]
        e = torch.where(is_adv, torch.minimum(e * (1 - gamma), distance[active]),
                        torch.where(found[active], e * (1 + gamma), size + to_boundary))
        e = torch.minimum(e, worst[active])
        eps[active] = e
        # descend the margin along its normalized (L2) gradient, then back into the ε_k-ball and the box
        g = grad / _view(torch.linalg.vector_norm(grad.flatten(1), ord=2, dim=1).clamp(min=NORM_GUARD), grad)
        moved = project(xa, xa + d - step * g, e, norm)
        delta[active] = moved - xa
        if stop is not None:
            keep = distance[active] > stop[active]
            if give_up and k + 1 in give_up and limit is not None:
                keep &= distance[active] <= give_up[k + 1] * limit[active]
            if not keep.all():
                active = active[keep]
                if not active.numel():
                    break
    return MinNormOutcome(distance, x_best)


@dataclass
class _Found:
    """What the suite's min-norm member found per sample of the context (CPU)."""

    distance: Tensor  # N fp32; NaN: not attacked yet
    x_best: Tensor  # N×…


def _target(ctx: SweepContext, index: Tensor, yb: Tensor, rank: int) -> Tensor:
    """The rank-th most likely class other than y at x (rank 1: the runner-up), from the clean pass."""
    assert ctx.ranked is not None
    ranked = ctx.ranked[index].to(ctx.device)
    return torch.where(ranked[:, 0] == yb, ranked[:, rank], ranked[:, rank - 1])


def min_norm_state(ctx: SweepContext) -> _Found | None:
    """The min-norm member's per-sample record in this sweep, if it ran (for reports and tests)."""
    found: _Found | None = getattr(ctx, "_min_norm", None)
    return found


def min_norm_at(ctx: SweepContext, i: int, *, steps: int = STEPS, targets: int = TARGETS,
                give_up: dict[int, float] | None = None) -> None:
    """The suite's minimum-norm member at radius i (see the module docstring): FMN once per sample,
    on the survivors not attacked at an earlier radius; then every survivor whose distance is ≤ ε_i
    is broken at ε_i once an fp32 forward confirms its point projected into the ball."""
    found = min_norm_state(ctx)
    if found is None:
        found = _Found(torch.full((ctx.x.shape[0],), float("nan")), torch.empty_like(ctx.x, dtype=torch.float32))
        ctx._min_norm = found  # type: ignore[attr-defined]
    eps = ctx.eps[i]
    survivors = ctx.advance(i)
    fresh = survivors[torch.isnan(found.distance[survivors])]
    ranks = list(range(1, min(targets + 1, ctx.ranked.shape[1] if ctx.ranked is not None else 0)))
    for index in ctx.chunks(fresh):
        xb, yb = ctx.batch(index)
        out = MinNormOutcome(torch.full((len(index),), float("inf"), device=ctx.device), xb.clone())
        for rank in ranks:  # FAB-T's order; each target only for what the earlier ones left above ε
            rest = (out.distance > eps).nonzero().flatten()
            if not rest.numel():
                break
            target = _target(ctx, index[rest.cpu()], yb[rest], rank)
            more = fmn(ctx.model, xb[rest], yb[rest], norm=ctx.norm, steps=steps, target=target, stop_below=eps,
                       give_up=give_up)
            closer = more.distance < out.distance[rest]
            out.distance[rest[closer]] = more.distance[closer]
            out.x_best[rest[closer]] = more.x_best[closer]
        found.distance[index] = out.distance.cpu()
        found.x_best[index] = out.x_best.cpu()
        ctx.note(min_norm_attacked=float(len(index)))
    within = survivors[found.distance[survivors] <= eps * (1 + 1e-6)]
    for index in ctx.chunks(within):
        xb, yb = ctx.batch(index)
        point = project(xb, found.x_best[index].to(ctx.device), eps, ctx.norm)
        ctx.mark(i, index, ctx.misclassified(point, yb), point)


def min_norm_distances(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "l2", steps: int = STEPS,
                       targets: int = TARGETS, batch_size: int = 256, stop_below: float | None = None,
                       far: float | None = None, give_up: dict[int, float] | None = None) -> MinNormOutcome:
    """Targeted FMN's smallest distance per sample over its `targets` most likely wrong classes, without
    early stop (the checks, the comparison with FAB), on the CPU. Every point is verified: a point an
    fp32 forward classifies correctly, or outside [0, 1], gets distance inf. stop_below, far, give_up:
    as `fmn` (a sample stops once within stop_below; gives up when far above `far`)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    distances, points = [], []
    for lo in range(0, len(x), batch_size):
        xb, yb = x[lo:lo + batch_size].to(device), y[lo:lo + batch_size].to(device)
        with torch.no_grad():
            ranked = model(xb).float().argsort(dim=1, descending=True)
        best = MinNormOutcome(torch.full((len(xb),), float("inf"), device=device), xb.clone())
        for rank in range(1, min(targets + 1, ranked.shape[1])):
            target = torch.where(ranked[:, 0] == yb, ranked[:, rank], ranked[:, rank - 1])
            out = fmn(model, xb, yb, norm=norm, steps=steps, target=target, stop_below=stop_below, far=far,
                      give_up=give_up)
            closer = out.distance < best.distance
            best.distance[closer] = out.distance[closer]
            best.x_best[closer] = out.x_best[closer]
        with torch.no_grad():
            wrong = model(best.x_best).float().argmax(dim=1) != yb
        flat = best.x_best.flatten(1)
        valid = wrong & (flat >= 0).all(dim=1) & (flat <= 1).all(dim=1)
        distances.append(torch.where(valid, best.distance, torch.full_like(best.distance, float("inf"))).cpu())
        points.append(best.x_best.cpu())
    if not distances:
        return MinNormOutcome(torch.empty(0), x.clone())
    return MinNormOutcome(torch.cat(distances), torch.cat(points))
