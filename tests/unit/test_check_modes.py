"""evaluation.checks (full | fast | off) and checks that attack like the suite (issues 22 and 23).

- `off` runs no validity check, marks the run unchecked, and a gate with require_checks_pass fails it;
- `fast` (the default) still flags a masked model, as `full` does;
- a logit-scaled model (logits × 1000: cross-entropy saturates, DLR does not) gets no failed check
  under the standard suite, and the suite's number equals the AutoAttack reference's.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from core.enums import Task
from core.reports import Cost
from core.specs import DigitsDataset, EvaluationSpec, TrainingSpec
from core.specs.evaluation import AutoAttackSpec
from core.specs.model import MLPModel
from core.specs.regularizers import NoRegularizer
from models.architectures import build_from_spec
from models.attacks import run_attack
from models.datasets import load_dataset
from models.evaluation.compare import report_of
from models.evaluation.evaluate import evaluate_model
from models.regularizers import build_regularizer
from models.training import fit
from robustlab.gate.verdict import _checks
from tests.report_fixtures import evaluate_fixture
from tests.unit.attack_fixtures import one_thread, trained_digits_mlp  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DigitsDataset(name="digits", train_size=500, test_size=100, seed=0))


@pytest.fixture(scope="module")
def plain(digits) -> nn.Module:
    torch.manual_seed(0)
    model = build_from_spec(MLPModel(architecture="mlp", params={"hidden": [64]}), digits.input_shape, 10,
                            digits.channel_stats())
    fit(model, build_regularizer(NoRegularizer(name="e", kind="none"), Task.CLASSIFICATION), digits,
        TrainingSpec(epochs=10, batch_size=32, lr=3e-3), seed=0, device=torch.device("cpu"))
    return model.eval()


class Scaled(nn.Module):
    """Logits × 1000: the softmax saturates, cross-entropy's input gradient is zero on most samples."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x) * 1000.0
        return out


class Rounded(Scaled):
    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(torch.round(x))
        return out


def test_checks_off_marks_the_run_unchecked_and_the_gate_fails_it(digits, plain) -> None:
    evaluation = evaluate_model(plain, digits, EvaluationSpec(max_samples=100, checks="off"))
    assert not evaluation.checked
    assert {c.name for c in evaluation.checks} == {"training_healthy", "predictions_deterministic"}
    run = report_of("model", "none", 0, evaluation, Cost(), None)
    assert run.checked is False
    report = evaluate_fixture()
    assert _checks(report).status == "pass"
    unchecked = report.model_copy(update={"runs": [r.model_copy(update={"checked": False}) for r in report.runs]})
    criterion = _checks(unchecked)
    assert criterion.status == "fail" and "unchecked" in criterion.detail


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_rounded_model_is_flagged_in_every_mode(digits, plain, mode) -> None:
    evaluation = evaluate_model(Rounded(plain).eval(), digits, EvaluationSpec(max_samples=100, checks=mode))
    statuses = {c.name: c.status for c in evaluation.checks}
    assert evaluation.checked and not evaluation.trustworthy, statuses
    assert statuses["unbounded_eps_breaks_all"] == "fail" and statuses["input_gradients_healthy"] == "fail"


def test_a_logit_scaled_model_gets_no_failed_check_and_the_reference_number(digits, plain) -> None:
    scaled = Scaled(plain).eval()
    spec = EvaluationSpec(max_samples=100)  # the standard suite, L∞ ε 0.1 and 0.2
    evaluation = evaluate_model(scaled, digits, spec)
    failed = {c.name: c.detail for c in evaluation.checks if c.status == "fail"}
    assert not failed and evaluation.trustworthy
    gradient = next(c for c in evaluation.checks if c.name == "input_gradients_healthy")
    assert gradient.values["ce_zero"] > 50 and gradient.values["zero"] == 0  # CE saturated, the margin is not
    x, y = digits.x_test[:100], digits.y_test[:100]
    reference = run_attack(scaled, x, y, AutoAttackSpec(kind="autoattack", eps=[0.1, 0.2]), seed=0, batch_size=256)
    suite = {w.eps: w.accuracy for w in evaluation.worst_case}
    for i, eps in enumerate(reference.eps):
        assert suite[eps] == pytest.approx(float(reference.correct[i].double().mean())), (eps, suite)


@pytest.mark.usefixtures("one_thread")
def test_checks_reuse_the_evaluations_own_pgd_exactly() -> None:
    """The FGSM / PGD checks take the samples the evaluation's PGD left standing from its run
    (evaluate._reuse_own): at the first radius the result equals PGD run on its own (the same keyed
    starts); at the next, where a survivor's start was another draw, it is within 3 samples of it."""
    from core.specs.evaluation import FGSMAttack, PGDAttack
    from models.evaluation.evaluate import _reuse_own, evaluate_shard

    model, x, y = trained_digits_mlp(100)
    data = load_dataset(DigitsDataset(name="digits", seed=0))
    fgsm = FGSMAttack(kind="fgsm", norm="linf", eps=[0.05, 0.1])
    pgd = PGDAttack(kind="pgd", norm="linf", eps=[0.05, 0.1], steps=20)
    evaluation = EvaluationSpec(attacks=[fgsm, pgd], max_samples=100)
    outcome = evaluate_shard(model, data, evaluation, 0, 100)
    results = list(zip(evaluation.attacks, outcome.attacks, strict=True))
    for eps in pgd.eps:
        single = pgd.model_copy(update={"eps": [eps]})
        found = _reuse_own(single, results, outcome.clean_correct)
        assert found is not None
        survived, attack = found
        index = attack.nonzero().flatten()
        survived[index] = run_attack(model, x[index], y[index], single, seed=0, batch_size=256).correct[0]
        alone = run_attack(model, x, y, single, seed=0, batch_size=256).correct[0]
        if eps == pgd.eps[0]:
            assert torch.equal(survived, alone)
        assert abs(int(survived.sum()) - int(alone.sum())) <= 3, (eps, int(survived.sum()), int(alone.sum()))
        assert int(attack.sum()) < 100  # it attacked fewer samples than the run on its own
    assert _reuse_own(pgd.model_copy(update={"eps": [0.3]}), results, outcome.clean_correct) is None
