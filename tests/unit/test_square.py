"""Our Square against torchattacks' Square, query for query, and what its per-sample pruning may change."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import Tensor, nn

from models.attacks.square import square_attack, square_fraction
from tests.unit.attack_fixtures import trained_digits_mlp

N = 120


@pytest.fixture(scope="module")
def correct() -> tuple[nn.Module, Tensor, Tensor]:
    """(model, inputs, labels) of the test samples the digits MLP classifies correctly."""
    model, x, y = trained_digits_mlp(N)
    with torch.no_grad():
        right = model(x).argmax(1) == y
    return model, x[right], y[right]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_square_is_torchattacks_square_query_for_query(correct, norm: str, eps: float) -> None:
    model, x, y = correct
    reference = torchattacks.Square(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=300, seed=7)
    reference.init_hyperparam(x)
    torch.manual_seed(7)
    with torch.no_grad():
        queries, x_reference = reference.attack_single_run(x, y)
        ours = square_attack(model, x, y, eps=eps, norm=norm, queries=300, seed=7)
    broken = ours.margin <= 0
    assert 0 < int(broken.sum()) < len(y)  # the comparison covers both outcomes
    assert torch.equal(ours.x_best, x_reference)
    assert torch.equal(ours.queries, queries.long())
    assert not ours.pruned.any()


def test_pruning_changes_nothing_for_the_samples_it_keeps(correct) -> None:
    """The draws do not depend on which samples are still searched: a sample that is not pruned
    follows its unpruned trajectory exactly; a pruned one stops spending queries."""
    model, x, y = correct
    with torch.no_grad():
        full = square_attack(model, x, y, eps=0.1, norm="linf", queries=400, seed=3)
        pruned = square_attack(model, x, y, eps=0.1, norm="linf", queries=400, seed=3, prune={50: 0.9, 200: 0.6})
    kept = ~pruned.pruned
    assert pruned.pruned.any() and kept.any()
    assert torch.equal(pruned.x_best[kept], full.x_best[kept])
    assert torch.equal(pruned.queries[kept], full.queries[kept])
    assert (pruned.queries[pruned.pruned] <= 201).all()
    assert (pruned.margin[pruned.pruned] > 0).all()
    assert int(pruned.queries.sum()) < int(full.queries.sum())


def test_square_stays_in_the_ball_and_the_box(correct) -> None:
    model, x, y = correct
    for norm, eps in (("linf", 0.2), ("l2", 1.5)):
        with torch.no_grad():
            out = square_attack(model, x, y, eps=eps, norm=norm, queries=100, seed=0)
        delta = (out.x_best - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps + 1e-5).all()
        assert out.x_best.min() >= 0 and out.x_best.max() <= 1


def test_square_fraction_follows_the_papers_schedule_rescaled() -> None:
    assert square_fraction(0, 10000) == 0.8
    assert square_fraction(11, 10000) == 0.4
    assert square_fraction(1001, 10000) == 0.8 / 32
    assert square_fraction(9999, 10000) == 0.8 / 512
    assert square_fraction(500, 5000) == 0.8 / 16  # 1,000 of 10,000
