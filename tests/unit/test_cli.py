"""The `robustlab` command line: list, validate, --version; exit codes and no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import robustlab
from core.enums import Architecture, AttackKind, DatasetName, RegularizerKind
from core.specs import load_spec
from robustlab.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits-quick.yaml"

runner = CliRunner()

EXPECTED_NAMES = {
    "regularizers": {k.value for k in RegularizerKind},
    "architectures": {a.value for a in Architecture},
    "datasets": {d.value for d in DatasetName},
    "attacks": {a.value for a in AttackKind},
}


def _run(*args: str) -> Any:
    return runner.invoke(app, list(args), prog_name="robustlab")


# --- list ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", sorted(EXPECTED_NAMES))
def test_list_json_names_every_member_with_its_parameters(category: str) -> None:
    result = _run("list", category, "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    assert {e["name"] for e in entries} == EXPECTED_NAMES[category]
    assert len(entries) == len(EXPECTED_NAMES[category])  # one entry per name, none twice
    for entry in entries:
        assert entry["description"], f"{category} {entry['name']} has no description"
        assert isinstance(entry["parameters"], list)
        for parameter in entry["parameters"]:
            assert {"name", "type", "default", "required", "description"} <= parameter.keys()


def test_list_json_leaves_out_discriminators_and_run_names() -> None:
    regularizers = {e["name"]: e for e in json.loads(_run("list", "regularizers", "--json").stdout)}
    for entry in regularizers.values():
        names = [p["name"] for p in entry["parameters"]]
        assert "kind" not in names and "name" not in names
    sobolev = {p["name"]: p for p in regularizers["sobolev"]["parameters"]}
    assert sobolev["teacher"]["required"] is True
    assert sobolev["weight"] | {"description": ""} == {
        "name": "weight", "type": "float", "default": 1.0, "required": False, "description": "",
        "minimum": 0.0, "maximum": 1e6,
    }
    mlp = next(e for e in json.loads(_run("list", "architectures", "--json").stdout) if e["name"] == "mlp")
    assert [p["name"] for p in mlp["parameters"]] == ["hidden", "activation", "dropout", "normalization"]
    assert mlp["parameters"][0]["default"] == [256, 256]


@pytest.mark.parametrize("category", sorted(EXPECTED_NAMES))
def test_list_table_shows_every_name(category: str) -> None:
    result = _run("list", category)
    assert result.exit_code == 0, result.output
    for name in EXPECTED_NAMES[category]:
        assert name in result.stdout


def test_list_unknown_category_is_a_usage_error() -> None:
    result = _run("list", "optimizers")
    assert result.exit_code == 2
    assert "unknown category 'optimizers'" in result.stderr
    assert all(category in result.stderr for category in EXPECTED_NAMES)
    assert "Traceback" not in result.output


# --- validate --------------------------------------------------------------------------------------


def test_validate_example_prints_a_one_line_summary() -> None:
    result = _run("validate", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    digest = load_spec(EXAMPLE).spec_hash()[:12]
    assert result.stdout == (
        "OK digits-quick: 12 regularizers × 3 seeds = 36 runs, mlp on digits, 20 epochs, 3 attacks, "
        f"spec sha256 {digest}\n"
    )


def test_validate_json_for_a_valid_spec() -> None:
    result = _run("validate", str(EXAMPLE), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["problems"] == []
    assert report["summary"]["runs"] == 36
    assert report["summary"]["spec_sha256"] == load_spec(EXAMPLE).spec_hash()


def _invalid_spec(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("weight: 5.0}", "weight: -5.0}", 1).replace("epochs: 20", "epocs: 20")
    path = tmp_path / "invalid.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_invalid_spec_lists_every_problem(tmp_path: Path) -> None:
    path = _invalid_spec(tmp_path)
    result = _run("validate", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"FAIL {path}: 2 problems"
    assert lines[1].startswith("  training.epocs: unknown field 'epocs': did you mean 'epochs'?")
    assert lines[2].startswith("  regularizers[1].weight: Input should be greater than or equal to 0")
    assert len(lines) == 3 and "Traceback" not in result.output


def test_validate_json_for_an_invalid_spec(tmp_path: Path) -> None:
    result = _run("validate", str(_invalid_spec(tmp_path)), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["summary"] is None
    assert [p["path"] for p in report["problems"]] == ["training.epocs", "regularizers[1].weight"]
    assert all(p["message"] for p in report["problems"])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read the file: No such file or directory"),
        ("name: x\nseeds: [0, 1\n", "not valid YAML at line"),
        ("", "got an empty document"),
        ("- just\n- a list\n", "a spec is a mapping of fields"),
    ],
    ids=["missing-file", "bad-yaml", "empty", "not-a-mapping"],
)
def test_validate_unusable_file_gives_one_line_and_exit_1(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = _run("validate", str(path))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(f"FAIL {path}: ")
    assert fragment in result.output and "Traceback" not in result.output
    report = json.loads(_run("validate", str(path), "--json").stdout)
    assert report["valid"] is False and fragment in report["problems"][0]["message"]


def test_version() -> None:
    result = _run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"robustlab {robustlab.__version__}\n"
    assert robustlab.__version__ == version("robustlab")


# --- as a real process -----------------------------------------------------------------------------


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "robustlab.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )


def test_cli_as_a_process_validates_and_fails_cleanly(tmp_path: Path) -> None:
    ok = _process("validate", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK digits-quick: 12 regularizers × 3 seeds = 36 runs")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    for path in (bad, tmp_path / "missing.yaml", _invalid_spec(tmp_path)):
        failed = _process("validate", str(path))
        assert failed.returncode == 1, failed.stderr
        assert failed.stdout.startswith(f"FAIL {path}: ")
        assert "Traceback" not in failed.stdout + failed.stderr


def test_cli_as_a_process_lists_json_and_rejects_unknown_category() -> None:
    listed = _process("list", "attacks", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {e["name"] for e in json.loads(listed.stdout)} == EXPECTED_NAMES["attacks"]
    unknown = _process("list", "nonsense")
    assert unknown.returncode == 2 and "use one of regularizers" in unknown.stderr


@pytest.mark.parametrize(("dataset", "path", "words"), [
    ("{name: digits, train_size: 50000}", "dataset.train_size", "more than the 1,257 train samples of digits"),
    ("{name: digits, test_size: 541}", "dataset.test_size", "use at most 540"),
    ("{name: digits, test_fraction: 0.5, train_size: 899}", "dataset.train_size", "use at most 898"),
    ("{name: mnist, train_size: 60001}", "dataset.train_size", "60,000 train samples of mnist"),
    ("{name: cifar10, split_test_set: true, train_size: 9000, test_size: 2000}", "dataset.train_size",
     "10,000 images of cifar10's test set"),
    ("{name: synthetic, n_samples: 100, test_size: 31}", "dataset.test_size", "or raise n_samples"),
])
def test_validate_refuses_sizes_the_dataset_cannot_give(tmp_path: Path, dataset: str, path: str,
                                                        words: str) -> None:
    text = Path(EXAMPLE).read_text().replace("{name: digits, train_size: 500, test_size: 500, seed: 0}", dataset)
    spec = tmp_path / "sizes.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1 and path in result.output and words in result.output, result.output


def test_validate_lists_a_repeated_name_beside_other_problems(tmp_path: Path) -> None:
    text = Path(EXAMPLE).read_text().replace("name: doubleback,", "name: erm,").replace("lr: 0.001", "lr: -1")
    spec = tmp_path / "two.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1 and "training.lr" in result.output, result.output
    assert "regularizers[1].name" in result.output and "must be unique" in result.output
