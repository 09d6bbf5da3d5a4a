"""APGD against torchattacks' APGD / APGDT, the standard suite against the AutoAttack reference, and
the suite's sweep rules, on a small MLP trained for a second on scikit-learn's digits."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from pydantic import ValidationError
from torch import Tensor, nn

from core.specs import EvaluationSpec
from core.specs.evaluation import APGDAttack, AutoAttackSpec, PGDAttack, SquareAttack, SuiteSpec
from models.architectures import build_model
from models.attacks import context as context_module
from models.attacks import run_attack
from models.attacks.apgd import apgd_run, dlr_loss
from models.datasets import load_dataset
from tests.unit.attack_fixtures import trained_digits_mlp

N = 120


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    """(model in eval mode, N test inputs, labels): an MLP with ~95 % clean accuracy on digits."""
    return trained_digits_mlp(N)


def _torchattacks_start(x: Tensor, eps: float, norm: str) -> Tensor:
    """The start torchattacks' APGD draws right after torch.manual_seed (its attack_single_run)."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape) - 1
        return (x + eps * t / t.flatten(1).abs().amax(1).view(-1, 1, 1, 1)).clamp(0, 1)
    t = torch.randn(x.shape)
    return (x + eps * t / ((t**2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)).clamp(0, 1)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.parametrize("loss", ["ce", "dlr", "targeted"])
def test_apgd_follows_torchattacks_step_for_step(trained, norm: str, eps: float, loss: str) -> None:
    """Same start, same schedule: the same samples broken and the same best loss on the others,
    although ours drops each sample at its first misclassified iterate and theirs runs all to the end."""
    if loss == "targeted" and norm == "l2":
        pytest.skip("torchattacks' APGDT L2 step uses the first sample's step size for the whole batch "
                    "(step_size[0]); the original, and ours, keep one step size per sample")
    model, x, y = trained
    ta_norm = {"linf": "Linf", "l2": "L2"}[norm]
    if loss == "targeted":
        reference = torchattacks.APGDT(model, norm=ta_norm, eps=eps, steps=25, n_classes=10, seed=0)
        reference.target_class = 2
        target = model(x).sort(dim=1)[1][:, -2]
    else:
        reference = torchattacks.APGD(model, norm=ta_norm, eps=eps, steps=25, loss=loss, seed=0)
        target = None
    torch.manual_seed(0)
    _, acc, loss_best, _ = reference.attack_single_run(x, y)
    torch.manual_seed(0)
    start = _torchattacks_start(x, eps, norm)
    out = apgd_run(model, x, y, start, eps=eps, norm=norm, steps=25, loss="ce" if loss == "ce" else "dlr",
                   target=target)
    assert torch.equal(~out.found, acc.bool())
    survived = ~out.found
    assert 0 < int(survived.sum()) < N
    assert torch.allclose(out.loss_best[survived], loss_best[survived], rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        assert (model(out.x_found[out.found]).argmax(1) != y[out.found]).all()
    delta = (out.x_found - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and out.x_found.min() >= 0 and out.x_found.max() <= 1


class _PartlyRounded(nn.Module):
    """Inputs within ε (L∞) of one of the `masked` clean inputs are rounded to 4 grey levels first:
    those samples have a zero input gradient, the others are the plain model."""

    def __init__(self, inner: nn.Module, masked: Tensor, eps: float) -> None:
        super().__init__()
        self.inner, self.masked, self.eps = inner, masked.flatten(1), eps

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            distance = (x.flatten(1)[:, None, :] - self.masked[None]).abs().amax(dim=2).amin(dim=1)
            mask = (distance <= self.eps + 1e-6).view(-1, *([1] * (x.dim() - 1)))
        out: Tensor = self.inner(torch.where(mask, torch.round(x * 3) / 3, x))
        return out


def test_apgd_stops_stationary_samples_without_changing_any_outcome(trained) -> None:
    """A sample at a zero gradient that stopped moving is a fixed point: dropping it saves its
    iterations and changes nothing, on the masked rows and on the others alike."""
    model, x, y = trained
    masked = torch.arange(N) < N // 2
    start = (x + 0.1 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))).clamp(0, 1)
    outcomes, counts = [], []
    for stop in (False, True):
        counted = context_module.CountingModel(_PartlyRounded(model, x[masked], 0.1))
        outcomes.append(apgd_run(counted, x, y, start, eps=0.1, norm="linf", steps=40, loss="dlr",
                                 stop_stationary=stop))
        counts.append(counted.gradients)
    full, stopped = outcomes
    assert torch.equal(full.found, stopped.found)
    assert torch.equal(full.x_found, stopped.x_found)
    assert torch.equal(full.loss_best, stopped.loss_best)
    assert torch.equal(full.x_best, stopped.x_best)
    assert torch.equal(full.loss_late.isnan(), stopped.loss_late.isnan())
    survivors_masked = int((masked & ~full.found).sum())
    assert survivors_masked > 10  # the rounded rows resist (their gradient is zero)
    # each stationary survivor costs 2 gradient evaluations (start, first step) instead of 41
    assert counts[0] - counts[1] >= survivors_masked * 38


def test_apgd_give_up_stops_only_the_rows_below_the_threshold_and_changes_no_other(trained) -> None:
    model, x, y = trained
    start = (x + 0.05 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(2)))).clamp(0, 1)
    target = model(x).sort(dim=1)[1][:, -2]
    seen: dict[int, Tensor] = {}

    def watch(i: int, rows: Tensor, best: Tensor) -> None:
        if i == 10:
            seen[i] = torch.full((N,), float("nan")).index_put((rows,), best)

    full = apgd_run(model, x, y, start, eps=0.05, norm="linf", steps=40, loss="dlr", target=target, watch=watch)
    counted = context_module.CountingModel(model)
    stopped = apgd_run(counted, x, y, start, eps=0.05, norm="linf", steps=40, loss="dlr", target=target,
                       give_up={10: -0.5})
    hopeless = seen[10] < -0.5  # NaN (found by then) is not below
    assert 0 < int(hopeless.sum()) < N
    assert not (stopped.found & hopeless).any()
    kept = ~hopeless
    assert torch.equal(full.found[kept], stopped.found[kept])
    assert torch.equal(full.loss_best[kept], stopped.loss_best[kept])
    assert torch.equal(stopped.loss_best[hopeless], seen[10][hopeless])
    assert counted.gradients < N * 41 - int(hopeless.sum()) * 25


def test_dlr_is_invariant_to_the_logits_scale_and_shift() -> None:
    z = torch.randn(8, 10)
    y = torch.arange(8)
    target = (y + 1) % 10
    for t in (None, target):
        assert torch.allclose(dlr_loss(z, y, t), dlr_loss(5.0 * z + 3.0, y, t), atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_sweep_matches_torchattacks_apgd(trained, norm: str) -> None:
    """APGD through the sweep (radii ascending, survivors only, early stop) against torchattacks' APGD
    called once per ε on every sample: random starts differ (torchattacks draws them for the clean-
    correct samples only), so the two agree up to a few samples at each radius."""
    model, x, y = trained
    eps_list = [0.05, 0.1] if norm == "linf" else [0.5, 1.0]
    ours = run_attack(model, x, y, APGDAttack(kind="apgd", norm=norm, eps=eps_list, steps=20), seed=0, batch_size=N)
    for i, eps in enumerate(eps_list):
        attack = torchattacks.APGD(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=20, seed=0)
        with torch.no_grad():
            theirs = model(attack(x, y)).argmax(1) == y
        assert int((ours.correct[i] != theirs).sum()) <= 5, eps
        assert ours.accuracy()[i] <= float(theirs.double().mean()) + 3 / N, eps


def test_suite_is_as_strong_as_the_autoattack_reference(trained) -> None:
    """The standard suite's accuracy ≤ AutoAttack (original settings) + 0.3 pt, at a fraction of the gradients."""
    model, x, y = trained
    suite = run_attack(model, x, y, SuiteSpec(kind="suite", name="standard", norm="linf", eps=[0.1, 0.2]),
                       seed=0, batch_size=N)
    reference = run_attack(model, x, y, AutoAttackSpec(kind="autoattack", norm="linf", eps=[0.1, 0.2]),
                           seed=0, batch_size=N)
    for ours, theirs in zip(suite.accuracy(), reference.accuracy(), strict=True):
        assert ours <= theirs + 0.003
    assert suite.gradient_evaluations * 3 < reference.gradient_evaluations
    # the Square control spends 1,000 queries per survivor (issue 23; it was 100): about 6x fewer forwards here
    assert suite.forwards * 5 < reference.forwards


def test_suite_records_members_and_keeps_the_sweep_rules(trained) -> None:
    model, x, y = trained
    spec = SuiteSpec(kind="suite", name="standard", norm="linf", eps=[0.05, 0.1, 0.2])
    result = run_attack(model, x, y, spec, seed=0, batch_size=50)
    assert result.label == "suite-standard"
    acc = result.accuracy()
    assert acc == sorted(acc, reverse=True)
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
    by_eps: dict[float, list[dict]] = {}
    for m in result.members:
        by_eps.setdefault(m["eps"], []).append(m)
    assert [m["member"] for m in by_eps[0.05]][:3] == ["apgd-ce", "apgd-t", "square"]
    survivors = clean
    for eps, correct in zip(spec.eps, result.correct, strict=True):
        members = by_eps[eps]
        assert members[0]["attacked"] <= survivors  # only what smaller radii left is attacked
        for a, b in itertools.pairwise(members):
            assert b["attacked"] == a["attacked"] - a["broken"]  # each member on its predecessors' survivors
        survivors = members[-1]["attacked"] - members[-1]["broken"]
        assert survivors == int(correct.sum())
    assert sum(m["gradient_evaluations"] for m in result.members) <= result.gradient_evaluations
    again = run_attack(model, x, y, spec, seed=0, batch_size=50)
    assert torch.equal(again.correct, result.correct)  # seeded and deterministic


class _Saturated(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x) * 1e4
        return out


def test_suite_sees_through_saturated_logits(trained) -> None:
    """Cross-entropy gradients underflow on logits × 10⁴; targeted DLR is scale-invariant."""
    model, x, y = trained
    spec = SuiteSpec(kind="suite", eps=[0.1])
    plain = run_attack(model, x, y, spec, seed=0, batch_size=N).accuracy()[0]
    saturated = run_attack(_Saturated(model).eval(), x, y, spec, seed=0, batch_size=N).accuracy()[0]
    assert saturated <= plain + 0.05


class _Rounded(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(torch.round(x * 3) / 3)
        return out


def test_suite_escalates_square_on_a_rounded_model_and_gives_up_on_hopeless_samples(trained) -> None:
    """Zero input gradient: Square beats the white-box members, so it gets AutoAttack's 5,000 queries,
    minus those of the samples it is not getting anywhere with; still as strong as torchattacks' full
    Square-5000 (other random draws) at a fraction of its forwards."""
    model, x, y = trained
    rounded = _Rounded(model).eval()
    eps = [0.05, 0.1]
    suite = run_attack(rounded, x, y, SuiteSpec(kind="suite", eps=eps), seed=0, batch_size=N)
    square = run_attack(rounded, x, y, SquareAttack(kind="square", eps=eps, queries=5000), seed=0, batch_size=N)
    for ours, theirs in zip(suite.accuracy(), square.accuracy(), strict=True):
        assert ours <= theirs + 1 / N
    escalated = [m for m in suite.members if m["member"] == "square-5000"]
    assert [m["eps"] for m in escalated] == eps
    for m in escalated:
        assert m["pruned"] > m["attacked"] // 2
        assert m["forwards"] < 0.25 * m["attacked"] * 5001
    # the Square control's own 1,000 queries per survivor (issue 23; it was 100) come before the escalation
    assert suite.forwards * 2 < square.forwards


def test_bf16_pgd_never_reports_more_than_fp32(trained, monkeypatch) -> None:
    """amp: bf16 iterations, then fp32 from the same starts for what bf16 left: a superset of fp32's breaks."""
    model, x, y = trained
    spec = PGDAttack(kind="pgd", eps=[0.05, 0.1], steps=10)
    fp32 = run_attack(model, x, y, spec, seed=0, batch_size=N)
    monkeypatch.setattr(context_module, "bf16_autocast_available", lambda device: True)  # CPU bf16 (emulated)
    bf16 = run_attack(model, x, y, spec, seed=0, batch_size=N, amp=True)
    assert not (bf16.correct & ~fp32.correct).any()


def test_suite_spec_entry_and_defaults() -> None:
    spec = EvaluationSpec.model_validate({"attacks": [{"kind": "suite", "name": "standard", "norm": "linf",
                                                       "eps": [0.1, 0.2]}]})
    assert isinstance(spec.attacks[0], SuiteSpec) and spec.attacks[0].eps == [0.1, 0.2]
    assert EvaluationSpec.model_validate({"attacks": [{"kind": "suite", "name": "standard", "norm": "l2",
                                                       "eps": [1.0]}]}).attacks[0].norm == "l2"
    for default in (EvaluationSpec(), EvaluationSpec.model_validate({"attacks": []})):
        assert [(a.kind, a.norm, a.eps) for a in default.attacks] == [("suite", "linf", [0.1, 0.2])]
    with pytest.raises(ValidationError, match="cannot reach"):
        PGDAttack(kind="pgd", eps=[0.1, 0.2], steps=20, step_size=0.005)
    PGDAttack(kind="pgd", eps=[0.1, 0.2], steps=20, step_size=0.01)  # 20 × 0.01 = 0.2 reaches ε = 0.2
    with pytest.raises(ValidationError, match="targeted"):
        APGDAttack(kind="apgd", eps=[0.1], targets=3)


def test_suite_runs_on_vector_inputs() -> None:
    """Synthetic data is N×D: Square (torchattacks wants N×C×H×W) sees it through a reshaping view."""
    from core.specs import SyntheticDataset

    data = load_dataset(SyntheticDataset(name="synthetic", n_features=4, n_classes=5))
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [32]}, (4,), 5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
    model.eval()
    x, y = data.x_test[:100], data.y_test[:100]
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).double().mean())
    # L2 too: narrower than the published squares, where torchattacks' Square divides by zero
    for spec in (SuiteSpec(kind="suite", eps=[0.05, 0.1]), SuiteSpec(kind="suite", norm="l2", eps=[0.1, 0.3]),
                 SquareAttack(kind="square", norm="l2", eps=[0.1, 0.3], queries=200)):
        result = run_attack(model, x, y, spec, seed=0, batch_size=64)
        assert result.accuracy()[1] <= result.accuracy()[0] <= clean
        assert result.accuracy()[1] < clean  # it does attack
        assert spec.kind == "square" or any(m["member"] == "square" for m in result.members)
