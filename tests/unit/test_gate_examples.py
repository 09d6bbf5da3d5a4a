"""The CI examples in examples/ci/ parse, and call `robustlab gate` only with options it has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from core.specs import load_spec
from robustlab.cli import app
from robustlab.gate.command import unevaluated
from robustlab.gate.policy import load_policy

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"
WORKFLOWS = ["github-actions.yml", "gitlab-ci.yml"]


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def gate_commands(name: str) -> list[str]:
    """Every `robustlab gate ...` command line in a workflow's run/script strings."""
    data = yaml.safe_load((CI / name).read_text())
    lines = [" ".join(s.replace("\\\n", " ").split()) for s in _strings(data)]
    return [line[line.index("robustlab gate"):] for line in lines if "robustlab gate" in line]


@pytest.fixture(scope="module")
def gate_help() -> str:
    result = CliRunner().invoke(app, ["gate", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_workflow_uses_only_options_gate_has(name: str, gate_help: str) -> None:
    commands = gate_commands(name)
    assert len(commands) == 1, commands
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", commands[0]))
    assert {"--local", "--policy", "--model", "--spec", "--junit"} <= options  # the ONNX model, gated locally
    unknown = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", gate_help))
    assert not unknown, f"{name} uses options `robustlab gate --help` does not list: {unknown}"
    assert not re.search(r"(?<![\w-])--no-such-option(?![\w-])", gate_help)  # the check above can fail


def test_the_github_workflow_publishes_the_junit_file_and_the_summary() -> None:
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    job = workflow["jobs"]["gate"]
    assert job["env"]["MODEL"] == "examples/ci/model.onnx"
    assert "${{ secrets." not in (CI / "github-actions.yml").read_text()  # --local: nothing secret needed
    junit = re.search(r"--junit (\S+)", gate_commands("github-actions.yml")[0])
    assert junit is not None
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and junit.group(1) in uploads[0]["with"]["path"] and uploads[0]["if"] == "always()"
    published = [s for s in job["steps"] if str(s.get("uses", "")).startswith("mikepenz/action-junit-report")]
    assert published and published[0]["with"]["report_paths"] == junit.group(1) and published[0]["if"] == "always()"
    assert job["permissions"]["checks"] == "write"  # the action's check run
    # The job summary: the gate appends its markdown to $GITHUB_STEP_SUMMARY (tests/unit/test_gate.py).


def test_the_gitlab_job_reports_the_junit_file_and_keeps_the_summary() -> None:
    job = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["robustness-gate"]
    command = gate_commands("gitlab-ci.yml")[0]
    junit, summary = re.search(r"--junit (\S+)", command), re.search(r"--summary (\S+)", command)
    assert junit is not None and job["artifacts"]["reports"]["junit"] == junit.group(1)
    assert summary is not None and summary.group(1) in job["artifacts"]["paths"] and job["artifacts"]["expose_as"]
    assert job["artifacts"]["when"] == "always"


def test_the_example_model_is_the_one_make_model_writes_and_meets_the_policy() -> None:
    """model.onnx is committed with the script that made it, and is good enough for the policy's clean floor."""
    import onnx
    import torch

    from models.datasets import load_dataset
    from models.sources import load_any_model

    assert (CI / "make_model.py").is_file() and "model.onnx" in (CI / "make_model.py").read_text()
    onnx.checker.check_model(onnx.load(str(CI / "model.onnx")))
    spec, policy = load_spec(CI / "spec.yaml"), load_policy(CI / "policy.yaml")
    data = load_dataset(spec.dataset)
    model = load_any_model(CI / "model.onnx", spec.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    with torch.no_grad():
        clean = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    assert policy.min_clean_accuracy is not None and clean >= policy.min_clean_accuracy + 0.01, clean


def test_the_example_policy_fits_the_example_spec() -> None:
    policy, spec = load_policy(CI / "policy.yaml"), load_spec(CI / "spec.yaml")
    assert policy.min_robust_accuracy and unevaluated(policy, spec) == []
    for name in WORKFLOWS:  # the workflows name these files
        assert "examples/ci/policy.yaml" in gate_commands(name)[0] and "examples/ci/spec.yaml" in gate_commands(name)[0]
    assert spec.model.format == "onnx"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_workflow_installs_robustlab_from_the_repository(name: str) -> None:
    """robustlab is not on PyPI: `pip install robustlab` would fail in every pipeline that copied it."""
    data = yaml.safe_load((CI / name).read_text())
    installs = [" ".join(s.split()) for s in _strings(data) if "pip install" in s]
    assert installs, name
    for line in installs:
        assert not re.search(r"pip install\b.*\srobustlab(\s|$|\[)", line), line
        assert line.endswith(" .") and "-c constraints/cpu.txt" in line, line


def test_the_example_model_expecting_pixels_in_0_255_fails_the_gate_naming_input_range(tmp_path: Path) -> None:
    """The same model behind a ÷ 255 input (a user's convention), gated without `input_range`: its
    clean accuracy is near chance, so the gate exits 1 (a threshold missed), not 2 (could not judge),
    and the output names the spec line that fixes it."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(CI / "model.onnx"))
    first = graph.graph.input[0].name
    scale = helper.make_tensor("pixels_per_unit", onnx.TensorProto.FLOAT, [], [255.0])
    graph.graph.initializer.append(scale)
    for node in graph.graph.node:  # the model now reads x / 255: it expects pixels in [0, 255]
        node.input[:] = ["x_in_0_1" if name == first else name for name in node.input]
    graph.graph.node.insert(0, helper.make_node("Div", [first, "pixels_per_unit"], ["x_in_0_1"]))
    onnx.checker.check_model(graph)
    model = tmp_path / "expects-255.onnx"
    onnx.save(graph, str(model))
    result = CliRunner().invoke(app, ["gate", "--local", "--policy", str(CI / "policy.yaml"), "--spec",
                                      str(CI / "spec.yaml"), "--checkpoint", str(model)],
                                env={"ROBUSTLAB_URL": None, "ROBUSTLAB_API_KEY": None, "GITHUB_STEP_SUMMARY": None})
    assert result.exit_code == 1, result.output
    assert "input_range" in result.output, result.output
