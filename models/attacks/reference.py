"""AutoAttack through torchattacks, inside the same sweep rules as our own attacks.

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

from core.specs.evaluation import AutoAttackSpec
from models.attacks.context import SweepContext
from models.attacks.steps import admissible

log = logging.getLogger(__name__)

TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}
Factory = Callable[[nn.Module, float], Callable[[Tensor, Tensor], Tensor]]


def _fork_rng(device: torch.device) -> Any:
    devices = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


class ImageView(nn.Module):
    """The model seen through N×1×1×D inputs (torchattacks' shape) when its own inputs are N×…."""

    def __init__(self, inner: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.inner, self.shape = inner, shape

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x.reshape(len(x), *self.shape))
        return out


def torchattacks_model(ctx: SweepContext) -> nn.Module:
    """ctx.model, or its ImageView when the inputs are not N×C×H×W."""
    return ctx.model if ctx.x.dim() == 4 else ImageView(ctx.model, tuple(ctx.x.shape[1:]))


def attack_at(ctx: SweepContext, i: int, attack: Callable[[Tensor, Tensor], Tensor], norm: str, name: str) -> None:
    """Run a torchattacks attack at radius i on the samples still unbroken there."""
    eps = ctx.eps[i]
    todo = ctx.advance(i)
    for index in ctx.chunks(todo):
        xb, yb = ctx.batch(index)
        with _fork_rng(ctx.device):
            if xb.dim() == 4:
                x_adv = attack(xb, yb).detach().to(xb.device, dtype=xb.dtype)
            else:  # torchattacks wants N×C×H×W: vectors (and other shapes) go in as N×1×1×D
                x_adv = attack(xb.reshape(len(xb), 1, 1, -1), yb).detach().to(xb.device, dtype=xb.dtype)
                x_adv = x_adv.reshape(xb.shape)
        valid = admissible(xb, x_adv, eps, norm)
        if not valid.all():
            log.warning("%s returned %d inadmissible inputs at ε=%g: counted as not broken",
                        name, int((~valid).sum()), eps)
        ctx.mark(i, index, ctx.misclassified(x_adv, yb) & valid, x_adv)
    ctx.model.eval()  # torchattacks restores the mode it found; make sure it stays eval


def sweep_with(ctx: SweepContext, factory: Factory, norm: str, name: str) -> None:
    """Run `factory(model, eps)` once per radius on the samples still unbroken there."""
    for i, eps in enumerate(ctx.eps):
        if ctx.advance(i).numel():
            attack_at(ctx, i, factory(torchattacks_model(ctx), eps), norm, name)


# The original's settings (Croce & Hein 2020, fra31/auto-attack, version "standard"): torchattacks'
# AutoAttack leaves APGD, APGD-T and FAB at its default 10 iterations, which is why it reported
# robust accuracies points above the original; these are the published ones.
AUTOATTACK_ITERATIONS = 100
AUTOATTACK_TARGETS = 9
AUTOATTACK_SQUARE_QUERIES = 5000
AUTOATTACK_RAND_EOT = 20


def autoattack_members(model: nn.Module, eps: float, norm: str, version: str, n_classes: int,
                       seed: int) -> list[Any]:
    """AutoAttack's members with the original's settings, from torchattacks' APGD, APGDT, FAB, Square.

    standard: APGD-CE (100 iterations), APGD-T (targeted DLR, 9 targets × 100), FAB-T (9 × 100),
    Square (5,000 queries), one restart each; rand: APGD-CE and APGD-DLR with 20 EOT samples.
    Each member is seeded with `seed`. Fewer than 10 classes: targets = classes − 1.
    """
    import torchattacks

    ta_norm = TORCHATTACKS_NORM[norm]
    if version == "rand":
        return [torchattacks.APGD(model, norm=ta_norm, eps=eps, steps=AUTOATTACK_ITERATIONS, n_restarts=1,
                                  seed=seed, loss=loss, eot_iter=AUTOATTACK_RAND_EOT) for loss in ("ce", "dlr")]
    # torchattacks runs target ranks 2 … n_classes (n_classes − 1 targets): 9 of 10 classes as the original
    targets = min(AUTOATTACK_TARGETS, n_classes - 1) + 1
    return [
        torchattacks.APGD(model, norm=ta_norm, eps=eps, steps=AUTOATTACK_ITERATIONS, n_restarts=1, seed=seed,
                          loss="ce"),
        torchattacks.APGDT(model, norm=ta_norm, eps=eps, steps=AUTOATTACK_ITERATIONS, n_restarts=1, seed=seed,
                           n_classes=targets),
        torchattacks.FAB(model, norm=ta_norm, eps=eps, steps=AUTOATTACK_ITERATIONS, n_restarts=1, seed=seed,
                         multi_targeted=True, n_classes=targets),
        torchattacks.Square(model, norm=ta_norm, eps=eps, n_queries=AUTOATTACK_SQUARE_QUERIES, n_restarts=1,
                            seed=seed),
    ]


def run_autoattack(ctx: SweepContext, spec: AutoAttackSpec) -> None:
    """AutoAttack (the original's settings, `autoattack_members`) per radius, seeded with ctx.seed: each
    member runs on the samples every earlier member left unbroken (torchattacks' MultiAttack)."""
    import torchattacks

    def factory(model: nn.Module, eps: float) -> Callable[[Tensor, Tensor], Tensor]:
        members = autoattack_members(model, eps, spec.norm, spec.version, max(ctx.num_classes, 2), ctx.seed)
        attack: Callable[[Tensor, Tensor], Tensor] = torchattacks.MultiAttack(members)
        return attack

    sweep_with(ctx, factory, spec.norm, "autoattack")
