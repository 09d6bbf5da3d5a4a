"""Every CLI error prints whole (all its lines, paths intact), and `validate` refuses what would fail at
run time: a missing npz or model file, a timm / torchvision name the library lacks, an upload id that is
not the caller's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from core.specs import parse_spec
from robustlab.cli import app
from robustlab.messages import error_text
from robustlab.spec_checks import upload_problems
from service.client import ClientError

REPO = Path(__file__).resolve().parents[2]
ENV = {"ROBUSTLAB_URL": None, "ROBUSTLAB_API_KEY": None, "GITHUB_STEP_SUMMARY": None}
DIGITS: dict[str, Any] = {
    "name": "t", "dataset": {"name": "digits", "test_size": 60},
    "model": {"architecture": "mlp"}, "regularizers": [{"name": "erm", "kind": "none"}],
}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=ENV)


def write(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_error_text_keeps_every_line_and_quote() -> None:
    assert error_text(KeyError("no run 'x'\n  try 'y'")) == "no run 'x'\n  try 'y'"  # not the KeyError repr
    assert error_text(FileNotFoundError(2, "No such file or directory", "nope.onnx")) == \
        "No such file or directory: nope.onnx"
    assert error_text(ValueError("files are missing:\n  a.gz\n  b.gz\nset download: true")).count("\n") == 3
    assert error_text(RuntimeError()) == "RuntimeError"


def test_compare_prints_every_line_of_a_missing_dataset(tmp_path: Path) -> None:
    """The issue's case: `mnist files are missing:` and nothing after the colon."""
    spec = yaml.safe_load((REPO / "examples" / "mnist-small.yaml").read_text())
    spec["dataset"]["data_dir"] = str(tmp_path / "empty")
    result = invoke("compare", str(write(tmp_path / "mnist.yaml", spec)), "--out", str(tmp_path / "out"),
                    "--threads", "1")
    assert result.exit_code == 1, result.output
    error = result.stderr[result.stderr.index("Error: "):]
    assert "mnist files are missing:" in error and "download: true" in error
    assert str(tmp_path / "empty" / "t10k-images-idx3-ubyte.gz") in error  # the paths, whole
    assert "Traceback" not in result.output


def test_a_missing_model_file_is_named_with_its_path_intact(tmp_path: Path) -> None:
    spec = write(tmp_path / "onnx.yaml", {**DIGITS, "model": {"format": "onnx", "input_shape": [1, 8, 8],
                                                              "num_classes": 10}})
    result = invoke("evaluate", "--model", "nope.onnx", "--spec", str(spec), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert "nope.onnx does not exist" in line and "'nope.onnx" not in line


def test_validate_refuses_a_missing_npz_path(tmp_path: Path) -> None:
    spec = write(tmp_path / "npz.yaml", {**DIGITS, "dataset": {"name": "npz", "path": str(tmp_path / "gone.npz")}})
    result = invoke("validate", str(spec))
    assert result.exit_code == 1 and "dataset.path" in result.stdout and "gone.npz does not exist" in result.stdout
    (tmp_path / "gone.npz").write_bytes(b"")  # exists now: the schema and the files are fine
    assert invoke("validate", str(spec)).exit_code == 0


def test_validate_checks_the_model_file_given_with_model(tmp_path: Path) -> None:
    spec = write(tmp_path / "d.yaml", DIGITS)
    missing = invoke("validate", str(spec), "--model", str(tmp_path / "m.safetensors"), "--json")
    assert missing.exit_code == 1 and "--model" in missing.stdout and "does not exist" in missing.stdout
    refused = invoke("validate", str(spec), "--model", str(tmp_path / "m.pt2"))
    assert refused.exit_code == 1 and "torch.export" in refused.stdout


@pytest.mark.parametrize(("library", "typo", "right"), [("timm", "resnet1B", "resnet18"),
                                                         ("torchvision", "resnet19", "resnet18")])
def test_validate_refuses_a_misspelled_architecture_name(tmp_path: Path, library: str, typo: str, right: str) -> None:
    pytest.importorskip(library)
    model = {"format": library, "name": typo, "input_shape": [3, 32, 32], "num_classes": 10}
    spec = write(tmp_path / "named.yaml", {**DIGITS, "model": model})
    result = invoke("validate", str(spec))
    assert result.exit_code == 1, result.output
    assert "model.name" in result.stdout and typo in result.stdout and right in result.stdout  # did you mean
    assert invoke("validate", str(write(tmp_path / "ok.yaml", {**DIGITS, "model": {**model, "name": right}}))
                  ).exit_code == 0


class Server:
    """A client stand-in: knows some uploads of the caller."""

    base_url = "http://robustlab.test"

    def __init__(self, known: set[str]) -> None:
        self.known = known

    def _get(self, upload_id: str) -> dict[str, Any]:
        if upload_id not in self.known:
            raise ClientError(f"no upload {upload_id!r} for this API key", 404)
        return {"id": upload_id}

    dataset = model = _get


def test_upload_ids_are_checked_against_the_callers_uploads() -> None:
    mine, other = "11111111-2222-4333-8444-555555555555", "99999999-2222-4333-8444-555555555555"
    spec = parse_spec({**DIGITS, "dataset": {"name": "upload", "id": mine},
                       "regularizers": [{"name": "erm", "kind": "none"},
                                        {"name": "sob", "kind": "sobolev", "teacher": other}]})
    problems = upload_problems(spec, Server({mine}))  # type: ignore[arg-type]
    assert [p.path for p in problems] == ["regularizers[1].teacher"]
    assert other in problems[0].message and "of yours" in problems[0].message
    assert upload_problems(spec, Server({mine, other})) == []  # type: ignore[arg-type]
