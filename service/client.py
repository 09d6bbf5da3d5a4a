"""A small typed HTTP client of the robustlab API: what the CLI (`submit`, `status`, `report`, `gate`) uses.

    with RobustlabClient("http://127.0.0.1:8000", api_key) as client:
        job = client.submit(spec)                      # a dict, or a validated ExperimentSpec
        done = client.wait(job["id"], on_progress=print)
        report = client.fetch_report(job["id"])        # a core.reports.Report

Torch-free and synchronous (httpx). Every failure is a `ClientError` carrying the server's own error
message and the HTTP status (None when the server could not be reached), so callers print one
line instead of a traceback. A server that says "not now" (429 quota, 502/503/504) is retried with
exponential backoff and jitter, waiting at least what its Retry-After asks, within `retry_for`
seconds; submissions carry an Idempotency-Key, so a retried submit never creates a second job.
See docs/client.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from pydantic import BaseModel, ValidationError

from core.reports import Report
from service.retry import RETRIED, Backoff, retry_after

logger = logging.getLogger(__name__)

FINISHED = frozenset({"succeeded", "failed", "cancelled"})

# Names with an endpoint of their own; anything else is fetched from /artifacts/{name}.
REPORT_FILES = {"report.json": "report", "report.html": "report.html", "report.md": "report.md",
                "results.csv": "results.csv"}


class ClientError(Exception):
    """A request that did not succeed: `status` is the HTTP status, None when nothing answered."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class JobResponse(NamedTuple):
    """GET /v1/jobs/{id}: the job, or None when it is unchanged since the ETag sent (304)."""

    job: dict[str, Any] | None
    etag: str | None


def _error_message(response: httpx.Response) -> str:
    """The server's explanation: {"error": {"message"}}, FastAPI's {"detail": ...}, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text.splitlines()[0] if text else response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            problems = [f"{p.get('path') or '(body)'}: {p.get('message')}" for p in error.get("problems") or []
                        if isinstance(p, dict) and p.get("message") != error["message"]]  # no echo of the message
            return "; ".join([str(error["message"]), *problems])
        detail = body.get("detail", error)
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):  # validation problems: "spec.training.epochs: must be ≥ 1; ..."
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
                    message = item.get("msg", item.get("message", ""))
                    parts.append(f"{where}: {message}" if where else str(message))
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        if isinstance(detail, dict) and detail.get("message"):
            return str(detail["message"])
    return response.reason_phrase or f"HTTP {response.status_code}"


class RobustlabClient:
    """`RobustlabClient("http://127.0.0.1:8000", key)`; use it as a context manager or call close().

    `retry_for`: how many seconds in all a request keeps being retried while the server answers
    429/502/503/504 (0: never retry). `sleep` is how the client waits (time.sleep; tests pass their own).
    """

    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, *, retry_for: float = 120.0,
                 backoff: Backoff | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for = retry_for
        self._backoff = backoff or Backoff(initial=1.0, cap=30.0)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )

    def __enter__(self) -> RobustlabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        return self._retrying(lambda: self._http.request(method, path, **kwargs), ok)

    def _retrying(self, attempt: Callable[[], httpx.Response], ok: tuple[int, ...]) -> httpx.Response:
        """Send (by calling `attempt`) until an answer in `ok`, a refusal, or the retry time is spent.

        Only "not now" answers are retried; an unreachable server fails at once, since waiting
        rarely brings back a server that is not running, and CI should say so quickly.
        """
        deadline = time.monotonic() + self.retry_for
        backoff = Backoff(self._backoff.initial, self._backoff.factor, self._backoff.cap, self._backoff.jitter)
        while True:
            try:
                response = attempt()
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            if response.status_code in ok:
                return response
            if response.status_code not in RETRIED:
                raise self._failed(response)
            asked = retry_after(response)
            delay = max(backoff.next(), asked or 0.0)  # never sooner than the server asked
            if time.monotonic() + delay > deadline:
                error = self._failed(response)
                if self.retry_for <= 0:
                    raise error
                raise ClientError(f"{error.message} (not retried again: waiting {delay:.0f}s more would pass the "
                                  f"client's retry_for of {self.retry_for:g}s)", error.status, error.body)
            # A warning, so that a CLI user sees why nothing happens (Python prints it without logging set up).
            logger.warning("%s: retrying in %.0fs", self._failed(response).message, delay)
            self._sleep(delay)

    def _unreachable(self, exc: Exception) -> ClientError:
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(f"the robustlab server at {self.base_url} did not answer in time ({type(exc).__name__})")
        return ClientError(f"cannot reach the robustlab server at {self.base_url} ({exc or type(exc).__name__}):"
                           " is `robustlab up` running, and is the URL right (--server or ROBUSTLAB_URL)?")

    def _failed(self, response: httpx.Response) -> ClientError:
        message = _error_message(response)
        if response.status_code == 401:
            message = f"{message}; the key comes from --api-key or ROBUSTLAB_API_KEY"
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        return ClientError(f"HTTP {response.status_code}: {message}", response.status_code, body)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"the server sent a response that is not JSON (HTTP {response.status_code})",
                              response.status_code) from None

    # --- jobs --------------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any] | BaseModel, kind: str = "compare", checkpoint: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/jobs → {id, status, links}; the same idempotency key returns the same job.

        Without a key one is made up, so that the retries of this call (after a 429 or 503) are
        one submission: the server answers a replay with the job it created the first time.
        """
        if isinstance(spec, BaseModel):
            spec = spec.model_dump(mode="json")
        body: dict[str, Any] = {"kind": kind, "spec": spec}
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        headers = {"Idempotency-Key": idempotency_key or f"client-{uuid.uuid4()}"}
        result: dict[str, Any] = self._json(self._request("POST", "/v1/jobs", ok=(200, 201, 202), json=body,
                                                          headers=headers))
        return result

    def get(self, job_id: str, etag: str | None = None) -> JobResponse:
        """GET /v1/jobs/{id}; with the ETag of an earlier answer, `job` is None when nothing changed."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request("GET", f"/v1/jobs/{job_id}", ok=(200, 304), headers=headers)
        if response.status_code == 304:
            return JobResponse(None, response.headers.get("ETag", etag))
        return JobResponse(self._json(response), response.headers.get("ETag"))

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as it is now."""
        job = self.get(job_id).job
        assert job is not None  # no ETag sent, so never a 304
        return job

    def wait(self, job_id: str, *, on_progress: Callable[[dict[str, Any]], None] | None = None,
             timeout: float | None = None, interval: float = 0.25, max_interval: float = 3.0) -> dict[str, Any]:
        """Poll (with ETags) until the job has finished; return it. `on_progress` sees every change.

        The interval grows exponentially (with jitter, up to `max_interval`) while nothing changes
        and drops back when something does, so a long job costs few requests (most of them cheap
        304s) and a progressing one is shown promptly.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job: dict[str, Any] | None = None
        etag: str | None = None
        backoff = Backoff(initial=interval, factor=1.5, cap=max_interval)
        while True:
            fresh, etag = self.get(job_id, etag)
            if fresh is not None:
                job = fresh
                backoff.reset()
                if on_progress is not None:
                    on_progress(job)
                if job.get("status") in FINISHED:
                    return job
            delay = backoff.next()
            if deadline is not None and time.monotonic() + delay > deadline:
                status = job.get("status") if job else "unknown"
                raise ClientError(f"job {job_id} did not finish within {timeout:g}s (status: {status})")
            self._sleep(delay)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """POST /v1/jobs/{id}/cancel: a queued job is cancelled now, a running one at its next progress step."""
        result: dict[str, Any] = self._json(self._request("POST", f"/v1/jobs/{job_id}/cancel", ok=(200, 202)))
        return result

    def list_jobs(self, status: str | None = None, cursor: str | None = None, limit: int | None = None) -> Any:
        """GET /v1/jobs: one page of this tenant's jobs."""
        params = {k: v for k, v in (("status", status), ("cursor", cursor), ("limit", limit)) if v is not None}
        return self._json(self._request("GET", "/v1/jobs", params=params))

    # --- results -----------------------------------------------------------------------------------

    def report(self, job_id: str) -> dict[str, Any]:
        """The finished job's report.json."""
        result: dict[str, Any] = self._json(self._request("GET", f"/v1/jobs/{job_id}/report"))
        return result

    def fetch_report(self, job_id: str) -> Report:
        """The finished job's report.json, validated: a `core.reports.Report`."""
        try:
            return Report.model_validate(self.report(job_id))
        except ValidationError as exc:
            raise ClientError(f"job {job_id}'s report.json does not match this client's report schema "
                              f"({exc.error_count()} problems): upgrade robustlab") from None

    def artifacts(self, job_id: str) -> list[Any]:
        """GET /v1/jobs/{id}/artifacts: the names (or entries) a job stored."""
        body = self._json(self._request("GET", f"/v1/jobs/{job_id}/artifacts"))
        if isinstance(body, dict):
            body = body.get("artifacts", body.get("items", []))
        return list(body)

    def download(self, job_id: str, name: str, path: str | Path) -> Path:
        """Stream one file of a job to `path` (a file, or a directory to put `name` in); atomic."""
        target = Path(path)
        if target.is_dir():
            target = target / Path(name).name
        endpoint = REPORT_FILES.get(name, f"artifacts/{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._stream("GET", f"/v1/jobs/{job_id}/{endpoint}") as response:
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                with partial.open("xb") as out:  # the umask's mode, like any file the user creates
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                os.replace(partial, target)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return target

    @contextlib.contextmanager
    def _stream(self, method: str, path: str) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(method, path, headers={"Accept": "*/*"}) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._failed(response)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # --- uploads: models and datasets ---------------------------------------------------------------

    def _upload(self, endpoint: str, path: str | Path, data: dict[str, str], what: str) -> dict[str, Any]:
        """POST a file as multipart (streamed from disk, reopened for every retry) with form fields."""
        path = Path(path)
        if not path.is_file():
            raise ClientError(f"cannot read the {what} {path}: no such file")

        def attempt() -> httpx.Response:  # the file is opened anew for each attempt: a retry resends all of it
            try:
                handle = path.open("rb")
            except OSError as exc:
                raise ClientError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
            with handle:
                files = {"file": (path.name, handle, "application/octet-stream")}
                return self._http.post(endpoint, data=data, files=files)

        result: dict[str, Any] = self._json(self._retrying(attempt, (200, 201)))
        return result

    def upload_model(self, path: str | Path, model: dict[str, Any] | BaseModel | None = None, *,
                     input_shape: list[int] | None = None, num_outputs: int | None = None) -> dict[str, Any]:
        """POST /v1/models (multipart) → {id, sha256, bytes, filename, format, architecture, model}.

        `path`: .safetensors, .pt/.pth (a state_dict) or .onnx. `model`: the spec's model section that
        describes the file, e.g. {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10}; needed
        for onnx/timm/torchvision and for a registry state_dict, optional for a .safetensors file saved
        by robustlab (it describes itself). The server checks the file (safely) before accepting it;
        the returned id goes into an evaluate job (`submit(spec, kind="evaluate", checkpoint=id)`).
        """
        if isinstance(model, BaseModel):
            model = model.model_dump(mode="json", exclude_none=True)
        data = {} if model is None else {"model": json.dumps(model)}
        if input_shape is not None:  # a registry .pt state_dict does not say its shape or class count
            data["input_shape"] = json.dumps(input_shape)
        if num_outputs is not None:
            data["num_outputs"] = str(num_outputs)
        return self._upload("/v1/models", path, data, "model file")

    def model(self, model_id: str) -> dict[str, Any]:
        """GET /v1/models/{id}: what the upload returned."""
        result: dict[str, Any] = self._json(self._request("GET", f"/v1/models/{model_id}"))
        return result

    def upload_dataset(self, path: str | Path, num_classes: int | None = None) -> dict[str, Any]:
        """POST /v1/datasets (multipart) → {id, sha256, bytes, filename, train_samples, test_samples,
        sample_shape, num_classes}.

        `path`: an .npz with x_test/y_test (optionally x_train/y_train), inputs in [0, 1], read by
        the server with allow_pickle=False. A spec names it as `dataset: {name: upload, id: <id>}`.
        """
        data = {} if num_classes is None else {"num_classes": str(num_classes)}
        return self._upload("/v1/datasets", path, data, "dataset")

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """GET /v1/datasets/{id}."""
        result: dict[str, Any] = self._json(self._request("GET", f"/v1/datasets/{dataset_id}"))
        return result

    def list_datasets(self) -> Any:
        """GET /v1/datasets: this tenant's uploaded datasets."""
        return self._json(self._request("GET", "/v1/datasets"))

    def upload_checkpoint(self, path: str | Path, architecture: str, params: dict[str, Any] | None = None, *,
                          input_shape: list[int] | None = None, num_outputs: int | None = None) -> dict[str, Any]:
        """POST /v1/checkpoints (the older form of `upload_model` for registry architectures) → {id, sha256, ...}.

        A .safetensors file saved by robustlab describes itself; a .pt state_dict also needs
        `input_shape` and `num_outputs`. The server checks the file (safely) before accepting it.
        """
        data = {"architecture": architecture}
        if params is not None:
            data["params"] = json.dumps(params)
        if input_shape is not None:
            data["input_shape"] = json.dumps(input_shape)
        if num_outputs is not None:
            data["num_outputs"] = str(num_outputs)
        return self._upload("/v1/checkpoints", path, data, "checkpoint")

    # --- service -----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when /readyz answers 200 (Redis reachable, a worker alive)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False
