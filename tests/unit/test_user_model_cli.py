"""A user's own model on the command line and in a notebook, no service: `robustlab evaluate --model
x.onnx`, `robustlab gate --local --model x.onnx` (exit codes 0/1/2), `robustlab.evaluate(module, x, y)`,
and the `robustlab upload` refusals that need no server.

The model is a tiny custom CNN (not a registry architecture) trained for about a second on digits
and exported with torch.onnx.export(..., dynamo=False), once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner, Result

import robustlab
from core.reports import Report
from core.specs import parse_spec
from models.datasets import load_dataset
from robustlab.cli import app

REPO = Path(__file__).resolve().parents[2]
ATTACKS = [{"kind": "fgsm", "norm": "linf", "eps": [0.05, 0.1]},
           {"kind": "pgd", "norm": "linf", "eps": [0.05, 0.1], "steps": 5}]
SPEC: dict[str, Any] = {
    "name": "own-onnx",
    "dataset": {"name": "digits", "test_size": 60, "seed": 0},
    "model": {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10},
    "regularizers": [{"name": "candidate", "kind": "none"}],
    "evaluation": {"attacks": ATTACKS, "seed": 0},
}
ENV = {"ROBUSTLAB_URL": None, "ROBUSTLAB_API_KEY": None, "GITHUB_STEP_SUMMARY": None}


class TinyCNN(nn.Module):
    """Not one of robustlab's architectures: what a user brings."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(x.flatten(1))


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained module, its .onnx export, the spec file and the digits test samples the spec evaluates."""
    root = tmp_path_factory.mktemp("own-model")
    data = load_dataset(parse_spec(SPEC).dataset)
    torch.manual_seed(0)
    net = TinyCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):  # full batch, about a second
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(data.x_train), data.y_train).backward()
        optimizer.step()
    net.eval()
    onnx_file = root / "tiny.onnx"
    with warnings.catch_warnings():  # the TorchScript-based exporter (dynamo=False), on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(onnx_file), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    spec_file = root / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    return {"net": net, "onnx": onnx_file, "spec": spec_file, "x": data.x_test, "y": data.y_test, "root": root}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def test_evaluate_model_onnx_locally_matches_the_torch_module_in_a_notebook(own: dict[str, Any]) -> None:
    out = own["root"] / "eval"
    result = invoke("evaluate", "--model", str(own["onnx"]), "--spec", str(own["spec"]), "--out", str(out),
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.kind == "evaluate" and report.spec["model"]["format"] == "onnx"
    (run,) = report.runs
    assert run.samples == 60 and run.checkpoint == "tiny.onnx" and run.clean_accuracy > 0.5
    assert (out / "report.html").exists()

    # The same seeded attacks on the original torch module, through the notebook entry point.
    native = robustlab.evaluate(own["net"], own["x"], own["y"], attacks=ATTACKS, seed=0, name="native")
    (mine,) = native.runs
    assert native.kind == "evaluate" and mine.regularizer == "native"
    assert mine.clean_accuracy == run.clean_accuracy
    assert [(r.attack, r.eps) for r in mine.robust] == [(r.attack, r.eps) for r in run.robust]
    for converted, original in zip(run.robust, mine.robust, strict=True):
        assert abs(converted.accuracy - original.accuracy) <= 1 / 60 + 1e-9, (run.robust, mine.robust)


def test_evaluate_says_what_is_wrong_with_the_model_section_in_one_line(own: dict[str, Any]) -> None:
    wrong = own["root"] / "wrong-classes.yaml"
    wrong.write_text(yaml.safe_dump({**SPEC, "model": {**SPEC["model"], "num_classes": 12}}))
    result = invoke("evaluate", "--checkpoint", str(own["onnx"]), "--spec", str(wrong), "--out",
                    str(own["root"] / "never"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "num_classes" in last

    registry = own["root"] / "registry.yaml"  # an .onnx file described as a registry architecture
    registry.write_text(yaml.safe_dump({**SPEC, "model": {"architecture": "mlp"}}))
    result = invoke("evaluate", "--model", str(own["onnx"]), "--spec", str(registry), "--out", str(own["root"] / "n"))
    assert result.exit_code == 1 and "format: onnx" in result.output.strip().splitlines()[-1]


def test_validate_names_the_format_of_a_user_model() -> None:
    from robustlab.messages import summary

    assert summary(parse_spec(SPEC))["architecture"] == "onnx"
    timm = {**SPEC, "model": {"format": "timm", "name": "resnet18", "input_shape": [3, 32, 32], "num_classes": 10}}
    assert summary(parse_spec(timm))["architecture"] == "timm:resnet18"


def write_policy(path: Path, policy: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(policy))
    return path


def test_gate_local_on_an_onnx_model_exits_0_1_and_2(own: dict[str, Any]) -> None:
    root = own["root"]
    passing = write_policy(root / "pass.yaml", {"min_clean_accuracy": 0.5, "min_robust_accuracy": [
        {"attack": "fgsm", "norm": "linf", "eps": 0.05, "min": 0.0}], "require_checks_pass": False})
    failing = write_policy(root / "fail.yaml", {"min_clean_accuracy": 0.999, "require_checks_pass": False})
    verdict = root / "verdict.json"
    ok = invoke("gate", "--local", "--model", str(own["onnx"]), "--spec", str(own["spec"]), "--policy", str(passing),
                "--json", str(verdict), "--out", str(root / "gate-out"))
    assert ok.exit_code == 0, ok.output
    assert json.loads(verdict.read_text())["passed"] is True
    assert "Model `" in ok.stdout and "tiny.onnx" in ok.stdout

    low = invoke("gate", "--local", "--checkpoint", str(own["onnx"]), "--spec", str(own["spec"]),
                 "--policy", str(failing))
    assert low.exit_code == 1, low.output
    assert "clean_accuracy" in low.stdout

    truncated = root / "truncated.onnx"
    truncated.write_bytes(own["onnx"].read_bytes()[:200])
    broken = invoke("gate", "--local", "--model", str(truncated), "--spec", str(own["spec"]), "--policy", str(passing))
    assert broken.exit_code == 2, broken.output
    errors = [line for line in broken.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "truncated.onnx" in errors[0], broken.stderr

    exported = root / "model.pt2"
    exported.write_bytes(b"PK\x03\x04 not really an archive")
    refused = invoke("gate", "--local", "--model", str(exported), "--spec", str(own["spec"]), "--policy", str(passing))
    assert refused.exit_code == 2 and "torch.export archives are refused" in refused.stderr


def test_notebook_conventions_nhwc_0_255_probabilities_equal_the_plain_module(own: dict[str, Any]) -> None:
    net: nn.Module = own["net"]

    class Keras(nn.Module):
        """The same network as a TensorFlow user would hold it: NHWC, [0, 255] with mean/std, softmax out."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: N×H×W×C, (255·p − 127.5) / 64
            pixels = (x * 64.0 + 127.5) / 255.0
            return torch.softmax(self.net(pixels.permute(0, 3, 1, 2)), dim=1)

    keras_net = Keras()
    keras_net.training = True  # the wrapper in train mode, the network inside in eval mode
    x, y = own["x"][:40], own["y"][:40]
    attacks = [{"kind": "pgd", "steps": 5}]
    plain = robustlab.evaluate(net, x.numpy(), y.numpy(), attacks=attacks, eps=[0.1], seed=3)
    keras = robustlab.evaluate(keras_net, x.permute(0, 2, 3, 1).numpy(), y.numpy(), attacks=attacks, eps=0.1, seed=3,
                               layout="nhwc", input_range=(0, 255), mean=[127.5], std=[64.0], outputs="probabilities")
    assert keras.spec["model"]["layout"] == "nhwc" and keras.spec["model"]["input_range"] == [0, 255]
    assert keras.runs[0].clean_accuracy == plain.runs[0].clean_accuracy
    assert abs(keras.runs[0].worst_case[0].accuracy - plain.runs[0].worst_case[0].accuracy) <= 1 / 40 + 1e-9
    assert keras_net.training and not net.training  # each module's flag restored as it was


@pytest.mark.parametrize(("x", "y", "words"), [
    (np.full((4, 1, 8, 8), 2.0, dtype=np.float32), [0, 1, 2, 3], "input_range=(0, 255)"),
    (np.zeros((4, 8, 8), dtype=np.float32), [0, 1, 2, 3], "channel axis"),
    (np.zeros((4, 1, 8, 8), dtype=np.float32), [0, 1, 2], "4 samples but y has 3"),
    (np.zeros((4, 1, 8, 8), dtype=np.float32), [0, 1, 2, 10], "labels up to 10"),
    (np.zeros((4, 1, 8, 8), dtype=np.float32), np.eye(4, 10), "one-hot"),
])
def test_notebook_refuses_bad_inputs_with_a_hint(own: dict[str, Any], x: Any, y: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        robustlab.evaluate(own["net"], x, y, eps=0.1)


def test_importing_robustlab_stays_torch_free() -> None:
    code = ("import sys, robustlab; assert 'torch' not in sys.modules; "
            "assert 'evaluate' in robustlab.__all__; print(robustlab.__version__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_upload_model_refusals_need_no_server(own: dict[str, Any]) -> None:
    onnx_file = str(own["onnx"])
    bare = invoke("upload", "model", onnx_file, "--server", "http://127.0.0.1:9")
    assert bare.exit_code == 2 and "--spec SPEC.yaml" in bare.stderr and '"format": "onnx"' in bare.stderr

    both = invoke("upload", "model", onnx_file, "--spec", str(own["spec"]), "--model-json", "{}")
    assert both.exit_code == 2 and "not both" in both.stderr

    bad = invoke("upload", "model", onnx_file, "--model-json", '{"format": "onnx", "input_shape": [1, 8, 8]}',
                 "--api-key", "k", "--server", "http://127.0.0.1:9")
    assert bad.exit_code == 1 and "model.num_classes" in bad.stderr, bad.stderr

    (own["root"] / "m.pt2").write_bytes(b"x")
    pt2 = invoke("upload", "model", str(own["root"] / "m.pt2"), "--spec", str(own["spec"]))
    assert pt2.exit_code == 1 and "torch.export archives are refused" in pt2.stderr

    valid = invoke("upload", "model", onnx_file, "--model-json",
                   '{"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10}',
                   "--api-key", "k", "--server", "http://127.0.0.1:9")
    assert valid.exit_code == 2 and "cannot reach the robustlab server" in valid.stderr  # validated, then sent

    npy = own["root"] / "data.npy"
    npy.write_bytes(b"")
    not_npz = invoke("upload", "dataset", str(npy))
    assert not_npz.exit_code == 2 and "numpy.savez" in not_npz.stderr


def test_list_models_names_what_a_timm_or_torchvision_section_may_use(own: dict[str, Any]) -> None:
    listed = invoke("list", "--models", "torchvision", "--json")
    assert listed.exit_code == 0 and "resnet18" in json.loads(listed.stdout)
    wrong = invoke("list", "--models", "keras")
    assert wrong.exit_code == 2 and "timm or torchvision" in wrong.stderr

    trained = invoke("train", str(own["spec"]), "--out", str(own["root"] / "never-trained"))
    assert trained.exit_code == 1 and "robustlab evaluate --model FILE" in trained.stderr
