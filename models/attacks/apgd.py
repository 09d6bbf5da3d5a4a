"""APGD (Croce & Hein 2020) as a kernel of the ε-sweep: momentum, the checkpointed step-size schedule,
cross-entropy or DLR loss, untargeted or targeted; per-sample early stop.

The kernel follows torchattacks' APGD / APGDT (which follow the original auto-attack code) operation
for operation: the same start (a vertex-like point of the L∞ ball, or a point of the L2 sphere),
step 2ε, momentum 0.75 after the first step, checkpoints at 22 % of the iterations and then ever
closer (−3 % per checkpoint, at least 6 %), and at a checkpoint the step halves and the iterate
returns to the best point for the samples whose loss rose in fewer than ρ of the steps since the
last checkpoint, or whose step was kept and best loss did not improve. Everything is per sample,
so dropping a sample at its first misclassified iterate (early stop) leaves every other sample's
trajectory as it is; given the same start the surviving samples follow the reference exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attacks.steps import StartNoise, finite_gradient

DLR_GUARD = 1e-12
LATE_FRACTION = 0.8  # "late gain": best-loss gain after this fraction of the iterations


def _view(values: Tensor, like: Tensor) -> Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _l2(t: Tensor) -> Tensor:
    """‖t_b‖₂ per sample, summed as torchattacks sums it (bit-identical iterates)."""
    return (t**2).sum(dim=tuple(range(1, t.dim()))).sqrt()


def dlr_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Per-sample DLR loss (Croce & Hein 2020), invariant to shifting and scaling the logits.

    Untargeted: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3). Targeted at t: −(z_y − z_t) / (z_π1 −
    (z_π3 + z_π4)/2). Needs at least 3 (untargeted) or 4 (targeted) classes.
    """
    z = logits.float()
    zs, order = z.sort(dim=1)
    rows = torch.arange(z.shape[0], device=z.device)
    z_y = z[rows, y]
    if target is None:
        top_is_y = order[:, -1] == y
        other = torch.where(top_is_y, zs[:, -2], zs[:, -1])
        return -(z_y - other) / (zs[:, -1] - zs[:, -3] + DLR_GUARD)
    return -(z_y - z[rows, target]) / (zs[:, -1] - 0.5 * zs[:, -3] - 0.5 * zs[:, -4] + DLR_GUARD)


def attack_loss(logits: Tensor, y: Tensor, loss: str, target: Tensor | None) -> Tensor:
    if loss == "ce":
        return F.cross_entropy(logits.float(), y, reduction="none")
    return dlr_loss(logits, y, target)


def apgd_start_noise(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """δ of APGD's start, drawn as torchattacks draws it: L∞ ε·t/‖t‖∞ with t ~ U(−1, 1) (a point on
    the ball's surface), L2 ε·t/‖t‖₂ with t ~ N(0, I)."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
        return eps * t / _view(t.flatten(1).abs().amax(dim=1), t)
    t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return eps * t / _view(_l2(t) + DLR_GUARD, t)


def apgd_start_noise_rows(out: Tensor, seeds: list[int], eps: float, norm: str) -> Tensor:
    """`apgd_start_noise` per sample: row j of `out` (a CPU tensor, overwritten) drawn from a
    generator seeded with seeds[j] alone; the scaling is computed for all rows at once."""
    generator = torch.Generator()
    for row, seed in zip(out.unbind(0), seeds, strict=True):
        if norm == "linf":
            row.uniform_(0, 1, generator=generator.manual_seed(seed))
        else:
            row.normal_(generator=generator.manual_seed(seed))
    if norm == "linf":
        t = 2 * out - 1
        return eps * t / _view(t.flatten(1).abs().amax(dim=1), t)
    return eps * out / _view(_l2(out) + DLR_GUARD, out)


APGD_START = StartNoise(apgd_start_noise, apgd_start_noise_rows)


def _project(x: Tensor, x_new: Tensor, eps: float, norm: str, guard: float = 0.0) -> Tensor:
    if norm == "linf":
        return torch.clamp(torch.min(torch.max(x_new, x - eps), x + eps), 0.0, 1.0)
    delta = x_new - x
    size = _l2(delta)
    scale = torch.clamp(size + guard, max=eps) / (size + DLR_GUARD)
    return torch.clamp(x + delta * _view(scale, delta), 0.0, 1.0)


def _step(x_adv: Tensor, x_old: Tensor, x: Tensor, grad: Tensor, step: Tensor, momentum: float,
          eps: float, norm: str) -> Tensor:
    """z = P(x_k + η·d(∇)); x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1})) (torchattacks' order)."""
    previous = x_adv - x_old
    if norm == "linf":
        z = _project(x, x_adv + _view(step, x_adv) * grad.sign(), eps, norm)
        return _project(x, x_adv + (z - x_adv) * momentum + previous * (1 - momentum), eps, norm)
    z = _project(x, x_adv + _view(step, x_adv) * grad / _view(_l2(grad) + DLR_GUARD, grad), eps, norm)
    return _project(x, x_adv + (z - x_adv) * momentum + previous * (1 - momentum), eps, norm, guard=DLR_GUARD)


@dataclass
class ApgdOutcome:
    """What one APGD run found, per sample (all on the device)."""

    found: Tensor  # N bool: some iterate was misclassified (by the attack's own forward)
    x_found: Tensor  # N×…: that first misclassified iterate (x where not found)
    loss_start: Tensor  # N: loss at the start point
    loss_best: Tensor  # N: best loss reached before the sample was dropped (or at the end)
    loss_late: Tensor  # N: best loss at LATE_FRACTION of the iterations (NaN if dropped before)
    x_best: Tensor  # N×…: the highest-loss iterate of the samples not found (a warm start for more)


def _oscillation(loss_steps: Tensor, i: int, k: int, rho: float) -> Tensor:
    """Per sample: the loss rose in at most ρ·k of the last k steps (torchattacks' check_oscillation,
    including its wrap-around to the last row at the first checkpoint)."""
    rises = torch.zeros(loss_steps.shape[1], device=loss_steps.device)
    for back in range(k):
        rises += (loss_steps[i - back] > loss_steps[i - back - 1]).float()
    return rises <= k * rho


def apgd_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    start: Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    loss: str = "ce",
    target: Tensor | None = None,
    rho: float = 0.75,
    eot: int = 1,
    stop_stationary: bool = True,
    give_up: Mapping[int, float] | None = None,
    watch: Callable[[int, Tensor, Tensor], None] | None = None,
) -> ApgdOutcome:
    """APGD from `start` (inside the ball and [0, 1]) with per-sample early stop, in fp32.

    `stop_stationary` (L∞, deterministic models, `eot` 1) also drops the samples that reached a
    fixed point of the iteration: a zero gradient at an iterate that did not move and is its best
    point. The sign of a zero gradient is zero, the momentum term is zero and the projection of a
    point of the ball is that point, so every later step, and every checkpoint's return to the best
    point, leaves it exactly where it is (L2's projection rescales, so it is not exact there): the
    rest of its iterations could not change its outcome. This is what a masked model's zero input
    gradient (rounding, a saturated softmax) costs otherwise: all the iterations for nothing.

    `give_up` {iterations: loss}: after that many iterations a row whose best loss is still below
    `loss` is dropped unfound (the rows kept follow exactly the iterates they would without it).
    `watch(iterations done, rows, best loss)` sees the rows still running after each iteration
    (benchmarks/borderline_give_up.py reads the trajectories with it).
    """
    n = x.shape[0]
    steps_2, steps_min, size_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    late_at = max(int(LATE_FRACTION * steps) - 1, 0)
    dev = x.device
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    x_found = x.clone()
    loss_start = torch.full((n,), float("nan"), device=dev)
    best_all = torch.full((n,), float("nan"), device=dev)
    x_best_all = x.clone()
    late_all = torch.full((n,), float("nan"), device=dev)
    index = torch.arange(n, device=dev)

    def evaluate(x_adv: Tensor, labels: Tensor, tgt: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        grad = torch.zeros_like(x_adv)
        for _ in range(eot):
            leaf = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(leaf)
                values = attack_loss(logits, labels, loss, tgt)
                (g,) = torch.autograd.grad(values.sum(), leaf)
            grad += g.detach()
        return logits.detach(), values.detach(), finite_gradient(grad / eot)

    x_nat, labels, tgt = x, y, target
    x_adv = start.detach().clone()
    logits, values, grad = evaluate(x_adv, labels, tgt)
    loss_start[:] = values
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), values.clone()
    step = torch.full((n,), 2.0 * eps, device=dev)
    x_old = x_adv.clone()
    loss_steps = torch.zeros((steps, n), device=dev)
    loss_best_last = loss_best.clone()
    reduced_last = torch.ones(n, dtype=torch.bool, device=dev)
    k, counter = steps_2, 0

    def record(missed: Tensor) -> None:
        """The misclassified rows' current iterates: found (before a checkpoint may reset them)."""
        if missed.any():
            found[index[missed]] = True
            x_found[index[missed]] = x_adv[missed]

    def drop(missed: Tensor, stationary: Tensor | None = None) -> bool:
        """Remove the misclassified (and the stationary) rows from every state tensor; False if none is left."""
        nonlocal x_nat, labels, tgt, x_adv, x_old, grad, x_best, grad_best, loss_best, step
        nonlocal loss_steps, loss_best_last, reduced_last, index
        if stationary is not None and stationary.any():
            done = index[stationary]  # finished without a find: their final state is their best
            best_all[done], x_best_all[done] = loss_best[stationary], x_best[stationary]
            late_all[done] = torch.where(late_all[done].isnan(), loss_best[stationary], late_all[done])
            missed = missed | stationary
        if not missed.any():
            return True
        best_all[index[missed]], x_best_all[index[missed]] = loss_best[missed], x_best[missed]
        keep = ~missed
        x_nat, labels = x_nat[keep], labels[keep]
        tgt = tgt[keep] if tgt is not None else None
        x_adv, x_old, grad, x_best, grad_best = x_adv[keep], x_old[keep], grad[keep], x_best[keep], grad_best[keep]
        loss_best, step = loss_best[keep], step[keep]
        loss_best_last, reduced_last = loss_best_last[keep], reduced_last[keep]
        loss_steps, index = loss_steps[:, keep], index[keep]
        return bool(keep.any())

    missed = logits.argmax(dim=1) != labels
    record(missed)
    alive = drop(missed)
    for i in range(steps if alive else 0):
        with torch.no_grad():
            x_new = _step(x_adv, x_old, x_nat, grad, step, 0.75 if i > 0 else 1.0, eps, norm)
            x_old, x_adv = x_adv, x_new
        logits, values, grad = evaluate(x_adv, labels, tgt)
        missed = logits.argmax(dim=1) != labels
        record(missed)
        with torch.no_grad():
            loss_steps[i] = values
            better = values > loss_best
            x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], values[better]
            if i == late_at:
                late_all[index] = loss_best
            counter += 1
            if counter == k:
                reduce = _oscillation(loss_steps, i, k, rho) | (~reduced_last & (loss_best_last >= loss_best))
                reduced_last, loss_best_last = reduce.clone(), loss_best.clone()
                if reduce.any():
                    step[reduce] /= 2.0
                    x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
                counter, k = 0, max(k - size_decr, steps_min)
            stationary = None
            if stop_stationary and eot == 1 and norm == "linf":
                stationary = (~missed & (grad.flatten(1) == 0).all(dim=1) & (x_adv == x_old).flatten(1).all(dim=1)
                              & (x_adv == x_best).flatten(1).all(dim=1))
            if give_up and i + 1 in give_up:
                hopeless = ~missed & (loss_best < give_up[i + 1])
                stationary = hopeless if stationary is None else stationary | hopeless
            if watch is not None:
                watch(i + 1, index, loss_best)
        if not drop(missed, stationary):
            break
    best_all[index] = loss_best
    x_best_all[index] = x_best
    return ApgdOutcome(found=found, x_found=x_found, loss_start=loss_start, loss_best=best_all, loss_late=late_all,
                       x_best=x_best_all)
