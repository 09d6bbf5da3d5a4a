"""`robustlab gate` end to end: a real tiny checkpoint, evaluated in-process (--local) and on a real
API + worker (--server); exit codes 0/1/2, one-line errors, JUnit XML, JSON, the GitHub step summary.

The checkpoint is an MLP trained for 2 epochs on 300 digits by `robustlab compare` (a few seconds,
once per session); its compare report is also the baseline (same weights, same evaluation seed, so
evaluating the checkpoint again gives the same numbers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import junitparser  # dev extra: the JUnit reader CI tools use
import pytest
import yaml
from typer.testing import CliRunner, Result

from robustlab.cli import app
from tests.integration.api_server import free_port, key_of
from tests.integration.processes import REPO, tiny_spec
from tests.integration.service_stack import running_stack

pytestmark = pytest.mark.integration

PASSING = {"min_clean_accuracy": 0.5,
           "min_robust_accuracy": [{"attack": "pgd", "norm": "linf", "eps": 0.1, "min": 0.2},
                                   {"attack": "worst_case", "norm": "linf", "eps": 0.1, "min": 0.2}],
           "require_checks_pass": True}
CLEAN_ENV: dict[str, str | None] = {"ROBUSTLAB_URL": None, "ROBUSTLAB_API_KEY": None, "GITHUB_STEP_SUMMARY": None}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """spec.yaml, the checkpoint, and its compare report (the baseline)."""
    root = tmp_path_factory.mktemp("gate")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(name="gate-tiny")))
    result = CliRunner().invoke(app, ["compare", str(spec), "--out", str(root / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return {"spec": spec, "checkpoint": root / "out" / "checkpoints" / "erm-seed0.safetensors",
            "report": root / "out" / "report.json"}


def write_policy(path: Path, policy: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(policy))
    return path


def gate(trained: dict[str, Path], policy: Path, *args: str, env: dict[str, str | None] | None = None,
         checkpoint: Path | None = None) -> Result:
    command = ["gate", "--policy", str(policy), "--checkpoint", str(checkpoint or trained["checkpoint"]),
               "--spec", str(trained["spec"]), *args]
    return CliRunner().invoke(app, command, env={**CLEAN_ENV, **(env or {})})


def junit_cases(path: Path) -> dict[str, str]:
    """testcase name → pass/failure/error, read with the standard library and with junitparser."""
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "robustlab-gate"
    cases = {}
    for case in suite.iter("testcase"):
        kind = "failure" if case.find("failure") is not None else "error" if case.find("error") is not None else "pass"
        cases[str(case.get("name"))] = kind
    parsed = {}
    for parsed_suite in junitparser.JUnitXml.fromfile(str(path)):
        assert parsed_suite.name == "robustlab-gate" and parsed_suite.tests == len(cases)
        for case in parsed_suite:
            parsed[case.name] = type(case.result[0]).__name__.lower() if case.result else "pass"
    assert parsed == cases
    return cases


def one_line_error(result: Result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_a_passing_policy_exits_0_with_summary_junit_json_and_step_summary(trained: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", {**PASSING, "baseline": str(trained["report"]),
                                                     "max_regression": 0.0})
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    result = gate(trained, policy, "--local", "--junit", str(tmp_path / "gate.xml"), "--json",
                  str(tmp_path / "verdict.json"), "--out", str(tmp_path / "report"),
                  env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    assert "robustlab gate: passed" in result.stdout and "evaluated locally" in result.stdout
    assert "| clean_accuracy | ≥ 0.5000 |" in result.stdout and "✅ pass" in result.stdout
    assert summary.read_text().startswith("earlier step\n## ✅ robustlab gate: passed")
    assert junit_cases(tmp_path / "gate.xml") == {
        "clean_accuracy": "pass", "robust_accuracy pgd linf eps=0.1": "pass",
        "robust_accuracy worst_case linf eps=0.1": "pass", "validity checks": "pass",
        "regression clean_accuracy": "pass", "regression pgd linf eps=0.1": "pass",
        "regression worst_case linf eps=0.1": "pass"}
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["passed"] is True and verdict["exit_code"] == 0 and verdict["mode"] == "local"
    assert verdict["report"][0]["clean_accuracy"] > 0.5 and verdict["errors"] == []
    assert (tmp_path / "report" / "report.json").is_file() and (tmp_path / "report" / "report.html").is_file()


def test_a_failing_policy_exits_1_and_no_step_summary_when_the_variable_is_unset(
        trained: dict[str, Path], tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", {**PASSING, "min_clean_accuracy": 0.999})
    before = set(os.listdir(tmp_path))
    result = gate(trained, policy, "--junit", str(tmp_path / "gate.xml"))  # neither flag, no ROBUSTLAB_URL: local
    assert result.exit_code == 1, result.output
    assert "FAILED (1 of 4 criteria failed)" in result.stdout and "| clean_accuracy | ≥ 0.9990 |" in result.stdout
    assert "evaluating erm-seed0.safetensors locally" in result.stderr
    assert set(os.listdir(tmp_path)) - before == {"gate.xml"}
    cases = junit_cases(tmp_path / "gate.xml")
    assert cases["clean_accuracy"] == "failure" and cases["robust_accuracy pgd linf eps=0.1"] == "pass"


def test_a_regression_against_the_baseline_exits_1(trained: dict[str, Path], tmp_path: Path) -> None:
    from core.reports import pack_bits, unpack_bits

    better = json.loads(trained["report"].read_text())
    for entry in better["summary"]:
        for stat in entry["robust_accuracy"]:
            stat["mean"] = min(1.0, stat["mean"] + 0.1)  # the baseline was 10 points more robust
    outcomes = better["runs"][0]["outcomes"]  # ... sample by sample: 10 of its PGD losses were kept
    clean = unpack_bits(outcomes["clean"], outcomes["samples"])
    for row in outcomes["attacks"]:
        if row["attack"] == "pgd":
            bits = unpack_bits(row["correct"], outcomes["samples"])
            lost = [i for i, (ok, c) in enumerate(zip(bits, clean, strict=True)) if c and not ok]
            assert len(lost) >= 10
            for i in lost[:10]:
                bits[i] = True
            row["correct"] = pack_bits(bits)
    (tmp_path / "main.json").write_text(json.dumps(better))
    policy = write_policy(tmp_path / "policy.yaml", {**PASSING, "baseline": "main.json", "max_regression": 0.05})
    result = gate(trained, policy, "--local", "--json", str(tmp_path / "verdict.json"))
    assert result.exit_code == 1, result.output
    criteria = {c["name"]: c for c in json.loads((tmp_path / "verdict.json").read_text())["criteria"]}
    assert criteria["regression pgd linf eps=0.1"]["passed"] is False
    assert criteria["regression clean_accuracy"]["passed"] is True
    assert criteria["robust_accuracy pgd linf eps=0.1"]["passed"] is True  # above the floor, yet worse than main


def test_a_bad_policy_exits_2_before_evaluating(trained: dict[str, Path], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_robust_accuracy:\n  - {attack: pgd, norm: linf, eps: 0.1, minimum: 0.5}\n")
    # A real process: the exit code and stderr a CI runner sees.
    completed = subprocess.run(
        [sys.executable, "-m", "robustlab.cli", "gate", "--policy", str(policy), "--checkpoint",
         str(trained["checkpoint"]), "--spec", str(trained["spec"]), "--local", "--junit", str(tmp_path / "g.xml")],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "GITHUB_STEP_SUMMARY": ""})
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    assert f"Error: bad policy {policy}: " in completed.stderr
    assert "min_robust_accuracy[0].minimum: unknown field 'minimum': did you mean 'min'?" in completed.stderr
    assert "min_robust_accuracy[0].min: required field is missing" in completed.stderr
    assert junit_cases(tmp_path / "g.xml") == {"robustlab gate": "error"}


def test_a_metric_the_spec_does_not_evaluate_exits_2_naming_what_it_does(trained: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", {"min_robust_accuracy": [
        {"attack": "pgd", "norm": "linf", "eps": 0.3, "min": 0.1}]})
    result = gate(trained, policy, "--local")
    assert result.exit_code == 2
    assert "pgd linf eps=0.3, which the spec" in one_line_error(result) and "pgd linf [0.1]" in result.stderr


def test_a_broken_checkpoint_exits_2(trained: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "model.safetensors"
    broken.write_bytes(os.urandom(256))
    policy = write_policy(tmp_path / "p.yaml", PASSING)
    result = gate(trained, policy, "--local", "--json", str(tmp_path / "v.json"), checkpoint=broken)
    assert result.exit_code == 2, result.output
    assert "model.safetensors is not a readable safetensors file" in one_line_error(result)
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["exit_code"] == 2 and "not a readable safetensors file" in verdict["errors"][0]
    missing = gate(trained, policy, "--local", checkpoint=tmp_path / "nothing.safetensors")
    assert missing.exit_code == 2 and "does not exist" in one_line_error(missing)


def test_an_unreachable_server_exits_2(trained: dict[str, Path], tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", PASSING)
    url = f"http://127.0.0.1:{free_port()}"
    result = gate(trained, policy, "--junit", str(tmp_path / "g.xml"),
                  env={"ROBUSTLAB_URL": url, "ROBUSTLAB_API_KEY": "some-key-0123456789"})  # server from the env
    assert result.exit_code == 2, result.output
    assert f"cannot reach the robustlab server at {url}" in one_line_error(result)
    assert f"on the server {url}" in result.stdout
    assert junit_cases(tmp_path / "g.xml") == {"robustlab gate": "error"}
    both = gate(trained, policy, "--local", "--server", url)
    assert both.exit_code == 2 and "exclude each other" in one_line_error(both)


def test_gate_against_a_real_server_passes_end_to_end(trained: dict[str, Path], redis_url: str,
                                                      tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", {**PASSING, "baseline": str(trained["report"]),
                                                     "max_regression": 0.0})
    with running_stack(redis_url, tmp_path / "stack") as (api, service):
        result = gate(trained, policy, "--server", api.url, "--junit", str(tmp_path / "g.xml"), "--out",
                      str(tmp_path / "report"), env={"ROBUSTLAB_API_KEY": key_of("alice")})
        assert result.exit_code == 0, (result.output, service.log())
        wrong = gate(trained, policy, "--server", api.url, "--api-key", "wrong-key-0123456789")
    assert "robustlab gate: passed" in result.stdout and f"on the server {api.url} as job" in result.stdout
    assert "succeeded" in result.stderr  # progress lines while it waited
    assert set(junit_cases(tmp_path / "g.xml").values()) == {"pass"}
    assert (tmp_path / "report" / "report.html").is_file()
    assert wrong.exit_code == 2 and "HTTP 401" in one_line_error(wrong)


def test_gate_on_an_onnx_model_against_a_real_server_exits_0_1_2(redis_url: str, tmp_path: Path) -> None:
    """The file is uploaded with the spec's model section and evaluated by a worker, as a .safetensors is."""
    from tests.user_model_fixtures import SECTIONS, digits, example_input, export_onnx, spec_dict, trained_cnn

    onnx_file = export_onnx(trained_cnn(digits()), example_input("plain"), tmp_path / "own.onnx")
    spec = tmp_path / "onnx-spec.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(SECTIONS["plain"], max_samples=40)))
    passing = write_policy(tmp_path / "pass.yaml", {"min_clean_accuracy": 0.5, "min_robust_accuracy": [
        {"attack": "worst_case", "norm": "linf", "eps": 0.05, "min": 0.05}]})
    failing = write_policy(tmp_path / "fail.yaml", {"min_clean_accuracy": 0.999})
    (tmp_path / "broken.onnx").write_bytes(onnx_file.read_bytes()[:200])

    def run(policy: Path, model: Path, server: str) -> Result:
        command = ["gate", "--policy", str(policy), "--model", str(model), "--spec", str(spec), "--server", server]
        return CliRunner().invoke(app, command, env={**CLEAN_ENV, "ROBUSTLAB_API_KEY": key_of("alice")})

    with running_stack(redis_url, tmp_path / "stack") as (api, _):
        passed, failed, broken = run(passing, onnx_file, api.url), run(failing, onnx_file, api.url), \
            run(passing, tmp_path / "broken.onnx", api.url)
    assert passed.exit_code == 0, passed.output
    assert "robustlab gate: passed" in passed.stdout
    assert failed.exit_code == 1, failed.output
    assert broken.exit_code == 2, broken.output
    assert "not a readable ONNX file" in one_line_error(broken)


# ---------------------------------------------------------------- it stops when it knows (issue 22)
@pytest.fixture(scope="module")
def trained500(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny MLP evaluated on 500 test samples: spec.yaml, checkpoint, its compare report."""
    root = tmp_path_factory.mktemp("gate500")
    spec = root / "spec.yaml"
    raw = tiny_spec(name="gate-500")
    raw["dataset"]["test_size"] = 500
    spec.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["compare", str(spec), "--out", str(root / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return {"spec": spec, "checkpoint": root / "out" / "checkpoints" / "erm-seed0.safetensors",
            "report": root / "out" / "report.json"}


def test_a_policy_far_below_the_model_passes_on_fewer_than_half_of_the_samples(
        trained500: dict[str, Path], tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", {
        "min_clean_accuracy": 0.3, "require_checks_pass": False,
        "min_robust_accuracy": [{"attack": "worst_case", "norm": "linf", "eps": 0.1, "min": 0.01}]})
    result = gate(trained500, policy, "--local", "--json", str(tmp_path / "v.json"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["samples_available"] == 500 and verdict["samples_used"] < verdict["samples_available"] / 2
    assert f"Judged on {verdict['samples_used']} of 500 test samples" in result.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    run = report["runs"][0]
    assert run["samples"] == verdict["samples_used"] and run["clean_interval"][0] < run["clean_accuracy"]
    assert all(len(r["interval"]) == 2 for r in run["robust"] + run["worst_case"])


def test_the_same_model_gated_twice_against_its_own_baseline_passes_and_a_3_point_drop_fails(
        trained500: dict[str, Path], tmp_path: Path) -> None:
    from core.reports import Report, pack_bits

    gated = {"min_clean_accuracy": 0.3, "require_checks_pass": False, "max_regression": 0.01,
             "min_robust_accuracy": [{"attack": "worst_case", "norm": "linf", "eps": 0.1, "min": 0.01}]}
    own = write_policy(tmp_path / "own.yaml", {**gated, "baseline": str(trained500["report"])})
    for _ in range(2):
        result = gate(trained500, own, "--local")
        assert result.exit_code == 0, result.output
        assert ", McNemar p = 1 |" in result.stdout
    # The baseline kept 15 of the 500 samples (spread over the test set) that this model loses: 3 points.
    base = Report.model_validate_json(trained500["report"].read_text())
    outcomes = base.runs[0].outcomes
    assert outcomes is not None and outcomes.samples == 500
    worst = outcomes.correct_at("linf", 0.1)
    lost = [i for i, ok in enumerate(worst) if not ok]
    assert len(lost) >= 15
    for i in lost[:: max(1, len(lost) // 15)][:15]:
        worst[i] = True
    rows = [row.model_copy(update={"correct": pack_bits(worst)}) if row.eps == 0.1 else row
            for row in outcomes.worst_case]
    better = base.model_copy(update={"runs": [base.runs[0].model_copy(update={
        "outcomes": outcomes.model_copy(update={"worst_case": rows})})]})
    (tmp_path / "main.json").write_text(better.model_dump_json())
    worse = write_policy(tmp_path / "worse.yaml", {**gated, "baseline": "main.json"})
    result = gate(trained500, worse, "--local", "--junit", str(tmp_path / "gate.xml"))
    assert result.exit_code == 1, result.output
    assert "regression worst_case linf eps=0.1" in result.stdout and "McNemar p = " in result.stdout
    assert junit_cases(tmp_path / "gate.xml")["regression worst_case linf eps=0.1"] == "failure"
