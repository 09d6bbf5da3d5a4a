"""`robustlab submit`, `status`, `report` and `upload model|dataset`: the CLI as a client of a running
service, over HTTP.

Where the server is: --server, else ROBUSTLAB_URL, else the default of `robustlab up`
(http://127.0.0.1:8000). The key: --api-key, else ROBUSTLAB_API_KEY, else the one `robustlab up`
keeps in <data-dir>/api-keys (./robustlab-data unless ROBUSTLAB_DATA_DIR says otherwise).
Exit codes: 0 success, 1 a failed/cancelled job, an invalid spec or a refused request, 2 no server.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from core.jobs import JobKind
from core.specs import SpecError, load_spec
from robustlab.messages import echo_spec_error
from robustlab.model_files import (
    ModelFileError,
    check_model_file,
    checkpoint_metadata,
    data_shape,
    needs_shape,
    parse_model_json,
    upload_section,
)
from robustlab.progress_view import ProgressView, QueueAhead, describe
from robustlab.units_table import units_table
from robustlab.up_command import DEFAULT_PORT, KEYS_FILE, default_data_dir, read_stored_key
from service.client import ClientError, RobustlabClient

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
FULL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
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
    return describe(job, full_id=True)


def _error_line(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    what = f"{error.get('type', 'Error')}: {error.get('message', '')}".rstrip(": ") if error else "no error recorded"
    return f"job {job.get('id')} {job.get('status')}: {what}"


def _wait_with_progress(client: RobustlabClient, job_id: str, timeout: float | None) -> dict[str, Any]:
    """A live bar on a terminal; otherwise a line per stage (and at least every few seconds while it
    moves), so a CI log shows progress too; a queued job says how many of one's jobs are ahead."""
    view, ahead = ProgressView(sys.stderr), QueueAhead(client)
    try:
        return client.wait(job_id, on_progress=lambda job: view.update(ahead.annotate(job)), timeout=timeout)
    finally:
        view.close()


def submit(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Experiment spec (YAML or JSON).")],
    kind: Annotated[JobKind, typer.Option("--kind", help="compare: train and evaluate; evaluate: a checkpoint.")]
    = JobKind.COMPARE,
    checkpoint: Annotated[str | None, typer.Option(
        "--checkpoint", "--model-id",
        help="evaluate: the id `robustlab upload model` printed, or its first 8 characters (the spec's model "
             "section describes it).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the job finishes.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="With --wait: give up after this many s.")]
    = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Submit a spec as a job to a running service (`robustlab up`); print its id, or wait for it."""
    try:
        spec = load_spec(spec_file)  # the same checks and messages as `robustlab validate`, before any request
    except SpecError as exc:
        echo_spec_error(spec_file, exc, err=True)
        raise typer.Exit(1) from None
    with _connect(server, api_key) as client:
        try:
            if checkpoint is not None and not FULL_ID.match(checkpoint):
                checkpoint = str(client.model(checkpoint)["id"])  # a short id: the server expands it (409 if ambiguous)
            job = client.submit(spec.model_dump(mode="json"), kind=kind.value, checkpoint=checkpoint)
            if not wait:
                typer.echo(job["id"])
                return
            typer.echo(f"submitted {job['id']}; watch it in the dashboard: {client.base_url}/#/jobs/{job['id']}",
                       err=True)
            job = _wait_with_progress(client, job["id"], timeout)
        except ClientError as exc:
            raise _fail(exc) from None
    if job.get("status") != "succeeded":
        typer.echo(_error_line(job), err=True)
        raise typer.Exit(1)
    typer.echo(f"job {job['id']} succeeded: `robustlab report {job['id']} --out DIR` fetches its report")


def status(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id, or its first 8 characters.")],
    units: Annotated[bool, typer.Option("--units", help="Also list the job's work units: name, kind, status, "
                                        "worker, start, duration, attempts.")] = False,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Show a job's status and progress (its error when it failed); --units: its units as a table.

    Exit code: 0 queued, running or succeeded; 1 failed or cancelled (or refused); 2 no server.
    """
    with _connect(server, api_key) as client:
        try:
            job = QueueAhead(client).annotate(client.job(job_id))  # queued: how many of one's jobs are ahead
        except ClientError as exc:
            raise _fail(exc) from None
    typer.echo(_describe(job))
    if job.get("error"):
        typer.echo(_error_line(job))
    if units:
        typer.echo(units_table(job.get("units") or []))
    if job.get("status") in ("failed", "cancelled"):
        raise typer.Exit(1)  # scripts and CI can test the outcome: `robustlab status ID && ...`


def report(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A finished job's id (or its first 8 characters).")],
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


# --- upload ------------------------------------------------------------------------------------------

upload_app = typer.Typer(name="upload", no_args_is_help=True,
                         help="Upload a model file or an .npz dataset to a running service; print its id.")


def _usage(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(2)


def _model_section(file: Path, spec_file: Path | None, model_json: str | None) -> dict[str, Any] | None:
    """What describes the file: --model-json, else the spec's model section; none for a robustlab checkpoint."""
    if spec_file is not None and model_json is not None:
        raise _usage("give --spec or --model-json, not both: both would describe the model")
    try:
        check_model_file(file)
        if model_json is not None:
            return parse_model_json(model_json)
        if spec_file is not None:
            try:
                spec = load_spec(spec_file)
            except SpecError as exc:
                echo_spec_error(spec_file, exc, err=True)
                raise typer.Exit(1) from None
            return upload_section(file, spec.model)
        if checkpoint_metadata(file) is None:
            example = ('{"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10}' if
                       file.suffix.lower() == ".onnx" else '{"architecture": "mlp", "params": {"hidden": [16]}}')
            raise _usage(f"{file.name} does not describe itself: pass --spec SPEC.yaml (its model section says "
                         f"what the file is) or --model-json '{example}' (see docs/user-models.md)")
    except ModelFileError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    return None


def _shape_option(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        shape = json.loads(text if text.strip().startswith("[") else f"[{text}]")
    except ValueError:
        shape = None
    if not (isinstance(shape, list) and 1 <= len(shape) <= 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise _usage(f"--input-shape {text!r}: give 1-3 positive integers, e.g. '[1, 8, 8]'")
    return shape


def _size(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


@upload_app.command("model")
def upload_model(
    file: Annotated[Path, typer.Argument(metavar="FILE", help=".safetensors, .pt/.pth (state_dict) or .onnx.")],
    spec_file: Annotated[Path | None, typer.Option("--spec", metavar="SPEC.yaml",
                                                   help="A spec whose model section describes FILE.")] = None,
    model_json: Annotated[str | None, typer.Option(
        "--model-json", metavar="JSON",
        help='The model section as JSON, e.g. \'{"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10}\'.'
    )] = None,
    input_shape: Annotated[str | None, typer.Option(
        "--input-shape", metavar="JSON", help="Registry .pt/.pth state_dict: one sample's shape, e.g. [1, 8, 8] "
        "(default: from the --spec's dataset).")] = None,
    num_classes: Annotated[int | None, typer.Option(
        "--num-classes", min=2, help="Registry .pt/.pth state_dict: classes (default: from the --spec's dataset).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's whole answer as JSON.")] = False,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Upload a model file (checked on the server, never run); print its id for an evaluate job."""
    model = _model_section(file, spec_file, model_json)
    shape = _shape_option(input_shape)
    with _connect(server, api_key) as client:
        try:
            if needs_shape(file, model) and (shape is None or num_classes is None):
                known = data_shape(client, load_spec(spec_file)) if spec_file is not None else None
                shape = shape or (known[0] if known else None)
                num_classes = num_classes or (known[1] if known else None)
                if shape is None or num_classes is None:
                    raise _usage(f"{file.name} is a state_dict, which does not say what it was trained on: pass "
                                 "--input-shape '[1, 8, 8]' and --num-classes 10 (one sample's shape, the classes)")
            uploaded = client.upload_model(file, model, input_shape=shape, num_outputs=num_classes)
        except ClientError as exc:
            raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(uploaded, indent=2))
        return
    what = uploaded.get("architecture") or uploaded.get("format") or "model"
    typer.echo(f"{uploaded.get('filename') or file.name}: {what}, {_size(uploaded.get('bytes'))}, sha256 "
               f"{str(uploaded.get('sha256', ''))[:12]}; evaluate it with `robustlab submit SPEC.yaml --kind evaluate "
               f"--checkpoint {uploaded['id']}`", err=True)
    typer.echo(uploaded["id"])


@upload_app.command("dataset")
def upload_dataset(
    file: Annotated[Path, typer.Argument(metavar="FILE.npz",
                                         help="x_test, y_test (optionally x_train, y_train); inputs in [0, 1].")],
    num_classes: Annotated[int | None, typer.Option("--num-classes", min=2,
                                                    help="Classes (default: the largest label + 1).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's whole answer as JSON.")] = False,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Upload an .npz dataset (read without pickle, checked); print its id for `dataset: {name: upload, id: ...}`."""
    if file.suffix.lower() != ".npz":
        raise _usage(f"{file.name} is not an .npz file: save the arrays with numpy.savez(path, x_test=..., "
                     "y_test=..., x_train=..., y_train=...)")
    if not file.is_file():
        typer.echo(f"Error: dataset {file} does not exist or is not a file: check the path", err=True)
        raise typer.Exit(1)
    with _connect(server, api_key) as client:
        try:
            uploaded = client.upload_dataset(file, num_classes)
        except ClientError as exc:
            raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(uploaded, indent=2))
        return
    typer.echo(f"{uploaded.get('filename') or file.name}: {uploaded.get('train_samples')} train / "
               f"{uploaded.get('test_samples')} test samples of shape {uploaded.get('sample_shape')}, "
               f"{uploaded.get('num_classes')} classes; name it in a spec as "
               f"`dataset: {{name: upload, id: {uploaded['id']}}}`", err=True)
    typer.echo(uploaded["id"])
