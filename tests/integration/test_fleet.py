"""One job spread over several workers (issue 20), with real worker processes and a real Redis.

A job becomes work units (a training run per regularizer and seed; the evaluation of each shard of
test samples) that any worker takes; the report must be the same whatever the fleet: 1 or 3
workers, or `robustlab compare` / `robustlab evaluate` run locally at one torch thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifactstore import ArtifactStore
from core.jobs import JobKind, JobRequest, JobStatus
from core.specs import parse_spec
from jobstore.records import CheckpointRecord
from tests.integration.processes import Service, kill_tree, running_service, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def service(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Service]:
    yield from running_service(redis_url, key_prefix, tmp_path)


def fleet_spec(*, epochs: int = 3, seeds: tuple[int, ...] = (0, 1), train_size: int = 300, test_size: int = 200,
               hidden: int = 32, batch_size: int = 32, shard_size: int | None = None) -> dict[str, Any]:
    """Two regularizers × the seeds on digits, with attacks whose randomness matters (PGD's random
    starts, Square's draws): a report equal across fleets shows the keying by sample index."""
    evaluation: dict[str, Any] = {"attacks": [
        {"kind": "fgsm", "norm": "linf", "eps": [0.05, 0.1]},
        {"kind": "pgd", "norm": "linf", "eps": [0.05, 0.1], "steps": 3, "restarts": 2},
        {"kind": "square", "norm": "linf", "eps": [0.1], "queries": 30}]}
    if shard_size is not None:
        evaluation["shard_size"] = shard_size
    return {
        "name": "fleet",
        "dataset": {"name": "digits", "train_size": train_size, "test_size": test_size, "seed": 0},
        "model": {"architecture": "mlp", "params": {"hidden": [hidden]}},
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "adam", "lr": 0.01, "device": "cpu"},
        "regularizers": [{"name": "erm", "kind": "none"},
                         {"name": "doubleback", "kind": "double_backprop", "weight": 1.0}],
        "seeds": list(seeds),
        "evaluation": evaluation,
    }


def metrics(report: dict[str, Any]) -> list[dict[str, Any]]:
    """What must not depend on the fleet: every accuracy and per-sample outcome, per run."""
    return [{"run": (r["regularizer"], r["seed"]), "clean": r["clean_accuracy"], "samples": r["samples"],
             "robust": [(a["label"], a["norm"], a["eps"], a["accuracy"]) for a in r["robust"]],
             "worst_case": [(w["norm"], w["eps"], w["accuracy"]) for w in r["worst_case"]],
             "outcomes": r["outcomes"]} for r in report["runs"]]


def job_report(service: Service, job_id: str, timeout: float = 600) -> dict[str, Any]:
    record = service.wait_status(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, timeout=timeout)
    assert record.status is JobStatus.SUCCEEDED, (record.error, service.log("w1")[-3000:])
    assert record.result_prefix is not None
    report: dict[str, Any] = json.loads(ArtifactStore(service.settings.artifact_root).open(
        record.result_prefix, "report.json").read())
    return report


def run_cli(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("ROBUSTLAB_")}
    done = subprocess.run([sys.executable, "-m", "robustlab.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def overlapping(units: list[Any]) -> bool:
    """Two units of different workers that ran at the same time."""
    spans = [(u.started_at, u.finished_at, u.worker) for u in units if u.started_at and u.finished_at]
    return any(a[2] != b[2] and a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])


def test_a_compare_spreads_over_three_workers_and_reports_what_one_worker_and_a_local_run_report(
        service: Service, tmp_path: Path) -> None:
    spec = fleet_spec(seeds=(0,))
    three = service.submit(spec)
    for name in ("w1", "w2", "w3"):
        service.start_worker(name)
    spread = job_report(service, three)
    units = service.units(three)
    assert [u.work.name for u in units if u.work] == [
        "train erm seed 0", "train doubleback seed 0",
        "evaluate erm seed 0 [0, 200)", "evaluate doubleback seed 0 [0, 200)"]
    assert all(u.status is JobStatus.SUCCEEDED and u.attempts == 1 for u in units)
    assert len({u.worker for u in units}) >= 2, [u.worker for u in units]
    assert overlapping(units), [(u.worker, u.started_at, u.finished_at) for u in units]

    for process in service.workers[1:]:
        kill_tree(process)  # the same spec on one worker
    del service.workers[1:]
    one = service.submit({**spec, "name": "fleet-one"})
    alone = job_report(service, one)
    assert len({u.worker for u in service.units(one)}) == 1

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    run_cli("compare", "spec.yaml", "--out", "local", cwd=tmp_path)
    local = json.loads((tmp_path / "local" / "report.json").read_text())
    assert metrics(spread) == metrics(alone) == metrics(local)


def _upload_checkpoint(service: Service, path: Path) -> str:
    """Register a trained registry checkpoint as tenant-a's upload (what POST /v1/models stores)."""
    data = path.read_bytes()
    record = CheckpointRecord(id=str(uuid.uuid4()), tenant="tenant-a", sha256=hashlib.sha256(data).hexdigest(),
                              bytes=len(data), architecture="mlp", params={"hidden": [32]}, filename=path.name,
                              created_at=datetime.now(UTC))
    ArtifactStore(service.settings.artifact_root).put_file(f"checkpoints/{record.id}", path.name, path)
    service.store.add_checkpoint(record)
    return record.id


def test_an_evaluate_job_runs_as_one_unit_per_shard_and_equals_a_local_evaluate(service: Service,
                                                                                 tmp_path: Path) -> None:
    train = fleet_spec(epochs=2, seeds=(0,), train_size=500, test_size=1000)
    train["dataset"]["test_fraction"] = 0.6  # 1,078 of digits' 1,797 images are test images
    train["regularizers"] = train["regularizers"][:1]
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    run_cli("train", "train.yaml", "--out", "trained", cwd=tmp_path)
    model = tmp_path / "trained" / "checkpoints" / "erm-seed0.safetensors"
    spec = {**train, "evaluation": {**train["evaluation"], "shard_size": 200}}
    model_id = _upload_checkpoint(service, model)
    job = service.submit(spec, kind=JobKind.EVALUATE, checkpoint=model_id)
    service.start_worker("w1")
    service.start_worker("w2")
    report = job_report(service, job)
    units = service.units(job)
    assert [u.work.name for u in units if u.work] == [f"evaluate [{a}, {a + 200})" for a in range(0, 1000, 200)]
    assert len({u.worker for u in units}) >= 2, [u.worker for u in units]
    assert report["runs"][0]["samples"] == 1000

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    run_cli("evaluate", "--model", str(model), "--spec", "spec.yaml", "--out", "local", cwd=tmp_path)
    local = json.loads((tmp_path / "local" / "report.json").read_text())
    assert [m | {"run": None} for m in metrics(report)] == [m | {"run": None} for m in metrics(local)]


@pytest.mark.slow  # in CI: test_worker_failures kills a training unit and checks the other units ran once
def test_a_training_unit_killed_mid_run_resumes_and_no_finished_unit_runs_twice(service: Service) -> None:
    spec = fleet_spec(epochs=30, seeds=(0,), train_size=1200, hidden=256, batch_size=8, test_size=100)
    job = service.submit(spec)
    w1, w2 = service.start_worker("w1"), service.start_worker("w2")
    wait_for(lambda: service.training_epoch(job) >= 3, 300, "a training unit to reach epoch 3")
    running = [u for u in service.units(job) if u.status is JobStatus.RUNNING and u.work and u.work.kind == "train"]
    assert running
    victim = running[0]
    worker = w1 if victim.worker and victim.worker.endswith("-w1") else w2
    horse = wait_for(lambda: service.horse(worker), 30, "the unit's work horse")
    horse.kill()  # SIGKILL the unit's process; its worker lives on and the unit is queued again
    report = job_report(service, job, timeout=900)
    assert {r["regularizer"] for r in report["runs"]} == {"erm", "doubleback"}
    units = {u.id: u for u in service.units(job)}
    assert units[victim.id].attempts == 2
    assert all(u.attempts == 1 for uid, u in units.items() if uid != victim.id), \
        [(u.work.name if u.work else uid, u.attempts) for uid, u in units.items()]
    starts = [e for e in service.journal.events(victim.id) if e["event"] == "run_started"]
    assert len(starts) == 2 and starts[1]["first_epoch"] > 1, starts  # resumed, not started over


def test_cancel_stops_every_unit_within_ten_seconds(service: Service) -> None:
    job = service.submit(fleet_spec(epochs=200, seeds=(0, 1), train_size=1200, hidden=256, batch_size=8))
    workers = [service.start_worker("w1"), service.start_worker("w2")]
    wait_for(lambda: sum(u.status is JobStatus.RUNNING for u in service.units(job)) == 2, 300,
             "two units running")
    service.store.request_cancel(job)
    assert service.get(job).status is JobStatus.CANCELLED
    wait_for(lambda: all(u.status.finished for u in service.units(job)), 10, "every unit to stop")
    wait_for(lambda: all(service.horse(w) is None for w in workers), 10, "the work horses to exit")
    assert all(u.status is JobStatus.CANCELLED for u in service.units(job))


@pytest.mark.slow  # in CI: the dispatch order itself (test_job_store, test_job_units)
def test_another_tenants_one_unit_job_starts_while_a_big_compare_runs(service: Service, tmp_path: Path) -> None:
    big = fleet_spec(epochs=8, seeds=(0, 1, 2, 3), train_size=600, hidden=128, batch_size=16)
    job_a = service.submit(big)
    service.start_worker("w1")
    service.start_worker("w2")
    wait_for(lambda: sum(u.status is JobStatus.SUCCEEDED for u in service.units(job_a)) >= 1, 300,
             "tenant A's first unit to finish")
    small = fleet_spec(epochs=1, seeds=(0,), test_size=100)
    small["regularizers"] = small["regularizers"][:1]
    request = JobRequest(kind=JobKind.COMPARE, spec=parse_spec(small))
    record_b, _ = service.store.create("tenant-b", request, max_active=100)
    submitted = datetime.now(UTC)
    done = service.wait_status(record_b.id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=600)
    assert done.status is JobStatus.SUCCEEDED, done.error
    first_b = min(u.started_at for u in service.units(record_b.id) if u.started_at)
    # "within one unit's time": while B waited, each worker started at most a couple of A's units
    overtaking = [u for u in service.units(job_a) if u.started_at and submitted < u.started_at < first_b]
    assert len(overtaking) <= 4, [(u.work.name if u.work else u.id, u.started_at) for u in overtaking]
    assert service.get(job_a).status in (JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUCCEEDED)
