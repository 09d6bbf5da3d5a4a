"""`robustlab upload model|dataset` and `robustlab evaluate --server` against a real API and worker.

One evaluate job: a custom CNN exported to ONNX, evaluated with `evaluate --model x.onnx --server`
on a spec that names a local .npz, which the command uploads and names by id; the report it
downloads equals, sample count and clean accuracy, what the job stored. The upload commands print
the id, refuse what they must before sending anything, and are confined to the tenant.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner, Result

from core.reports import Report
from robustlab.cli import app
from service.client import RobustlabClient
from tests.integration.api_server import ApiServer, key_of
from tests.integration.processes import Service
from tests.integration.service_stack import running_stack
from tests.user_model_fixtures import SECTIONS, digits, example_input, export_onnx, spec_dict, trained_cnn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Service]]:
    with running_stack(redis_url, tmp_path_factory.mktemp("upload-cli"), workers=1) as pair:
        yield pair


def cli(api: ApiServer, *args: str, tenant: str = "alice") -> Result:
    env = {"ROBUSTLAB_URL": api.url, "ROBUSTLAB_API_KEY": key_of(tenant), "GITHUB_STEP_SUMMARY": None}
    return CliRunner().invoke(app, list(args), env=env)


def test_upload_model_and_dataset_print_ids_and_evaluate_server_uploads_a_local_npz(
        stack: tuple[ApiServer, Service], tmp_path: Path) -> None:
    api, _ = stack
    data = digits()
    model = export_onnx(trained_cnn(data), example_input("plain"), tmp_path / "cnn.onnx")
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_test=data.x_test.numpy()[:40], y_test=data.y_test.numpy()[:40])
    spec = spec_dict(SECTIONS["plain"], max_samples=40)
    spec["dataset"] = {"name": "npz", "path": str(npz)}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))

    uploaded = cli(api, "upload", "model", str(model), "--spec", str(spec_file))
    assert uploaded.exit_code == 0, uploaded.output
    model_id = uploaded.stdout.strip()
    assert len(model_id) == 36 and "onnx" in uploaded.stderr and "--checkpoint " + model_id in uploaded.stderr
    described = cli(api, "upload", "model", str(model), "--json", "--model-json", json.dumps(SECTIONS["plain"]))
    assert described.exit_code == 0 and json.loads(described.stdout)["model"]["layout"] == "nchw"

    dataset = cli(api, "upload", "dataset", str(npz), "--num-classes", "10")
    assert dataset.exit_code == 0, dataset.output
    dataset_id = dataset.stdout.strip()
    assert "40 test samples of shape [1, 8, 8], 10 classes" in dataset.stderr and dataset_id in dataset.stderr
    with RobustlabClient(api.url, key_of("alice")) as client:
        assert client.dataset(dataset_id)["test_samples"] == 40
        assert client.model(model_id)["format"] == "onnx"
    with RobustlabClient(api.url, key_of("bob")) as other:  # another tenant's ids do not exist for bob
        assert other.list_datasets() == []

    wrong = cli(api, "upload", "model", str(model), "--model-json", json.dumps({**SECTIONS["plain"], "num_classes": 7}))
    assert wrong.exit_code == 1 and "num_classes" in wrong.stderr and "Traceback" not in wrong.output

    out = tmp_path / "report"
    evaluated = cli(api, "evaluate", "--model", str(model), "--spec", str(spec_file), "--out", str(out),
                    "--server", api.url, "--timeout", "240")
    assert evaluated.exit_code == 0, evaluated.output
    assert "uploading the dataset" in evaluated.stderr and "95 % interval" in evaluated.stdout  # the summary table
    assert "report files in" in evaluated.stdout
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.kind == "evaluate" and report.runs[0].samples == 40
    assert report.spec["dataset"]["name"] == "upload"  # the job never saw the local path
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.html", "report.md", "results.csv"}
