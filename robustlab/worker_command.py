"""`robustlab worker`: run one RQ worker of the service (one per GPU, see docs/operations.md).

Torch-free: the worker parent never imports torch; each job runs in a forked work horse that does.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Annotated

import typer

from core.settings import get_settings


def _drop_rq_success_lines(record: logging.LogRecord) -> bool:
    """RQ logs "Successfully completed … Job OK" whenever the task returned, also for a job that failed
    (the outcome lives in our job record); worker.runner logs "job ID succeeded|failed: …" instead."""
    text = record.getMessage()
    return "Successfully completed" not in text and "Job OK" not in text and "result is kept for" not in text


def worker(
    queue: Annotated[str, typer.Option("--queue", help="RQ queue (worker pool) to take jobs from "
                                       "(default: ROBUSTLAB_QUEUE, else 'robustlab').")] = "",
    burst: Annotated[bool, typer.Option("--burst", help="Run the queued jobs, then exit.")] = False,
    name: Annotated[str, typer.Option("--name", help="Worker name (default: HOST.PID).")] = "",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also log every epoch and attack.")] = False,
    threads: Annotated[int, typer.Option("--threads", min=0, help="torch threads of each job process (default: "
                                         "OMP_NUM_THREADS if set, else the cores this process may use); give "
                                         "cores ÷ workers when several workers share a machine")] = 0,
) -> None:
    """Take jobs from Redis and run them, one process per job; Ctrl-C or SIGTERM stops it."""
    import redis

    if threads:  # through the environment: torch in each work horse reads it when it loads
        os.environ["OMP_NUM_THREADS"] = str(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                            else os.cpu_count() or 1)

    if queue:  # through the environment, so the work horses' get_settings() sees it too
        os.environ["ROBUSTLAB_QUEUE"] = queue
        get_settings.cache_clear()
    settings = get_settings()
    if not settings.redis_url:
        typer.echo("Error: no Redis to take jobs from: set REDIS_URL (or ROBUSTLAB_REDIS_URL), e.g. "
                   "redis://localhost:6379/0, or use `robustlab up`, which starts one", err=True)
        raise typer.Exit(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("rq.worker").addFilter(_drop_rq_success_lines)
    if not verbose:  # per-epoch and per-attack lines: the job's progress already carries them
        logging.getLogger("models").setLevel(logging.WARNING)
    from worker.process import run_worker

    try:
        run_worker(settings, burst=burst, name=name or None)
    except redis.ConnectionError as exc:
        safe_url = re.sub(r"//[^@/]*@", "//***@", settings.redis_url)  # never print a password
        typer.echo(f"Error: cannot reach Redis at {safe_url}: {str(exc).rstrip('.')}. Is the server running, "
                   "and is REDIS_URL right?", err=True)
        raise typer.Exit(1) from None
