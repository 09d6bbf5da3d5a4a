"""Child processes that `robustlab up` owns: started in their own process group, stopped with all
their descendants, so that nothing survives a Ctrl-C.

An RQ worker forks each job into a "work horse" in a process group of its own, so signalling the
worker's group does not reach it; `kill_tree` therefore also collects every descendant (from /proc
on Linux) and SIGKILLs whatever is left when the grace period ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `up` itself is SIGKILLed (Linux), so no orphan is left."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One managed process: `start()` (again, to restart), `exited()`, `pid`, `returncode`.

    With `relay`, the child's stdout and stderr come through a pipe and each line is handed to
    `relay` (from a thread), so that `up` can print them above its live progress bar instead of
    letting them scribble over it.
    """

    def __init__(self, name: str, command: list[str], env: Mapping[str, str],
                 relay: Callable[[str], None] | None = None) -> None:
        self.name, self.command, self.env, self.relay = name, command, dict(env), relay
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        preexec: Callable[[], None] | None = _die_with_parent if sys.platform.startswith("linux") else None
        piped = self.relay is not None
        self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE if piped else None,
                                        stderr=subprocess.STDOUT if piped else None,
                                        start_new_session=True, preexec_fn=preexec)
        if self.relay is not None and self.process.stdout is not None:
            threading.Thread(target=self._relay_lines, args=(self.process.stdout, self.relay),
                             name=f"{self.name}-output", daemon=True).start()
        logger.info("started %s (pid %d)", self.name, self.process.pid)
        return self

    @staticmethod
    def _relay_lines(pipe: IO[bytes], relay: Callable[[str], None]) -> None:
        """Until the child closes its end: a line that cannot be shown (our stderr closed, e.g. `| head`
        ended) is dropped, but the pipe is still drained, so the child never blocks on a full pipe."""
        with contextlib.suppress(OSError, ValueError):
            for raw in iter(pipe.readline, b""):
                with contextlib.suppress(OSError, ValueError):
                    relay(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process from /proc, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid ... starttime is field 22
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19]


def descendants(roots: Iterable[int]) -> dict[int, str]:
    """Every live descendant of `roots` (not the roots): pid → start time (to avoid killing a reused pid)."""
    parents: dict[int, list[tuple[int, str]]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
                parents.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: dict[int, str] = {}
    todo = list(roots)
    while todo:
        for pid, started in parents.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_tree(children: list[Child], grace: float) -> None:
    """SIGTERM each child's group; after `grace` seconds SIGKILL what is left, descendants included."""
    running = [c for c in children if not c.exited() and c.pid is not None]
    pids = [c.pid for c in running if c.pid is not None]
    seen = descendants(pids)
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not all(c.exited() for c in running):
        seen.update(descendants(pids))  # a job process forked during the grace period
        time.sleep(0.05)
    for child in running:
        if not child.exited() and child.pid is not None:
            logger.warning("%s (pid %d) did not stop within %gs: SIGKILL", child.name, child.pid, grace)
            _signal_group(child.pid, signal.SIGKILL)
    for pid, started in seen.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == started:
            logger.warning("killing leftover process %d", pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for child in running:
        if child.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
