"""AutoAttack and Square through torchattacks, inside the same sweep rules as our own attacks.

torchattacks is the reference implementation (DESIGN §3); these runners only decide what it is
given: per radius, in ascending order, only the samples not yet broken at that radius, and its
output counts only when it is admissible (inside the ball and [0, 1]) and an fp32 forward of our
own misclassifies it. torchattacks reseeds the global torch RNG from its `seed`; the calls run in
`torch.random.fork_rng` so the caller's random stream is left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from core.specs.evaluation import AutoAttackSpec, SquareAttack
from models.attacks.context import SweepContext
from models.attacks.steps import admissible

log = logging.getLogger(__name__)

TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}
Factory = Callable[[nn.Module, float], Callable[[Tensor, Tensor], Tensor]]


def _fork_rng(device: torch.device) -> Any:
    devices = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def sweep_with(ctx: SweepContext, factory: Factory, norm: str, name: str) -> None:
    """Run `factory(model, eps)` once per radius on the samples still unbroken there."""
    for i, eps in enumerate(ctx.eps):
        todo = ctx.advance(i)
        if not todo.numel():
            continue
        attack = factory(ctx.model, eps)
        for index in ctx.chunks(todo):
            xb, yb = ctx.batch(index)
            with _fork_rng(ctx.device):
                x_adv = attack(xb, yb).detach().to(xb.device, dtype=xb.dtype)
            valid = admissible(xb, x_adv, eps, norm)
            if not valid.all():
                log.warning("%s returned %d inadmissible inputs at ε=%g: counted as not broken",
                            name, int((~valid).sum()), eps)
            ctx.mark(i, index, ctx.misclassified(x_adv, yb) & valid)
        ctx.model.eval()  # torchattacks restores the mode it found; make sure it stays eval


def run_autoattack(ctx: SweepContext, spec: AutoAttackSpec) -> None:
    """torchattacks.AutoAttack (APGD-CE, APGD-T, FAB-T, Square) per radius, seeded with ctx.seed."""
    import torchattacks

    def factory(model: nn.Module, eps: float) -> Callable[[Tensor, Tensor], Tensor]:
        attack: Callable[[Tensor, Tensor], Tensor] = torchattacks.AutoAttack(
            model, norm=TORCHATTACKS_NORM[spec.norm], eps=eps, version=spec.version,
            n_classes=max(ctx.num_classes, 2), seed=ctx.seed,
        )
        return attack

    sweep_with(ctx, factory, spec.norm, "autoattack")


def run_square(ctx: SweepContext, spec: SquareAttack) -> None:
    """torchattacks.Square (score-based, no gradients): the black-box control of DESIGN §3."""
    import torchattacks

    def factory(model: nn.Module, eps: float) -> Callable[[Tensor, Tensor], Tensor]:
        attack: Callable[[Tensor, Tensor], Tensor] = torchattacks.Square(
            model, norm=TORCHATTACKS_NORM[spec.norm], eps=eps, n_queries=spec.queries, seed=ctx.seed,
        )
        return attack

    sweep_with(ctx, factory, spec.norm, "square")
