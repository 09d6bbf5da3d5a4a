"""The job records in a real Redis: transitions, fencing, quotas, idempotency, pagination."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from core.jobs import JobError, JobKind, JobRequest, JobStatus, Progress
from core.settings import Settings
from core.specs import load_spec
from jobstore.queue import job_queue, rq_job_id
from jobstore.store import IdempotencyConflict, JobStore, QuotaExceeded, StoredJobsExceeded
from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> JobStore:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = Settings(key_prefix=key_prefix, queue="q-" + key_prefix.replace(":", "-"), queue_depth=2)
    yield JobStore(client, key_prefix, settings=settings)  # type: ignore[misc]
    for key in [*client.scan_iter(f"{key_prefix}*"), f"rq:queue:{settings.queue}"]:
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


def test_losses_with_progress_never_fail_a_job_but_a_poison_job_fails(store: JobStore, request_: JobRequest) -> None:
    record, _ = store.create("a", request_, max_active=5)
    lost = JobError(type="WorkerLost", message="worker died")
    # Ten losses, each after getting further than the one before: always queued again.
    for step in range(10):
        token = store.start(record.id)
        assert token is not None
        assert store.progress(record.id, token, Progress(fraction=0.05 * (step + 1), stage="training"))
        assert store.release(record.id, execution=token, reason=lost, max_attempts=3) is JobStatus.QUEUED
    again = store.get(record.id)
    assert again is not None and again.lost == 10 and again.deaths_here == 1 and again.attempts == 10
    # A warm shutdown never counts; then three losses at one point make it a poison job.
    token = store.start(record.id)
    assert store.release(record.id, execution=token or "", reason=lost, max_attempts=3, counts=False) \
        is JobStatus.QUEUED
    for expected in (JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.FAILED):
        token = store.start(record.id)
        assert token is not None
        assert store.progress(record.id, token, Progress(fraction=0.6, stage="training"))  # stuck at 0.6
        assert store.release(record.id, execution=token, reason=lost, max_attempts=3) is expected
    failed = store.get(record.id)
    assert failed is not None and failed.error is not None and failed.error.type == "Poison"
    assert "lost 3 times in a row at the same point" in failed.error.message


def test_concurrent_identical_requests_with_one_key_make_one_job(store: JobStore, request_: JobRequest) -> None:
    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(lambda _: store.create("a", request_, max_active=100, idempotency_key="k"),
                                 range(30)))
    assert len({record.id for record, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1
    assert store.redis.zcard(store.keys.tenant_jobs("a")) == 1


def test_quota_holds_under_concurrency(store: JobStore, request_: JobRequest) -> None:
    def submit(_: int) -> bool:
        try:
            store.create("a", request_, max_active=5)
        except QuotaExceeded:
            return False
        return True

    with ThreadPoolExecutor(30) as pool:
        accepted = sum(pool.map(submit, range(30)))
    assert accepted == 5 and store.redis.scard(store.keys.tenant_active("a")) == 5


def test_stored_jobs_are_capped_cancelled_ones_included(store: JobStore, request_: JobRequest) -> None:
    for _ in range(3):
        record, _ = store.create("a", request_, max_active=10, max_stored=3)
        store.request_cancel(record.id)
    with pytest.raises(StoredJobsExceeded):
        store.create("a", request_, max_active=10, max_stored=3)
    # Retention deletes finished records: the tenant may submit again.
    for job_id in store.ids_in(JobStatus.CANCELLED):
        assert store.forget(job_id)
    store.create("a", request_, max_active=10, max_stored=3)


def test_fair_dispatch_puts_another_tenants_first_job_next(store: JobStore, request_: JobRequest) -> None:
    queue = job_queue(store.rq, store.settings)
    many = [store.create("a", request_, max_active=100)[0].id for _ in range(10)]
    assert len(queue.job_ids) == store.settings.queue_depth  # the rest wait in tenant a's line
    first_of_b, _ = store.create("b", request_, max_active=100)
    assert first_of_b.id in store.waiting("b")
    taken = queue.job_ids[0]
    queue.remove(taken)  # a worker takes a delivery ...
    assert store.start(taken.rsplit("_", 1)[0]) is not None
    store.dispatch()  # ... and the next place goes to tenant b, which has nothing out yet,
    assert queue.job_ids[0] == rq_job_id(first_of_b.id, 1)  # at the front: the next free worker takes it
    assert set(store.waiting("a")) == set(many[2:])


def test_lists_are_bounded_in_bytes(store: JobStore, request_: JobRequest) -> None:
    ids = [store.create("a", request_, max_active=100)[0].id for _ in range(6)]
    size = len(json.dumps(request_.spec.model_dump(mode="json"))) + 1024
    page, cursor = store.list_jobs("a", limit=100, max_bytes=2 * size + 10)
    assert [r.id for r in page] == ids[::-1][:2] and cursor is not None
    rest, end = store.list_jobs("a", limit=100, cursor=cursor, max_bytes=100 * size)
    assert [r.id for r in rest] == ids[::-1][2:] and end is None


def test_cancel_running_is_a_request(store: JobStore, request_: JobRequest) -> None:
    record, _ = store.create("a", request_, max_active=5)
    token = store.start(record.id)
    assert token is not None
    flagged = store.request_cancel(record.id)
    assert flagged is not None and flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    assert not store.progress(record.id, token, Progress(fraction=0.1))  # tells the execution to stop
    assert store.finish(record.id, token, JobStatus.CANCELLED)
