"""`robustlab up --demo SPEC`: submit one job to the stack that just started, follow it, fetch its report.

It runs in a thread beside the supervisor, talks HTTP like any other client (service.client), and
only logs: the service keeps running after the demo has finished, until Ctrl-C.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from core.specs import ExperimentSpec
from service.client import ClientError, RobustlabClient

logger = logging.getLogger(__name__)

REPORT_FILES = ("report.json", "report.html", "report.md", "results.csv")


def run_demo(url: str, api_key: str, spec: ExperimentSpec, out_dir: Path, stopping: threading.Event) -> None:
    """Submit `spec` as a compare job, log its progress every 10 %, download the report files."""
    last_decile = -1

    def on_progress(job: dict[str, Any]) -> None:
        nonlocal last_decile
        progress = job.get("progress") or {}
        decile = int(float(progress.get("fraction", 0.0)) * 10)
        if decile != last_decile and not stopping.is_set():
            last_decile = decile
            eta = progress.get("eta_seconds")
            logger.info("demo job: %s %3.0f%% %s%s", job.get("status"), 100 * float(progress.get("fraction", 0.0)),
                        progress.get("message", ""), f" (about {eta:.0f}s left)" if eta else "")

    try:
        with RobustlabClient(url, api_key) as client:
            job = client.submit(spec.model_dump(mode="json"), kind="compare")
            logger.info("demo job %s submitted (%s: %d regularizers × %d seeds); follow it at %s/v1/jobs/%s",
                        job["id"], spec.name, len(spec.regularizers), len(spec.seeds), url, job["id"])
            done = client.wait(job["id"], on_progress=on_progress)
            if done["status"] != "succeeded":
                error = done.get("error") or {}
                logger.error("demo job %s ended %s: %s", job["id"], done["status"], error.get("message", ""))
                return
            for name in REPORT_FILES:
                client.download(job["id"], name, out_dir / name)
            logger.info("demo job %s succeeded: open %s (or `robustlab report %s --out DIR`)",
                        job["id"], out_dir / "report.html", job["id"])
    except ClientError as exc:
        if not stopping.is_set():
            logger.error("demo job: %s", exc)


def start_demo(url: str, api_key: str, spec: ExperimentSpec, out_dir: Path, stopping: threading.Event) -> None:
    threading.Thread(target=run_demo, args=(url, api_key, spec, out_dir, stopping), name="demo", daemon=True).start()
