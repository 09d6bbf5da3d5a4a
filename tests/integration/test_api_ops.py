"""Catalog, OpenAPI, health, readiness (with a real RQ worker process) and Prometheus metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.enums import Architecture, RegularizerKind
from core.jobs import JobStatus, UnitKind, UnitWork
from jobstore.units import plan
from service.schemas import EXAMPLE_SPEC
from tests.integration.api_server import REPO, ApiServer, running_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(redis_url, tmp_path_factory.mktemp("api-ops")) as server:
        yield server


def test_catalog_lists_every_regularizer_and_architecture(api: ApiServer) -> None:
    assert api.client(None).get("/v1/catalog").status_code == 401
    catalog = api.client("alice").get("/v1/catalog").json()
    assert {e["name"] for e in catalog["regularizers"]} == {k.value for k in RegularizerKind}
    assert {e["name"] for e in catalog["architectures"]} == {a.value for a in Architecture}
    assert {"fgsm", "pgd"} <= {e["name"] for e in catalog["attacks"]}
    assert "digits" in {e["name"] for e in catalog["datasets"]}
    double_backprop = next(e for e in catalog["regularizers"] if e["name"] == "double_backprop")
    weight = next(p for p in double_backprop["parameters"] if p["name"] == "weight")
    assert weight["type"] == "float" and "minimum" in weight


def test_openapi_documents_every_route_with_examples(api: ApiServer) -> None:
    doc = httpx.get(f"{api.url}/openapi.json").json()
    submit = doc["paths"]["/v1/jobs"]["post"]
    example = submit["requestBody"]["content"]["application/json"]["examples"]["compare"]["value"]
    assert example["spec"] == EXAMPLE_SPEC
    assert {"202", "401", "409", "422", "429"} <= set(submit["responses"])
    assert "JobRequest" in doc["components"]["schemas"] and "ExperimentSpec" in doc["components"]["schemas"]
    assert doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["304"]
    assert "multipart/form-data" in doc["paths"]["/v1/checkpoints"]["post"]["requestBody"]["content"]
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), (method, path)
            if path.startswith("/v1/"):
                assert "401" in operation["responses"], (method, path)
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_metrics_parse_and_count_jobs(api: ApiServer) -> None:
    client = api.client("bob")
    for _ in range(2):
        assert client.post("/v1/jobs", json={"kind": "compare", "spec": EXAMPLE_SPEC}).status_code == 202
    store = api.store()
    finished = client.post("/v1/jobs", json={"kind": "compare", "spec": EXAMPLE_SPEC}).json()["id"]
    token = store.start(finished)
    assert token is not None and store.finish(finished, token, JobStatus.SUCCEEDED)
    response = httpx.get(f"{api.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    assert samples[("robustlab_jobs", (("status", "queued"),))] == 2
    assert samples[("robustlab_jobs", (("status", "succeeded"),))] == 1
    # No worker took any: fair dispatch hands RQ two (ROBUSTLAB_QUEUE_DEPTH) and holds the third back; that
    # third one was then started and finished by hand, so nothing waits behind the two.
    assert samples[("robustlab_queue_depth", ())] == 2
    assert samples[("robustlab_jobs_waiting_dispatch", ())] == 0
    assert samples[("robustlab_workers", ())] == 0
    assert samples[("robustlab_job_duration_seconds_count", ())] == 1


def test_a_job_spread_over_units_shows_them_in_its_status_and_in_the_metrics(api: ApiServer) -> None:
    """After the metrics test (which counts jobs waiting for dispatch): a job planned into units."""
    client = api.client("carol")
    job_id = client.post("/v1/jobs", json={"kind": "compare", "spec": EXAMPLE_SPEC}).json()["id"]
    store = api.store()
    token = store.start(job_id)
    record = store.get(job_id)
    assert token is not None and record is not None
    works = [UnitWork(name="train erm seed 0", kind=UnitKind.TRAIN, run="erm"),
             UnitWork(name="evaluate erm seed 0 [0, 100)", kind=UnitKind.EVALUATE, run="erm", start=0, stop=100,
                      after=["train erm seed 0"])]
    unit_ids = plan(store, record, token, works)
    assert unit_ids is not None
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "running"
    assert [(u["name"], u["kind"], u["status"], u["attempts"]) for u in job["units"]] == [
        ("train erm seed 0", "train", "queued", 0), ("evaluate erm seed 0 [0, 100)", "evaluate", "queued", 0)]
    assert job["progress"]["message"].startswith("0/2 units done, 0 running")
    assert client.get(f"/v1/jobs/{unit_ids[0]}").status_code == 404  # a unit is part of its job
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(httpx.get(f"{api.url}/metrics").text)
               for s in family.samples}
    assert samples[("robustlab_units", (("status", "queued"), ("tenant", "carol")))] == 2
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert all(u["status"] == "cancelled" for u in client.get(f"/v1/jobs/{job_id}").json()["units"])


def _ready(api: ApiServer) -> httpx.Response:
    return httpx.get(f"{api.url}/readyz", timeout=10)


def _worker_env(api: ApiServer, tmp_path: Path) -> dict[str, str]:
    """A real robustlab worker's environment on the API's queue (its own: it never sees other tests' jobs)."""
    return {**os.environ, "ROBUSTLAB_REDIS_URL": str(api.settings.redis_url),
            "ROBUSTLAB_KEY_PREFIX": api.settings.key_prefix, "ROBUSTLAB_QUEUE": api.settings.queue,
            "ROBUSTLAB_DATA_DIR": str(tmp_path / "worker-data")}


def test_a_worker_stopped_as_soon_as_it_is_announced_says_goodbye(api: ApiServer, tmp_path: Path) -> None:
    """SIGTERM the moment the presence key appears, before RQ's loop has installed its handlers:
    the worker still leaves through its cleanup (exit 0, presence deleted), not by the signal's
    default action, which would leave /readyz reporting it until the key expired."""
    import redis

    from jobstore.records import Keys

    name = f"early-stop-{os.getpid()}"
    key = Keys(api.settings.key_prefix).worker_heartbeat(name)
    client = redis.Redis.from_url(str(api.settings.redis_url))
    env = _worker_env(api, tmp_path)
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "robustlab.cli", "worker", "--name", name], cwd=REPO,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not client.exists(key):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never announced itself"
            time.sleep(0.01)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()
        assert not client.exists(key)  # deleted on the way out, not left to expire
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)


def test_health_and_readiness_follow_the_workers(api: ApiServer, tmp_path: Path) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok", "checks": {}}
    not_ready = _ready(api)
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["redis"] == "ok" and "no worker" in not_ready.json()["checks"]["workers"]

    env = _worker_env(api, tmp_path)

    def start_worker() -> subprocess.Popen[bytes]:
        with (tmp_path / "worker.log").open("ab") as log:
            return subprocess.Popen([sys.executable, "-m", "robustlab.cli", "worker"], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)

    def wait_for(status: int, worker: subprocess.Popen[bytes], timeout: float) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while (ready := _ready(api)).status_code != status:
            assert status == 503 or worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        return ready

    worker = start_worker()
    try:
        assert wait_for(200, worker, 30).json()["status"] == "ok"
        worker.send_signal(signal.SIGTERM)  # a clean stop says goodbye at once
        worker.wait(timeout=15)
        assert wait_for(503, worker, 3).status_code == 503
        # A SIGKILLed worker cannot say goodbye: its presence expires within seconds (RQ's own
        # registry would still list it for minutes).
        worker = start_worker()
        wait_for(200, worker, 30)
        worker.kill()
        worker.wait(timeout=10)
        assert "no worker" in wait_for(503, worker, 20).json()["checks"]["workers"]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
