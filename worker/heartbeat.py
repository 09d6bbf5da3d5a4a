"""The work horse's heartbeat thread: proof of life, prompt cancellation, and suicide when fenced out.

It runs beside the training loop, so it works even while the loop is inside one long step:
- every `heartbeat_seconds` it writes the job's heartbeat (fenced by the execution's token);
- when the heartbeat is refused, another execution owns the job now (the reaper released it as
  lost or stalled, or a re-delivery took it over): this process is killed at once, without writing
  anything, so a superseded execution can never publish a result;
- when a cancel was requested, `on_cancel` (which records the job as cancelled, fenced) runs and
  the process is killed: a cancel takes effect within about one heartbeat whatever the loop does.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

import redis

from core.settings import Settings
from jobstore.store import JobStore

log = logging.getLogger(__name__)


def lost_after(settings: Settings) -> float:
    """Seconds without a heartbeat after which a running execution counts as dead (3 beats + grace)."""
    return 3 * settings.heartbeat_seconds + 2.0


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Heartbeat(threading.Thread):
    def __init__(self, store: JobStore, job_id: str, token: str, interval: float,
                 on_cancel: Callable[[], None]) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.store, self.job_id, self.token, self.interval = store, job_id, token, interval
        self.on_cancel = on_cancel
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                owner = self.store.heartbeat(self.job_id, self.token)
                cancel = owner and self.store.cancel_requested(self.job_id)
            except redis.RedisError as exc:  # a blip: keep beating; the reaper decides what is lost
                log.warning("heartbeat of job %s failed: %s", self.job_id, exc)
                continue
            if self._stopping.is_set():  # the job finished while we were talking to Redis
                return
            if not owner:
                log.warning("job %s is owned by another execution now: stopping this one", self.job_id)
                kill_self()
            if cancel:
                log.info("job %s: cancel requested, stopping its execution", self.job_id)
                self.on_cancel()
                kill_self()

    def stop(self) -> None:
        """Stop beating (before the execution writes its final status, which ends the ownership)."""
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
