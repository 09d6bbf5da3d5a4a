"""Tensor kernels of the ε-sweep: FGSM perturbations, PGD starts, steps, projections, one PGD run.

Pure functions of tensors that already sit on the model's device; the sweep engine (`sweep`)
decides which samples and which radii they run on. Every kernel follows torchattacks' FGSM, PGD
and PGDL2 operation for operation (same step, projection and clipping order), so that with the
same start the iterates agree and our accuracy can be compared with the reference one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torchattacks divides by ‖g‖₂ + 1e-10 in PGDL2; the same guard keeps a zero gradient a zero step.
L2_DIVISION_GUARD = 1e-10
# Slack when checking that an externally produced x_adv is inside the ball (float rounding).
ADMISSIBLE_SLACK = 1e-5


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape N values to N×1×…×1 so that they broadcast over `like`'s sample dimensions."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def l2_norms(t: Tensor) -> Tensor:
    """‖t_b‖₂ for every sample b (flattened over all but the first dimension). Shape N."""
    norms: Tensor = torch.linalg.vector_norm(t.flatten(1), ord=2, dim=1)
    return norms


def finite_gradient(grad: Tensor) -> Tensor:
    """NaN / ±inf entries set to 0: a non-finite gradient must give no step, never a NaN input.

    A NaN input could make argmax return an arbitrary class and count a sample as broken by an
    input that is not a valid perturbation; the clean-point statistics report such gradients.
    """
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def fgsm_perturb(x: Tensor, grad: Tensor, eps: float, norm: str) -> Tensor:
    """x + ε·sign(g) (L∞) or x + ε·g/‖g‖₂ (L2), clipped to [0, 1] (torchattacks.FGSM's order)."""
    if norm == "linf":
        return torch.clamp(x + eps * grad.sign(), min=0, max=1)
    unit = grad / _per_sample(l2_norms(grad) + L2_DIVISION_GUARD, grad)
    return torch.clamp(x + eps * unit, min=0, max=1)


def start_noise(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """δ for a block of samples, drawn exactly as torchattacks' PGD / PGDL2 draw it.

    L∞: U(−ε, ε) per pixel. L2: a Gaussian direction scaled to radius U(0, ε), i.e. torchattacks'
    normal_() block, then one uniform_() per sample, combined in its operation order. Given the
    same generator state the starts are bit-identical to the reference's, so tests can pit the
    sweep against torchattacks from the very same points.
    """
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    delta = torch.empty_like(x).normal_(generator=generator)
    n = _per_sample(l2_norms(delta), delta)
    r = torch.zeros_like(n).uniform_(0, 1, generator=generator)
    return delta * (r / n * eps)


def start_noise_rows(out: Tensor, seeds: list[int], eps: float, norm: str) -> Tensor:
    """`start_noise` per sample: row j of `out` (a CPU tensor, overwritten) from a generator seeded
    with seeds[j] alone, the row's draws in torchattacks' order; the rest is computed for all rows."""
    generator = torch.Generator()
    if norm == "linf":
        for row, seed in zip(out.unbind(0), seeds, strict=True):
            row.uniform_(-eps, eps, generator=generator.manual_seed(seed))
        return out
    r = torch.empty(len(seeds), dtype=out.dtype)
    for j, (row, seed) in enumerate(zip(out.unbind(0), seeds, strict=True)):
        row.normal_(generator=generator.manual_seed(seed))
        r[j: j + 1].uniform_(0, 1, generator=generator)
    return out * _per_sample(r / l2_norms(out) * eps, out)


@dataclass(frozen=True)
class StartNoise:
    """How an attack draws the δ of its random starts: `block(x, ε, norm, generator)` for a block
    of samples from one generator (the reference's draw), `rows(out, seeds, ε, norm)` for samples
    each drawn from its own seed (`SweepContext.starts`: the keyed default)."""

    block: Callable[[Tensor, float, str, torch.Generator], Tensor]
    rows: Callable[[Tensor, list[int], float, str], Tensor]


PGD_START = StartNoise(start_noise, start_noise_rows)


def random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """x + δ (see `start_noise`), clipped to [0, 1]: a start inside the ball and the box."""
    return torch.clamp(x + start_noise(x, eps, norm, generator), min=0, max=1)


def pgd_step(x_adv: Tensor, x: Tensor, grad: Tensor, eps: float, step_size: float, norm: str) -> Tensor:
    """One ascent step, projection onto the ε-ball around x, clip to [0, 1] (torchattacks' order)."""
    if norm == "linf":
        stepped = x_adv + step_size * grad.sign()
        delta = torch.clamp(stepped - x, min=-eps, max=eps)
        return torch.clamp(x + delta, min=0, max=1)
    unit = grad / _per_sample(l2_norms(grad) + L2_DIVISION_GUARD, grad)
    delta = x_adv + step_size * unit - x
    factor = torch.clamp(eps / l2_norms(delta).clamp_min(1e-30), max=1.0)
    return torch.clamp(x + delta * _per_sample(factor, delta), min=0, max=1)


def admissible(x: Tensor, x_adv: Tensor, eps: float, norm: str) -> Tensor:
    """Per sample: x_adv is finite, in [0, 1] and within ε of x (with float slack). Shape N bool.

    Checked on inputs that an external attack returns before they may count as broken.
    """
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else torch.linalg.vector_norm(delta, ord=2, dim=1)
    flat = x_adv.flatten(1)
    in_box = (flat >= -ADMISSIBLE_SLACK).all(dim=1) & (flat <= 1 + ADMISSIBLE_SLACK).all(dim=1)
    return torch.isfinite(flat).all(dim=1) & in_box & (size <= eps * (1 + ADMISSIBLE_SLACK) + ADMISSIBLE_SLACK)


def pgd_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    start: Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    autocast: Callable[[], AbstractContextManager[object]],
    compact_every: int = 1,
) -> tuple[Tensor, Tensor]:
    """PGD from `start` with per-sample early stop: (found N bool, x_found N×… adversarial inputs).

    One forward per step both checks the current iterates and gives the gradient for the next
    step; a sample's first iterate the model misclassifies is kept (not the last one), so PGD's
    non-monotone path cannot undo a success, and its gradient is masked out from then on. Every
    `compact_every` steps the found samples leave the working batch: that is the one point where
    the host waits for the device (a GPU runs ahead in between: per-step waits cost more than
    small models' steps; `sweep.COMPACT_EVERY`). The outcome does not depend on it: the samples
    still searched take the same steps either way. After the last step one gradient-free forward
    checks the final iterates. The caller re-verifies the found inputs in fp32 (this forward may
    run under bf16 autocast).
    """
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x_found = x.clone()
    index = torch.arange(x.shape[0], device=x.device)
    x_adv, x_nat, labels = start.detach(), x, y
    done = torch.zeros_like(found)  # per row of the working batch: misclassified at some iterate
    first = x_adv.clone()  # per row: its first misclassified iterate
    for step in range(steps + 1):
        last = step == steps
        leaf = x_adv if last else x_adv.requires_grad_(True)
        with torch.set_grad_enabled(not last), autocast():
            logits = model(leaf)
        new = (logits.argmax(dim=1) != labels) & ~done
        first = torch.where(new.view(-1, *([1] * (x.dim() - 1))), x_adv.detach(), first)
        done = done | new
        if last or (step + 1) % compact_every == 0:
            found[index[done]] = True
            x_found[index[done]] = first[done]
            if last or bool(done.all()):
                break
        with torch.enable_grad():
            per_sample = F.cross_entropy(logits.float(), labels, reduction="none")
            (grad,) = torch.autograd.grad(torch.where(done, 0.0, per_sample).sum(), leaf)
        x_adv = pgd_step(x_adv.detach(), x_nat, finite_gradient(grad), eps, step_size, norm)
        if (step + 1) % compact_every == 0:
            keep = ~done
            x_adv, x_nat, labels, index = x_adv[keep], x_nat[keep], labels[keep], index[keep]
            done, first = done[keep], first[keep]
    return found, x_found
