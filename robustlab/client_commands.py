"""`robustlab submit`, `status` and `report`: the CLI as a client of a running service, over HTTP.

Where the server is: --server, else ROBUSTLAB_URL, else the default of `robustlab up`
(http://127.0.0.1:8000). The key: --api-key, else ROBUSTLAB_API_KEY, else the one `robustlab up`
keeps in <data-dir>/api-keys (./robustlab-data unless ROBUSTLAB_DATA_DIR says otherwise).
Exit codes: 0 success, 1 a failed/cancelled job, an invalid spec or a refused request, 2 no server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from core.jobs import JobKind
from core.specs import SpecError, load_spec
from robustlab.up_command import DEFAULT_PORT, KEYS_FILE, default_data_dir, read_stored_key
from service.client import ClientError, RobustlabClient

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
REPORT_FILES = ("report.json", "report.html", "report.md", "results.csv")

ServerOption = Annotated[
    str | None, typer.Option("--server", help=f"API URL (env ROBUSTLAB_URL; default {DEFAULT_URL})")
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", help="API key (env ROBUSTLAB_API_KEY; default: the key of `robustlab up`)")
]


def _connect(server: str | None, api_key: str | None) -> RobustlabClient:
    url = server or os.environ.get("ROBUSTLAB_URL") or DEFAULT_URL
    key = api_key or os.environ.get("ROBUSTLAB_API_KEY") or read_stored_key(default_data_dir())
    if not key:
        typer.echo(f"Error: no API key: pass --api-key or set ROBUSTLAB_API_KEY (`robustlab up` prints one and "
                   f"keeps it in {default_data_dir() / KEYS_FILE})", err=True)
        raise typer.Exit(1)
    return RobustlabClient(url, key)


def _fail(exc: ClientError) -> typer.Exit:
    """One line, no traceback: exit 2 when no server answered, 1 when it refused."""
    typer.echo(f"Error: {exc.message}", err=True)
    return typer.Exit(2 if exc.status is None else 1)


def _describe(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    line = f"{job.get('id')}: {job.get('status')}"
    if progress:
        line += f", {100 * float(progress.get('fraction', 0)):.0f}% {progress.get('stage', '')}".rstrip()
        if progress.get("message"):
            line += f" ({progress['message']})"
        if progress.get("eta_seconds") is not None and job.get("status") == "running":
            line += f", about {float(progress['eta_seconds']):.0f}s left"
    return line


def _error_line(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    what = f"{error.get('type', 'Error')}: {error.get('message', '')}".rstrip(": ") if error else "no error recorded"
    return f"job {job.get('id')} {job.get('status')}: {what}"


def _wait_with_bar(client: RobustlabClient, job_id: str, timeout: float | None) -> dict[str, Any]:
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[message]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=1.0, message="")

        def show(job: dict[str, Any]) -> None:
            progress = job.get("progress") or {}
            stage = progress.get("stage") or job.get("status", "")
            bar.update(task, completed=float(progress.get("fraction") or 0.0), description=str(stage),
                       message=str(progress.get("message") or ""))

        return client.wait(job_id, on_progress=show, timeout=timeout)


def submit(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Experiment spec (YAML or JSON).")],
    kind: Annotated[JobKind, typer.Option("--kind", help="compare: train and evaluate; evaluate: a checkpoint.")]
    = JobKind.COMPARE,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="Uploaded checkpoint id (evaluate).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the job finishes.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="With --wait: give up after this many s.")]
    = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Submit a spec as a job to a running service (`robustlab up`); print its id, or wait for it."""
    from robustlab.cli import _echo_spec_error  # the messages of `robustlab validate`

    try:
        spec = load_spec(spec_file)  # the same checks and messages as `robustlab validate`, before any request
    except SpecError as exc:
        _echo_spec_error(spec_file, exc, err=True)
        raise typer.Exit(1) from None
    with _connect(server, api_key) as client:
        try:
            job = client.submit(spec.model_dump(mode="json"), kind=kind.value, checkpoint=checkpoint)
            if not wait:
                typer.echo(job["id"])
                return
            typer.echo(f"submitted {job['id']}", err=True)
            job = _wait_with_bar(client, job["id"], timeout)
        except ClientError as exc:
            raise _fail(exc) from None
    if job.get("status") != "succeeded":
        typer.echo(_error_line(job), err=True)
        raise typer.Exit(1)
    typer.echo(f"job {job['id']} succeeded: `robustlab report {job['id']} --out DIR` fetches its report")


def status(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id.")],
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Show a job's status and progress (its error when it failed)."""
    with _connect(server, api_key) as client:
        try:
            job = client.job(job_id)
        except ClientError as exc:
            raise _fail(exc) from None
    typer.echo(_describe(job))
    if job.get("error"):
        typer.echo(_error_line(job))


def report(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A finished job's id.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.json/.html/.md and results.csv.")],
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Download a finished job's report.json, report.html, report.md and results.csv into --out."""
    out.mkdir(parents=True, exist_ok=True)
    with _connect(server, api_key) as client:
        try:
            for name in REPORT_FILES:
                typer.echo(str(client.download(job_id, name, out / name)))
        except ClientError as exc:
            raise _fail(exc) from None
