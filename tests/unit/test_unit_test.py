"""The attack unit test (binarization test of Zimmermann et al. 2022, models/evaluation/unit_test.py)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from core.specs.evaluation import FGSMAttack, SuiteSpec
from models.evaluation.unit_test import Features, attack_unit_test, binarized_classifier
from tests.unit.attack_fixtures import one_thread, trained_digits_mlp  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    return trained_digits_mlp(40)


class _NoGradient(nn.Module):
    """The network with its input gradient zeroed (same outputs, same features)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x.detach() + 0 * x)
        return out


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_the_binary_classifier_has_a_known_adversarial_point_in_the_ball(trained, norm: str, eps: float) -> None:
    model, x, _ = trained
    case = binarized_classifier(model, x[0], eps, norm, seed=0, key=0)
    assert case is not None
    binary, boundary = case
    delta = (boundary - x[0]).flatten()
    assert float(delta.abs().max() if norm == "linf" else delta.norm()) <= eps + 1e-6
    with torch.no_grad():
        assert binary(torch.stack([x[0], boundary])).argmax(dim=1).tolist() == [0, 1]
    assert Features(model).layer is not None  # the MLP's last linear layer: its input is the feature


def test_the_suite_passes_and_a_blind_attack_does_not(trained) -> None:
    model, x, y = trained
    suite = attack_unit_test(model, x, y, [SuiteSpec(kind="suite", eps=[0.05, 0.1])], samples=8)
    assert suite is not None and suite.values["feasible"] >= 6
    assert suite.status == "pass", suite.detail
    # the same network with a zero input gradient: FGSM does not move, and the test says so
    weak = attack_unit_test(_NoGradient(model), x, y, [FGSMAttack(kind="fgsm", eps=[0.1])], samples=8)
    assert weak is not None and weak.values["feasible"] == suite.values["feasible"]
    assert weak.values["passed"] == 0 and weak.status == "fail"
    assert "binarization test" in suite.detail and suite.values["tested"] == 8


def test_the_result_is_keyed_by_sample_not_by_neighbours(trained) -> None:
    model, x, y = trained
    spec = [SuiteSpec(kind="suite", norm="l2", eps=[1.0])]
    whole = attack_unit_test(model, x[:6], y[:6], spec, samples=6)
    parts = [attack_unit_test(model, x[i:i + 3], y[i:i + 3], spec, samples=3, offset=i) for i in (0, 3)]
    assert whole is not None and all(p is not None for p in parts)
    assert whole.values["passed"] == sum(p.values["passed"] for p in parts if p is not None)
    assert whole.values["feasible"] == sum(p.values["feasible"] for p in parts if p is not None)
