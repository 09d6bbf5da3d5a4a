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
    assert {"--policy", "--checkpoint", "--spec", "--server", "--junit"} <= options
    unknown = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", gate_help))
    assert not unknown, f"{name} uses options `robustlab gate --help` does not list: {unknown}"
    assert not re.search(r"(?<![\w-])--no-such-option(?![\w-])", gate_help)  # the check above can fail


def test_the_github_workflow_uses_the_secrets_and_keeps_the_junit_file() -> None:
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    job = workflow["jobs"]["gate"]
    assert job["env"]["ROBUSTLAB_URL"] == "${{ secrets.ROBUSTLAB_URL }}"
    assert job["env"]["ROBUSTLAB_API_KEY"] == "${{ secrets.ROBUSTLAB_API_KEY }}"
    junit = re.search(r"--junit (\S+)", gate_commands("github-actions.yml")[0])
    assert junit is not None
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and junit.group(1) in uploads[0]["with"]["path"] and uploads[0]["if"] == "always()"


def test_the_gitlab_job_reports_the_junit_file() -> None:
    job = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["robustness-gate"]
    junit = re.search(r"--junit (\S+)", gate_commands("gitlab-ci.yml")[0])
    assert junit is not None and job["artifacts"]["reports"]["junit"] == junit.group(1)
    assert job["artifacts"]["when"] == "always"


def test_the_example_policy_fits_the_example_spec() -> None:
    policy, spec = load_policy(CI / "policy.yaml"), load_spec(CI / "spec.yaml")
    assert policy.min_robust_accuracy and unevaluated(policy, spec) == []
    for name in WORKFLOWS:  # the workflows name these files
        assert "examples/ci/policy.yaml" in gate_commands(name)[0] and "examples/ci/spec.yaml" in gate_commands(name)[0]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_workflow_installs_robustlab_from_the_repository(name: str) -> None:
    """robustlab is not on PyPI: `pip install robustlab` would fail in every pipeline that copied it."""
    data = yaml.safe_load((CI / name).read_text())
    installs = [" ".join(s.split()) for s in _strings(data) if "pip install" in s]
    assert installs, name
    for line in installs:
        assert not re.search(r"pip install\b.*\srobustlab(\s|$|\[)", line), line
        assert line.endswith(" .") and "-c constraints/cpu.txt" in line, line
