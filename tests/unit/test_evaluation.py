"""Evaluation bookkeeping on constructed cases, and the validity checks on masked and normal models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from core.enums import Task
from core.specs import DigitsDataset, EvaluationSpec, TrainingSpec
from core.specs.model import MLPModel
from core.specs.regularizers import NoRegularizer
from models.architectures import build_from_spec
from models.datasets import load_dataset
from models.evaluation.evaluate import evaluate_model, worst_case_curves
from models.regularizers import build_regularizer
from models.training import fit

B = torch.tensor


def test_worst_case_is_the_and_over_attacks_and_smaller_eps() -> None:
    clean = B([True, True, True, True, False])
    broken = {"linf": {0.1: B([False, True, False, False, False]),  # sample 1 broken at 0.1
                       0.2: B([False, False, True, False, False]),  # sample 2 broken at 0.2
                       0.3: B([False, False, False, False, False])}}  # nothing new at 0.3
    curve = {w.eps: w.accuracy for w in worst_case_curves(clean, broken)}
    assert curve == pytest.approx({0.1: 3 / 5, 0.2: 2 / 5, 0.3: 2 / 5})  # sample 1 stays broken


def test_worst_case_is_monotone_and_per_norm() -> None:
    clean = torch.ones(6, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    broken = {norm: {e: torch.rand(6, generator=gen) < 0.3 for e in (0.1, 0.2, 0.4, 0.8)} for norm in ("linf", "l2")}
    curves = worst_case_curves(clean, broken)
    for norm in ("linf", "l2"):
        acc = [w.accuracy for w in curves if w.norm == norm]
        assert acc == sorted(acc, reverse=True) and len(acc) == 4


# ---- checks on real models -------------------------------------------------------------------

STRONG = EvaluationSpec.model_validate({
    "attacks": [{"kind": "fgsm", "eps": [0.05, 0.1, 0.2]},
                {"kind": "pgd", "eps": [0.05, 0.1, 0.2], "steps": 10}],
    "max_samples": 150,
})


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DigitsDataset(name="digits", train_size=500, test_size=150, seed=0))


@pytest.fixture(scope="module")
def trained(digits) -> nn.Module:
    torch.manual_seed(0)
    model = build_from_spec(MLPModel(architecture="mlp", params={"hidden": [64]}), digits.input_shape, 10,
                            digits.channel_stats())
    fit(model, build_regularizer(NoRegularizer(name="e", kind="none"), Task.CLASSIFICATION), digits,
        TrainingSpec(epochs=10, batch_size=32, lr=3e-3), seed=0, device=torch.device("cpu"))
    return model.eval()


class _Quantize(nn.Module):
    """Rounds inputs to {0, 1}: the gradient is zero almost everywhere (a classic masking defence)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x)


class _Saturate(nn.Module):
    """Multiplies the logits by 10⁴: the softmax saturates and cross-entropy gradients underflow."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * 1e4


def _statuses(model: nn.Module, data) -> dict[str, str]:
    result = evaluate_model(model, data, STRONG)
    return {c.name: c.status for c in result.checks} | {"trustworthy": str(result.trustworthy)}


def test_normal_model_passes_the_checks(trained, digits) -> None:
    statuses = _statuses(trained, digits)
    assert statuses["trustworthy"] == "True", statuses
    assert statuses["input_gradients_healthy"] == "pass"
    assert statuses["large_eps_reaches_chance"] == "pass"


def test_quantized_input_model_is_flagged(trained, digits) -> None:
    masked = nn.Sequential(_Quantize(), trained).eval()
    statuses = _statuses(masked, digits)
    assert statuses["trustworthy"] == "False", statuses
    assert statuses["input_gradients_healthy"] == "fail"


def test_saturated_logits_model_is_flagged(trained, digits) -> None:
    statuses = _statuses(_Saturate(trained).eval(), digits)
    assert statuses["trustworthy"] == "False", statuses
    assert statuses["input_gradients_healthy"] == "fail"
