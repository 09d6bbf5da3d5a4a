"""Running the safe checkpoint loader in a child process (worker.checkpoint_check), from the API.

torch never loads in the API process (DESIGN §4), and a hostile file meets the loader in a process
that exits right after. Anything but a clean "ok" — a refusal, a crash, garbage output — rejects
the upload; only a timeout is the service's fault (503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CHECK_TIMEOUT_SECONDS = 180.0


@dataclass
class CheckResult:
    ok: bool
    error: str = ""
    details: dict[str, Any] | None = None


async def run_check(path: Path, architecture: str, params: dict[str, Any] | None, *,
                    input_shape: list[int] | None, num_outputs: int | None, out: Path) -> CheckResult:
    command = [sys.executable, "-m", "worker.checkpoint_check", str(path), "--architecture", architecture,
               "--out", str(out)]
    if params is not None:
        command += ["--params", json.dumps(params)]
    if input_shape is not None:
        command += ["--input-shape", json.dumps(input_shape)]
    if num_outputs is not None:
        command += ["--num-outputs", str(num_outputs)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # a check needs no GPU, and must not take one
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE, env=env)
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
    logger.warning("checkpoint check of %s ended with exit %s: %s", path.name, process.returncode,
                   stderr.decode("utf-8", "replace")[-2000:])
    return CheckResult(ok=False, error=f"the checkpoint could not be read safely (checker exit {process.returncode}); "
                       "upload a safetensors file saved by robustlab or a plain .pt state_dict")
