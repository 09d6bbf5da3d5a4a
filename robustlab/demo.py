"""`robustlab up --demo SPEC`: submit one job to the stack that just started, follow it, fetch its report.

It runs in a thread beside the supervisor and talks HTTP like any other client (service.client); its
progress is a live bar on a terminal and log lines otherwise (robustlab.progress_view). The service
keeps running after the demo has finished, until Ctrl-C.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from core.specs import ExperimentSpec
from robustlab.progress_view import ProgressView
from service.client import ClientError, RobustlabClient

logger = logging.getLogger(__name__)

REPORT_FILES = ("report.json", "report.html", "report.md", "results.csv")
SHORTER_DEMO = "examples/digits-small.yaml"  # 3 regularizers × 1 seed
SHORT_RUNS = 3


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_demo(url: str, api_key: str, spec: ExperimentSpec, out_dir: Path, stopping: threading.Event,
             stream: TextIO | None = None) -> None:
    """Submit `spec` as a compare job, show its progress live, download the report files.

    On a terminal a progress bar (redrawn several times a second); otherwise a log line whenever the
    stage or the run changes (and at least every few seconds while it moves).
    """
    runs = len(spec.regularizers) * len(spec.seeds)
    shorter = f"; for a shorter demo: --demo {SHORTER_DEMO}" if runs > SHORT_RUNS else ""
    logger.info("demo: %s: %s × %s = %s, each then attacked; this takes %s, longer on a busy machine%s",
                spec.name, _plural(len(spec.regularizers), "regularizer"), _plural(len(spec.seeds), "seed"),
                _plural(runs, "training run"), "about a minute" if runs <= SHORT_RUNS else "minutes", shorter)
    view = ProgressView(stream or sys.stderr, label="demo job", emit=logger.info)
    try:
        with RobustlabClient(url, api_key) as client:
            job = client.submit(spec.model_dump(mode="json"), kind="compare")
            logger.info("demo job %s submitted; watch it in the dashboard: %s/#/jobs/%s (sign in with the key "
                        "above)", job["id"][:8], url, job["id"])

            def on_progress(job: dict[str, Any]) -> None:
                if not stopping.is_set():
                    view.update(job)

            try:
                done = client.wait(job["id"], on_progress=on_progress)
            finally:
                view.close()
            if done["status"] != "succeeded":
                error = done.get("error") or {}
                logger.error("demo job %s ended %s: %s", job["id"][:8], done["status"], error.get("message", ""))
                return
            for name in REPORT_FILES:
                client.download(job["id"], name, out_dir / name)
            logger.info("demo job %s succeeded: open %s (or %s/#/jobs/%s)", job["id"][:8],
                        out_dir / "report.html", url, job["id"])
    except ClientError as exc:
        if not stopping.is_set():
            logger.error("demo job: %s", exc)


def start_demo(url: str, api_key: str, spec: ExperimentSpec, out_dir: Path, stopping: threading.Event) -> None:
    threading.Thread(target=run_demo, args=(url, api_key, spec, out_dir, stopping), name="demo", daemon=True).start()
