"""The job records in a real Redis: transitions, fencing, quotas, idempotency, pagination."""

from __future__ import annotations

import pytest
import redis

from core.job_store import IdempotencyConflict, JobStore, QuotaExceeded
from core.jobs import JobError, JobKind, JobRequest, JobStatus, Progress
from core.specs import load_spec
from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> JobStore:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield JobStore(client, key_prefix)  # type: ignore[misc]
    for key in client.scan_iter(f"{key_prefix}*"):
        client.delete(key)


@pytest.fixture
def request_() -> JobRequest:
    return JobRequest(kind=JobKind.COMPARE, spec=load_spec(REPO / "examples" / "digits-quick.yaml"))


def test_lifecycle_and_fencing(store: JobStore, request_: JobRequest) -> None:
    record, created = store.create("a", request_, max_active=5)
    assert created and record.status is JobStatus.QUEUED
    first = store.start(record.id)
    assert first is not None and store.get(record.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert store.progress(record.id, first, Progress(fraction=0.5, stage="training"))
    # A second delivery takes the job over; the first execution is fenced out from then on.
    second = store.start(record.id)
    assert second is not None and second != first
    assert not store.progress(record.id, first, Progress(fraction=0.6))
    assert not store.finish(record.id, first, JobStatus.SUCCEEDED)
    assert store.finish(record.id, second, JobStatus.SUCCEEDED, artifacts=["report.json"])
    done = store.get(record.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.attempts == 2
    assert done.artifacts == ["report.json"] and done.progress.fraction == 0.5
    # Finished is final: neither a start nor a finish changes it.
    assert store.start(record.id) is None
    assert not store.finish(record.id, second, JobStatus.FAILED)
    assert store.count_by_status()[JobStatus.SUCCEEDED] == 1
    assert store.count_by_status()[JobStatus.RUNNING] == 0


def test_tenant_isolation_quota_and_idempotency(store: JobStore, request_: JobRequest) -> None:
    a1, _ = store.create("a", request_, max_active=2, idempotency_key="k1")
    again, created = store.create("a", request_, max_active=2, idempotency_key="k1")
    assert not created and again.id == a1.id
    other = request_.model_copy(update={"spec": request_.spec.model_copy(update={"name": "x"})})
    with pytest.raises(IdempotencyConflict):
        store.create("a", other, max_active=2, idempotency_key="k1")
    store.create("a", request_, max_active=2)
    with pytest.raises(QuotaExceeded):
        store.create("a", request_, max_active=2)
    assert store.get(a1.id, "b") is None and store.get(a1.id, "a") is not None
    # A finished job frees its quota slot.
    cancelled = store.request_cancel(a1.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    store.create("a", request_, max_active=2)


def test_pagination_newest_first(store: JobStore, request_: JobRequest) -> None:
    ids = [store.create("a", request_, max_active=100)[0].id for _ in range(7)]
    page1, cursor = store.list_jobs("a", limit=3)
    page2, cursor2 = store.list_jobs("a", limit=3, cursor=cursor)
    page3, cursor3 = store.list_jobs("a", limit=3, cursor=cursor2)
    assert [r.id for r in page1 + page2 + page3] == ids[::-1]
    assert cursor3 is None
    store.request_cancel(ids[0])
    cancelled, _ = store.list_jobs("a", status=JobStatus.CANCELLED)
    assert [r.id for r in cancelled] == [ids[0]]


def test_release_requeues_then_fails_a_poison_job(store: JobStore, request_: JobRequest) -> None:
    record, _ = store.create("a", request_, max_active=5)
    lost = JobError(type="WorkerLost", message="worker died")
    for _ in range(2):
        token = store.start(record.id)
        assert token is not None
        assert store.release(record.id, execution=token, reason=lost, max_attempts=3) is JobStatus.QUEUED
    token = store.start(record.id)
    assert store.release(record.id, execution=token or "", reason=lost, max_attempts=3) is JobStatus.FAILED
    failed = store.get(record.id)
    assert failed is not None and failed.error is not None and "3 attempts" in failed.error.message


def test_cancel_running_is_a_request(store: JobStore, request_: JobRequest) -> None:
    record, _ = store.create("a", request_, max_active=5)
    token = store.start(record.id)
    assert token is not None
    flagged = store.request_cancel(record.id)
    assert flagged is not None and flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    assert not store.progress(record.id, token, Progress(fraction=0.1))  # tells the execution to stop
    assert store.finish(record.id, token, JobStatus.CANCELLED)
