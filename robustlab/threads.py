"""How many threads torch uses in the local commands and the notebook entry point.

torch's default is every core it can see (os.cpu_count() in a container that reports the host's
cores), and its OpenMP threads spin at every barrier: on a small, busy CI runner that costs more
than it gains (docs/user-guide.md, "Threads"). The local commands (`evaluate`, `gate --local`,
`compare`, `train`) and `robustlab.evaluate` pick a count for the machine they are on instead:

1. `--threads N` (or `threads=N`), when given;
2. else `OMP_NUM_THREADS`, when the user set it (torch reads it too);
3. else the cores this process may run on (its CPU affinity, and a cgroup CPU quota such as a
   container's `--cpus`), halved because CI machines' vCPUs are hyperthread pairs and tiny ops
   gain little from a second thread, and capped at MAX_THREADS.

Torch-free until `apply_threads` runs: the CLI parses its options without importing torch.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)

MAX_THREADS = 8  # beyond this the small models robustlab evaluates on a CPU do not get faster
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"

ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", min=1, metavar="N",
    help="torch threads for this run (default: OMP_NUM_THREADS when set, else picked for this machine's cores; "
         "docs/user-guide.md).")]


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # "--threads", "OMP_NUM_THREADS", or "2 cores available"


def _quota_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The cores a cgroup v2 CPU quota allows (rounded up), None when there is none or it is unreadable."""
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity (Linux), else os.cpu_count(); at most a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        cores = os.cpu_count() or 1
    quota = _quota_cores(cpu_max)
    return max(1, min(cores, quota) if quota else cores)


def default_threads(cores: int) -> int:
    """Half the cores (at least 1), at most MAX_THREADS: 1 on a 2-core runner, 2 on 4, 8 on 16 or more."""
    return max(1, min(MAX_THREADS, cores // 2))


def _positive(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def choose_threads(requested: int | None = None, environ: dict[str, str] | None = None,
                   cores: int | None = None) -> ThreadChoice:
    """The thread count and why: --threads wins, then a user's OMP_NUM_THREADS, then the machine's cores."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be at least 1, got {requested}")
        return ThreadChoice(requested, "--threads")
    env = os.environ if environ is None else environ
    from_env = _positive(env.get("OMP_NUM_THREADS"))
    if from_env is not None:
        return ThreadChoice(from_env, "OMP_NUM_THREADS")
    cores = available_cores() if cores is None else cores
    return ThreadChoice(default_threads(cores), f"{cores} core{'s' if cores != 1 else ''} available")


def apply_threads(requested: int | None = None) -> ThreadChoice:
    """Set torch's intra-op thread count (imports torch); returns what was chosen and why."""
    import torch

    choice = choose_threads(requested)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    log.info("torch uses %d thread(s) (%s)", choice.threads, choice.reason)
    return choice
