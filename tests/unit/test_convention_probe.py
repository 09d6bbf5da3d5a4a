"""A user's model near chance because its input conventions were not declared: the probe names the one
that fixes it ([0, 255], NHWC), with the spec lines to add; probabilities declared as logits are named;
a model no convention helps is not blamed on one; the evaluate path and the gate say so (exit 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from core.reports import Report, RunReport
from core.specs.model import OnnxModel
from models.sources.conventions import InputConventions
from models.sources.probe import convention_check, diagnose_run, probe_conventions
from robustlab.cli import app
from tests.user_model_fixtures import BASE_SPEC, digits, export_onnx, trained_cnn

SECTION = OnnxModel(format="onnx", input_shape=[1, 8, 8], num_classes=10)


class Expects255(nn.Module):
    """A digits CNN exported by someone whose pipeline feeds raw pixels in [0, 255]."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(x / 255.0)


class FlatNhwc(nn.Module):
    """A linear classifier over N×H×W×C images flattened in that order: fed N×C×H×W, it runs without
    an error (the sizes agree) and classifies almost nothing correctly."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(len(x), -1) - 0.5)


@pytest.fixture(scope="module")
def cnn_and_data() -> tuple[nn.Module, Any]:
    data = digits()
    return trained_cnn(data), data


def test_a_model_that_expects_0_255_is_named_with_the_line_to_add(cnn_and_data: tuple[nn.Module, Any]) -> None:
    cnn, data = cnn_and_data
    probe = probe_conventions(Expects255(cnn).eval(), SECTION, data.x_test, data.y_test)
    assert probe.near_chance and probe.declared_accuracy < 0.2
    best = probe.best
    assert best is not None and best.changes == {"input_range": [0, 255]} and best.accuracy > 0.7
    assert best.spec_lines() == ["input_range: [0, 255]"]
    check = convention_check(probe)
    assert check.name == "input_conventions" and check.status == "fail"
    assert "input_range: [0, 255]" in check.detail and "did not train" in check.detail
    assert check.values["suggested"] == {"input_range": [0, 255]}

    # The same module declared correctly: nothing to say.
    declared = SECTION.model_copy(update={"input_range": (0.0, 255.0)})
    fine = probe_conventions(Expects255(cnn).eval(), declared, data.x_test, data.y_test)
    assert not fine.near_chance and convention_check(fine).status == "pass"


def test_an_nhwc_model_fed_nchw_is_named_with_its_layout_and_shape() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 3 * 8 * 8, generator=generator)
    x = torch.rand(200, 3, 8, 8, generator=generator)
    y = ((x.permute(0, 2, 3, 1).reshape(200, -1) - 0.5) @ weight.T).argmax(1)  # labels of the NHWC order
    section = OnnxModel(format="onnx", input_shape=[3, 8, 8], num_classes=10)
    probe = probe_conventions(FlatNhwc(weight).eval(), section, x, y)
    assert probe.near_chance
    best = probe.best
    assert best is not None and best.changes == {"layout": "nhwc", "input_shape": [8, 8, 3]}
    assert best.accuracy == 1.0
    detail = convention_check(probe).detail
    assert "layout: nhwc" in detail and "input_shape: [8, 8, 3]" in detail


def test_a_model_no_convention_helps_is_not_blamed_on_one(cnn_and_data: tuple[nn.Module, Any]) -> None:
    cnn, data = cnn_and_data
    shuffled = data.y_test[torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(1))]
    wrong = (shuffled + 1) % 10  # no label right: whatever the conventions, accuracy stays near chance
    probe = probe_conventions(cnn, SECTION, data.x_test, torch.where(wrong == data.y_test, (wrong + 1) % 10, wrong))
    assert probe.best is None and probe.candidates  # tried, none helped
    detail = convention_check(probe).detail
    assert "None of the common conventions" in detail and "input_range:" not in detail.split("(tried")[0]


def test_probabilities_declared_as_logits_are_named(cnn_and_data: tuple[nn.Module, Any]) -> None:
    cnn, data = cnn_and_data
    softmax = nn.Sequential(cnn, nn.Softmax(dim=1)).eval()
    run = _run(clean_accuracy=0.9)
    diagnosed = diagnose_run(run, InputConventions(softmax, SECTION), SECTION, data.x_test, data.y_test)
    (check,) = [c for c in diagnosed.checks if c.name == "input_conventions"]
    assert check.status == "fail" and "outputs: probabilities" in check.detail and not diagnosed.trustworthy
    # A working logits model: the run as it was, no check added.
    assert diagnose_run(run, InputConventions(cnn, SECTION), SECTION, data.x_test, data.y_test) == run


def test_diagnose_run_rewords_training_failed_for_a_model_robustlab_did_not_train(
        cnn_and_data: tuple[nn.Module, Any]) -> None:
    cnn, data = cnn_and_data
    from core.reports import Check

    healthy = Check(name="training_healthy", status="fail",
                    detail="clean accuracy 0.100 vs chance 0.100 (near chance: training failed)")
    run = _run(clean_accuracy=0.1, checks=[healthy])
    diagnosed = diagnose_run(run, Expects255(cnn).eval(), SECTION, data.x_test, data.y_test)
    details = {c.name: c.detail for c in diagnosed.checks}
    assert "training failed" not in details["training_healthy"]
    assert "input_range: [0, 255]" in details["input_conventions"]
    assert not diagnosed.training_failed and not diagnosed.trustworthy  # judged (gate exit 1), not left out
    from reports.render import cause_of_untrust

    banner = cause_of_untrust([(diagnosed, [c for c in diagnosed.checks if c.status == "fail"])])
    assert "input conventions" in banner and "gradient masking" not in banner
    registry = yaml.safe_load("{architecture: mlp}")  # a registry model is robustlab's own: not probed
    assert diagnose_run(run, cnn, registry, data.x_test, data.y_test) == run


def _run(clean_accuracy: float, checks: list[Any] | None = None) -> RunReport:
    return RunReport(regularizer="model", kind="checkpoint", seed=0, clean_accuracy=clean_accuracy, samples=60,
                     robust=[], worst_case=[], checks=checks or [])


def test_evaluate_and_gate_name_input_range_and_the_gate_exits_1(
        cnn_and_data: tuple[nn.Module, Any], tmp_path: Path) -> None:
    """The issue's case: a model that expects [0, 255], evaluated without input_range."""
    cnn, _ = cnn_and_data
    model = export_onnx(Expects255(cnn).eval(), torch.rand(2, 1, 8, 8) * 255, tmp_path / "raw255.onnx")
    spec = {**BASE_SPEC, "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.1]}], "seed": 0}}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = {"ROBUSTLAB_URL": None, "ROBUSTLAB_API_KEY": None, "GITHUB_STEP_SUMMARY": None}
    evaluated = CliRunner().invoke(app, ["evaluate", "--model", str(model), "--spec", str(spec_file),
                                         "--out", str(tmp_path / "eval"), "--threads", "1"], env=env)
    assert evaluated.exit_code == 0, evaluated.output
    assert "input_range: [0, 255]" in evaluated.output and "raw255" in evaluated.output  # the table shows the model
    report = Report.model_validate_json((tmp_path / "eval" / "report.json").read_text())
    assert any(c.name == "input_conventions" and c.status == "fail" for c in report.runs[0].checks)

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"min_clean_accuracy": 0.8, "min_robust_accuracy": [
        {"attack": "fgsm", "norm": "linf", "eps": 0.1, "min": 0.3}]}))
    summary = tmp_path / "summary.md"
    gated = CliRunner().invoke(app, ["gate", "--local", "--model", str(model), "--spec", str(spec_file),
                                     "--policy", str(policy), "--threads", "1", "--summary", str(summary)], env=env)
    assert gated.exit_code == 1, gated.output  # a model that misses its thresholds, not "could not judge"
    assert "input_range: [0, 255]" in gated.stdout and "0 models" not in gated.output
    assert "| clean_accuracy |" in gated.stdout and "FAILED" in gated.stdout
    assert summary.read_text().strip() == gated.stdout.strip()  # --summary FILE: the same markdown (GitLab keeps it)
