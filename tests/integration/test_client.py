"""The HTTP client and the CLI commands built on it, against a real API server (uvicorn in a thread,
real Redis) with no worker, so that submitted jobs stay queued; and against no server at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from core.settings import Settings
from robustlab.cli import app
from robustlab.embedded_redis import free_port
from service.app import create_app
from service.client import ClientError, RobustlabClient

pytestmark = pytest.mark.integration

KEY, OTHER_KEY = "alpha-key-0123456789", "beta-key-0123456789"
SPEC = {
    "name": "client-test",
    "dataset": {"name": "digits", "train_size": 64, "test_size": 32, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [8]}},
    "training": {"epochs": 1, "batch_size": 32},
    "regularizers": [{"name": "erm", "kind": "none"}],
    "seeds": [0],
    "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.1]}]},
}



@pytest.fixture
def server(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix, queue=key_prefix.rstrip(":"),
                        data_dir=tmp_path, api_keys=f"alpha:{KEY},beta:{OTHER_KEY}")
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def test_submit_poll_with_etag_cancel(server: str) -> None:
    with RobustlabClient(server, KEY) as client:
        accepted = client.submit(SPEC, idempotency_key="client-test-1")
        assert accepted["status"] == "queued"
        assert client.submit(SPEC, idempotency_key="client-test-1")["id"] == accepted["id"]
        first = client.get(accepted["id"])
        assert first.job is not None and first.job["status"] == "queued" and first.etag
        assert client.get(accepted["id"], etag=first.etag).job is None  # 304: unchanged
        with pytest.raises(ClientError, match=r"did not finish within 0\.3s"):
            client.wait(accepted["id"], timeout=0.3, interval=0.05)
        client.cancel(accepted["id"])
        changed = client.get(accepted["id"], etag=first.etag)
        assert changed.job is not None and changed.etag != first.etag
        seen: list[str] = []
        final = client.wait(accepted["id"], timeout=5, on_progress=lambda job: seen.append(job["status"]))
        assert final["status"] == "cancelled" and seen == ["cancelled"]


def test_server_errors_carry_status_and_message(server: str) -> None:
    with RobustlabClient(server, KEY) as client:
        bad = {**SPEC, "training": {"epochs": 0, "batch_size": 32}}
        with pytest.raises(ClientError) as invalid:
            client.submit(bad)
        assert invalid.value.status == 422 and "spec.training.epochs" in invalid.value.message
        job_id = client.submit(SPEC)["id"]
        with pytest.raises(ClientError) as unfinished:
            client.report(job_id)
        assert unfinished.value.status is not None and 400 <= unfinished.value.status < 500
    with RobustlabClient(server, OTHER_KEY) as other, pytest.raises(ClientError) as foreign:
        other.get(job_id)
    assert foreign.value.status == 404 and job_id in foreign.value.message
    with RobustlabClient(server, "wrong-key-0123456789") as wrong, pytest.raises(ClientError) as refused:
        wrong.get(job_id)
    assert refused.value.status == 401 and "ROBUSTLAB_API_KEY" in refused.value.message


def test_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with RobustlabClient(url, KEY, timeout=2) as client, pytest.raises(ClientError) as unreachable:
        client.submit(SPEC)
    assert unreachable.value.status is None
    assert f"cannot reach the robustlab server at {url}" in unreachable.value.message


def test_cli_exit_codes_and_one_line_errors(server: str, tmp_path: Path) -> None:
    runner = CliRunner()
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps(SPEC), encoding="utf-8")
    result = runner.invoke(app, ["submit", str(spec_file), "--server", server, "--api-key", KEY])
    assert result.exit_code == 0, result.output
    job_id = result.output.strip()
    result = runner.invoke(app, ["status", job_id, "--server", server, "--api-key", KEY])
    assert result.exit_code == 0 and f"{job_id} queued" in result.output

    nobody = f"http://127.0.0.1:{free_port()}"
    for args, code, words in [
        (["status", job_id, "--server", nobody, "--api-key", KEY], 2, "cannot reach the robustlab server"),
        (["status", job_id, "--server", server, "--api-key", "wrong-key-0123456789"], 1, "HTTP 401"),
        (["report", job_id, "--out", str(tmp_path / "r"), "--server", nobody, "--api-key", KEY], 2, "cannot reach"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output

    spec_file.write_text("name: broken\n", encoding="utf-8")  # checked locally, before any request
    result = runner.invoke(app, ["submit", str(spec_file), "--server", nobody, "--api-key", KEY])
    assert result.exit_code == 1 and "FAIL" in result.output and "dataset" in result.output
