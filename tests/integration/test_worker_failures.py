"""The failure cases of DESIGN §5 with real worker processes and real signals.

The work horse SIGKILLed, the worker SIGKILLed mid-training (the job resumes on another worker from
its last finished epoch), SIGTERM mid-job, cancel of a queued and of a running job, a poison job,
the job timeout. Heartbeats every 0.5 s, so a lost execution is noticed after about 3.5 s.
These jobs train one run: what is killed is its training unit (jobstore.units), which resumes,
while the job waits for its units.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.jobs import JobStatus
from tests.integration.processes import Service, running_service, slow_spec, tiny_spec, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def service(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Service]:
    yield from running_service(redis_url, key_prefix, tmp_path)


def run_starts(service: Service, job_id: str) -> list[dict[str, Any]]:
    return [e for e in service.journal.events(job_id) if e["event"] == "run_started"]


def running_horse(service: Service, worker: subprocess.Popen[bytes], job_id: str) -> psutil.Process:
    wait_for(lambda: service.training_epoch(job_id) >= 2, 60, "training to reach epoch 2")
    horse = service.horse(worker)
    assert horse is not None
    return horse


def test_killed_job_process_is_requeued_and_completes(service: Service) -> None:
    job_id = service.submit(slow_spec(epochs=40))
    worker = service.start_worker()
    running_horse(service, worker, job_id).kill()
    unit = service.train_unit(job_id)
    record = service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=90)
    assert record.status is JobStatus.SUCCEEDED, (record.error, service.log())
    assert record.attempts == 1 and record.error is None
    assert service.get(unit.id).attempts == 2  # the unit ran again; the job's other units once
    assert all(u.attempts == 1 for u in service.units(job_id) if u.id != unit.id)
    released = [e for e in service.journal.events(unit.id) if e["event"] == "released"]
    assert [(e["reason"], e["status"]) for e in released] == [("WorkerLost", "queued")]
    assert "SIGKILL" in service.log()  # the parent saw how its horse died
    assert worker.poll() is None  # the worker itself carries on


def test_killed_worker_job_resumes_on_another_worker_from_its_checkpoint(service: Service) -> None:
    job_id = service.submit(slow_spec(epochs=40))
    first = service.start_worker("a")
    wait_for(lambda: service.training_epoch(job_id) >= 3, 60, "training to reach epoch 3")
    reached = service.training_epoch(job_id)  # the state of epoch reached-1 is in the artifact store
    horse = service.horse(first)
    assert horse is not None
    first.kill()  # SIGKILL the worker parent only: its horse must die with it (no orphan execution)
    first.wait(timeout=10)
    wait_for(lambda: not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE, 10, "the orphaned horse to die")
    service.start_worker("b")  # its reaper notices the silent execution and queues the job again
    record = service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=90)
    assert record.status is JobStatus.SUCCEEDED, (record.error, service.log("b"))
    unit = service.train_unit(job_id)
    assert service.get(unit.id).attempts == 2
    starts = run_starts(service, unit.id)
    assert [s["run"] for s in starts] == ["erm-seed0", "erm-seed0"], starts
    assert starts[0]["first_epoch"] == 1
    assert starts[1]["first_epoch"] >= reached > 1, (starts, reached)  # finished epochs were not redone
    assert starts[1]["execution"] != starts[0]["execution"]


def test_sigterm_mid_job_requeues_it_and_nothing_is_lost(service: Service) -> None:
    job_id = service.submit(slow_spec(epochs=40))
    first = service.start_worker("a")
    horse = running_horse(service, first, job_id)
    first.send_signal(signal.SIGTERM)  # warm shutdown: the job is stopped and queued again at once
    assert first.wait(timeout=20) == 0, service.log("a")
    assert not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE
    unit = service.get(service.train_unit(job_id).id)
    assert unit.status is JobStatus.QUEUED and unit.error is not None
    assert unit.error.type == "WorkerShutdown"
    assert service.get(job_id).status is JobStatus.RUNNING  # waiting for its units
    service.start_worker("b")
    record = service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=90)
    assert record.status is JobStatus.SUCCEEDED, (record.error, service.log("b"))
    starts = run_starts(service, unit.id)
    assert len(starts) == 2 and starts[1]["first_epoch"] > 1, starts


def test_cancel_a_queued_job(service: Service) -> None:
    job_id = service.submit(tiny_spec())
    assert service.store.request_cancel(job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    worker = service.start_worker("a", "--burst")  # takes the RQ job, finds it cancelled, exits
    assert worker.wait(timeout=180) == 0, service.log("a")  # generous: a loaded machine starts it slowly
    record = service.get(job_id)
    assert record.status is JobStatus.CANCELLED and record.attempts == 0 and record.started_at is None
    assert not [e for e in service.journal.events(job_id) if e["event"] == "started"]


def test_cancel_a_running_job_stops_its_process(service: Service) -> None:
    job_id = service.submit(slow_spec(epochs=200))
    worker = service.start_worker()
    horse = running_horse(service, worker, job_id)
    unit = service.train_unit(job_id)
    service.store.request_cancel(job_id)
    record = service.wait_status(job_id, JobStatus.CANCELLED, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=5)
    assert record.status is JobStatus.CANCELLED and record.error is not None and record.error.type == "Cancelled"
    wait_for(lambda: not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE, 5, "the horse to stop")
    assert service.wait_status(unit.id, JobStatus.CANCELLED, timeout=5).status is JobStatus.CANCELLED
    wait_for(lambda: not os.path.exists(service.settings.work_root / unit.id), 60, "its scratch folder to go")
    # The worker survives its horse's end and takes the next job.
    follow_up = service.submit(tiny_spec())
    assert service.wait_status(follow_up, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=60).status \
        is JobStatus.SUCCEEDED


def test_poison_job_fails_after_bounded_retries(service: Service) -> None:
    """A job whose process dies again before getting past where it died before: failed (a poison job)."""
    service.env_overrides["ROBUSTLAB_MAX_ATTEMPTS"] = "2"
    job_id = service.submit(slow_spec(epochs=200))
    worker = service.start_worker()
    unit = service.train_unit(job_id)
    wait_for(lambda: service.get(unit.id).attempts == 1 and service.training_epoch(job_id) >= 1, 60, "training")
    for attempt in (1, 2):  # the second death comes before the unit gets anywhere
        horse = wait_for(lambda n=attempt: service.get(unit.id).attempts == n and service.horse(worker), 60,
                         f"execution {attempt}")
        horse.kill()
        horse.wait(timeout=10)
    assert service.wait_status(unit.id, JobStatus.FAILED, JobStatus.SUCCEEDED, timeout=30).attempts == 2
    record = service.wait_status(job_id, JobStatus.FAILED, JobStatus.SUCCEEDED, timeout=30)
    assert record.status is JobStatus.FAILED  # a unit that keeps failing fails its job, naming the unit
    assert record.error is not None and record.error.type == "Poison"
    assert "unit 'train erm seed 0' failed" in record.error.message
    assert "lost 2 times in a row" in record.error.message and "SIGKILL" in record.error.message


def test_job_timeout_fails_the_job(service: Service) -> None:
    service.env_overrides["ROBUSTLAB_JOB_TIMEOUT_SECONDS"] = "8"
    job_id = service.submit(slow_spec(epochs=500))
    service.start_worker()
    record = service.wait_status(job_id, JobStatus.FAILED, JobStatus.SUCCEEDED, timeout=40)
    assert record.status is JobStatus.FAILED and record.attempts == 1
    assert record.error is not None and record.error.type == "Timeout", record.error
