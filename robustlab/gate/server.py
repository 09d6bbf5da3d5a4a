"""`robustlab gate --server` and `robustlab evaluate --server`: upload the model file (and a local
npz dataset), run an evaluate job, follow it, fetch its report.

Torch-free: a robustlab checkpoint's architecture is read from its safetensors header with the
standard library, and any other file (.pt/.pth state_dict, .onnx) is described by the spec's
`model` section, so a CI machine needs neither torch nor a GPU to gate against a server that has them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from safetensors import SafetensorError, safe_open

from core.reports import Report
from core.specs import (
    ExperimentSpec,
    NpzDataset,
    SpecError,
    SyntheticDataset,
    UploadedDataset,
    is_user_model,
    parse_spec,
)
from robustlab.up_command import default_data_dir, read_stored_key
from service.client import ClientError, RobustlabClient

REPORT_FILES = ("report.json", "report.html", "report.md", "results.csv")
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".onnx")
REFUSED_SUFFIXES = {
    ".pt2": "torch.export archives are refused (torch's loader unpickles their payloads): export to ONNX",
    ".ts": "TorchScript is refused (loading it runs code): export to ONNX, or save a state_dict",
    ".pkl": "pickled files are refused (loading them runs code): save a state_dict (.safetensors/.pt) or ONNX",
    ".pickle": "pickled files are refused (loading them runs code): save a state_dict (.safetensors/.pt) or ONNX",
}


class GateError(Exception):
    """The gate cannot judge (exit 2); the message says what is wrong and how to fix it."""


def checkpoint_metadata(path: Path) -> dict[str, Any] | None:
    """The robustlab metadata of a .safetensors file (None for other files or none stored).

    Read with the safetensors library (header only, no tensors; framework numpy, so no torch),
    which also enforces the format's own header limits; robustlab keeps its JSON under "robustlab".
    """
    if path.suffix.lower() != ".safetensors":
        return None
    broken = f"{path} is not a readable safetensors file (truncated or not a checkpoint): save or copy it again"
    if not path.is_file():
        raise GateError(f"cannot read the checkpoint {path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = (handle.metadata() or {}).get("robustlab")
        return json.loads(meta) if isinstance(meta, str) else None
    except (SafetensorError, OSError, ValueError, RuntimeError):  # a damaged header, bad JSON
        raise GateError(broken) from None


def check_model_file(path: Path) -> None:
    """A model file robustlab can read, by its suffix: the refusal says why and what to use instead."""
    suffix = path.suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise GateError(f"{path.name}: {REFUSED_SUFFIXES[suffix]}")
    if suffix not in MODEL_SUFFIXES:
        raise GateError(f"{path.name}: unknown model file type {suffix or '(no suffix)'!r}: use .safetensors, "
                        ".pt/.pth (a state_dict) or .onnx")
    if not path.is_file():
        raise GateError(f"model file {path} does not exist or is not a file: check the path")


def parse_model_json(text: str) -> dict[str, Any]:
    """A model section given as JSON text (--model-json), validated like a spec's `model` section."""
    try:
        model = json.loads(text)
    except ValueError as exc:
        raise GateError(f"--model-json is not JSON ({exc}): e.g. "
                        "'{\"format\": \"onnx\", \"input_shape\": [1, 8, 8], \"num_classes\": 10}'") from None
    if not isinstance(model, dict):
        raise GateError("--model-json must be a JSON object, the spec's model section")
    stub = {"name": "model-json", "dataset": {"name": "digits"}, "model": model,
            "regularizers": [{"name": "erm", "kind": "none"}]}
    try:
        return parse_spec(stub).model.model_dump(mode="json")
    except SpecError as exc:
        raise GateError("--model-json: " + "; ".join(str(p) for p in exc.problems)) from None


def upload_section(path: Path, model: Any) -> dict[str, Any] | None:
    """The model section sent with a file: a user format's as declared; for a registry checkpoint that
    describes itself, what its metadata says; else the spec's (architecture and params)."""
    if model is None:
        return None
    if isinstance(model, dict):
        return model
    if is_user_model(model):
        return dict(model.model_dump(mode="json"))
    meta = checkpoint_metadata(path)
    if meta and meta.get("architecture"):
        return {"architecture": str(meta["architecture"]), "params": meta.get("params") or {}}
    return dict(model.model_dump(mode="json"))


# One sample's shape and the classes of the built-in datasets: what a registry .pt state_dict needs to be
# rebuilt on the server (a robustlab .safetensors checkpoint carries them in its metadata).
BUILTIN_SHAPES: dict[str, tuple[list[int], int]] = {
    "digits": ([1, 8, 8], 10), "mnist": ([1, 28, 28], 10), "fashion_mnist": ([1, 28, 28], 10),
    "cifar10": ([3, 32, 32], 10),
}


def needs_shape(path: Path, model: dict[str, Any] | None) -> bool:
    """A registry state_dict (.pt/.pth, or .safetensors without robustlab metadata) does not say the input
    shape and classes it was trained for."""
    if model is not None and "format" in model:
        return False
    suffix = path.suffix.lower()
    return suffix in (".pt", ".pth") or (suffix == ".safetensors" and checkpoint_metadata(path) is None)


def data_shape(client: RobustlabClient, spec: ExperimentSpec) -> tuple[list[int], int] | None:
    """(one sample's shape, classes) of the spec's dataset, without torch: built-in, synthetic, or an upload."""
    dataset = spec.dataset
    if dataset.name in BUILTIN_SHAPES:
        return BUILTIN_SHAPES[dataset.name]
    if isinstance(dataset, SyntheticDataset):
        return [dataset.n_features], dataset.n_classes
    if isinstance(dataset, UploadedDataset):
        info = client.dataset(dataset.id)
        if info.get("sample_shape") and info.get("num_classes"):
            return [int(v) for v in info["sample_shape"]], int(info["num_classes"])
    return None


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
