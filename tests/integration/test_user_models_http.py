"""A user's own model and data over real HTTP, with a real worker: ONNX in three input conventions,
a registry `.pt` state_dict, timm weights on an uploaded dataset; hostile uploads refused with a
reason while the API stays healthy; upload ids confined to their tenant; no server paths in specs."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from core.specs import parse_spec
from models.architectures import build_model
from models.evaluation.evaluate import evaluate_model
from models.sources import InputConventions
from service.client import ClientError, RobustlabClient
from tests.integration.api_server import ApiServer, key_of
from tests.integration.processes import Service
from tests.integration.service_stack import running_stack
from tests.user_model_fixtures import SECTIONS, digits, example_input, export_onnx, exported, spec_dict, trained_cnn

pytestmark = pytest.mark.integration

JOB_TIMEOUT = 240.0  # a loaded 2-core machine: a work horse imports torch and onnx2torch first


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Service]]:
    with running_stack(redis_url, tmp_path_factory.mktemp("user-models"), workers=1,
                       extra_env={"ROBUSTLAB_MAX_UPLOAD_BYTES": str(5_000_000),
                                  "ROBUSTLAB_MAX_DATASET_SAMPLES": "100000"}) as pair:
        yield pair


def _client(api: ApiServer, tenant: str = "alice") -> RobustlabClient:
    return RobustlabClient(api.url, key_of(tenant))


def _evaluate(client: RobustlabClient, spec: dict[str, Any], model_id: str) -> Any:
    job = client.submit(spec, kind="evaluate", checkpoint=model_id)
    finished = client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert finished["status"] == "succeeded", finished.get("error")
    return client.fetch_report(job["id"])


@pytest.mark.parametrize("variant", list(SECTIONS))
def test_onnx_upload_evaluates_like_the_torch_module(variant: str, stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api, _ = stack
    data = digits()
    native = exported(trained_cnn(data), variant)
    path = export_onnx(native, example_input(variant), tmp_path / f"{variant}.onnx")
    spec = spec_dict(SECTIONS[variant], max_samples=50)
    with _client(api) as client:
        uploaded = client.upload_model(path, SECTIONS[variant])
        assert uploaded["format"] == "onnx" and uploaded["filename"] == f"{variant}.onnx"
        report = _evaluate(client, spec, uploaded["id"])
    # The same seeded evaluation of the original module, behind the same declared conventions.
    parsed = parse_spec(spec)
    local = evaluate_model(InputConventions(native, parsed.model).eval(), data, parsed.evaluation)
    run = report.runs[0]
    assert run.clean_accuracy == local.clean_accuracy > 0.7
    assert [(r.attack, r.eps, r.accuracy) for r in run.robust] == [(r.attack, r.eps, r.accuracy) for r in local.robust]
    assert [(w.eps, w.accuracy) for w in run.worst_case] == [(w.eps, w.accuracy) for w in local.worst_case]


def test_pt_state_dict_upload_runs_an_evaluate_job(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The case that failed before: the stored (converted) file's sha256 is the one the worker checks."""
    api, _ = stack
    torch.manual_seed(0)
    torch.save(build_model("mlp", {"hidden": [16]}, (1, 8, 8), 10).state_dict(), tmp_path / "mlp.pt")
    section = {"architecture": "mlp", "params": {"hidden": [16]}}
    with _client(api) as client:
        with pytest.raises(ClientError, match="send input_shape"):
            client.upload_model(tmp_path / "mlp.pt", section)
        uploaded = client.upload_model(tmp_path / "mlp.pt", section, input_shape=[1, 8, 8], num_outputs=10)
        assert uploaded["format"] == "registry" and uploaded["filename"] == "mlp.safetensors"
        assert uploaded["sha256"] != uploaded["uploaded_sha256"]  # stored converted, recorded as stored
        report = _evaluate(client, spec_dict(section, max_samples=30), uploaded["id"])
    assert report.runs[0].samples == 30


def test_timm_weights_on_an_uploaded_dataset(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import timm
    from safetensors.torch import save_file

    api, _ = stack
    data = digits()
    np.savez(tmp_path / "mine.npz", x_test=(data.x_test[:40].numpy() * 255).astype(np.uint8),
             y_test=data.y_test[:40].numpy())
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "timm.safetensors"))
    section = {"format": "timm", "name": "test_resnet", "input_shape": [1, 8, 8], "num_classes": 10}
    with _client(api) as client:
        dataset = client.upload_dataset(tmp_path / "mine.npz", num_classes=10)
        assert (dataset["test_samples"], dataset["sample_shape"], dataset["num_classes"]) == (40, [1, 8, 8], 10)
        model = client.upload_model(tmp_path / "timm.safetensors", section)
        spec = spec_dict(section, max_samples=20)
        spec["dataset"] = {"name": "upload", "id": dataset["id"]}
        report = _evaluate(client, spec, model["id"])
        assert report.runs[0].samples == 20
        # bob can neither see nor use alice's uploads: the same 404 as an id that never existed
        with _client(api, "bob") as bob:
            for path in (f"/v1/models/{model['id']}", f"/v1/datasets/{dataset['id']}"):
                assert bob._http.get(path).status_code == 404
            with pytest.raises(ClientError) as foreign_model:
                bob.submit(spec, kind="evaluate", checkpoint=model["id"])
            assert foreign_model.value.status == 404
            torch.save(build_model("mlp", {"hidden": [16]}, (1, 8, 8), 10).state_dict(), tmp_path / "bob.pt")
            own = bob.upload_model(tmp_path / "bob.pt", {"architecture": "mlp", "params": {"hidden": [16]}},
                                   input_shape=[1, 8, 8], num_outputs=10)
            theirs = spec_dict({"architecture": "mlp", "params": {"hidden": [16]}})
            theirs["dataset"] = {"name": "upload", "id": dataset["id"]}
            with pytest.raises(ClientError) as foreign_data:
                bob.submit(theirs, kind="evaluate", checkpoint=own["id"])
            assert foreign_data.value.status == 404 and "dataset" in str(foreign_data.value)


def _onnx_with(initializer: TensorProto, path: Path, op: str = "Add") -> Path:
    node = helper.make_node(op, ["x", initializer.name], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [initializer])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _declared(dims: list[int]) -> TensorProto:
    tensor = TensorProto()
    tensor.name, tensor.data_type = "w", TensorProto.FLOAT
    tensor.dims.extend(dims)
    return tensor


def _hostile_files(tmp_path: Path) -> list[tuple[str, Path, dict[str, Any] | None, str]]:
    """(endpoint, file, model section, words the 422 must contain)."""
    section = {"format": "onnx", "input_shape": [4], "num_classes": 4}
    external = _declared([1, 4])
    external.data_location = TensorProto.EXTERNAL
    entry = external.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [0.0] * 4)
    whole = _onnx_with(weights, tmp_path / "whole.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(whole[: len(whole) // 2])
    rng = np.random.default_rng(0)
    x = rng.random((10, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "objects.npz", x_test=np.array([{"a": 1}] * 10, dtype=object), y_test=np.arange(10))
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x_test=nan, y_test=np.arange(10))
    np.savez(tmp_path / "labels.npz", x_test=x, y_test=np.arange(10) + 5)
    np.savez_compressed(tmp_path / "many.npz", x_test=np.zeros((1_000_000, 1), np.uint8),
                        y_test=np.zeros(1_000_000, np.uint8))
    return [
        ("model", _onnx_with(external, tmp_path / "external.onnx"), section, "external file"),
        ("model", _onnx_with(_declared([50_000, 50_000]), tmp_path / "huge.onnx"), section, "declares"),
        ("model", _onnx_with(weights, tmp_path / "unsupported.onnx", op="StringNormalizer"), section,
         "StringNormalizer"),
        ("model", tmp_path / "truncated.onnx", section, "not a readable ONNX file"),
        ("dataset", tmp_path / "objects.npz", None, "Python objects"),
        ("dataset", tmp_path / "nan.npz", None, "NaN"),
        ("dataset", tmp_path / "labels.npz", None, "out of range for num_classes 10"),
        ("dataset", tmp_path / "many.npz", None, "over the limit of 100,000"),
    ]


def test_hostile_uploads_get_a_4xx_with_the_reason_and_the_api_stays_healthy(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api, _ = stack
    with _client(api) as client:
        for endpoint, path, section, words in _hostile_files(tmp_path):
            with pytest.raises(ClientError) as refused:
                if endpoint == "model":
                    client.upload_model(path, section)
                else:
                    client.upload_dataset(path, num_classes=10)
            assert refused.value.status == 422 and words in str(refused.value), (path.name, str(refused.value))
        assert client._http.get("/healthz").status_code == 200
    refused_names = ("objects.npz", "nan.npz", "labels.npz", "many.npz")
    assert not [n for n in api.artifacts().list("datasets") if n.endswith(refused_names)]


SERVER_PATHS: list[tuple[str, Any]] = [
    ("dataset.path", {"name": "npz", "path": "/srv/other-tenant/private.npz"}),
    ("dataset.data_dir", {"name": "mnist", "data_dir": "/srv/other-tenant", "split_test_set": True}),
    ("dataset.download", {"name": "mnist", "download": True, "split_test_set": True}),
]


@pytest.mark.parametrize(("field", "dataset"), SERVER_PATHS, ids=[f for f, _ in SERVER_PATHS])
def test_every_server_path_field_is_refused_over_http(field: str, dataset: dict[str, Any], stack) -> None:  # type: ignore[no-untyped-def]
    api, _ = stack
    spec = copy.deepcopy(spec_dict({"architecture": "mlp", "params": {"hidden": [16]}}))
    spec["dataset"] = dataset
    response = api.client("alice").post("/v1/jobs", json={"kind": "compare", "spec": spec})
    assert response.status_code == 422, response.text
    problems = {p["path"]: p["message"] for p in response.json()["error"]["problems"]}
    assert (f"spec.{field}" in problems and "upload" in problems[f"spec.{field}"].lower()) or "leave" in \
        problems[f"spec.{field}"]
    assert "/srv/other-tenant" not in response.text.replace(str(dataset.get("path", "")), "")
    validation = api.client("alice").post("/v1/specs/validate", json={"spec": spec}).json()
    assert not validation["valid"] and field in {p["path"] for p in validation["problems"]}


def test_a_sobolev_teacher_path_is_refused_and_an_uploaded_id_must_be_ours(stack) -> None:  # type: ignore[no-untyped-def]
    api, _ = stack
    spec = spec_dict({"architecture": "mlp", "params": {"hidden": [16]}})
    spec["regularizers"] = [{"name": "student", "kind": "sobolev", "teacher": "/srv/alice/teacher.safetensors"}]
    response = api.client("bob").post("/v1/jobs", json={"kind": "compare", "spec": spec})
    assert response.status_code == 422
    assert "spec.regularizers[0].teacher" in {p["path"] for p in response.json()["error"]["problems"]}
    spec["regularizers"][0]["teacher"] = "0b8e1b0c-3f0e-4c55-9a55-6f2d1d2b7e42"  # nobody's upload
    response = api.client("bob").post("/v1/jobs", json={"kind": "compare", "spec": spec})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_an_evaluate_job_runs_on_a_constant_weights_onnx(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 21: a graph whose weights are Constant nodes (no parameters) passed the upload check and
    every evaluate job on it failed with StopIteration; it is measured at upload and evaluates now."""
    from tests.cost_fixtures import SECTION_VECTOR, constant_weights

    api, _ = stack
    with _client(api) as client:
        uploaded = client.upload_model(constant_weights(tmp_path / "constants.onnx"), SECTION_VECTOR)
        assert uploaded["parameters"] == 650 and uploaded["flops_source"] == "graph"
        report = _evaluate(client, spec_dict(SECTION_VECTOR, max_samples=40), uploaded["id"])
    assert report.kind == "evaluate" and len(report.runs) == 1 and report.checks
