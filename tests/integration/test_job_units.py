"""A job's work units in a real Redis, without workers: the plan, dependencies, the hand-back for
assembly, a failing unit, cancel, the tenant's line (jobstore.units)."""

from __future__ import annotations

import pytest
import redis

from core.jobs import JobError, JobKind, JobRequest, JobStatus, UnitKind, UnitWork
from core.settings import Settings
from core.specs import load_spec
from jobstore.records import JobRecord
from jobstore.store import JobStore
from jobstore.units import advance, plan, units_by_tenant, units_of
from tests.conftest import REPO

pytestmark = pytest.mark.integration

WORKS = [UnitWork(name="train a", kind=UnitKind.TRAIN, run="a"),
         UnitWork(name="train b", kind=UnitKind.TRAIN, run="b", after=["train a"]),
         UnitWork(name="evaluate a", kind=UnitKind.EVALUATE, run="a", start=0, stop=100, after=["train a"])]


@pytest.fixture
def store(redis_url: str, key_prefix: str):  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = Settings(key_prefix=key_prefix, queue="q-" + key_prefix.replace(":", "-"), queue_depth=1)
    # depth 1: the first delivery fills the RQ queue, so the lines below are what dispatch would hand out next
    yield JobStore(client, key_prefix, settings=settings)
    for key in [*client.scan_iter(f"{key_prefix}*"), f"rq:queue:{settings.queue}"]:
        client.delete(key)


def planned(store: JobStore, tenant: str = "t", works: list[UnitWork] = WORKS) -> JobRecord:
    request = JobRequest(kind=JobKind.COMPARE, spec=load_spec(REPO / "examples" / "digits-small.yaml"))
    record, _ = store.create(tenant, request, max_active=10)
    token = store.start(record.id)
    assert token is not None
    assert plan(store, store.get(record.id), token, works) is not None  # type: ignore[arg-type]
    parent = store.get(record.id)
    assert parent is not None and parent.phase == "units" and parent.status is JobStatus.RUNNING
    return parent


def run_unit(store: JobStore, unit: JobRecord, status: JobStatus = JobStatus.SUCCEEDED) -> None:
    token = store.start(unit.id, worker="w")
    assert token is not None
    error = None if status is JobStatus.SUCCEEDED else JobError(type="ValueError", message="boom")
    assert store.finish(unit.id, token, status, error=error, result_prefix=f"jobs/x/units/{unit.id}/result-{token}")
    assert unit.parent is not None
    advance(store, unit.parent)


def by_name(store: JobStore, parent: JobRecord) -> dict[str, JobRecord]:
    return {u.work.name: u for u in units_of(store, parent) if u.work}


def test_units_wait_for_their_predecessors_and_the_job_is_queued_to_assemble(store: JobStore) -> None:
    parent = planned(store)
    units = by_name(store, parent)
    assert [u.work.name for u in units_of(store, parent) if u.work] == ["train a", "train b", "evaluate a"]
    waiting = store.waiting("t")
    assert units["train a"].id in waiting and units["train b"].id not in waiting  # blocked
    assert store.get(parent.id).units == parent.units  # type: ignore[union-attr]
    assert store.list_jobs("t")[0] == [store.get(parent.id)]  # units are not jobs of the tenant's list
    run_unit(store, units["train a"])
    units = by_name(store, parent)
    assert not units["train b"].blocked and not units["evaluate a"].blocked
    assert units_by_tenant(store) == {("t", "queued"): 2}
    run_unit(store, units["train b"])
    assert store.get(parent.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    run_unit(store, units["evaluate a"])
    after = store.get(parent.id)
    assert after is not None and after.status is JobStatus.QUEUED and after.phase == "assemble"
    token = store.start(parent.id)
    assert token is not None and store.get(parent.id).attempts == 1  # type: ignore[union-attr]
    assert store.finish(parent.id, token, JobStatus.SUCCEEDED)


def test_a_failing_unit_fails_its_job_by_name_and_stops_the_others(store: JobStore) -> None:
    parent = planned(store)
    run_unit(store, by_name(store, parent)["train a"], JobStatus.FAILED)
    failed = store.get(parent.id)
    assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.message.startswith("unit 'train a' failed: boom")
    assert all(u.status.finished for u in units_of(store, parent))


def test_cancel_of_a_job_waiting_for_its_units(store: JobStore) -> None:
    parent = planned(store)
    first = by_name(store, parent)["train a"]
    token = store.start(first.id, worker="w")
    assert token is not None
    after = store.request_cancel(parent.id)
    assert after is not None and after.status is JobStatus.CANCELLED
    units = by_name(store, parent)
    assert units["train a"].status is JobStatus.RUNNING and units["train a"].cancel_requested  # its beat stops it
    assert units["train b"].status is JobStatus.CANCELLED and units["evaluate a"].status is JobStatus.CANCELLED
    assert not store.waiting("t")


def test_a_tenants_jobs_take_turns_and_a_unit_is_no_job(store: JobStore) -> None:
    many = [UnitWork(name=f"train {i}", kind=UnitKind.TRAIN, run=str(i)) for i in range(5)]
    big = planned(store, works=many)
    small = planned(store, works=many[:1])
    line = store.waiting("t")
    big_units = units_of(store, big)
    assert line.index(units_of(store, small)[0].id) < line.index(big_units[1].id)  # its turn comes next
    assert line[0] == big_units[0].id
    assert store.get(big_units[0].id, "t") is not None and store.count_by_status()[JobStatus.QUEUED] == 0


def test_a_stale_delivery_of_a_job_whose_units_run_stands_down(  # type: ignore[no-untyped-def]
        store: JobStore, redis_url: str, tmp_path) -> None:
    """The plan's heartbeat stops on purpose once the units hold the job: a late RQ delivery of the
    job (a duplicate, or one the reaper made) must not take it over and plan it a second time."""
    from worker.journal import Journal
    from worker.runner import JobRunner

    parent = planned(store)
    store.redis.hset(store.keys.job(parent.id), "heartbeat_at", "2000-01-01T00:00:00+00:00")  # long silent
    settings = store.settings.model_copy(update={"redis_url": redis_url, "data_dir": tmp_path})
    assert JobRunner(settings, parent.id)._start() is None
    after = store.get(parent.id)
    assert after is not None and after.phase == "units" and after.units == parent.units
    assert not store.execution(parent.id)
    events = Journal(store.redis, store.settings.key_prefix).events(parent.id)
    skipped = [e for e in events if e["event"] == "duplicate_skipped"]
    assert [e["reason"] for e in skipped] == ["units"]
