"""`robustlab gate --server`: upload the checkpoint, run an evaluate job, follow it, fetch its report.

Torch-free: the checkpoint's architecture is read from its safetensors header with the standard
library, so a CI machine needs neither torch nor a GPU to gate against a server that has them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from core.reports import Report
from core.specs import ExperimentSpec
from robustlab.up_command import default_data_dir, read_stored_key
from service.client import ClientError, RobustlabClient

REPORT_FILES = ("report.json", "report.html", "report.md", "results.csv")
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class GateError(Exception):
    """The gate cannot judge (exit 2); the message says what is wrong and how to fix it."""


def checkpoint_metadata(path: Path) -> dict[str, Any] | None:
    """The robustlab metadata of a .safetensors file (None for other files or none stored).

    The format: 8 bytes little-endian header length, then a JSON header whose `__metadata__`
    holds string values; robustlab keeps its own JSON under the key "robustlab".
    """
    if path.suffix.lower() != ".safetensors":
        return None
    broken = f"{path} is not a readable safetensors file (truncated or not a checkpoint): save or copy it again"
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= min(MAX_HEADER, path.stat().st_size - 8):
                raise GateError(broken)
            header = json.loads(f.read(size))
            meta = header.get("__metadata__", {}).get("robustlab") if isinstance(header, dict) else None
            return json.loads(meta) if isinstance(meta, str) else None
    except OSError as exc:
        raise GateError(f"cannot read the checkpoint {path}: {exc.strerror or exc}") from None
    except (ValueError, AttributeError):  # bad JSON or UTF-8, a header of the wrong shape
        raise GateError(broken) from None


def connect(server: str | None, api_key: str | None, need: str) -> RobustlabClient:
    url = server or os.environ.get("ROBUSTLAB_URL")
    if not url:
        raise GateError(f"{need}: say where the server is with --server URL or ROBUSTLAB_URL")
    key = api_key or os.environ.get("ROBUSTLAB_API_KEY") or read_stored_key(default_data_dir())
    if not key:
        raise GateError("no API key for the server: pass --api-key or set ROBUSTLAB_API_KEY (a CI secret)")
    return RobustlabClient(url, key)


def fetch_baseline(server: str | None, api_key: str | None, job_id: str) -> Report:
    with connect(server, api_key, f"the baseline {job_id} is a job id") as client:
        try:
            return client.fetch_report(job_id)
        except ClientError as exc:
            raise GateError(f"cannot fetch the baseline report of job {job_id}: {exc.message}") from None


def _follow(client: RobustlabClient, job_id: str, timeout: float | None) -> dict[str, Any]:
    """Wait for the job: a live bar on a terminal, a line per change in a CI log (which has no terminal)."""
    console = Console(stderr=True, soft_wrap=True)  # CI logs: one line per message, never wrapped
    started = time.monotonic()
    if not console.is_terminal:
        last: tuple[Any, ...] = ()

        def line(job: dict[str, Any]) -> None:
            nonlocal last
            progress = job.get("progress") or {}
            fraction = float(progress.get("fraction") or 0.0)
            state = (job.get("status"), progress.get("stage"), progress.get("message"), int(fraction * 10))
            if state != last:
                last = state
                console.print(f"[{time.monotonic() - started:5.0f}s] {job.get('status')} {100 * fraction:3.0f}% "
                              f"{progress.get('stage') or ''} {progress.get('message') or ''}".rstrip(),
                              highlight=False, markup=False)

        return client.wait(job_id, on_progress=line, timeout=timeout)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[message]}"))
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("queued", total=1.0, message="")

        def show(job: dict[str, Any]) -> None:
            progress = job.get("progress") or {}
            bar.update(task, completed=float(progress.get("fraction") or 0.0),
                       description=str(progress.get("stage") or job.get("status", "")),
                       message=str(progress.get("message") or ""))

        return client.wait(job_id, on_progress=show, timeout=timeout)


def evaluate_on_server(server: str | None, api_key: str | None, checkpoint: Path, spec: ExperimentSpec,
                       out: Path | None, timeout: float | None) -> tuple[Report, str, str]:
    """Upload, evaluate, wait; the report, the job id and where the full report is."""
    meta = checkpoint_metadata(checkpoint)
    if meta is None and checkpoint.suffix.lower() != ".safetensors":
        raise GateError(f"{checkpoint.name} is not a .safetensors checkpoint saved by robustlab, so it does not say "
                        "its input shape and classes: save it as .safetensors, or gate with --local")
    architecture = str((meta or {}).get("architecture") or spec.model.architecture)
    params = (meta or {}).get("params") or spec.model.params.model_dump(mode="json")
    with connect(server, api_key, "--server mode") as client:
        try:
            uploaded = client.upload_checkpoint(checkpoint, architecture, params)
            job = client.submit(spec, kind="evaluate", checkpoint=uploaded["id"])
            console = Console(stderr=True, soft_wrap=True)  # CI logs: one line per message, never wrapped
            console.print(f"job {job['id']} evaluates {checkpoint.name} on {client.base_url}", highlight=False)
            done = _follow(client, job["id"], timeout)
            if done.get("status") != "succeeded":
                error = done.get("error") or {}
                raise GateError(f"job {job['id']} {done.get('status')}: "
                                f"{error.get('message') or 'no error recorded'} (see `robustlab status {job['id']}`)")
            report = client.fetch_report(job["id"])
            if out is not None:
                for name in REPORT_FILES:
                    client.download(job["id"], name, out / name)
        except ClientError as exc:
            raise GateError(exc.message) from None
    return report, job["id"], f"{client.base_url}/#/jobs/{job['id']}"  # the dashboard's job page
