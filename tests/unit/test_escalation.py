"""Escalation before reporting (issue 23): BPDA twins, Square at full budget, EOT, trust per radius.

Tiny digits models: a rounded-input model (zero gradients: escalates through a straight-through
twin and reports the lowest number any step reached), a model with its own straight-through
rounding (healthy gradients: nothing escalates), a randomized one (EOT with the spec's draws, the
sampling error reported) and a plain one (no escalation: its cost does not grow).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from core.enums import Task
from core.reports import Cost
from core.specs import DigitsDataset, EvaluationSpec, TrainingSpec
from core.specs.evaluation import APGDAttack
from core.specs.model import MLPModel
from core.specs.regularizers import NoRegularizer
from models.architectures import build_from_spec
from models.attacks import run_attack
from models.attacks.bpda import straight_through
from models.datasets import load_dataset
from models.evaluation.compare import report_of
from models.evaluation.defended import FlippedStraightThrough, Randomized, Rounded, StraightThrough
from models.evaluation.evaluate import evaluate_model
from models.regularizers import build_regularizer
from models.training import fit
from robustlab.gate.policy import GatePolicy
from robustlab.gate.verdict import _checks

SPEC = EvaluationSpec(max_samples=100)  # the standard suite, L∞ ε 0.1 and 0.2


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


_CACHE: dict[str, object] = {}


def _evaluate(name: str, model: nn.Module, digits, spec: EvaluationSpec = SPEC):
    if name not in _CACHE:
        _CACHE[name] = evaluate_model(model.eval(), digits, spec)
    return _CACHE[name]


def test_straight_through_twin_has_the_models_outputs_and_a_gradient(digits, plain) -> None:
    model = Rounded(plain).eval()
    x = digits.x_test[:16]
    twin, replaced = straight_through(model, x)
    assert replaced == ["round"]
    assert torch.equal(twin(x), model(x))
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(twin(x).sum(), x)
    assert grad.abs().sum() > 0
    assert straight_through(plain, x.detach()) is None  # nothing to replace


def test_rounded_model_escalates_to_the_bpda_number(digits, plain) -> None:
    model = Rounded(plain).eval()
    evaluation = _evaluate("rounded", model, digits)
    names = {e.name for e in evaluation.escalations}
    assert "bpda-suite" in names and "square-5000" in names, names
    assert sum(e.broken for e in evaluation.escalations if e.name == "bpda-suite") > 0
    assert all(t.status == "escalated" for t in evaluation.radius_trust), evaluation.radius_trust
    # at most the BPDA-APGD number (APGD-CE 100 iterations through the straight-through twin)
    twin, _ = straight_through(model, digits.x_test[:16])
    bpda = run_attack(twin, digits.x_test[:100], digits.y_test[:100],
                      APGDAttack(kind="apgd", eps=[0.1, 0.2], steps=100), seed=0, batch_size=256)
    worst = {w.eps: w.accuracy for w in evaluation.worst_case}
    for i, eps in enumerate(bpda.eps):
        assert worst[eps] <= float(bpda.correct[i].double().mean()) + 0.005, (eps, worst)
    suite = {r.eps: r.accuracy for r in evaluation.robust if r.attack == "suite"}
    assert suite == pytest.approx(worst)  # the suite's entry is the lowest any step reached
    run = report_of("rounded", "none", 0, evaluation, Cost(), None)
    assert run.escalated and not run.trustworthy


def test_gate_passes_an_escalated_run_only_on_the_escalated_number(digits, plain) -> None:
    from core.reports import Report
    from reports.statistics import summarize

    evaluation = _evaluate("rounded", Rounded(plain).eval(), digits)
    run = report_of("model", "none", 0, evaluation, Cost(), None)
    report = Report(kind="evaluate", spec={}, spec_hash="x", environment={}, runs=[run],
                    summary=summarize([run], "model"),
                    checks=run.checks)
    on_worst = GatePolicy.model_validate({"min_robust_accuracy": [
        {"attack": "worst_case", "norm": "linf", "eps": 0.1, "min": 0.0}]})
    on_pgd = GatePolicy.model_validate({"min_robust_accuracy": [
        {"attack": "pgd", "norm": "linf", "eps": 0.1, "min": 0.0}]})
    passed = _checks(report, on_worst)
    assert passed.status == "pass" and passed.actual == "escalated", passed
    assert _checks(report, on_pgd).status == "fail"
    flagged = run.model_copy(update={"radius_trust": [t.model_copy(update={"status": "flagged"})
                                                      for t in run.radius_trust]})
    report = report.model_copy(update={"runs": [flagged]})
    assert _checks(report, on_worst).status == "fail"


def test_straight_through_model_is_trusted_without_escalation(digits, plain) -> None:
    evaluation = _evaluate("straight-through", StraightThrough(plain), digits)
    assert not [e for e in evaluation.escalations if e.name != "square-5000"], evaluation.escalations
    assert all(t.status != "flagged" for t in evaluation.radius_trust)


def test_plain_model_does_not_escalate(digits, plain) -> None:
    evaluation = _evaluate("plain", plain, digits)
    assert evaluation.trustworthy and not evaluation.escalations
    assert all(t.status == "trusted" for t in evaluation.radius_trust)
    assert "escalation" not in evaluation.check_seconds or evaluation.check_seconds["escalation"] < 1.0


def test_randomized_model_reports_eot_draws_and_sampling_error(digits, plain) -> None:
    evaluation = _evaluate("randomized", Randomized(plain), digits, SPEC.model_copy(update={"eot": 4}))
    eot = [e for e in evaluation.escalations if e.name == "eot"]
    assert eot and all("4 draws" in e.detail and "±" in e.detail for e in eot), eot
    # the clean accuracy follows the verdict's rule too (the majority of 50 passes, not one noisy pass)
    model, x, y = Randomized(plain).eval(), digits.x_test[:100], digits.y_test[:100]
    with torch.no_grad():
        wrong = sum((model(x).argmax(dim=1) != y).int() for _ in range(50))
    majority = 1 - float((torch.as_tensor(wrong) * 2 > 50).double().mean())
    assert abs(evaluation.clean_accuracy - majority) <= 0.02, (evaluation.clean_accuracy, majority)
    # a noisy pass and the majority verdict disagree near the boundary by design: no false alarm
    assert all(c.status != "fail" for c in evaluation.checks if c.name == "silent_success"), evaluation.checks
    assert all(t.status != "trusted" for t in evaluation.radius_trust)


def test_bpda_replaces_rounding_and_integer_casts_in_an_onnx_graph(tmp_path) -> None:
    """An ONNX graph converted by onnx2torch (models/sources/onnx_model.py) gets its straight-through twin."""
    from models.sources.onnx_model import load_onnx

    class Quantized(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(64, 10)

        def forward(self, x: Tensor) -> Tensor:
            levels = torch.floor(x.flatten(1) * 255).to(torch.int32).to(torch.float32) / 255
            return self.linear(torch.round(levels * 3) / 3)

    torch.manual_seed(0)
    path = tmp_path / "quantized.onnx"
    torch.onnx.export(Quantized().eval(), (torch.rand(2, 1, 8, 8),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    model = load_onnx(path, 10_000_000).eval()
    x = torch.rand(8, 1, 8, 8)
    found = straight_through(model, x)
    assert found is not None
    twin, replaced = found
    assert len(replaced) >= 3, replaced  # Floor, Cast to int32, Round
    assert torch.equal(twin(x), model(x))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(twin(xg).sum(), xg)
    assert grad.abs().sum() > 0


def test_flipped_straight_through_is_close_to_its_twin_or_flagged_at_that_radius(digits, plain) -> None:
    flipped = _evaluate("flipped", FlippedStraightThrough(plain), digits)
    twin = _evaluate("straight-through", StraightThrough(plain), digits)
    honest = {w.eps: w.accuracy for w in twin.worst_case}
    trust = {t.eps: t.status for t in flipped.radius_trust}
    for w in flipped.worst_case:
        assert w.accuracy <= honest[w.eps] + 0.005 or trust[w.eps] != "trusted", (w, honest, trust)


def test_bpda_keeps_untraceable_parts_whole_and_still_replaces_the_rounding(digits) -> None:
    """A network with data-dependent control flow (as our input convolution's CPU fast path has)
    cannot be traced by torch.fx as a whole; its untraceable part is kept whole, and the rounding
    in front of it still gets its straight-through backward."""

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(64, 10)

        def forward(self, x: Tensor) -> Tensor:
            if bool(x.sum() >= 0):  # data-dependent: torch.fx cannot trace this
                return self.linear(x.flatten(1))
            return -self.linear(x.flatten(1))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(Branchy(), nn.ReLU())

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.body(x) * 2
            return out

    torch.manual_seed(0)
    model = Rounded(Net()).eval()
    x = digits.x_test[:16]
    found = straight_through(model, x)
    assert found is not None and found[1] == ["round"]
    twin = found[0]
    assert torch.equal(twin(x), model(x))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(twin(xg).sum(), xg)
    assert grad.abs().sum() > 0
