"""One execution of one job, inside the RQ work horse: take ownership, run, publish, finish (fenced).

The lifecycle (DESIGN §5):
1. `JobStore.start` gives this execution a fencing token; a job that is finished, cancelled, or
   running with a live heartbeat elsewhere (a duplicate delivery) is left alone.
2. A heartbeat thread proves the execution alive and stops it promptly on cancel or takeover.
3. The resume files of earlier executions are restored from the artifact store; training mirrors
   them back after every epoch, so a retry on any machine continues from the last finished epoch.
4. Artifacts are published under `jobs/<id>/result-<token>/`, a prefix of this execution's own, and
   `finish` records that prefix with the result, fenced: a superseded execution's files sit under
   a prefix no record points to (and are deleted), so they can never replace the served result.
5. An exception fails the job with its type and message (not retried: a bad spec or a broken
   checkpoint fails the same way every time); RQ's job timeout fails it with type `Timeout`.
Losses (the process or its worker killed, a stall) are handled outside: by the worker parent
(worker.process) and the reaper (worker.reaper), which requeue the job against its attempt count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from artifactstore import ArtifactStore, check_name
from core.jobs import JobError, JobStatus, Progress
from core.settings import Settings
from core.specs import ExperimentSpec, SpecError, UploadedDataset, parse_spec
from core.specs.experiment import is_upload_id
from core.specs.regularizers import Sobolev
from jobstore.queue import redis_client
from jobstore.records import JobRecord
from jobstore.store import JobStore, now
from jobstore.units import advance
from jobstore.uploads import DatasetStore
from worker.heartbeat import Heartbeat, lost_after
from worker.journal import Journal
from worker.progress import ExecutionStopped
from worker.resume import ResumeSync
from worker.unit_runner import UnitExecution

log = logging.getLogger(__name__)

MAX_MESSAGE = 2000


class CheckpointUnavailable(ValueError):
    """The evaluate job's checkpoint record or file is missing or does not match its upload."""


class UnitsPlanned(Exception):
    """The job's first execution handed the job over to its units: it ends without finishing the job.
    `first`: the unit it runs next in the same process (None: none may start yet)."""

    def __init__(self, job_id: str, first: str | None) -> None:
        super().__init__(job_id)
        self.first = first


# An absolute path on the worker (not a URL's path): shown by its last part only.
_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s/'\"]+/)+([^\s/'\"]+)")
_OUT_OF_MEMORY = ("can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory")


def scrub_paths(message: str) -> str:
    """The message without the worker's directory layout: '/srv/data/work/<id>/x.pt' becomes 'x.pt'."""
    return _PATH.sub(r"\1", message)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def error_of(exc: BaseException) -> JobError:
    """What the job record shows for an exception: its type and a readable message, no worker paths."""
    if isinstance(exc, SpecError):
        message = "invalid spec: " + "; ".join(str(p) for p in exc.problems)
    else:
        message = str(exc).strip().strip("'\"") or type(exc).__name__
    limit = os.environ.get("ROBUSTLAB_JOB_MEMORY_LIMIT_ACTIVE")
    if isinstance(exc, MemoryError) or any(m in message.lower() for m in _OUT_OF_MEMORY):
        where = f" of {limit} MiB (ROBUSTLAB_JOB_MEMORY_LIMIT_MB)" if limit else ""
        return JobError(type="OutOfMemory", message=f"the job needed more memory than its limit{where}: use a "
                        f"smaller model, batch or dataset ({scrub_paths(message)[:300]})")
    return JobError(type=type(exc).__name__, message=scrub_paths(message)[:MAX_MESSAGE])


class JobRunner:
    def __init__(self, settings: Settings, job_id: str) -> None:
        if not settings.redis_url:
            raise RuntimeError("no Redis URL: set REDIS_URL or ROBUSTLAB_REDIS_URL")
        self.settings, self.job_id = settings, job_id
        client = redis_client(settings.redis_url, outage_seconds=settings.redis_outage_seconds)
        self.store = JobStore(client, settings.key_prefix, settings=settings)
        self.journal = Journal(client, settings.key_prefix)
        self.artifacts = ArtifactStore(settings.artifact_root)
        self.work_dir = settings.work_root / job_id
        self.token = ""
        self.parent_id: str | None = None
        self.heartbeat: Heartbeat | None = None
        self.next_up: str | None = None  # the execution this process runs next (see run)
        self.fused = False  # this execution was handed on in the process of another

    # ------------------------------------------------------------------ entry
    def run(self) -> None:
        """This execution, then the one it hands on to in the same process: the job's first unit
        after planning it, the job's assembly after its last unit. Torch is loaded already, so that
        saves a process start and an import per hand-over; the next unit's RQ delivery
        (if dispatch made one meanwhile) finds it running or finished and stands down."""
        self._run_once()
        if self.next_up:
            follow = JobRunner(self.settings, self.next_up)
            follow.fused = True
            follow.run()

    def _run_once(self) -> None:
        started = self._start()
        if started is None:
            return
        record, token = started
        self.token = token
        attempt = record.attempts + 1
        worker = os.environ.get("RQ_WORKER_ID", "")
        rq_job = self._rq_job_id()
        self.journal.begin(self.job_id, token=token, rq_job=rq_job, worker=worker, attempt=attempt)
        if self.fused and rq_job:  # the worker parent settles it too if this process dies
            self.journal.fused(rq_job, self.job_id)
        phase = "unit" if record.parent else record.phase or "plan"
        self.journal.event(self.job_id, "started", execution=token[:8], attempt=attempt, worker=worker, phase=phase)
        log.info("job %s: execution %s started (attempt %d)", self.job_id, token[:8], attempt)
        heartbeat = Heartbeat(self.store, self.job_id, token, self.settings.heartbeat_seconds, self._cancel_now)
        self.heartbeat = heartbeat
        self.parent_id = record.parent
        heartbeat.start()
        try:
            names = self._execute(record)
            self._publish(names)
        except UnitsPlanned as planned:
            heartbeat.stop()
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.next_up = planned.first
            return
        except ExecutionStopped:
            heartbeat.stop()
            if self.store.cancel_requested(self.job_id):
                self._end(JobStatus.CANCELLED, JobError(type="Cancelled", message="cancelled by request"))
            else:
                log.warning("job %s: fenced out by another execution, stopping without writing", self.job_id)
            return
        except redis.RedisError:
            # Redis stayed away longer than redis_outage_seconds: not the job's fault. Leave the
            # record alone; the worker parent or the reaper releases it to resume later.
            log.exception("job %s: lost Redis mid-job; leaving it to be resumed", self.job_id)
            raise
        except JobTimeoutException:
            heartbeat.stop()
            self._end(JobStatus.FAILED, JobError(
                type="Timeout", message=f"the job ran longer than its timeout of {self.settings.job_timeout_seconds}s"
                " (ROBUSTLAB_JOB_TIMEOUT_SECONDS)"))
            return
        except Exception as exc:
            heartbeat.stop()
            log.exception("job %s failed", self.job_id)
            self._end(JobStatus.FAILED, error_of(exc))
            return
        heartbeat.stop()
        done = Progress(fraction=1.0, stage="done", message="finished", eta_seconds=0.0)
        if not self._end(JobStatus.SUCCEEDED, None, artifacts=names, progress=done, result_prefix=self.prefix):
            self.artifacts.delete_prefix(self.prefix)  # fenced out: nobody will ever serve these files

    def _start(self) -> tuple[JobRecord, str] | None:
        """Take ownership, unless the job is finished or another execution runs it (duplicate delivery).

        The check and `start` happen under a short per-job lock, so two deliveries arriving together
        cannot both see a queued job and start it one after the other.
        """
        lock = f"{self.settings.key_prefix}job:{self.job_id}:starting"
        if not self.store.redis.set(lock, self._rq_job_id() or "?", nx=True, px=10_000):
            log.warning("job %s is being started by another delivery: this one stands down", self.job_id)
            self.journal.event(self.job_id, "duplicate_skipped", rq_job=self._rq_job_id(), reason="starting")
            return None
        try:
            record = self.store.get(self.job_id)
            if record is None:
                log.warning("job %s: no such job record, nothing to run", self.job_id)
                return None
            if record.status.finished:
                log.info("job %s is %s already: nothing to run", self.job_id, record.status.value)
                self.journal.event(self.job_id, "duplicate_skipped", rq_job=self._rq_job_id(), reason="finished")
                return None
            if record.status is JobStatus.RUNNING and record.phase == "units":
                # its units run it now (the plan's heartbeat has stopped on purpose): a stale delivery
                # of the job must not plan it a second time; the last unit queues its assembly
                log.warning("job %s is running as work units: duplicate delivery skipped", self.job_id)
                self.journal.event(self.job_id, "duplicate_skipped", rq_job=self._rq_job_id(), reason="units")
                return None
            if record.status is JobStatus.RUNNING and self._alive():
                log.warning("job %s is running elsewhere (live heartbeat): duplicate delivery skipped", self.job_id)
                self.journal.event(self.job_id, "duplicate_skipped", rq_job=self._rq_job_id(), reason="running")
                return None
            token = self.store.start(self.job_id, worker=os.environ.get("RQ_WORKER_ID", ""))
            if token is None:
                log.info("job %s could not be started (cancelled or finished meanwhile)", self.job_id)
                self.journal.event(self.job_id, "duplicate_skipped", rq_job=self._rq_job_id(), reason="not startable")
                return None
            self.store.dispatch()  # this delivery left the RQ queue: hand out the next waiting job
            return record, token
        finally:
            self.store.redis.delete(lock)

    # ------------------------------------------------------------------ helpers
    def _rq_job_id(self) -> str:
        job = get_current_job()
        return job.id if job is not None else os.environ.get("RQ_JOB_ID", "")

    def _alive(self) -> bool:
        beat = self.store.heartbeat_at(self.job_id)
        return beat is not None and (now() - beat).total_seconds() < lost_after(self.settings)

    def _owner(self) -> bool:
        return self.store.execution(self.job_id) == self.token

    def _event(self, kind: str, **data: object) -> None:
        self.journal.event(self.job_id, kind, execution=self.token[:8], **data)
        if self.parent_id:  # the job's journal tells its whole story, each unit's events included
            self.journal.event(self.parent_id, kind, execution=self.token[:8], unit=self.job_id, **data)

    def _execute(self, record: JobRecord) -> list[str]:
        spec = parse_spec(record.spec)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if record.parent:
            return self.units.run_unit(record, spec)
        if record.phase == "assemble":
            return self.units.assemble(record, spec)
        first = self.units.plan(record, spec)  # the first execution: split the job into units
        raise UnitsPlanned(self.job_id, first)

    def _fetch_checkpoint(self, record: JobRecord) -> Path:
        return self._fetch_model(record.checkpoint or "", record.tenant)

    def _fetch_model(self, model_id: str, tenant: str) -> Path:
        """The tenant's uploaded model file, copied from the artifact store and checked against its record."""
        checkpoint = self.store.get_checkpoint(model_id, tenant)
        if checkpoint is None:
            raise CheckpointUnavailable(f"model {model_id!r} not found: upload it with POST /v1/models and use "
                                        "the id it returns")
        filename = check_name(checkpoint.filename)
        local = self.work_dir / "input" / checkpoint.id / filename
        self.artifacts.get_file(f"checkpoints/{checkpoint.id}", filename, local)
        digest = sha256_file(local)
        if digest != checkpoint.sha256:
            raise CheckpointUnavailable(f"model {checkpoint.id}: stored file does not match its upload "
                                        f"(sha256 {digest[:12]}… ≠ {checkpoint.sha256[:12]}…); upload it again")
        return local

    def _fetch_uploads(self, record: JobRecord, spec: ExperimentSpec) -> dict[str, Path]:
        """Local copies of the uploads the spec names by id (its dataset, Sobolev teachers), per tenant."""
        files: dict[str, Path] = {}
        if isinstance(spec.dataset, UploadedDataset):
            dataset = DatasetStore(self.store.redis, self.settings.key_prefix).get(spec.dataset.id, record.tenant)
            if dataset is None:
                raise CheckpointUnavailable(f"dataset {spec.dataset.id!r} not found: upload it with POST /v1/datasets")
            local = self.work_dir / "input" / dataset.id / check_name(dataset.filename)
            self.artifacts.get_file(f"datasets/{dataset.id}", check_name(dataset.filename), local)
            if sha256_file(local) != dataset.sha256:
                raise CheckpointUnavailable(f"dataset {dataset.id}: stored file does not match its upload; "
                                            "upload it again")
            files[dataset.id] = local
        for reg in spec.regularizers:
            if isinstance(reg, Sobolev) and is_upload_id(reg.teacher):
                files[reg.teacher] = self._fetch_model(reg.teacher, record.tenant)
        return files

    @property
    def units(self) -> UnitExecution:
        return UnitExecution(self)

    @property
    def prefix(self) -> str:
        """This execution's own result prefix in the artifact store (a unit's lies under its job's)."""
        if self.parent_id:
            return f"jobs/{self.parent_id}/units/{self.job_id}/result-{self.token}"
        return f"jobs/{self.job_id}/result-{self.token}"

    def _publish(self, names: list[str]) -> None:
        """Copy the results to this execution's prefix, only while it still owns the job."""
        if not self._owner():
            raise ExecutionStopped("fenced out before publishing")
        for name in names:
            self.artifacts.put_file(self.prefix, name, self.work_dir / name)

    def _end(self, status: JobStatus, error: JobError | None, *, artifacts: list[str] | None = None,
             progress: Progress | None = None, result_prefix: str | None = None) -> bool:
        """The fenced final write; on success the execution's scratch and resume state go away."""
        ok = self.store.finish(self.job_id, self.token, status, error=error, artifacts=artifacts or (),
                               progress=progress, result_prefix=result_prefix)
        if not ok:
            log.warning("job %s: result of execution %s refused (fenced out)", self.job_id, self.token[:8])
            return False
        log.info("job %s %s%s", self.job_id, status.value, f": {error.type}: {error.message}" if error else "")
        self._event("finished", status=status.value, error=error.type if error else None)
        self.cleanup()
        if self.parent_id and advance(self.store, self.parent_id) == "assemble" and status is JobStatus.SUCCEEDED:
            self.next_up = self.parent_id  # the last unit: merge the job's report in this process
        return True

    def cleanup(self) -> None:
        try:
            ResumeSync(self.artifacts, self.job_id, self.work_dir).discard()
            if not self.parent_id:  # the job is over: its units' files are merged into its result, or moot
                self.artifacts.delete_prefix(f"jobs/{self.job_id}/units")
        except OSError as exc:
            log.warning("job %s: could not delete its resume state: %s", self.job_id, exc)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _cancel_now(self) -> None:
        """Called by the heartbeat thread when a cancel was requested: record it (fenced)."""
        self._end(JobStatus.CANCELLED, JobError(type="Cancelled", message="cancelled by request"))
