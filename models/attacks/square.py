"""Square Attack (Andriushchenko et al. 2020), our own, with a per-sample query budget.

The search is the published one, margin loss, L∞ and L2: each query changes one square window of
the current best perturbation (the same window for every sample of the batch, its side shrinking
on the paper's p schedule) and keeps the change where the margin (true logit − best other)
falls. Called without `keys`, every random number is drawn in the same order and shapes as
torchattacks' `Square`, from a CPU generator seeded like its global one, so with no pruning the
result is the reference's, query for query (tests/unit/test_square.py holds it to that). The sweep
(`square_at`) passes the samples' global indices as keys: the per-sample signs then come from a
counter-based hash of (seed, index, iteration, element) and the generator draws only the choices
the batch shares, so a sample's search is the same in any batch, shard or worker.

What torchattacks cannot do is stop a sample early unless it is broken. `prune` can: at query q of
its checkpoints a sample still unbroken whose margin is above `prune[q]` × its margin at the start
is left alone from then on (the p schedule goes on for the others). That is where a black-box
search spends its queries on a masked model: the samples it will never break keep all 5,000.

Inputs that are not images go in as N×1×1×D, as torchattacks takes them. For L2 that is narrower
than the published squares (at least 3 × 3, on a 5 × 5 starting grid), where torchattacks' Square
fails (a division by zero); here such inputs start from random signs and the window is cut to the
input's width, so `{kind: square}` and the suite's Square also run on tabular data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from core.specs.evaluation import SquareAttack
from models.attacks.context import SweepContext, restart_seed
from models.attacks.keyed import keyed_signs
from models.attacks.steps import admissible

Logits = Callable[[Tensor], Tensor]
P_INIT = 0.8  # the paper's (and AutoAttack's) initial fraction of pixels per square
_START = 0  # the counter of the start's keyed per-sample draws (iteration t uses 1 + t)
# the p schedule: the fraction of P_INIT in force after each of these iterations (of 10,000)
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256))


def square_fraction(iteration: int, queries: int) -> float:
    """The fraction of the image one square covers at this iteration, the schedule rescaled to `queries`."""
    scaled = int(iteration / queries * 10000)
    divisor = 512
    for bound, value in _SCHEDULE:
        if scaled <= bound:
            divisor = value
            break
    return P_INIT / divisor


@dataclass
class SquareOutcome:
    x_best: Tensor  # N×C×H×W: the best point found (misclassified where margin ≤ 0)
    margin: Tensor  # N: its margin
    queries: Tensor  # N int64: forwards spent per sample (the first, initial one included)
    pruned: Tensor  # N bool: left alone by `prune` before the budget ran out


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    rows = torch.arange(len(y), device=y.device)
    true = logits[rows, y].clone()
    others = logits.clone()
    others[rows, y] = -float("inf")
    margin: Tensor = true - others.max(dim=1).values
    return margin


class _Draws:
    """torchattacks' random draws (CPU, then moved), from our own generator; with `keys`, the
    per-sample draws come from `keyed_signs` instead (see `square_attack`)."""

    def __init__(self, seed: int, device: torch.device, keys: Tensor | None = None) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.device = device
        self.seed = seed
        self.keys = None if keys is None else keys.to(device=device, dtype=torch.long)

    def sample_signs(self, shape: list[int], counter: int, rows: Tensor | None = None, first: int = 0) -> Tensor:
        """Signs of shape [n, …], one set per sample: from the generator in torchattacks' order, or
        with keys, sign (b, j) a function of (seed, keys[rows][b], counter, first + j) only."""
        if self.keys is None:
            return self.signs(shape)
        keys = self.keys if rows is None else self.keys[rows]
        count = math.prod(shape[1:])
        return keyed_signs(self.seed, keys, counter, count, first).view(shape).to(self.device)

    def uniform(self, shape: list[int]) -> Tensor:
        return torch.rand(shape, generator=self.generator)

    def signs(self, shape: list[int]) -> Tensor:
        return torch.sign(2 * self.uniform(shape) - 1).to(self.device)

    def offset(self, high: int) -> int:
        return int((high * self.uniform([1])).long())

    def eta(self, s: int) -> Tensor:
        """The L2 square's pattern: two opposite halves of nested rectangles, transposed at random."""
        pattern = torch.zeros([s, s], device=self.device)
        pattern[: s // 2] = _rectangles(s // 2, s, self.device)
        pattern[s // 2:] = -_rectangles(s - s // 2, s, self.device)
        pattern /= (pattern**2).sum().sqrt()
        if self.uniform([1]) > 0.5:
            pattern = pattern.permute([1, 0])
        return pattern


def _rectangles(rows: int, cols: int, device: torch.device) -> Tensor:
    """Nested centred rectangles, the k-th weighted 1/(k+1)², unit L2 norm (the paper's L2 pattern)."""
    out = torch.zeros([rows, cols], device=device)
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        out[max(top, 0): min(top + 2 * k + 1, rows), max(left, 0): min(left + 2 * k + 1, cols)] += 1.0 / (k + 1) ** 2
        top, left = top - 1, left - 1
    return out / (out**2).sum().sqrt()


def _l2_norms(delta: Tensor) -> Tensor:
    return (delta**2).flatten(1).sum(1).sqrt().view(-1, 1, 1, 1)


def square_attack(logits: Logits, x: Tensor, y: Tensor, eps: float, norm: str, queries: int, seed: int,
                  prune: Mapping[int, float] | None = None,
                  watch: Callable[[int, Tensor, Tensor], None] | None = None,
                  keys: Tensor | None = None) -> SquareOutcome:
    """Square on N×C×H×W inputs x in [0, 1] with true labels y; `queries` iterations after the first.

    `watch(iteration, margin, start_margin)`, if given, sees the N margins before each iteration
    (benchmarks/square_pruning.py reads the trajectories with it).

    `keys` (N int64, the samples' global indices): a sample's search then depends on (seed, its
    key, its input) only, not on its row or on the other samples of the batch. Without keys every
    draw comes from one generator in torchattacks' order, the per-sample ones included (the L∞
    start's signs [n, c, 1, w], the L2 start's signs per grid cell [n, c, 1, 1], the L2 candidate's
    [n, c, 1, 1] per iteration), so they depend on the batch. With keys those come from
    `keyed_signs(seed, key, counter, element)` (counter 0 for the start, 1 + t at iteration t), and
    the generator draws only what the whole batch shares (window positions, the L2 pattern's
    transpose, the L∞ window's signs [c, 1, 1]): the same amount per iteration whatever N is.
    """
    n, c, h, w = x.shape
    features = c * h * w
    if keys is not None and keys.shape != (n,):
        raise ValueError(f"keys must hold one index per sample ({n}), got shape {tuple(keys.shape)}")
    draws = _Draws(seed, x.device, keys)
    if norm == "linf":
        x_best = torch.clamp(x + eps * draws.sample_signs([n, c, 1, w], _START), 0.0, 1.0)
    else:
        x_best = torch.clamp(x + eps * _l2_start(draws, x), 0.0, 1.0)
    margin = _margin(logits(x_best), y)
    start_margin = margin.clone()
    spent = torch.ones(n, dtype=torch.long, device=x.device)
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    prune = prune or {}
    for iteration in range(queries):
        if watch is not None:
            watch(iteration, margin, start_margin)
        if iteration in prune:
            active &= ~((margin > 0) & (margin > prune[iteration] * start_margin))
        todo = ((margin > 0) & active).nonzero().flatten()
        if not len(todo):
            break
        p = square_fraction(iteration, queries)
        x_now, best_now = x[todo], x_best[todo]
        if norm == "linf":
            candidate = _linf_candidate(draws, x_now, best_now, eps, p, features)
        else:
            candidate = _l2_candidate(draws, x_now, best_now, eps, p, features, iteration, todo)
        new_margin = _margin(logits(candidate), y[todo])
        better = new_margin < margin[todo]
        margin[todo] = torch.where(better, new_margin, margin[todo])
        x_best[todo] = torch.where(better.view(-1, 1, 1, 1), candidate, best_now)
        spent[todo] += 1
    return SquareOutcome(x_best, margin, spent, ~active & (margin > 0))


def _linf_candidate(draws: _Draws, x: Tensor, best: Tensor, eps: float, p: float, features: int) -> Tensor:
    c, h, w = x.shape[1:]
    s = max(round(math.sqrt(p * features / c)), 1)
    vh, vw = draws.offset(h - s), draws.offset(w - s)
    step = torch.zeros([c, h, w], device=x.device)
    step[:, vh: vh + s, vw: vw + s] = 2.0 * eps * draws.signs([c, 1, 1])
    candidate = torch.min(torch.max(best + step, x - eps), x + eps)
    return torch.clamp(candidate, 0.0, 1.0)


def _l2_start(draws: _Draws, x: Tensor) -> Tensor:
    """A grid of L2 squares with random signs, scaled to unit norm per sample; inputs too small for a
    5 × 5 grid of squares (vectors, seen as 1 × D images) start from random signs instead."""
    n, c, h, w = x.shape
    if h < 5 or w < 5:
        signs = draws.sample_signs([n, c, h, w], _START)
        return signs / (_l2_norms(signs) + 1e-12)
    delta = torch.zeros_like(x)
    s = h // 5
    first = (h - s * 5) // 2
    cells = x.shape[3] // s
    for row in range(h // s):
        for col in range(cells):
            vh, vw = first + row * s, first + col * s
            pattern = draws.eta(s).view(1, 1, s, s)
            signs = draws.sample_signs([n, c, 1, 1], _START, first=(row * cells + col) * c)
            delta[:, :, vh: vh + s, vw: vw + s] += pattern * signs
    return delta / (_l2_norms(delta) + 1e-12)


def _l2_candidate(draws: _Draws, x: Tensor, best: Tensor, eps: float, p: float, features: int, iteration: int,
                  rows: Tensor) -> Tensor:
    """Move the mass of one random window into another, keeping the whole perturbation's L2 norm ≤ eps;
    `rows`: the batch rows of x (their keys draw the per-sample signs)."""
    n, c, h, w = x.shape
    s = max(round(math.sqrt(p * features / c)), 3)
    s += 1 - s % 2  # odd
    s = min(s, h, w)  # an image narrower than the square (a vector): the window is as wide as it
    delta = best - x
    vh, vw = draws.offset(h - s), draws.offset(w - s)
    vh2, vw2 = draws.offset(h - s), draws.offset(w - s)
    window = delta[:, :, vh: vh + s, vw: vw + s]
    window_norm = (window**2).sum(dim=(-2, -1), keepdim=True).sqrt()
    both = torch.zeros_like(x)
    both[:, :, vh: vh + s, vw: vw + s] = 1.0
    both[:, :, vh2: vh2 + s, vw2: vw2 + s] = 1.0
    image_norm, windows_norm = _l2_norms(delta), _l2_norms(delta * both)
    pattern = draws.eta(s).view(1, 1, s, s)
    fresh = torch.ones([n, c, s, s], device=x.device) * pattern * draws.sample_signs([n, c, 1, 1], 1 + iteration, rows)
    fresh = fresh + window / (1e-12 + window_norm)
    budget = torch.clamp(eps**2 - image_norm**2, min=0.0) / c + windows_norm**2
    fresh = fresh / (1e-12 + (fresh**2).sum(dim=(-2, -1), keepdim=True).sqrt()) * budget.sqrt()
    delta = delta.clone()
    delta[:, :, vh2: vh2 + s, vw2: vw2 + s] = 0.0
    delta[:, :, vh: vh + s, vw: vw + s] = fresh
    return torch.clamp(x + delta / (_l2_norms(delta) + 1e-12) * eps, 0.0, 1.0)


def _logits(model: Callable[[Tensor], Tensor], shape: torch.Size, v: Tensor) -> Tensor:
    """The fp32 logits of images v, seen by the model in its own input shape."""
    return model(v.reshape(len(v), *shape)).float()


def square_at(ctx: SweepContext, i: int, queries: int, stream: int = 0,
              prune: Mapping[int, float] | None = None, among: Tensor | None = None) -> int:
    """Square at radius i on the samples still unbroken there (and in `among`, an N bool mask, if
    given), seeded with (ctx.seed, i, stream); returns how many of them `prune` left alone before
    their budget ran out.

    Each chunk of batch_size samples is one search with the same seed and the samples' global
    indices as keys (`square_attack`): a sample's search is the same in any batch or shard. Vectors
    go in as N×1×1×D, and a sample counts as broken only when its point is admissible and an fp32
    forward misclassifies it.
    """
    eps, seed = ctx.eps[i], restart_seed(ctx.seed, i, stream)
    pruned = 0
    todo = ctx.advance(i)
    if among is not None:
        todo = todo[among[todo]]
    for index in ctx.chunks(todo):
        xb, yb = ctx.batch(index)
        images = xb if xb.dim() == 4 else xb.reshape(len(xb), 1, 1, -1)
        with torch.no_grad():
            out = square_attack(partial(_logits, ctx.model, xb.shape[1:]), images, yb, eps=eps, norm=ctx.norm,
                                queries=queries, seed=seed, prune=prune, keys=ctx.keys(index))
        x_adv = out.x_best.reshape(xb.shape)
        pruned += int(out.pruned.sum())
        ctx.mark(i, index, ctx.misclassified(x_adv, yb) & admissible(xb, x_adv, eps, ctx.norm), x_adv)
    return pruned


def run_square(ctx: SweepContext, spec: SquareAttack) -> None:
    """`{kind: square}`: Square (`spec.queries`, no pruning) at each radius, on what smaller ones left."""
    for i in range(len(ctx.eps)):
        if ctx.advance(i).numel():
            square_at(ctx, i, spec.queries)
