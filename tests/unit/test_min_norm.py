"""The minimum-norm member (FMN, models/attacks/min_norm.py): as close as torchattacks' FAB, sound, and
one run for every radius of the sweep."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import Tensor, nn

from core.specs.evaluation import SuiteSpec
from models.attacks import run_attack
from models.attacks.context import CountingModel, SweepContext
from models.attacks.min_norm import fmn, min_norm_at, min_norm_distances, min_norm_state, project
from models.attacks.reference import ImageView
from models.attacks.suite import MIN_NORM, members_for
from tests.unit.attack_fixtures import one_thread, trained_digits_mlp  # noqa: F401 (a fixture)

N = 60


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = trained_digits_mlp(N)
    with torch.no_grad():
        keep = model(x).argmax(dim=1) == y
    return model, x[keep], y[keep]


def _fab_distances(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """torchattacks' FAB-T (L2, 9 targets × 100 steps, AutoAttack's setting), unbounded: its distance per sample."""
    view = ImageView(model, tuple(x.shape[1:]))
    fab = torchattacks.FAB(view, norm="L2", eps=100.0, steps=100, n_restarts=1, multi_targeted=True, n_classes=10)
    adv = fab(x.reshape(len(x), 1, 1, -1), y).reshape(x.shape)
    with torch.no_grad():
        wrong = model(adv).argmax(dim=1) != y
    return torch.where(wrong, (adv - x).flatten(1).norm(dim=1), torch.tensor(float("inf")))


def test_fmn_finds_points_as_close_as_torchattacks_fab(trained) -> None:
    model, x, y = trained
    ours = min_norm_distances(model, x, y, norm="l2")
    fab = _fab_distances(model, x, y)
    assert torch.isfinite(ours.distance).all() and torch.isfinite(fab).all()
    # every found point: misclassified by an fp32 forward, in [0, 1], at the distance reported
    with torch.no_grad():
        assert (model(ours.x_best).argmax(dim=1) != y).all()
    assert float(ours.x_best.min()) >= 0 and float(ours.x_best.max()) <= 1
    assert torch.allclose((ours.x_best - x).flatten(1).norm(dim=1), ours.distance, atol=1e-5)
    # never above the reference's distance by more than 5 % on any sample, and not above it on average
    assert (ours.distance <= 1.05 * fab + 1e-4).all(), (ours.distance / fab).max()
    assert float(ours.distance.mean()) <= float(fab.mean()) + 1e-3


def test_fmn_linf_points_are_sound(trained) -> None:
    model, x, y = trained
    out = fmn(model, x, y, norm="linf", steps=50, target=None)
    found = torch.isfinite(out.distance)
    assert found.float().mean() > 0.9
    with torch.no_grad():
        assert (model(out.x_best[found]).argmax(dim=1) != y[found]).all()
    linf = (out.x_best - x).flatten(1).abs().amax(dim=1)
    assert torch.allclose(linf[found], out.distance[found], atol=1e-6)


def test_project_moves_points_into_the_ball_and_box() -> None:
    x = torch.full((2, 4), 0.5)
    far = x + torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]])
    inside = project(x, far, 1.0, "l2")
    assert (inside - x).norm(dim=1).max() <= 1.0 + 1e-6 and float(inside.max()) <= 1.0
    assert torch.equal(project(x, far, 0.2, "linf")[1], torch.tensor([0.6, 0.5, 0.5, 0.5]))


def test_one_run_answers_every_radius_and_every_break_is_verified(trained) -> None:
    model, x, y = trained
    counted = CountingModel(model)
    eps = [0.3, 0.45, 0.6, 5.0]
    ctx = SweepContext(model=counted, x=x, y=y, eps=eps, broken=torch.zeros(len(eps), len(y), dtype=torch.bool),
                       batch_size=16, seed=0, norm="l2")
    ctx.clean_pass()
    after_clean = counted.gradients
    min_norm_at(ctx, 0)
    state = min_norm_state(ctx)
    assert state is not None and not torch.isnan(state.distance).any()  # every survivor attacked once
    spent = counted.gradients
    assert spent > after_clean
    for i in range(1, len(eps)):
        min_norm_at(ctx, i)
    assert counted.gradients == spent  # later radii: forwards only
    for i, e in enumerate(eps):
        broken = ctx.broken[i]
        assert torch.equal(broken, broken | (ctx.broken[i - 1] if i else broken))  # monotone
        points = project(x[broken], state.x_best[broken], e, "l2")
        assert ((points - x[broken]).flatten(1).norm(dim=1) <= e * (1 + 1e-5)).all()
        with torch.no_grad():
            assert (model(points).argmax(dim=1) != y[broken]).all()
    assert 0 < int(ctx.broken[0].sum()) < int(ctx.broken[2].sum())
    assert bool(ctx.broken[-1].all())  # ε 5 on 8×8 digits: every sample has a point within it


def test_l2_suite_runs_the_min_norm_member_before_square(trained) -> None:
    assert MIN_NORM in members_for(10, "l2") and MIN_NORM not in members_for(10, "linf")
    assert members_for(10, "l2")[-1].kind == "square" and members_for(2, "l2")[-2] == MIN_NORM
    model, x, y = trained
    result = run_attack(model, x, y, SuiteSpec(kind="suite", norm="l2", eps=[0.4, 0.6]), seed=0, batch_size=64)
    records = [m for m in result.members if m["member"] == MIN_NORM.name]
    assert [r["eps"] for r in records] == [0.4, 0.6]
    assert records[1]["gradient_evaluations"] == 0  # the second radius reuses the first run's distances


def test_min_norm_consistent_catches_survivors_within_eps_and_passes_true_ones(trained) -> None:
    """The check that would have caught the L2 miss (issue 23): survivors an attack failed on (here
    every sample, as if nothing had broken any) are found within ε and fail a strong evaluation
    (warn a bare FGSM / PGD one); the survivors of the L2 suite itself pass."""
    from models.evaluation.checks import min_norm_consistent

    model, x, y = trained
    radii = [1.0, 2.0]
    everyone = {"l2": {eps: torch.ones(len(x), dtype=torch.bool) for eps in radii}}
    missed = min_norm_consistent(model, x, y, everyone, strong=True)
    assert missed is not None and missed.status == "fail" and missed.values["within"] > 0.5 * len(x), missed
    weak = min_norm_consistent(model, x, y, everyone, strong=False)
    assert weak is not None and weak.status == "warn"
    suite = run_attack(model, x, y, SuiteSpec(kind="suite", norm="l2", eps=radii), seed=0, batch_size=256)
    survivors = {"l2": {eps: suite.correct[i].cpu() for i, eps in enumerate(radii)}}
    honest = min_norm_consistent(model, x, y, survivors, strong=True)
    assert honest is None or honest.status != "fail", honest
