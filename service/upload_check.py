"""Running the upload checker (worker.upload_check) in a child process, from the API.

torch never loads in the API process (DESIGN §4), and a hostile file meets the loaders in a process
that exits right after, with limits of its own: an address-space cap (a compression bomb dies with
a MemoryError, not the machine), a CPU-time cap, and an environment holding nothing but what
Python needs (no API keys, no Redis URL). At most `max_concurrent_checks` run at once; up to
`max_waiting_checks` more wait their turn, and past that an upload gets 429 with Retry-After.
Anything but a clean "ok" rejects the upload; only a timeout or a full pool is the service's
fault (503 / 429).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from service.errors import ApiError

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CHECK_TIMEOUT_SECONDS = 300.0


@dataclass
class CheckResult:
    ok: bool
    error: str = ""
    details: dict[str, Any] | None = None


Runner = Callable[[list[str], Settings], Awaitable[CheckResult]]


class CheckPool:
    """A bounded pool of checker processes: a semaphore plus a cap on how many may wait."""

    def __init__(self, running: int, waiting: int, runner: Runner | None = None) -> None:
        self.slots = asyncio.Semaphore(running)
        self.running, self.max_waiting, self.waiting = running, waiting, 0
        self.runner = runner or run_checker

    async def run(self, command: list[str], settings: Settings) -> CheckResult:
        if self.slots.locked() and self.waiting >= self.max_waiting:
            raise ApiError(429, "busy", f"{self.running} uploads are being checked and {self.waiting} wait: "
                           "try again shortly", headers={"Retry-After": "10"})
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        try:
            return await self.runner(command, settings)
        finally:
            self.slots.release()


def _limits(memory_mb: int, cpu_seconds: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    return apply


def clean_environment() -> dict[str, str]:
    """What the checker may see: the interpreter's paths and thread settings, no secrets."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    return {**keep, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "", "PYTHONDONTWRITEBYTECODE": "1"}


async def run_checker(command: list[str], settings: Settings, program: tuple[str, ...] = ()) -> CheckResult:
    """`python -m worker.upload_check COMMAND` (or `program`) under the limits; its JSON answer."""
    process = await asyncio.create_subprocess_exec(
        *(program or (sys.executable, "-m", "worker.upload_check")), *command, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=clean_environment(), cwd=str(REPO),
        preexec_fn=_limits(settings.check_memory_mb, settings.check_cpu_seconds))
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CHECK_TIMEOUT_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        process.kill()
        await process.wait()
        raise
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    if process.returncode == 0 and answer.get("ok") is True:
        return CheckResult(ok=True, details=answer)
    if process.returncode == 1 and isinstance(answer.get("error"), str):
        return CheckResult(ok=False, error=answer["error"])
    tail = stderr.decode("utf-8", "replace")[-2000:]
    logger.warning("upload check %s ended with exit %s: %s", command[:2], process.returncode, tail)
    if "MemoryError" in tail or "std::bad_alloc" in tail or process.returncode in (-9, -24):
        return CheckResult(ok=False, error="the file needs more memory or time to load than an upload may use "
                           f"({settings.check_memory_mb} MiB, {settings.check_cpu_seconds} s): it declares far more "
                           "data than it holds (a compression bomb?) or is too large")
    return CheckResult(ok=False, error=f"the file could not be read safely (checker exit {process.returncode}); "
                       "upload a safetensors, .pt state_dict, ONNX or .npz file")
