"""Scale-out run for real: two worker "hosts" with no shared directory and an S3 artifact store.

A local S3-compatible server (moto's server mode) is started by the test. Each host is a worker
with a data directory of its own; they share only Redis and the bucket. A job trains on host A,
host A is SIGKILLed mid-training, host B resumes the job from the resume state in the bucket
(finished epochs are not redone) and publishes a complete report there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artifactstore import ArtifactStore
from core.jobs import JobStatus
from robustlab.embedded_redis import free_port
from tests.integration.processes import Service, kill_tree, tiny_spec, wait_for

pytestmark = pytest.mark.integration

pytest.importorskip("moto.server", reason="moto[server] (dev extra) runs the local S3 server")
pytest.importorskip("s3fs", reason="s3fs (dev extra) is the S3 artifact store's file system")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free port with one bucket; yields the environment that points at it."""
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        wait_for(lambda: _answers(env["AWS_ENDPOINT_URL"]), 60, "the S3 server")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("robustlab-test")
        yield env
    finally:
        kill_tree(server)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.TransportError:
        return False


def test_a_job_whose_host_dies_resumes_on_another_host_from_s3(s3: dict[str, str], redis_url: str,
                                                               key_prefix: str, tmp_path: Path) -> None:
    store_url = f"s3://robustlab-test/{key_prefix.strip(':').replace(':', '-')}"
    hosts = {name: Service(redis_url, key_prefix, tmp_path / f"host-{name}",
                           env_overrides={**s3, "ROBUSTLAB_ARTIFACT_STORE": store_url}) for name in "ab"}
    for host in hosts.values():
        host.data_dir.mkdir()
    a, b = hosts["a"], hosts["b"]
    try:
        job_id = a.submit(tiny_spec(epochs=30, train_size=1200, hidden=128, batch_size=16, name="scaleout"))
        worker_a = a.start_worker("a")
        wait_for(lambda: a.training_epoch(job_id) >= 4, 240, "training on host a to reach epoch 4")
        bucket = ArtifactStore(store_url)
        unit = a.train_unit(job_id).id  # the job's training run is a work unit: its state is its own
        wait_for(lambda: any(n.startswith("state/") for n in bucket.list(f"jobs/{unit}/resume")), 60,
                 "host a's resume state in the bucket")
        reached = a.training_epoch(job_id)
        kill_tree(worker_a)  # host a is gone, its disk with it as far as the job is concerned
        b.start_worker("b")
        record = b.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=600)
        assert record.status is JobStatus.SUCCEEDED, (record.error, b.log("b"))
        assert record.result_prefix is not None
        report = bucket.open(record.result_prefix, "report.json").read()
        assert b'"regularizer": "erm"' in report or b'"regularizer":"erm"' in report
        assert set(bucket.list(record.result_prefix)) == set(record.artifacts)
        assert "checkpoints/erm-seed0.safetensors" in record.artifacts and "report.html" in record.artifacts
        starts = [e for e in b.journal.events(unit) if e["event"] == "run_started"]
        assert len(starts) == 2 and starts[1]["first_epoch"] > 1, starts  # resumed, not started over
        assert starts[1]["first_epoch"] >= reached - 1, (starts, reached)
        hosts_seen = {e.get("worker") for e in b.journal.events(unit) if e["event"] == "started"}
        assert hosts_seen == {f"{a.queue}-a", f"{b.queue}-b"}, hosts_seen
        # nothing crossed between the hosts' disks: host b never had host a's scratch files
        assert not (b.data_dir / "work" / unit).exists() or not any((b.data_dir / "work" / unit).iterdir())
        assert bucket.list(f"jobs/{unit}/resume") == []  # resume state discarded after success
        assert bucket.list(f"jobs/{job_id}/units") == []  # the units' files, merged into the result
        assert not os.path.exists(tmp_path / "host-b" / "artifacts")  # the store is S3, not a local folder
    finally:
        for host in hosts.values():
            host.stop_all()
        time.sleep(0.1)
