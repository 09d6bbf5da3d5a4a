"""Crashes the infrastructure makes must not cost a job: SIGKILLs and a Redis restart, real processes.

- 20 SIGKILLs spread over 5 jobs (work horses and whole workers), default settings: every job resumes
  from its last finished epoch and completes, with a complete report. Losses are not the job's
  failures; only a poison job (lost again and again without getting further) fails.
- Redis restarted (AOF) while a job trains: the job completes, the worker is still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from artifactstore import ArtifactStore
from core.jobs import JobStatus
from robustlab.embedded_redis import EmbeddedRedis
from tests.integration.processes import Service, kill_tree, running_service, tiny_spec, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def service(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Service]:
    yield from running_service(redis_url, key_prefix, tmp_path)


def killable_spec(epochs: int = 8) -> dict[str, object]:
    """A run whose epochs take long enough (~0.2-1 s on a loaded machine) to be killed between."""
    return tiny_spec(epochs=epochs, train_size=1200, hidden=128, batch_size=16, name="killable")


def assert_complete(service: Service, job_id: str) -> None:
    record = service.get(job_id)
    assert record.status is JobStatus.SUCCEEDED, (record.error, record.lost)
    assert record.result_prefix is not None
    report = json.loads(ArtifactStore(service.settings.artifact_root).open(record.result_prefix, "report.json").read())
    assert [r["regularizer"] for r in report["runs"]] == ["erm"]
    assert "report.html" in record.artifacts and "checkpoints/erm-seed0.safetensors" in record.artifacts


@pytest.mark.slow
def test_twenty_sigkills_over_five_jobs_all_complete_with_default_attempts(service: Service) -> None:
    service.env_overrides.pop("ROBUSTLAB_MAX_ATTEMPTS", None)  # the default
    assert service.settings.max_attempts == 3
    jobs = [service.submit(killable_spec(epochs=40)) for _ in range(5)]
    workers = {f"w{i}": service.start_worker(f"w{i}") for i in range(2)}
    kills, spawned = 0, 2
    deadline = time.monotonic() + 900
    while kills < 20 and time.monotonic() < deadline:
        victim = None
        for job_id in jobs:
            record = service.get(job_id)
            # a kill only once the job got further than where it was killed last (else it is poison)
            if (record.status is JobStatus.RUNNING and record.progress.stage == "training"
                    and record.progress.fraction > record.death_fraction + 0.02):
                info = service.journal.current(job_id)
                if info and info.get("token") == service.store.execution(job_id):
                    victim = (job_id, info)
                    break
        if victim is None:
            if all(service.get(j).status.finished for j in jobs):
                break
            time.sleep(0.2)
            continue
        job_id, info = victim
        name = info["worker"].rsplit("-", 1)[-1]
        if kills % 4 == 3 and name in workers:  # every fourth kill takes a whole worker (parent and horse)
            kill_tree(workers.pop(name))
            spawned += 1
            workers[f"w{spawned}"] = service.start_worker(f"w{spawned}")
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(info["pid"]), signal.SIGKILL)
        kills += 1
        # the next kill waits until this execution is gone (released, or another one owns the job)
        wait_for(lambda j=job_id, t=info["token"]: service.store.execution(j) != t, 120, "the kill to be noticed")
    assert kills == 20, f"only {kills} kills: the jobs finished too fast to be killed 20 times"
    for job_id in jobs:
        service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=600)
    for job_id in jobs:
        assert_complete(service, job_id)
    assert sum(service.get(j).lost for j in jobs) == 20


def test_a_redis_restart_mid_training_neither_fails_the_job_nor_stops_the_worker(tmp_path: Path,
                                                                                 key_prefix: str) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    own = Service(server.url, key_prefix, tmp_path / "data")
    own.data_dir.mkdir()
    try:
        # long enough that an idle machine is still training after the first progress writes (12
        # epochs of the killable spec took 0.5 s here: no progress write named epoch 2 before the end)
        job_id = own.submit(tiny_spec(epochs=40, train_size=1200, hidden=128, batch_size=8, name="redis-restart"))
        worker: subprocess.Popen[bytes] = own.start_worker()
        wait_for(lambda: own.training_epoch(job_id) >= 2, 180, "training to reach epoch 2")
        port = server.port
        server.stop()  # SHUTDOWN: the AOF is flushed
        time.sleep(1.5)  # Redis is away: progress writes and heartbeats wait for it
        server = EmbeddedRedis(tmp_path / "redis", port=port).start()
        record = own.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=300)
        assert record.status is JobStatus.SUCCEEDED, (record.error, own.log())
        assert record.lost == 0 and record.attempts == 1, own.log()  # the execution simply carried on
        assert worker.poll() is None, own.log()
        assert psutil.Process(worker.pid).status() != psutil.STATUS_ZOMBIE
        # ... and it still takes jobs
        follow_up = own.submit(tiny_spec())
        assert own.wait_status(follow_up, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=180).status \
            is JobStatus.SUCCEEDED
    finally:
        own.stop_all()
        server.stop()


def test_a_job_over_its_memory_limit_fails_cleanly_and_the_worker_lives_on(service: Service) -> None:
    """The hard limit on every job process (RLIMIT_AS): a job that allocates past it fails with a clear
    error instead of the kernel's OOM killer picking a victim; its worker takes the next job."""
    service.env_overrides["ROBUSTLAB_JOB_MEMORY_LIMIT_MB"] = "2500"
    huge = tiny_spec()
    huge["dataset"] = {"name": "function_regression", "dim": 1000, "n_samples": 1_000_000}  # ~8 GB
    huge["model"] = {"architecture": "mlp", "params": {"hidden": [16]}}
    job_id = service.submit(huge)  # straight into the store: the API's cost check would refuse it
    worker = service.start_worker()
    record = service.wait_status(job_id, JobStatus.FAILED, JobStatus.SUCCEEDED, timeout=180)
    assert record.status is JobStatus.FAILED and record.error is not None, record
    assert record.error.type == "OutOfMemory" and "2500 MiB" in record.error.message, record.error
    assert str(service.data_dir) not in record.error.message and "/work/" not in record.error.message  # no paths
    assert worker.poll() is None
    follow_up = service.submit(tiny_spec())
    assert service.wait_status(follow_up, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=180).status \
        is JobStatus.SUCCEEDED
