"""The ε-sweep engine against torchattacks, its sweep rules, and what it saves.

All on an MLP trained for a few epochs on the bundled digits (about a second on one core), so
that clean accuracy is high and attacks have something to break at the radii used here.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torchattacks
from torch import Tensor, nn

from core.enums import AttackKind
from core.specs.evaluation import AutoAttackSpec, FGSMAttack, PGDAttack, SquareAttack
from models.attacks import ATTACKS, AttackResult, fgsm_examples, run_attack
from models.attacks.steps import admissible, pgd_run, random_start
from models.attacks.sweep import restart_seed
from tests.unit.attack_fixtures import trained_digits_mlp

EPS_LINF = [0.02, 0.05, 0.1, 0.2]
EPS_L2 = [0.25, 0.5, 1.0, 2.0]
N = 200
ONE_BLOCK = 1 << 30  # start_block: all samples' starts drawn as one block, as torchattacks draws its batch


class Counting(nn.Module):
    """Counts the samples that go through forward passes (the unit of attack cost)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.samples = 0

    def forward(self, x: Tensor) -> Tensor:
        self.samples += x.shape[0]
        out: Tensor = self.inner(x)
        return out


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    """(model in eval mode, N test inputs, labels): an MLP with ~95 % clean accuracy on digits."""
    return trained_digits_mlp(N)


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        correct: Tensor = model(x).argmax(dim=1) == y
    return correct


def _reference(model: nn.Module, x: Tensor, y: Tensor, make, eps_list: list[float], seed: int = 0) -> Tensor:
    """torchattacks called once per ε: E×N bool correct (the naive loop the sweep replaces).

    The global RNG is seeded as the sweep seeds its generator for (seed, ε index, restart 0, block
    0), so with one block of samples (start_block=ONE_BLOCK) both start from the very same points.
    """
    rows = []
    for i, eps in enumerate(eps_list):
        torch.manual_seed(restart_seed(seed, i, 0))
        rows.append(_accuracy(model, make(model, eps)(x, y), y))
    return torch.stack(rows)


def test_every_attack_kind_is_registered() -> None:
    assert ATTACKS.missing() == []
    assert {k.value for k in ATTACKS} == {"fgsm", "pgd", "autoattack", "square", "apgd", "suite"}


def test_fgsm_inputs_equal_torchattacks_and_accuracy_matches(trained) -> None:
    model, x, y = trained
    ours = fgsm_examples(model, x, y, EPS_LINF, "linf", batch_size=64)
    reference = torch.stack([torchattacks.FGSM(model, eps=e)(x, y) for e in EPS_LINF])
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    per_eps = torch.stack([_accuracy(model, r, y) for r in reference])
    for i, e in enumerate(EPS_LINF):  # one radius alone: the same verdict sample by sample
        alone = run_attack(model, x, y, FGSMAttack(kind="fgsm", eps=[e]), seed=0, batch_size=64)
        assert torch.equal(alone.correct[0], per_eps[i])
    # The sweep applies "broken at ε ⇒ broken at every ε' ≥ ε" to the same verdicts.
    swept = run_attack(model, x, y, FGSMAttack(kind="fgsm", eps=EPS_LINF), seed=0, batch_size=64)
    assert torch.equal(swept.correct, per_eps.int().cummin(dim=0).values.bool())
    assert swept.label == "fgsm" and swept.eps == EPS_LINF and swept.correct.shape == (len(EPS_LINF), N)


def test_fgsm_l2_steps_are_inside_the_ball(trained) -> None:
    model, x, y = trained
    ours = fgsm_examples(model, x, y, EPS_L2, "l2")
    for i, e in enumerate(EPS_L2):
        assert admissible(x, ours[i], e, "l2").all()
    result = run_attack(model, x, y, FGSMAttack(kind="fgsm", norm="l2", eps=EPS_L2), seed=0, batch_size=64)
    assert result.accuracy()[-1] < result.accuracy()[0]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_is_never_weaker_than_torchattacks(trained, norm: str, random_start: bool) -> None:
    """Same eps, alpha, steps and (one block of samples: start_block=ONE_BLOCK) the same random
    starts as torchattacks.

    Each sample then follows torchattacks' path until its first misclassified iterate, which the
    sweep keeps while torchattacks reports the last iterate: sample by sample, whatever
    torchattacks breaks the sweep breaks too, and the accuracies differ by the samples PGD's path
    breaks and then un-breaks.
    """
    model, x, y = trained
    eps_list, steps = (EPS_LINF, 10) if norm == "linf" else (EPS_L2, 10)
    spec = PGDAttack(kind="pgd", norm=norm, eps=eps_list, steps=steps, random_start=random_start)
    ours = run_attack(model, x, y, spec, seed=0, batch_size=256, start_block=ONE_BLOCK).correct
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2

    def make(m: nn.Module, eps: float):
        return cls(m, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=random_start)

    theirs = _reference(model, x, y, make, eps_list)
    ours_acc, theirs_acc = ours.double().mean(dim=1), theirs.double().mean(dim=1)
    assert (ours_acc <= theirs_acc).all(), (ours_acc, theirs_acc)
    assert not (ours & ~theirs).any()
    assert (theirs_acc - ours_acc).max() <= 0.05, (ours_acc, theirs_acc)
    assert theirs_acc[-1] < theirs_acc[0] - 0.3  # the radii are large enough to matter


def test_pgd_with_small_batches_is_still_never_weaker(trained) -> None:
    """Starts keyed per sample (the default; other random starts than torchattacks'): with two
    restarts the accuracies still hold, up to one sample (other starts, another sample's luck)."""
    model, x, y = trained
    spec = PGDAttack(kind="pgd", eps=EPS_LINF, steps=10, restarts=2)
    ours = run_attack(model, x, y, spec, seed=0, batch_size=48).correct.double().mean(dim=1)

    def make(m: nn.Module, eps: float):
        return torchattacks.PGD(m, eps=eps, alpha=2.5 * eps / 10, steps=10)

    theirs = _reference(model, x, y, make, EPS_LINF).double().mean(dim=1)
    assert (ours <= theirs + 1 / N).all(), (ours, theirs)


def test_sweep_rules_monotone_already_broken_and_clean_errors(trained) -> None:
    model, x, y = trained
    clean = _accuracy(model, x, y)
    assert 0.85 < clean.double().mean() < 1.0  # some clean errors to check
    g = torch.Generator().manual_seed(5)
    already = torch.rand(len(EPS_LINF), N, generator=g) < 0.1
    for spec in (FGSMAttack(kind="fgsm", eps=EPS_LINF), PGDAttack(kind="pgd", eps=EPS_LINF, steps=5, restarts=2)):
        result = run_attack(model, x, y, spec, seed=3, batch_size=50, already_broken=already)
        correct = result.correct
        assert correct.dtype == torch.bool and correct.shape == (len(EPS_LINF), N)
        assert not (correct[1:] & ~correct[:-1]).any(), "correct must be non-increasing in ε"
        assert not (correct & already).any()
        assert not correct[:, ~clean].any()
        assert result.gradient_stats["samples"] == N and result.gradient_stats["nonfinite"] == 0
        assert result.seconds > 0
        # Skipping the given samples changes nothing for the others (their starts are keyed per sample).
        alone = run_attack(model, x, y, spec, seed=3, batch_size=50).correct
        assert torch.equal(correct, alone & ~already.int().cummax(dim=0).values.bool())


def test_same_seed_same_result(trained) -> None:
    model, x, y = trained
    spec = PGDAttack(kind="pgd", eps=[0.05, 0.1], steps=3, restarts=2)
    first = run_attack(model, x, y, spec, seed=7, batch_size=32)
    torch.manual_seed(99)  # the global RNG must not matter
    again = run_attack(model, x, y, spec, seed=7, batch_size=32)
    assert torch.equal(first.correct, again.correct)
    assert first.label == "pgd-3x2"
    # amp (bf16 PGD iterations on CUDA or a bf16-capable CPU) is deterministic under a seed too.
    amp = run_attack(model, x, y, spec, seed=7, batch_size=32, amp=True)
    assert torch.equal(run_attack(model, x, y, spec, seed=7, batch_size=32, amp=True).correct, amp.correct)


def test_global_rng_and_model_mode_are_left_alone(trained) -> None:
    model, x, y = trained
    model.train()
    state = torch.random.get_rng_state()
    try:
        run_attack(model, x[:16], y[:16], SquareAttack(kind="square", eps=[0.1], queries=20), seed=0, batch_size=16)
        run_attack(model, x[:16], y[:16], PGDAttack(kind="pgd", eps=[0.1], steps=2), seed=0, batch_size=16)
        assert model.training
        assert torch.equal(torch.random.get_rng_state(), state)
    finally:
        model.eval()


def test_sweep_does_far_fewer_forwards_than_one_run_per_eps(trained) -> None:
    model, x, y = trained
    steps = 10
    counting = Counting(model).eval()
    spec = PGDAttack(kind="pgd", eps=EPS_LINF, steps=steps)
    run_attack(counting, x, y, spec, seed=0, batch_size=64)
    ours, counting.samples = counting.samples, 0

    def make(m: nn.Module, eps: float):
        return torchattacks.PGD(m, eps=eps, alpha=2.5 * eps / steps, steps=steps)

    _reference(counting, x, y, make, EPS_LINF)
    naive = counting.samples
    assert naive == len(EPS_LINF) * (steps + 1) * N
    assert ours < 0.75 * naive, (ours, naive)  # 0.69 here; far less where most samples break

    counting.samples = 0
    run_attack(counting, x, y, FGSMAttack(kind="fgsm", eps=EPS_LINF), seed=0, batch_size=64)
    # one gradient pass, the clean verdict (no gradient) and at most one check per ε
    assert counting.samples <= N * (2 + len(EPS_LINF))


def test_pgd_run_keeps_the_misclassified_iterate_inside_the_ball(trained) -> None:
    model, x, y = trained
    g = torch.Generator().manual_seed(0)
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        start = random_start(x, eps, norm, g)
        assert admissible(x, start, eps, norm).all()
        found, x_found = pgd_run(model, x, y, start, eps=eps, norm=norm, steps=10, step_size=2.5 * eps / 10,
                                 autocast=contextlib.nullcontext)
        assert found.any()
        assert admissible(x[found], x_found[found], eps, norm).all()
        assert not _accuracy(model, x_found[found], y[found]).any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_run_outcome_does_not_depend_on_how_often_found_samples_leave_the_batch(trained, norm: str) -> None:
    """Dropping found samples every 5 or 50 steps (as on an accelerator) instead of every step: the
    same samples found at the same first iterates, for fewer host waits."""
    model, x, y = trained
    eps = 0.1 if norm == "linf" else 1.0
    start = random_start(x, eps, norm, torch.Generator().manual_seed(0))
    outcomes = [pgd_run(model, x, y, start, eps=eps, norm=norm, steps=20, step_size=2.5 * eps / 20,
                        autocast=contextlib.nullcontext, compact_every=every) for every in (1, 5, 50)]
    (found, x_found), *others = outcomes
    assert 0 < int(found.sum()) < len(y)
    for other_found, other_x in others:
        assert torch.equal(other_found, found)
        assert torch.allclose(other_x, x_found, atol=1e-6)


def test_bad_inputs_are_rejected(trained) -> None:
    model, x, y = trained
    spec = FGSMAttack(kind="fgsm", eps=[0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run_attack(model, x * 2 + 0.5, y, spec, seed=0, batch_size=16)
    with pytest.raises(ValueError, match="already_broken"):
        run_attack(model, x, y, spec, seed=0, batch_size=16, already_broken=torch.zeros(2, N, dtype=torch.bool))


def test_square_runs_and_never_beats_clean_accuracy(trained) -> None:
    model, x, y = trained
    xs, ys = x[:16], y[:16]
    result = run_attack(model, xs, ys, SquareAttack(kind="square", eps=[0.1, 0.3], queries=50), seed=0, batch_size=16)
    assert isinstance(result, AttackResult) and result.kind == AttackKind.SQUARE and result.label == "square-50"
    clean = float(_accuracy(model, xs, ys).double().mean())
    assert all(a <= clean for a in result.accuracy())
    assert not (result.correct[1:] & ~result.correct[:-1]).any()


def test_autoattack_runs_and_never_beats_clean_accuracy(trained) -> None:
    model, x, y = trained
    xs, ys = x[:16], y[:16]
    result = run_attack(model, xs, ys, AutoAttackSpec(kind="autoattack", eps=[0.1]), seed=0, batch_size=16)
    assert result.label == "autoattack"
    assert result.accuracy()[0] <= float(_accuracy(model, xs, ys).double().mean())
