"""Real worker processes for integration tests: start `robustlab worker` subprocesses, kill them all.

Usage in a test module:

    @pytest.fixture
    def service(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Service]:
        yield from running_service(redis_url, key_prefix, tmp_path)

gives a `Service` bound to this test's Redis prefix, RQ queue and data dir, with `start_worker()`,
`submit()`, `wait_status()`; every process it started (workers and their work horses) is killed when
the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis

from core.jobs import JobKind, JobRequest, JobStatus
from core.settings import Settings
from core.specs import parse_spec
from jobstore.records import JobRecord
from jobstore.store import JobStore
from jobstore.units import units_of
from worker.journal import Journal

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def tiny_spec(*, epochs: int = 2, regularizers: int = 1, train_size: int = 300, hidden: int = 16,
              batch_size: int = 32, name: str = "tiny") -> dict[str, Any]:
    """A digits compare that trains in well under a second per run (slow down with epochs/batch_size)."""
    regs = [{"name": "erm", "kind": "none"}, {"name": "doubleback", "kind": "double_backprop", "weight": 1.0}]
    return {
        "name": name,
        "dataset": {"name": "digits", "train_size": train_size, "test_size": 100, "seed": 0},
        "model": {"architecture": "mlp", "params": {"hidden": [hidden]}},
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "adam", "lr": 0.01, "device": "cpu"},
        "regularizers": regs[:regularizers],
        "seeds": [0],
        "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.1]},
                                   {"kind": "pgd", "norm": "linf", "eps": [0.1], "steps": 2}]},
    }


def slow_spec(epochs: int = 30) -> dict[str, Any]:
    """One run whose epochs take ~0.1-0.3 s each: long enough to interrupt mid-training."""
    return tiny_spec(epochs=epochs, train_size=1200, hidden=256, batch_size=8, name="slow")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and every process below it (its work horse runs in its own process group)."""
    for child in descendants(process.pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@dataclass
class Service:
    redis_url: str
    prefix: str
    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pids_seen: set[int] = field(default_factory=set)

    @property
    def queue(self) -> str:
        return "q-" + self.prefix.strip(":").replace(":", "-")

    @property
    def settings(self) -> Settings:
        values: dict[str, Any] = {k.removeprefix("ROBUSTLAB_").lower(): v for k, v in self.env().items()
                                  if k.startswith("ROBUSTLAB_")}
        return Settings(**values)

    @property
    def store(self) -> JobStore:
        return JobStore(redis.Redis.from_url(self.redis_url, decode_responses=True), self.prefix,
                        settings=self.settings)

    @property
    def journal(self) -> Journal:
        return Journal(redis.Redis.from_url(self.redis_url, decode_responses=True), self.prefix)

    def env(self) -> dict[str, str]:
        return {
            "ROBUSTLAB_REDIS_URL": self.redis_url, "ROBUSTLAB_KEY_PREFIX": self.prefix,
            "ROBUSTLAB_QUEUE": self.queue, "ROBUSTLAB_DATA_DIR": str(self.data_dir),
            "ROBUSTLAB_HEARTBEAT_SECONDS": "0.5", "ROBUSTLAB_STALL_TIMEOUT_SECONDS": "120",
            "ROBUSTLAB_MAX_ATTEMPTS": "3", "ROBUSTLAB_DEVICE": "cpu", **self.env_overrides,
        }

    def start_worker(self, name: str = "w1", *extra: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        log = (self.data_dir / f"worker-{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "robustlab.cli", "worker", "--name", f"{self.queue}-{name}", *extra],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.workers.append(process)
        return process

    def log(self, name: str = "w1") -> str:
        path = self.data_dir / f"worker-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def submit(self, spec: dict[str, Any], *, kind: JobKind = JobKind.COMPARE, checkpoint: str | None = None,
               queue_it: bool = True) -> str:
        request = JobRequest(kind=kind, spec=parse_spec(spec), checkpoint=checkpoint)
        record, _ = self.store.create("tenant-a", request, max_active=100, dispatch=queue_it)
        return record.id

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        assert record is not None
        return record

    def wait_status(self, job_id: str, *statuses: JobStatus, timeout: float = 60) -> JobRecord:
        wait_for(lambda: self.get(job_id).status in statuses, timeout,
                 f"job {job_id} to be {'/'.join(s.value for s in statuses)} (now {self.get(job_id)})")
        return self.get(job_id)

    def units(self, job_id: str) -> list[JobRecord]:
        """The job's work units (none before its first execution planned them)."""
        return units_of(self.store, self.get(job_id))

    def train_unit(self, job_id: str, timeout: float = 120) -> JobRecord:
        """The job's (first) training unit, once the job's first execution planned it."""
        def first() -> JobRecord | None:
            return next((u for u in self.units(job_id) if u.work and u.work.kind == "train"), None)

        return wait_for(first, timeout, f"job {job_id} to plan its units")

    def training_epoch(self, job_id: str) -> int:
        """The latest epoch the progress of the job or of its units names (0 before training)."""
        messages = [self.get(job_id).progress.message] + [u.progress.message for u in self.units(job_id)]
        epochs = [int(match.group(1)) for message in messages if (match := re.search(r"epoch (\d+)/", message))]
        return max(epochs, default=0)

    def horse(self, worker: subprocess.Popen[bytes]) -> psutil.Process | None:
        """The worker's current work horse (its child process), if any."""
        children = descendants(worker.pid)
        for child in children:
            self.pids_seen.add(child.pid)
        return children[0] if children else None

    def stop_all(self) -> None:
        for process in self.workers:
            kill_tree(process)
        for pid in self.pids_seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def running_service(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Service]:
    """The body of a `service` fixture: a Service whose processes are all killed at the end."""
    s = Service(redis_url, key_prefix, tmp_path / "data")
    s.data_dir.mkdir()
    try:
        yield s
    finally:
        s.stop_all()
