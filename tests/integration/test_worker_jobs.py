"""Workers running jobs end to end with real processes: success, a raising job, duplicate delivery.

Jobs are created with JobStore.create and handed to RQ by the store's dispatcher, as the API does;
the workers are `robustlab worker` subprocesses (tests/integration/processes.py).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from artifactstore import ArtifactStore
from core.jobs import JobKind, JobStatus
from jobstore.records import CheckpointRecord
from tests.integration.processes import Service, running_service, tiny_spec, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def service(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Service]:
    yield from running_service(redis_url, key_prefix, tmp_path)


def test_compare_job_succeeds_with_artifacts_in_the_store(service: Service) -> None:
    job_id = service.submit(tiny_spec(regularizers=2))
    worker = service.start_worker()
    record = service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=90)
    assert record.status is JobStatus.SUCCEEDED, (record.error, service.log())
    assert record.progress.fraction == 1.0 and record.progress.stage == "done"
    assert record.attempts == 1 and record.error is None and record.finished_at is not None
    expected = {"report.json", "report.md", "report.html", "results.csv",
                "checkpoints/erm-seed0.safetensors", "checkpoints/doubleback-seed0.safetensors"}
    plots = {n for n in record.artifacts if n.startswith("plots/")}
    assert set(record.artifacts) - plots == expected and "plots/robustness-linf.svg" in plots
    store = ArtifactStore(service.settings.artifact_root)
    prefix = record.result_prefix
    assert prefix is not None and prefix.startswith(f"jobs/{job_id}/result-")
    assert set(store.list(prefix)) == set(record.artifacts)
    # resume state and the units' files discarded (right after the finish: wait for it), nothing else left
    wait_for(lambda: set(store.list(f"jobs/{job_id}")) == {f"{prefix.split('/', 2)[2]}/{n}" for n in record.artifacts},
             60, "only the result to be left under the job")
    report = json.loads(store.open(prefix, "report.json").read())
    assert {r["regularizer"] for r in report["runs"]} == {"erm", "doubleback"}
    # scratch space cleaned up: after the finish the client sees, so wait for it (a condition, not a speed)
    wait_for(lambda: not (service.settings.work_root / job_id).exists(), 60, "the scratch folder to go")
    # The parent never loaded torch (DESIGN §5): only its work horses did.
    maps = psutil.Process(worker.pid).memory_maps()
    assert not [m.path for m in maps if "torch" in m.path]
    # (a delivery the fused assembly made redundant may stand down after the finish: that is journaled too)
    events = [e["event"] for e in service.journal.events(job_id) if e["event"] != "duplicate_skipped"]
    assert events[0] == "started" and events[-1] == "finished"


def test_a_raising_job_fails_with_its_error_visible(service: Service) -> None:
    """An evaluate job whose checkpoint bytes are garbage: failed, not retried, error in the record."""
    garbage = b"this is not a safetensors file" * 10
    checkpoint = CheckpointRecord(id=str(uuid.uuid4()), tenant="tenant-a", sha256=hashlib.sha256(garbage).hexdigest(),
                                  bytes=len(garbage), architecture="mlp", filename="model.safetensors",
                                  created_at=datetime.now(UTC))
    service.store.add_checkpoint(checkpoint)
    local = service.data_dir / "garbage.safetensors"
    local.write_bytes(garbage)
    ArtifactStore(service.settings.artifact_root).put_file(f"checkpoints/{checkpoint.id}", "model.safetensors", local)
    job_id = service.submit(tiny_spec(), kind=JobKind.EVALUATE, checkpoint=checkpoint.id)
    service.start_worker()
    record = service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=60)
    assert record.status is JobStatus.FAILED, service.log()
    assert record.error is not None and record.error.type == "CheckpointError", record.error
    assert "model.safetensors" in record.error.message or "safetensors" in record.error.message.lower()
    assert record.attempts == 1  # a deterministic error is not retried
    assert record.artifacts == []


def test_duplicate_delivery_leaves_one_result(service: Service) -> None:
    """Two RQ deliveries of one job to two workers: one execution runs it, the other stands down."""
    job_id = service.submit(tiny_spec(epochs=4, train_size=1200, hidden=64, batch_size=16))
    from jobstore.queue import TASK, job_queue, rq_connection, rq_job_id

    duplicate = rq_job_id(job_id, 99)
    job_queue(rq_connection(service.redis_url), service.settings).enqueue_call(TASK, args=(job_id,), job_id=duplicate)
    service.start_worker("a")
    service.start_worker("b")
    record = service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=90)
    assert record.status is JobStatus.SUCCEEDED, (record.error, service.log("a"), service.log("b"))
    events = service.journal.events(job_id)
    # Both deliveries ran; exactly one execution started and finished the job. Which of the two
    # plans it, and whether the other comes before, during or after the units, a loaded machine
    # decides: the other stands down whenever it comes.
    deliveries = {rq_job_id(job_id, 1), duplicate}  # (the assembly's own delivery may stand down too)

    def stood_down() -> list[dict]:
        return [e for e in service.journal.events(job_id)
                if e["event"] == "duplicate_skipped" and e["rq_job"] in deliveries]
    wait_for(stood_down, 120, "one of the job's two deliveries to stand down")
    assert len(stood_down()) == 1, service.journal.events(job_id)
    events = service.journal.events(job_id)
    # one execution planned the units, one merged them (a unit's own events carry its id)
    assert [e["phase"] for e in events if e["event"] == "started" and "unit" not in e] == ["plan", "assemble"], events
    assert [e["status"] for e in events if e["event"] == "finished" and "unit" not in e] == ["succeeded"], events
    assert record.attempts == 1
    store = ArtifactStore(service.settings.artifact_root)
    assert record.result_prefix is not None
    own = record.result_prefix.split("/", 2)[2]  # result-<token>: the one result under the job
    assert sorted(store.list(f"jobs/{job_id}")) == sorted(f"{own}/{n}" for n in record.artifacts)
