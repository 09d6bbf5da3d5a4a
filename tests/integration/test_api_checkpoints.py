"""Checkpoint uploads over real HTTP: streamed and capped (413), checked by the safe loader in a
child process (a pickle payload is a 422 and never runs), stored with their SHA-256."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from models.architectures import build_model
from models.checkpoints import read_metadata, save_checkpoint
from service.schemas import EXAMPLE_SPEC
from tests.integration.api_server import ApiServer, running_api

pytestmark = pytest.mark.integration

LIMIT = 100_000  # bytes; the tiny MLP's checkpoint is ~5 KB
PARAMS = {"hidden": [16]}


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(redis_url, tmp_path_factory.mktemp("api-checkpoints"),
                     extra_env={"ROBUSTLAB_MAX_UPLOAD_BYTES": str(LIMIT)}) as server:
        yield server


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", PARAMS, (64,), 10).eval()


def _stored(api: ApiServer) -> list[str]:
    return api.artifacts().list("checkpoints")


def _leftover_uploads(api: ApiServer) -> list[Path]:
    return list((api.settings.data_dir / "uploads").glob("*"))


def test_safetensors_upload_is_accepted_and_usable(api: ApiServer, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "tiny.safetensors", _model(), architecture="mlp", params=PARAMS,
                           input_shape=[64], num_outputs=10, spec_hash=None, epoch=None)
    data = path.read_bytes()
    client = api.client("alice")
    response = client.post("/v1/checkpoints", files={"file": ("tiny.safetensors", data)},
                           data={"architecture": "mlp", "params": '{"hidden": [16]}'})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["bytes"] == len(data)
    assert body["architecture"] == "mlp"
    assert _stored(api).count(f"{body['id']}/tiny.safetensors") == 1
    record = api.store().get_checkpoint(body["id"], "alice")
    assert record is not None and record.params["hidden"] == [16]

    evaluate = {"kind": "evaluate", "spec": EXAMPLE_SPEC, "checkpoint": body["id"]}
    assert client.post("/v1/jobs", json=evaluate).status_code == 202
    foreign = api.client("bob").post("/v1/jobs", json=evaluate)  # bob cannot use alice's checkpoint
    assert foreign.status_code == 404 and foreign.json()["error"]["type"] == "not_found"
    wrong_arch = {**evaluate, "spec": {**EXAMPLE_SPEC, "model": {"architecture": "lenet5"}}}
    problems = client.post("/v1/jobs", json=wrong_arch).json()["error"]["problems"]
    assert problems[0]["path"] == "spec.model.architecture"


def test_pt_state_dict_is_checked_and_stored_as_safetensors(api: ApiServer, tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(_model().state_dict(), path)
    client = api.client("alice")
    files = {"file": ("plain.pt", path.read_bytes())}
    missing = client.post("/v1/checkpoints", files=files, data={"architecture": "mlp", "params": '{"hidden": [16]}'})
    assert missing.status_code == 422 and "input_shape" in missing.json()["error"]["message"]
    response = client.post("/v1/checkpoints", files=files, data={
        "architecture": "mlp", "params": '{"hidden": [16]}', "input_shape": "[64]", "num_outputs": "10"})
    assert response.status_code == 201, response.text
    checkpoint_id = response.json()["id"]
    assert f"{checkpoint_id}/plain.safetensors" in _stored(api)
    local = tmp_path / "back.safetensors"
    api.artifacts().get_file(f"checkpoints/{checkpoint_id}", "plain.safetensors", local)
    assert read_metadata(local)["input_shape"] == [64]  # self-describing now: evaluate jobs can load it


class _OpenPayload:
    """Unpickling this calls open(sentinel, "w"), which creates the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.sentinel), "w"))


def test_pickle_payload_is_rejected_and_never_runs(api: ApiServer, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_OpenPayload(tmp_path / "control"))).close()  # the payload is live
    assert (tmp_path / "control").exists()
    before = _stored(api)
    evil = tmp_path / "evil.pt"
    torch.save({**_model().state_dict(), "net.extra": _OpenPayload(sentinel)}, evil)
    response = api.client("carol").post("/v1/checkpoints", files={"file": ("evil.pt", evil.read_bytes())},
                                        data={"architecture": "mlp", "input_shape": "[64]", "num_outputs": "10"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_checkpoint" and "NOT executed" in error["message"]
    assert "evil.pt" in error["message"] and "upload-" not in error["message"]  # the user's name, not ours
    assert not sentinel.exists()
    assert _stored(api) == before and _leftover_uploads(api) == []


def test_oversized_upload_is_413_while_streaming(api: ApiServer, tmp_path: Path) -> None:
    client = api.client("dave")
    before = _stored(api)
    big = os.urandom(3 * LIMIT)
    declared = client.post("/v1/checkpoints", files={"file": ("big.safetensors", big)}, data={"architecture": "mlp"})
    assert declared.status_code == 413 and "exceeds the limit" in declared.json()["error"]["message"]

    # Chunked, without Content-Length: the cap must hit while the body streams in.
    boundary = "robustlabtestboundary"

    def body() -> Iterator[bytes]:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="architecture"\r\n\r\nmlp\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.safetensors"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for start in range(0, len(big), 16384):
            yield big[start:start + 16384]
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = client.post("/v1/checkpoints", content=body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert streamed.status_code == 413, streamed.text
    assert _stored(api) == before and _leftover_uploads(api) == []


def test_bad_upload_forms_are_clear_4xx(api: ApiServer, tmp_path: Path) -> None:
    client = api.client("erin")
    blob = {"file": ("m.safetensors", b"not really")}
    cases = [
        (client.post("/v1/checkpoints", files=blob), 422, "architecture"),
        (client.post("/v1/checkpoints", files=blob, data={"architecture": "transformer"}), 422, "architecture"),
        (client.post("/v1/checkpoints", files=blob, data={"architecture": "mlp", "params": "{bad"}), 422, "params"),
        (client.post("/v1/checkpoints", files=blob, data={"architecture": "mlp", "params": '{"hidden": [0]}'}),
         422, "params.hidden.0"),
        (client.post("/v1/checkpoints", files={"file": ("m.exe", b"MZ")}, data={"architecture": "mlp"}), 422, "file"),
        (client.post("/v1/checkpoints", data={"architecture": "mlp"}), 415, None),
        (client.post("/v1/checkpoints", files=blob, data={"architecture": "mlp"}), 422, "file"),  # unreadable
    ]
    for response, status, path in cases:
        assert response.status_code == status, response.text
        if path is not None:
            assert path in [p["path"] for p in response.json()["error"]["problems"]], response.text
    assert api.client(None).post("/v1/checkpoints", files=blob, data={"architecture": "mlp"}).status_code == 401
