"""Each validity check fails on a model built to trip it and passes on a healthy one; the README
demo's attack settings give no FAIL on a plain model; failed training runs stay out of summaries."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from core.enums import Task
from core.reports import RunReport
from core.specs import DigitsDataset, EvaluationSpec, TrainingSpec, load_spec
from core.specs.model import MLPModel
from core.specs.regularizers import NoRegularizer
from models.architectures import build_from_spec
from models.datasets import load_dataset
from models.evaluation.checks import training_healthy
from models.evaluation.evaluate import ModelEvaluation, evaluate_model
from models.regularizers import build_regularizer
from models.training import EpochRecord, fit
from reports.statistics import summarize

REPO = Path(__file__).resolve().parents[2]
SPEC = EvaluationSpec(max_samples=150)  # the default: the standard suite, L∞ ε 0.1 and 0.2


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DigitsDataset(name="digits", train_size=500, test_size=150, seed=0))


def _train(digits, seed: int, hidden: int = 64, epochs: int = 10):
    torch.manual_seed(seed)
    model = build_from_spec(MLPModel(architecture="mlp", params={"hidden": [hidden]}), digits.input_shape, 10,
                            digits.channel_stats())
    result = fit(model, build_regularizer(NoRegularizer(name="e", kind="none"), Task.CLASSIFICATION), digits,
                 TrainingSpec(epochs=epochs, batch_size=32, lr=3e-3), seed=seed, device=torch.device("cpu"))
    return model.eval(), result.history


@pytest.fixture(scope="module")
def healthy(digits):
    return _train(digits, 0)


class _Wrap(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


class Rounded(_Wrap):
    """Inputs rounded to {0, 1}: no input gradient at all (shattered gradients)."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(torch.round(x))
        return out


class PartlyRounded(_Wrap):
    """Three of every four pixels rounded: 75 % zero gradient entries, yet no all-zero gradient."""

    def forward(self, x: Tensor) -> Tensor:
        mask = torch.ones_like(x)
        mask.flatten(1)[:, ::4] = 0
        out: Tensor = self.inner(mask * torch.round(x) + (1 - mask) * x)
        return out


class Randomized(_Wrap):
    """Gaussian noise on every forward pass: predictions change from one pass to the next."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x + 0.3 * torch.randn_like(x))
        return out


class Evader(_Wrap):
    """Answers the attack (inputs that require a gradient) with negated logits, verdicts honestly."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        return -out if x.requires_grad else out


class Wavy(_Wrap):
    """x + 0.02·sin(1000·x) before the network: a rugged loss on which the attack keeps gaining."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x + 0.02 * torch.sin(1000 * x))
        return out


class Constant(nn.Module):
    """A collapsed network: the same logits for every input."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 1.0] + [0.0] * 8))

    def forward(self, x: Tensor) -> Tensor:
        return self.bias.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


_CACHE: dict[str, ModelEvaluation] = {}


def _statuses(name: str, model: nn.Module, digits, **kwargs) -> dict[str, str]:
    if name not in _CACHE:
        _CACHE[name] = evaluate_model(model.eval(), digits, SPEC, **kwargs)
    return {c.name: c.status for c in _CACHE[name].checks}


NEW_CHECKS = ("training_healthy", "predictions_deterministic", "input_gradients_healthy", "black_box_not_stronger",
              "silent_success", "incomplete_optimization", "unbounded_eps_breaks_all", "transfer_not_stronger")


def test_healthy_model_passes_every_check(digits, healthy) -> None:
    model, history = healthy
    other, _ = _train(digits, 1)
    statuses = _statuses("healthy", model, digits, history=history, surrogate=("seed 1", other))
    assert set(NEW_CHECKS) <= set(statuses), statuses
    assert all(s == "pass" for s in statuses.values()), statuses
    evaluation = _CACHE["healthy"]
    assert evaluation.trustworthy and not evaluation.training_failed
    # the black-box check ran at every radius, and the suite's members are in the result
    radii = next(c for c in evaluation.checks if c.name == "black_box_not_stronger").values["radii"]
    assert sorted(r["eps"] for r in radii) == [0.1, 0.2]
    assert {m.member for m in evaluation.suite_members} >= {"apgd-ce", "apgd-t", "square"}
    assert evaluation.attack_costs[0].label == "suite-standard" and evaluation.attack_costs[0].gradient_evaluations > 0


@pytest.mark.parametrize(("name", "build", "check"), [
    ("constant", lambda m: Constant(), "training_healthy"),
    ("randomized", Randomized, "predictions_deterministic"),
    ("partly-rounded", PartlyRounded, "input_gradients_healthy"),
    ("evader", Evader, "silent_success"),
    ("evader", Evader, "black_box_not_stronger"),
    ("wavy", Wavy, "incomplete_optimization"),
    ("rounded", Rounded, "unbounded_eps_breaks_all"),
])
def test_each_check_fails_on_a_model_built_to_trip_it(digits, healthy, name, build, check) -> None:
    statuses = _statuses(name, build(healthy[0]), digits)
    assert statuses[check] == "fail", statuses
    assert not _CACHE[name].trustworthy


def test_transfer_from_the_baseline_catches_masking(digits, healthy) -> None:
    model, _ = healthy
    statuses = _statuses("rounded-transfer", Rounded(model), digits, surrogate=("erm", model))
    assert statuses["transfer_not_stronger"] == "fail", statuses


def test_partly_rounded_has_no_all_zero_gradient(digits, healthy) -> None:
    """The old check counted only all-zero gradients: this model would have passed it."""
    _statuses("partly-rounded", PartlyRounded(healthy[0]), digits)
    check = next(c for c in _CACHE["partly-rounded"].checks if c.name == "input_gradients_healthy")
    assert check.values["zero"] == 0 and check.values["zero_entries"] > 0.5


def _history(task_losses: list[float]) -> list[EpochRecord]:
    return [EpochRecord(epoch=i + 1, loss=v, task_loss=v, penalty=0.0, seconds=1.0, samples_per_second=1.0)
            for i, v in enumerate(task_losses)]


def test_training_healthy_on_histories() -> None:
    good = _history([2.0, 0.8, 0.4, 0.3])
    assert training_healthy(0.95, 0.1, good, 10).status == "pass"
    assert training_healthy(0.138, 0.1, good, 10).status == "fail"  # 13.8 % on 10 classes: near chance
    assert training_healthy(0.9, 0.1, _history([2.0, 0.5, math.nan]), 10).status == "fail"
    collapsed = training_healthy(0.9, 0.1, _history([2.0, 0.4, 0.3, 2.1]), 10)  # gave back most of its gain
    assert collapsed.status == "fail" and collapsed.values["given_back"] > 0.5
    assert training_healthy(0.9, 0.1, _history([2.0, 0.4, 0.3, 0.8]), 10).status == "warn"


def test_failed_training_runs_are_left_out_of_the_summary(digits, healthy) -> None:
    def run(name: str, seed: int, failed: bool) -> RunReport:
        return RunReport(regularizer=name, kind="none", seed=seed, clean_accuracy=0.1 if failed else 0.9, samples=10,
                         robust=[], worst_case=[], training_failed=failed, trustworthy=not failed)

    runs = [run("erm", 0, False), run("erm", 1, False), run("bf16", 0, True), run("bf16", 1, False)]
    summary = {s.regularizer: s for s in summarize(runs, "erm")}
    assert summary["bf16"].clean_accuracy.n == 1 and summary["bf16"].clean_accuracy.mean == pytest.approx(0.9)


def test_readme_demo_attacks_give_no_fail_on_a_plain_model(digits) -> None:
    """examples/digits-quick.yaml's evaluation (the README demo) on a plain ERM MLP: no check fails."""
    spec = load_spec(REPO / "examples" / "digits-quick.yaml")
    model, history = _train(digits, 0, hidden=256, epochs=20)
    evaluation = evaluate_model(model, digits, spec.evaluation.model_copy(update={"max_samples": 150}),
                                history=history)
    failed = [(c.name, c.detail) for c in evaluation.checks if c.status == "fail"]
    assert not failed
