"""Issue 21 over real HTTP (uvicorn child process with the bounded protocol, real Redis, real checkers):
what a tenant's upload may cost, bounded requests, no 500 from odd input, and the uploads' life cycle.

No worker runs here: a submitted job stays queued, which is what DELETE's 409 needs. The evaluate job
on a Constant-weights ONNX (a real worker) is in test_user_models_http.py.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from tests.cost_fixtures import SECTION_VECTOR, constant_weights, matmul_bomb
from tests.integration.api_server import ApiServer, key_of, running_api

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
CHECK_TIMEOUT = 180.0  # a checker imports torch and onnx2torch on a loaded 2-core machine


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(redis_url, tmp_path_factory.mktemp("upload-limits"),
                     extra_env={"ROBUSTLAB_MAX_STORED_UPLOADS_PER_TENANT": "4"}) as server:
        yield server


def _npz(width: int = 64, samples: int = 12, seed: int = 0, classes: int = 10) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_test=rng.random((samples, width), dtype=np.float32),
                        y_test=np.arange(samples) % classes)
    return buffer.getvalue()


def _upload_dataset(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": ("data.npz", data)}, data=fields, timeout=CHECK_TIMEOUT)


def _upload_model(client: httpx.Client, path: Path, section: dict[str, Any]) -> httpx.Response:
    import json

    return client.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                       data={"model": json.dumps(section)}, timeout=CHECK_TIMEOUT)


def _job(dataset_id: str, hidden: int = 16) -> dict[str, Any]:
    return {"kind": "compare", "spec": {
        "name": "w", "dataset": {"name": "upload", "id": dataset_id},
        "model": {"architecture": "mlp", "params": {"hidden": [hidden]}},
        "training": {"epochs": 1, "batch_size": 16}, "regularizers": [{"name": "erm", "kind": "none"}],
        "evaluation": {"attacks": [{"kind": "fgsm", "eps": [0.1]}]}}}


def test_an_uploaded_width_counts_in_the_job_limits(api: ApiServer) -> None:
    """The mlp of hidden [2048] on 65,536 uploaded features is refused at submit, naming the limit."""
    client = api.client("alice")
    wide = _upload_dataset(client, _npz(width=65536, samples=4))
    assert wide.status_code == 201, wide.text
    assert wide.json()["sample_shape"] == [65536]
    refused = client.post("/v1/jobs", json=_job(wide.json()["id"], hidden=2048))
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "over_limits", refused.text
    assert any(p["path"] == "spec.model.params" and "MAX_JOB_PARAMETERS" in p["message"]
               for p in refused.json()["error"]["problems"])
    built_in = _job("x", hidden=2048)
    built_in["spec"]["dataset"] = {"name": "synthetic", "n_features": 65536, "n_samples": 100}
    assert client.post("/v1/jobs", json=built_in).json()["error"]["type"] == "over_limits"
    assert client.delete(f"/v1/datasets/{wide.json()['id']}").status_code == 204


def test_the_cpu_bomb_is_refused_fast_and_a_parameter_free_model_is_accepted(api: ApiServer,
                                                                             tmp_path: Path) -> None:
    client = api.client("alice")
    bomb = _upload_model(client, matmul_bomb(tmp_path / "bomb.onnx"), SECTION_VECTOR)
    assert bomb.status_code == 422, bomb.text
    error = bomb.json()["error"]
    assert error["type"] == "over_limits" and "MAX_FORWARD_FLOPS" in error["message"]
    assert error["problems"][0]["path"] == "max_forward_flops"
    good = _upload_model(client, constant_weights(tmp_path / "constants.onnx"), SECTION_VECTOR)
    assert good.status_code == 201, good.text
    assert good.json()["parameters"] == 650 and good.json()["flops_source"] == "graph"
    assert client.delete(f"/v1/models/{good.json()['id']}").status_code == 204


def test_the_same_file_twice_is_one_upload_and_delete_waits_for_its_jobs(api: ApiServer) -> None:
    client = api.client("bob")
    data = _npz(seed=3)
    first = _upload_dataset(client, data)
    second = _upload_dataset(client, data)
    assert (first.status_code, second.status_code) == (201, 200), second.text
    dataset_id = first.json()["id"]
    assert second.json()["id"] == dataset_id
    assert _upload_dataset(client, data, num_classes="12").json()["id"] != dataset_id  # declared otherwise
    assert api.client("carol").get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert api.client("carol").delete(f"/v1/datasets/{dataset_id}").status_code == 404
    job = client.post("/v1/jobs", json=_job(dataset_id))
    assert job.status_code == 202, job.text
    in_use = client.delete(f"/v1/datasets/{dataset_id}")
    assert in_use.status_code == 409 and job.json()["id"] in in_use.json()["error"]["message"]
    assert client.post(f"/v1/jobs/{job.json()['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert not [n for n in api.artifacts().list("datasets") if n.startswith(dataset_id)]


def test_the_tenant_upload_quota_holds(api: ApiServer) -> None:
    client = api.client("dave")
    for seed in range(4):
        assert _upload_dataset(client, _npz(seed=10 + seed)).status_code == 201
    over = _upload_dataset(client, _npz(seed=20))
    assert over.status_code == 429 and over.json()["error"]["type"] == "quota_exceeded", over.text
    assert _upload_dataset(client, _npz(seed=10)).status_code == 200  # a repeat costs nothing
    for item in client.get("/v1/datasets").json():
        assert client.delete(f"/v1/datasets/{item['id']}").status_code == 204
    assert _upload_dataset(client, _npz(seed=20)).status_code == 201


@pytest.mark.parametrize(("path", "field"), [("/v1/datasets", "num_classes"), ("/v1/models", "num_outputs")])
def test_non_ascii_digits_are_a_422(api: ApiServer, path: str, field: str) -> None:
    with api.client("alice") as client:
        for value in ("²", "٣", "1e3", "-2", "9" * 40):
            extra = {} if field == "num_classes" else {"architecture": "mlp", "input_shape": "[64]"}
            name = "data.npz" if field == "num_classes" else "m.pt"
            response = client.post(path, files={"file": (name, b"x")}, data={field: value, **extra})
            assert response.status_code == 422 and field in response.text, (value, response.text)
        assert client.get("/healthz").status_code == 200  # the same keep-alive connection still serves


@pytest.mark.parametrize("char", ["\u0000", "\u0086", "\ud800", "\ufffe"])
def test_text_yaml_cannot_read_is_a_422(api: ApiServer, char: str) -> None:
    body = '{"spec_text": "name: a' + char.encode("unicode_escape").decode().replace("\\x", "\\u00") + '"}'
    response = api.client("alice").post("/v1/specs/validate", content=body.encode(),
                                        headers={"content-type": "application/json"})
    assert response.status_code == 422 and "YAML cannot read" in response.text, response.text


def test_unknown_form_fields_are_refused_before_they_are_buffered(api: ApiServer) -> None:
    server = psutil.Process(api.process.pid)
    before = server.memory_info().rss
    fields = {f"f{i}": "x" * 60_000 for i in range(3000)}  # 180 MB of unknown fields
    boundary = "b0undary"
    def body() -> Iterator[bytes]:
        for name, value in fields.items():
            yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
        yield f"--{boundary}--\r\n".encode()
    try:
        response = api.client("alice").post("/v1/datasets", content=body(),
                                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 422 and "unknown form field 'f0'" in response.text
    except httpx.TransportError:
        pass  # the server answered and closed while the client was still sending: also a refusal
    assert server.memory_info().rss - before < 50 * MiB
    assert httpx.get(f"{api.url}/healthz").status_code == 200


def test_an_oversized_header_is_a_431_and_others_are_served_meanwhile(api: ApiServer) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    answers: list[bytes] = []

    def send_big_header() -> None:
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(16):
                    sock.sendall(b"a" * 65536)
                sock.sendall(b"\r\n\r\n")
            except OSError:
                pass  # the server closed after its 431
            answers.append(sock.recv(4096))

    sender = threading.Thread(target=send_big_header)
    sender.start()
    healthy = [httpx.get(f"{api.url}/healthz", timeout=30).status_code for _ in range(5)]
    sender.join(60)
    assert healthy == [200] * 5
    assert answers and answers[0].startswith(b"HTTP/1.1 431"), answers
    with socket.create_connection((host, int(port)), timeout=60) as sock:  # a long request line
        sock.sendall(b"GET /healthz?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 431")


def test_a_check_whose_client_leaves_is_stopped(api: ApiServer, tmp_path: Path) -> None:
    """The client disconnects while its upload is checked: the checker process is killed at once."""
    import json

    path = constant_weights(tmp_path / "leaving.onnx")
    server = psutil.Process(api.process.pid)
    content = path.read_bytes()
    boundary = "leave"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{json.dumps(SECTION_VECTOR)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"leaving.onnx\"\r\n\r\n"
            ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"POST /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key_of('alice')}\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body)
        deadline = time.monotonic() + 60
        while not _checkers(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _checkers(server), "no checker started"
    deadline = time.monotonic() + 60
    while _checkers(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _checkers(server)
    deadline = time.monotonic() + 30
    while "the client left" not in api.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "the client left while its upload was checked" in api.log_text()


def _checkers(server: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in server.children(recursive=True):
        try:
            if "worker.upload_check" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_robustlab_api_leaves_no_process_behind_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    """Its parser processes and multiprocessing's resource tracker end with it."""
    import os
    import signal
    import subprocess
    import sys

    from robustlab.embedded_redis import free_port

    port = free_port()
    env = {**os.environ, "ROBUSTLAB_REDIS_URL": redis_url, "ROBUSTLAB_KEY_PREFIX": f"rltest:sig{port}:",
           "ROBUSTLAB_API_KEYS": f"alice:{key_of('alice')}", "ROBUSTLAB_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "robustlab.cli", "api", "--host", "127.0.0.1", "--port",
                                str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key_of('alice')}"}
        assert httpx.post(f"{url}/v1/specs/validate", json={"spec_text": "name: x"}, headers=headers,
                          timeout=60).status_code == 200
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 2  # a parser process and the resource tracker
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if process.poll() is None:
            process.kill()
