"""Running the upload checker (worker.upload_check) in a child process, from the API.

torch never loads in the API process (DESIGN §4), and a hostile file meets the loaders in a process
that exits right after, with limits of its own: an address-space cap (a compression bomb dies with
a MemoryError, not the machine), a CPU-time cap (`check_cpu_seconds`: a graph that computes for
longer than loading a model takes is refused, not accepted after minutes), a wall-clock cap
(`check_wall_seconds`), an environment holding nothing but what Python needs (no API keys, no
Redis URL), and an empty temporary directory as its working directory (a relative path in a file
points at nothing of ours). The slots are shared fairly between tenants (service.check_pool); a
check whose request is cancelled (its client went away) is killed at once.
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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CheckResult:
    ok: bool
    error: str = ""
    details: dict[str, Any] | None = None
    over_limit: dict[str, Any] | None = None  # {"field", "limit", "value"}: a tenant limit refused the upload


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
    """`python -m worker.upload_check COMMAND` (or `program`) under the limits; its JSON answer.
    TimeoutError past `check_wall_seconds`; cancelled (the client left): the process is killed."""
    with tempfile.TemporaryDirectory(prefix="robustlab-check-") as workdir:
        process = await asyncio.create_subprocess_exec(
            *(program or (sys.executable, "-m", "worker.upload_check")), *command, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, env=clean_environment(), cwd=workdir,
            preexec_fn=_limits(settings.check_memory_mb, settings.check_cpu_seconds))
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), settings.check_wall_seconds)
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            await asyncio.shield(process.wait())
            raise
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    if process.returncode == 0 and answer.get("ok") is True:
        return CheckResult(ok=True, details=answer)
    if process.returncode == 1 and isinstance(answer.get("error"), str):
        over = answer.get("over_limit")
        return CheckResult(ok=False, error=answer["error"], over_limit=over if isinstance(over, dict) else None)
    tail = stderr.decode("utf-8", "replace")[-2000:]
    logger.warning("upload check %s ended with exit %s: %s", command[:2], process.returncode, tail)
    if process.returncode in (-9, -24):  # SIGKILL / SIGXCPU: the CPU-time limit
        return CheckResult(ok=False, error="checking the model took more than the "
                           f"{settings.check_cpu_seconds} s of CPU time an upload may use "
                           "(ROBUSTLAB_CHECK_CPU_SECONDS): its forward pass computes far more than a classifier "
                           "needs, or it is too large", over_limit={"field": "check_cpu_seconds",
                                                                   "limit": settings.check_cpu_seconds})
    if "MemoryError" in tail or "std::bad_alloc" in tail:
        return CheckResult(ok=False, error="the file needs more memory to load than an upload may use "
                           f"({settings.check_memory_mb} MiB, ROBUSTLAB_CHECK_MEMORY_MB): it declares far more "
                           "data than it holds (a compression bomb?) or is too large")
    return CheckResult(ok=False, error=f"the file could not be read safely (checker exit {process.returncode}); "
                       "upload a safetensors, .pt state_dict, ONNX or .npz file")
