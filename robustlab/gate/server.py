"""`robustlab gate --server` and `robustlab evaluate --server`: upload the model file (and a local
npz dataset), run an evaluate job, follow it, fetch its report.

Torch-free: what describes the model file comes from `robustlab.model_files` (a robustlab
checkpoint's own header, else the spec's `model` section), so a CI machine needs neither torch nor
a GPU to gate against a server that has them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from core.reports import Report
from core.specs import ExperimentSpec, NpzDataset, parse_spec
from robustlab.gate import GateError
from robustlab.model_files import check_model_file, data_shape, needs_shape, upload_section
from robustlab.up_command import default_data_dir, read_stored_key
from service.client import ClientError, RobustlabClient

REPORT_FILES = ("report.json", "report.html", "report.md", "results.csv")


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


def upload_local_dataset(client: RobustlabClient, spec: ExperimentSpec) -> ExperimentSpec:
    """A spec naming a local .npz (`dataset: {name: npz, path}`) cannot go to a server, which never opens
    paths a client names: upload the file and name it by id instead (`{name: upload, id}`)."""
    if not isinstance(spec.dataset, NpzDataset):
        return spec
    path = spec.dataset.path
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"uploading the dataset {path} ...", highlight=False)
    uploaded = client.upload_dataset(path)
    dataset = {"name": "upload", "id": uploaded["id"],
               **spec.dataset.model_dump(mode="json", include={"train_size", "test_size", "seed"})}
    console.print(f"dataset {path.name} is upload {uploaded['id']}", highlight=False)
    return parse_spec({**spec.model_dump(mode="json"), "dataset": dataset})


def evaluate_on_server(server: str | None, api_key: str | None, checkpoint: Path, spec: ExperimentSpec,
                       out: Path | None, timeout: float | None) -> tuple[Report, str, str]:
    """Upload the model file (and a local npz dataset), evaluate, wait; the report, the job id and where
    the full report is. The spec's model section describes the file (onnx/timm/torchvision, or the
    registry architecture of a state_dict); a robustlab .safetensors checkpoint describes itself."""
    check_model_file(checkpoint)
    model = upload_section(checkpoint, spec.model)
    with connect(server, api_key, "--server mode") as client:
        try:
            spec = upload_local_dataset(client, spec)
            shape = data_shape(client, spec) if needs_shape(checkpoint, model) else None
            uploaded = client.upload_model(checkpoint, model, input_shape=shape[0] if shape else None,
                                           num_outputs=shape[1] if shape else None)
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
