"""The Python client against the real service: the API in a child process, a real worker, real Redis.

One compare job (a few seconds) gives a checkpoint that is downloaded, uploaded again and evaluated;
the quota test uses an API of its own (quota 1, no worker, so jobs stay queued).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.reports import Report
from service.client import ClientError, RobustlabClient
from service.retry import Backoff, retry_after
from tests.integration.api_server import ApiServer, key_of, running_api
from tests.integration.processes import Service, tiny_spec
from tests.integration.service_stack import running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Service]]:
    with running_stack(redis_url, tmp_path_factory.mktemp("client-stack")) as started:
        yield started


def test_submit_wait_report_download_upload_and_evaluate(stack: tuple[ApiServer, Service], tmp_path: Path) -> None:
    api, service = stack
    with RobustlabClient(api.url, key_of("alice")) as client:
        job = client.submit(tiny_spec(name="client-e2e"))
        seen: list[str] = []
        done = client.wait(job["id"], on_progress=lambda j: seen.append(j["status"]), timeout=60)
        assert done["status"] == "succeeded", (done, service.log())
        assert seen[0] in ("queued", "running") and seen[-1] == "succeeded"
        fresh = client.get(job["id"])
        assert fresh.job is not None and client.get(job["id"], etag=fresh.etag).job is None  # 304: unchanged

        report = client.fetch_report(job["id"])
        assert isinstance(report, Report) and report.kind == "compare" and report.summary[0].regularizer == "erm"
        names = [a["name"] if isinstance(a, dict) else a for a in client.artifacts(job["id"])]
        assert "report.html" in names and "checkpoints/erm-seed0.safetensors" in names
        html = client.download(job["id"], "report.html", tmp_path)
        assert html == tmp_path / "report.html" and "<html" in html.read_text()[:500].lower()
        checkpoint = client.download(job["id"], "checkpoints/erm-seed0.safetensors", tmp_path / "model.safetensors")

        uploaded = client.upload_checkpoint(checkpoint, "mlp", {"hidden": [16]})
        assert uploaded["architecture"] == "mlp" and uploaded["bytes"] == checkpoint.stat().st_size
        evaluation = client.submit(tiny_spec(name="client-eval"), kind="evaluate", checkpoint=uploaded["id"])
        assert client.wait(evaluation["id"], timeout=60)["status"] == "succeeded", service.log()
        evaluated = client.fetch_report(evaluation["id"])
        assert evaluated.kind == "evaluate"
        assert evaluated.summary[0].clean_accuracy.mean == pytest.approx(report.summary[0].clean_accuracy.mean)

        garbage = tmp_path / "garbage.safetensors"
        garbage.write_bytes(b"\x00" * 64)
        with pytest.raises(ClientError) as refused:
            client.upload_checkpoint(garbage, "mlp")
        assert refused.value.status == 422 and "not a readable safetensors file" in refused.value.message


def test_errors_carry_the_servers_status_and_message(stack: tuple[ApiServer, Service]) -> None:
    api, _ = stack
    with RobustlabClient(api.url, "wrong-key-0123456789") as wrong, pytest.raises(ClientError) as refused:
        wrong.list_jobs()
    assert refused.value.status == 401
    assert "wrong API key" in refused.value.message and "ROBUSTLAB_API_KEY" in refused.value.message
    with RobustlabClient(api.url, key_of("alice")) as client, pytest.raises(ClientError) as invalid:
        client.submit({**tiny_spec(), "seeds": []})
    assert invalid.value.status == 422 and "seeds" in invalid.value.message
    assert isinstance(invalid.value.body, dict) and invalid.value.body["error"]["problems"]


def test_a_quota_429_is_retried_after_the_servers_retry_after(redis_url: str, tmp_path: Path) -> None:
    with (running_api(redis_url, tmp_path / "quota", extra_env={"ROBUSTLAB_MAX_QUEUED_JOBS_PER_TENANT": "1"}) as api,
          RobustlabClient(api.url, key_of("carol")) as admin):
        first = admin.submit(tiny_spec())  # the tenant's one queued job: the next submit is a 429
        slept: list[float] = []

        def sleep(seconds: float) -> None:  # instead of waiting, free the quota the way a user would
            slept.append(seconds)
            admin.cancel(first["id"])

        with RobustlabClient(api.url, key_of("carol"), sleep=sleep) as client:
            second = client.submit(tiny_spec(name="after-429"))
        assert len(slept) == 1 and slept[0] >= 30  # the quota's Retry-After: 30
        assert second["id"] != first["id"] and second["status"] == "queued"
        assert len(admin.list_jobs()["items"]) == 2  # the retry made one job, not two

        with (RobustlabClient(api.url, key_of("carol"), retry_for=5, sleep=slept.append) as impatient,
              pytest.raises(ClientError) as refused):
            impatient.submit(tiny_spec())
        assert refused.value.status == 429 and "not retried again" in refused.value.message and len(slept) == 1


def test_backoff_grows_to_its_cap_with_jitter_and_retry_after_reads_dates() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, cap=5.0, jitter=0.2)
    delays = [backoff.next() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 5, 5, 5], strict=True):
        assert 0.8 * base <= delay <= 1.2 * base
    assert len(set(delays)) > 1
    backoff.reset()
    assert backoff.next() <= 1.2
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    request = httpx.Request("GET", "http://x")
    assert 15 < (retry_after(httpx.Response(503, headers={"Retry-After": later}, request=request)) or 0) <= 20
    assert retry_after(httpx.Response(429, headers={"Retry-After": "7"}, request=request)) == 7
    assert retry_after(httpx.Response(429, request=request)) is None
