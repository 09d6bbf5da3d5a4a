"""The worker process: RQ's forking Worker plus what robustlab adds around each work horse.

One RQ queue per worker pool, JSON serializer, one forked work horse per job (a fresh process, so
GPU memory is freed when the job ends and a stop or timeout can kill it hard). The parent never
imports torch: the horse imports it when it runs the job (DESIGN §5). Around RQ's loop:
- the horse asks the kernel to SIGKILL it when its parent dies (PR_SET_PDEATHSIG), so a killed
  worker leaves no orphan execution behind;
- after a horse exits, the parent settles the job if the horse could not: killed by a signal or
  the job timeout, the job is released (queued again, or failed once it used its attempts) or
  failed as `Timeout`; on a warm shutdown (SIGTERM) the running job is stopped and queued again
  at once, to resume from its last epoch on another worker;
- a reaper thread (worker.reaper) and the worker's presence key for /readyz.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import time
from typing import Any

import redis
from rq import Worker
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from artifactstore import ArtifactStore
from core.jobs import JobError, JobStatus
from core.settings import Settings
from jobstore.queue import job_queue, redis_client, rq_connection
from jobstore.records import Keys
from jobstore.store import JobStore
from worker.journal import Journal
from worker.reaper import Reaper, ReaperThread, reap_interval

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
MAINTENANCE_INTERVAL = 30  # seconds between RQ's registry clean-ups (its default is 10 minutes)


def limit_memory(megabytes: int) -> None:
    """Cap the work horse's address space (RLIMIT_AS): an allocation past it fails inside the job
    (MemoryError, or torch's "can't allocate memory"), which fails the job with a clear error, instead
    of the kernel's OOM killer choosing a victim (maybe Redis, the API or the worker)."""
    if megabytes <= 0:
        return
    limit = megabytes * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    os.environ["ROBUSTLAB_JOB_MEMORY_LIMIT_ACTIVE"] = str(megabytes)


def gpu_present() -> bool:
    """An NVIDIA device node exists (without initializing CUDA, which the parent never does)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" and any(
        name.startswith("nvidia") and name[6:].isdigit() for name in os.listdir("/dev") if os.path.isdir("/dev"))


def die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies; exit now if it already did."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class RobustlabWorker(Worker):
    """RQ's forking worker with robustlab's hooks (see the module docstring)."""

    settings: Settings

    def configure(self, settings: Settings) -> None:
        self.settings = settings
        client = redis_client(settings.redis_url or "", outage_seconds=settings.redis_outage_seconds)
        self.store = JobStore(client, settings.key_prefix, settings=settings, rq=self.connection)
        self.journal = Journal(client, settings.key_prefix)
        self.reaper = Reaper(settings, self.store, self.connection, self.journal, ArtifactStore(settings.artifact_root))
        self._parent_pid = os.getpid()
        self._warm_shutdown = False
        self._horse_status: int | None = None

    # ------------------------------------------------------------------ the work horse side
    def main_work_horse(self, job: Job, queue: Queue) -> None:
        die_with_parent(self._parent_pid)
        if self.settings.device == "cpu" or not gpu_present():  # CUDA reserves far more address space than it uses
            limit_memory(self.settings.job_memory_limit_mb)
        super().main_work_horse(job, queue)

    # ------------------------------------------------------------------ the parent side
    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        pid, status, rusage = super().wait_for_horse()
        if pid:
            self._horse_status = status
        return pid, status, rusage

    def handle_warm_shutdown_request(self) -> None:
        """SIGTERM/SIGINT: stop the running job now (it resumes elsewhere) instead of waiting for it."""
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        self._warm_shutdown = True
        if self.horse_pid:
            log.info("warm shutdown: stopping the running job; it will be queued again and resume")
            self.kill_horse(sig=signal.SIGTERM)

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._horse_status = None
        started = time.monotonic()
        super().execute_job(job, queue)
        try:
            self.settle(job, time.monotonic() - started)
        except redis.RedisError as exc:  # the reaper settles it later
            log.warning("could not settle job %s after its process ended: %s", job.id, exc)

    def settle(self, job: Job, seconds: float) -> None:
        """After the horse exits: finish what it left undone (it was killed, timed out or stopped),
        for the job its delivery named and for the executions it ran after it in the same process."""
        job_id = str(job.args[0]) if job.args else job.id.rsplit("_", 1)[0]
        for execution in [job_id, *self.journal.fused_with(job.id)]:
            self._settle_one(execution, job, seconds)

    def _settle_one(self, job_id: str, job: Job, seconds: float) -> None:
        record = self.store.get(job_id)
        if record is None:
            return
        if record.status.finished:
            shutil.rmtree(self.settings.work_root / job_id, ignore_errors=True)
            return
        info = self.journal.current(job_id)
        if not info or info.get("rq_job") != job.id:
            return  # this delivery never started an execution (a skipped duplicate)
        token = info["token"]
        if record.status is not JobStatus.RUNNING or self.store.execution(job_id) != token:
            return  # released by the reaper or taken over: not ours to settle
        status = self._horse_status
        how = (f"signal {signal.Signals(os.WTERMSIG(status)).name}" if status is not None and os.WIFSIGNALED(status)
               else f"exit status {os.waitstatus_to_exitcode(status)}" if status is not None else "unknown status")
        if self._warm_shutdown:
            reason = JobError(type="WorkerShutdown", message="the worker shut down (SIGTERM) mid-job; resumed later")
            # a shutdown is not the job's fault: it never counts towards a poison verdict
            self.reaper.release(job_id, token, reason, counts=False)
        elif job.timeout and job.timeout > 0 and seconds >= job.timeout:
            self.store.finish(job_id, token, JobStatus.FAILED, error=JobError(
                type="Timeout", message=f"the job ran longer than its timeout of {job.timeout}s and was killed"))
        else:
            reason = JobError(type="WorkerLost", message=f"the job process ended unexpectedly ({how})")
            self.reaper.release(job_id, token, reason)


def worker_name(name: str | None) -> str:
    return name or f"{socket.gethostname()}.{os.getpid()}"


def run_worker(settings: Settings, *, burst: bool = False, name: str | None = None) -> bool:
    """Run a worker on settings.queue until stopped (or, with burst, until the queue is empty).

    Redis going away does not end it: its clients wait for Redis (redis_outage_seconds) command by
    command, and if RQ's loop gives up anyway the worker waits for Redis and starts the loop again."""
    if not settings.redis_url:
        raise RuntimeError("no Redis URL: set REDIS_URL or ROBUSTLAB_REDIS_URL")
    connection = rq_connection(settings.redis_url, outage_seconds=settings.redis_outage_seconds)
    redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0).ping()  # fail fast at start
    worker = RobustlabWorker([job_queue(connection, settings)], name=worker_name(name), connection=connection,
                             serializer=JSONSerializer, maintenance_interval=MAINTENANCE_INTERVAL)
    worker.configure(settings)
    keys = Keys(settings.key_prefix)
    presence_ttl = max(10, int(4 * reap_interval(settings)))

    def announce() -> None:  # the presence key /readyz looks at
        info = {"name": worker.name, "pid": os.getpid(), "host": socket.gethostname(), "queue": settings.queue,
                "heartbeat_at": time.time()}
        worker.store.redis.set(keys.worker_heartbeat(worker.name), json.dumps(info), ex=presence_ttl)
        worker.store.redis.sadd(keys.workers(), worker.name)

    # Until RQ's loop installs its own handlers, SIGTERM/SIGINT would kill the process outright and
    # leave the presence key to expire: /readyz would report a stopped worker for seconds.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _stop_before_loop)
    reaper: ReaperThread | None = None
    try:
        announce()
        worker.reaper.run_once()  # jobs orphaned while no worker ran: at once, not after a first interval
        reaper = ReaperThread(worker.reaper, on_tick=announce)
        reaper.start()
        log.info("worker %s on queue %r (Redis %s, artifacts %s)", worker.name, settings.queue,
                 connection.connection_pool.connection_kwargs.get("host", "?"), settings.artifact_root)
        while True:
            try:
                worked = worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("worker %s: Redis unavailable (%s); waiting for it", worker.name, exc)
                worked = False
            if burst or worker._stop_requested or worker._warm_shutdown:
                return worked
            # RQ's loop ended on an error (Redis away too long, or one it does not handle): start again
            wait_for_redis(connection, worker)
    finally:
        if reaper is not None:
            reaper.stop()
        try:
            worker.store.redis.delete(keys.worker_heartbeat(worker.name))
            worker.store.redis.srem(keys.workers(), worker.name)
        except redis.RedisError:
            pass


def _stop_before_loop(signum: int, frame: object) -> None:
    """A stop signal before RQ's loop runs: leave through run_worker's cleanup (the presence goodbye)."""
    log.info("worker: %s before the work loop started; stopping", signal.Signals(signum).name)
    raise SystemExit(0)


def wait_for_redis(connection: redis.Redis, worker: RobustlabWorker) -> None:
    """Block until Redis answers, then clear the worker's registration so RQ's loop can start again."""
    delay = 0.5
    while True:
        try:
            connection.ping()
            break
        except redis.RedisError as exc:
            log.warning("worker %s: Redis still unavailable (%s); retrying in %.1fs", worker.name, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    try:
        worker.register_death()  # type: ignore[no-untyped-call]
    except redis.RedisError as exc:
        log.warning("worker %s: could not clear its registration (%s)", worker.name, exc)
    log.info("worker %s: Redis is back; taking jobs again", worker.name)
