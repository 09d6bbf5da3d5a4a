"""The jobs API over real HTTP (uvicorn in a child process) and a real Redis: auth, tenants,
spec errors with field paths, quota, idempotency, ETag polling, cancel, pagination, reports."""

from __future__ import annotations

import copy
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from core.jobs import JobStatus, Progress
from jobstore.queue import job_queue, rq_connection, rq_job_id
from service.schemas import EXAMPLE_SPEC
from tests.integration.api_server import ApiServer, key_of, running_api

pytestmark = pytest.mark.integration

QUOTA = 3


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(redis_url, tmp_path_factory.mktemp("api-jobs"),
                     extra_env={"ROBUSTLAB_MAX_QUEUED_JOBS_PER_TENANT": str(QUOTA)}) as server:
        yield server


def _job(**spec_changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE_SPEC)
    spec.update(spec_changes)
    return {"kind": "compare", "spec": spec}


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["type"] and body["message"]
    return body


def test_missing_or_wrong_key_is_401(api: ApiServer) -> None:
    missing = api.client(None).get("/v1/jobs")
    assert "Authorization: Bearer" in _error(missing, 401)["message"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = api.client(key="test-key-alice-0123456788").post("/v1/jobs", json=_job())
    assert "wrong API key" in _error(wrong, 401)["message"]
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.client("alice").get("/v1/jobs").status_code == 200


def test_another_tenants_job_is_404(api: ApiServer) -> None:
    created = api.client("bob").post("/v1/jobs", json=_job())
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    carol = api.client("carol")
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/report"), ("GET", "/artifacts"),
                         ("GET", "/artifacts/report.json")):
        _error(carol.request(method, f"/v1/jobs/{job_id}{path}"), 404)
    assert job_id not in [j["id"] for j in carol.get("/v1/jobs").json()["items"]]
    assert api.client("bob").get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    _error(carol.get("/v1/jobs/no-such-job"), 404)


def test_malformed_spec_is_422_with_field_paths(api: ApiServer) -> None:
    client = api.client("dave")
    body = _job()
    body["spec"]["regularizers"][1]["weight"] = -1.0
    body["spec"]["trainig"] = {"epochs": 1}
    problems = _error(client.post("/v1/jobs", json=body), 422)["problems"]
    paths = {p["path"]: p["message"] for p in problems}
    assert "spec.regularizers[1].weight" in paths, problems
    assert "did you mean 'training'" in paths["spec.trainig"], problems

    unknown_kind = _error(client.post("/v1/jobs", json={"kind": "train", "spec": EXAMPLE_SPEC}), 422)
    assert [p["path"] for p in unknown_kind["problems"]] == ["kind"]
    no_checkpoint = _error(client.post("/v1/jobs", json={**_job(), "kind": "evaluate"}), 422)["problems"]
    assert no_checkpoint[0]["path"] == "checkpoint" and "needs `checkpoint`" in no_checkpoint[0]["message"]
    foreign = _error(client.post("/v1/jobs", json={**_job(), "kind": "evaluate", "checkpoint": "nope"}), 404)
    assert foreign["type"] == "not_found" and foreign["problems"][0]["path"] == "checkpoint"
    not_json = client.post("/v1/jobs", content=b'{"kind": "compare", "spec": ',
                           headers={"Content-Type": "application/json"})
    assert "not valid JSON" in _error(not_json, 400)["message"]
    _error(client.post("/v1/jobs", json=[1, 2]), 422)
    _error(client.get("/v1/jobs", params={"limit": 1000}), 422)
    _error(client.get("/v1/jobs", params={"status": "done"}), 422)
    assert client.get("/v1/jobs").json()["items"] == []  # nothing invalid was accepted


def test_quota_is_429_with_retry_after(api: ApiServer) -> None:
    client = api.client("erin")
    ids = [client.post("/v1/jobs", json=_job()).json()["id"] for _ in range(QUOTA)]
    refused = client.post("/v1/jobs", json=_job())
    assert "already has 3 queued or running jobs" in _error(refused, 429)["message"]
    assert int(refused.headers["Retry-After"]) > 0
    assert client.post(f"/v1/jobs/{ids[0]}/cancel").json()["status"] == "cancelled"
    assert client.post("/v1/jobs", json=_job()).status_code == 202  # a slot was freed
    assert api.client("frank").post("/v1/jobs", json=_job()).status_code == 202  # quotas are per tenant


def test_idempotency_key(api: ApiServer) -> None:
    client = api.client("frank")
    first = client.post("/v1/jobs", json=_job(name="idem"), headers={"Idempotency-Key": "run-42"})
    again = client.post("/v1/jobs", json=_job(name="idem"), headers={"Idempotency-Key": "run-42"})
    assert first.status_code == 202 and again.status_code == 200, again.text
    assert first.json()["id"] == again.json()["id"]
    conflict = client.post("/v1/jobs", json=_job(name="other"), headers={"Idempotency-Key": "run-42"})
    assert "different request body" in _error(conflict, 409)["message"]
    other_tenant = api.client("grace").post("/v1/jobs", json=_job(name="idem"), headers={"Idempotency-Key": "run-42"})
    assert other_tenant.status_code == 202 and other_tenant.json()["id"] != first.json()["id"]
    _error(client.post("/v1/jobs", json=_job(), headers={"Idempotency-Key": "bad key!"}), 400)


def test_etag_304_until_the_job_changes(api: ApiServer) -> None:
    client = api.client("grace")
    created = client.post("/v1/jobs", json=_job())
    job_id = created.json()["id"]
    assert created.json()["links"]["self"] == f"/v1/jobs/{job_id}"
    first = client.get(f"/v1/jobs/{job_id}")
    tag = first.headers["ETag"]
    assert tag.startswith('W/"') and first.json()["progress"]["fraction"] == 0.0
    unchanged = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.content == b""

    store = api.store()
    token = store.start(job_id)
    assert token is not None and store.progress(job_id, token, Progress(fraction=0.25, stage="training"))
    changed = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    body = changed.json()
    assert body["status"] == "running" and body["progress"]["fraction"] == 0.25 and body["started_at"]
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": changed.headers["ETag"]}).status_code == 304


def test_cancel_queued_running_and_finished(api: ApiServer) -> None:
    client, store = api.client("heidi"), api.store()
    queue = job_queue(rq_connection(str(api.settings.redis_url)), api.settings)
    queued = client.post("/v1/jobs", json=_job()).json()["id"]
    # handed to RQ, or waiting in the tenant's line while earlier tests' jobs fill the RQ queue
    assert rq_job_id(queued, 1) in queue.job_ids or queued in store.waiting("heidi")
    cancelled = client.post(f"/v1/jobs/{queued}/cancel")
    assert rq_job_id(queued, 1) not in queue.job_ids  # withdrawn: no worker forks just to skip it
    assert queued not in store.waiting("heidi")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"]["type"] == "Cancelled"
    assert "already cancelled" in _error(client.post(f"/v1/jobs/{queued}/cancel"), 409)["message"]

    running = client.post("/v1/jobs", json=_job()).json()["id"]
    token = store.start(running)
    assert token is not None
    flagged = client.post(f"/v1/jobs/{running}/cancel").json()
    assert flagged["status"] == "running" and flagged["cancel_requested"] is True
    assert not store.progress(running, token, Progress(fraction=0.5))  # the worker learns it must stop


def test_pagination_and_status_filter(api: ApiServer) -> None:
    client = api.client("alice")
    ids = []
    for _ in range(5):  # cancel each one so the quota never blocks the next
        ids.append(client.post("/v1/jobs", json=_job()).json()["id"])
        client.post(f"/v1/jobs/{ids[-1]}/cancel")
    active = client.post("/v1/jobs", json=_job()).json()["id"]
    seen, cursor, pages = [], None, 0
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [active, *reversed(ids)] and pages == 3  # newest first, each job once
    only = client.get("/v1/jobs", params={"status": "queued"}).json()
    assert [j["id"] for j in only["items"]] == [active] and only["next_cursor"] is None
    _error(client.get("/v1/jobs", params={"cursor": "abc"}), 422)


def _raw_get(api: ApiServer, path: str) -> tuple[int, bytes]:
    """A request with the path sent verbatim (httpx would normalise `..` away before sending)."""
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key_of('bob')}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_reports_artifacts_and_path_traversal(api: ApiServer, tmp_path: Path) -> None:
    client, store = api.client("bob"), api.store()
    job_id = client.post("/v1/jobs", json=_job()).json()["id"]
    assert "not finished yet" in _error(client.get(f"/v1/jobs/{job_id}/report"), 409)["message"]

    # A worker's work, done by hand: artifacts under its own prefix, then the fenced finish naming it.
    artifacts = api.artifacts()
    token = store.start(job_id)
    assert token is not None
    prefix = f"jobs/{job_id}/result-{token}"
    for name, text in (("report.json", '{"kind": "compare"}'), ("report.html", "<html></html>"),
                       ("checkpoints/erm-seed0.safetensors", "x" * 100)):
        local = tmp_path / name.replace("/", "_")
        local.write_text(text)
        artifacts.put_file(prefix, name, local)
    # A superseded execution's files elsewhere under the job are never served.
    (tmp_path / "stale.json").write_text('{"kind": "stale"}')
    artifacts.put_file(f"jobs/{job_id}/result-stale", "report.json", tmp_path / "stale.json")
    (tmp_path / "secret.txt").write_text("secret")
    assert store.finish(job_id, token, JobStatus.SUCCEEDED, artifacts=["report.json"], result_prefix=prefix)

    assert client.get(f"/v1/jobs/{job_id}/report").json() == {"kind": "compare"}
    html = client.get(f"/v1/jobs/{job_id}/report.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    listing = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
    assert {a["name"]: a["bytes"] for a in listing} == {
        "checkpoints/erm-seed0.safetensors": 100, "report.html": 13, "report.json": 19}
    nested = client.get(f"/v1/jobs/{job_id}/artifacts/checkpoints/erm-seed0.safetensors")
    assert nested.status_code == 200 and nested.content == b"x" * 100
    _error(client.get(f"/v1/jobs/{job_id}/report.md"), 404)  # finished, but never written

    for path in (f"/v1/jobs/{job_id}/artifacts/../../../secret.txt",
                 f"/v1/jobs/{job_id}/artifacts/%2e%2e/%2e%2e/report.json",
                 f"/v1/jobs/{job_id}/artifacts/..%2F..%2Fsecret.txt",
                 f"/v1/jobs/{job_id}/artifacts//etc/passwd",
                 f"/v1/jobs/{job_id}/artifacts/.hidden"):
        status, body = _raw_get(api, path)
        assert status == 400, (path, status, body)
        assert b"invalid artifact name" in body
