"""Nothing accepted is lost: Redis restarts (AOF), orphaned queued jobs, lost and stalled executions.

The reaper's decisions are tested directly against a real Redis (fast, no worker process); the
Redis restart and the stall kill use real `robustlab worker` processes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from artifactstore import ArtifactStore
from core.jobs import JobError, JobStatus
from jobstore.queue import job_queue, rq_connection, rq_job_id
from jobstore.store import now
from robustlab.embedded_redis import EmbeddedRedis
from tests.integration.processes import Service, running_service, slow_spec, tiny_spec, wait_for
from worker.reaper import Reaper

pytestmark = pytest.mark.integration


@pytest.fixture
def service(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Service]:
    yield from running_service(redis_url, key_prefix, tmp_path)


def reaper(service: Service) -> Reaper:
    return Reaper(service.settings, service.store, rq_connection(service.redis_url), service.journal)


def age(service: Service, job_id: str, field: str, seconds: float) -> None:
    """Pretend `field` (heartbeat_at / updated_at) was written `seconds` ago."""
    service.store.redis.hset(service.store.keys.job(job_id), field, (now() - timedelta(seconds=seconds)).isoformat())


def rq_status(service: Service, rq_job_id: str) -> str | None:
    try:
        job = Job.fetch(rq_job_id, connection=rq_connection(service.redis_url), serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    status = job.get_status()
    return None if status is None else status.value


def test_reaper_requeues_lost_and_stalled_executions_and_fails_a_poison_job(service: Service) -> None:
    service.env_overrides.update(ROBUSTLAB_STALL_TIMEOUT_SECONDS="30", ROBUSTLAB_MAX_ATTEMPTS="2")
    lost, stalled, alive = (service.submit(tiny_spec(), queue_it=False) for _ in range(3))
    for job_id in (lost, stalled, alive):
        assert service.store.start(job_id)
    age(service, lost, "heartbeat_at", 10)  # silent for 10 s > 3 beats + grace
    age(service, stalled, "updated_at", 60)  # beating, but no progress for 60 s > stall timeout
    done = reaper(service).run_once()
    assert (done["lost"], done["stalled"], done["requeued"]) == ([lost], [stalled], [])
    assert service.get(lost).error == JobError(type="WorkerLost", message=service.get(lost).error.message)  # type: ignore[union-attr]
    assert service.get(stalled).error.type == "Stalled"  # type: ignore[union-attr]
    assert service.get(alive).status is JobStatus.RUNNING
    for job_id in (lost, stalled):
        assert service.get(job_id).status is JobStatus.QUEUED
        assert rq_status(service, rq_job_id(job_id, 1)) == "queued"  # queued again: handed to RQ at once
    assert reaper(service).run_once()["lost"] == []  # one pass per interval
    service.store.redis.delete(f"{service.prefix}reaper:lock")
    # Lost again without getting further (progress 0 both times): with max_attempts 2, a poison job.
    assert service.store.start(lost)
    age(service, lost, "heartbeat_at", 10)
    assert reaper(service).run_once()["lost"] == [lost]
    record = service.get(lost)
    assert record.status is JobStatus.FAILED and record.error is not None and record.error.type == "Poison"
    assert "lost 2 times in a row at the same point" in record.error.message


def test_reaper_hands_out_a_queued_job_that_rq_lost(service: Service) -> None:
    dropped = service.submit(tiny_spec())  # handed to RQ; then Redis loses the RQ job
    never = service.submit(tiny_spec(), queue_it=False)  # as if the API died between create and dispatch
    queue = job_queue(rq_connection(service.redis_url), service.settings)
    queue.remove(rq_job_id(dropped, 1))
    queue.connection.delete(f"rq:job:{rq_job_id(dropped, 1)}")
    age(service, dropped, "updated_at", 10)
    done = reaper(service).run_once()
    assert done["requeued"] == [dropped] and sorted(done["dispatched"]) == sorted([dropped, never])
    assert rq_status(service, rq_job_id(dropped, 2)) == "queued" and rq_status(service, rq_job_id(never, 1)) == "queued"
    service.store.redis.delete(f"{service.prefix}reaper:lock")
    assert reaper(service).run_once()["requeued"] == []  # handed out once is enough


def test_a_released_execution_kills_itself(service: Service) -> None:
    """What the stall watchdog relies on: once released, the running execution stops within a heartbeat.
    The execution here is the job's training unit (a job runs as units; each is released like a job)."""
    job_id = service.submit(slow_spec(epochs=200))
    worker = service.start_worker()
    wait_for(lambda: service.training_epoch(job_id) >= 2, 60, "training")
    unit = service.train_unit(job_id).id
    horse = service.horse(worker)
    assert horse is not None
    token = service.store.execution(unit)
    assert token is not None
    assert reaper(service).release(unit, token, JobError(type="Stalled", message="test"), stop=False)
    wait_for(lambda: not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE, 5, "the horse to die")
    # ... and the unit runs again (attempt 2) on the same worker.
    wait_for(lambda: service.get(unit).attempts == 2, 30, "the second attempt")
    service.store.request_cancel(job_id)
    assert service.wait_status(job_id, JobStatus.CANCELLED, timeout=10).status is JobStatus.CANCELLED
    assert service.wait_status(unit, JobStatus.CANCELLED, timeout=10).status is JobStatus.CANCELLED


def test_redis_restart_with_aof_loses_no_accepted_job(tmp_path: Path, key_prefix: str) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    own = Service(server.url, key_prefix, tmp_path / "data")
    own.data_dir.mkdir()
    try:
        queued = [own.submit(tiny_spec()) for _ in range(2)]
        unqueued = own.submit(tiny_spec(), queue_it=False)  # accepted, but its enqueue never happened
        port = server.port
        server.stop()  # SHUTDOWN: AOF flushed
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(own.redis_url, socket_connect_timeout=0.5).ping()
        server = EmbeddedRedis(tmp_path / "redis", port=port).start()
        for job_id in [*queued, unqueued]:
            assert own.get(job_id).status is JobStatus.QUEUED
        assert all(rq_status(own, rq_job_id(job_id, 1)) == "queued" for job_id in queued)
        age(own, unqueued, "updated_at", 10)
        worker: subprocess.Popen[bytes] = own.start_worker()
        for job_id in [*queued, unqueued]:
            record = own.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=90)
            assert record.status is JobStatus.SUCCEEDED, (record.error, own.log())
        assert worker.poll() is None
    finally:
        own.stop_all()
        server.stop()


def test_retention_deletes_finished_jobs_with_their_artifacts(service: Service, tmp_path: Path) -> None:
    service.env_overrides.update(ROBUSTLAB_JOB_TTL_SECONDS="1", ROBUSTLAB_CANCELLED_JOB_TTL_SECONDS="1")
    store, artifacts = service.store, ArtifactStore(service.settings.artifact_root)
    done_id, cancelled_id, running_id = (service.submit(tiny_spec(), queue_it=False) for _ in range(3))
    token = store.start(done_id)
    assert token is not None and store.start(running_id) is not None
    (tmp_path / "report.json").write_text("{}")
    for prefix in (f"jobs/{done_id}/result-{token}", f"jobs/{done_id}/resume"):
        artifacts.put_file(prefix, "report.json", tmp_path / "report.json")
    service.journal.event(done_id, "started")
    assert store.finish(done_id, token, JobStatus.SUCCEEDED, artifacts=["report.json"],
                        result_prefix=f"jobs/{done_id}/result-{token}")
    assert store.request_cancel(cancelled_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    wait_for(lambda: len(store.due_for_retention()) == 2, 30, "both to be due")
    done = Reaper(service.settings, store, rq_connection(service.redis_url), service.journal, artifacts).run_once()
    assert sorted(done["deleted"]) == sorted([done_id, cancelled_id])
    assert store.get(done_id) is None and store.get(cancelled_id) is None and store.get(running_id) is not None
    assert artifacts.list(f"jobs/{done_id}") == [] and service.journal.events(done_id) == []
    assert [r.id for r in store.list_jobs("tenant-a")[0]] == [running_id]
    assert store.due_for_retention() == []
