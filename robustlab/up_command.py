"""`robustlab up`: the whole service on one machine, and `robustlab api`: the API alone (containers).

`up` starts, in this order: Redis (an embedded server in <data-dir>/redis unless REDIS_URL is set),
the API (uvicorn) and N workers, each a child process in a process group of its own, so that a
Ctrl-C in the terminal reaches only `up`, which then stops them in order: the API first (no new
jobs), the workers (a grace period to hand back their jobs, then SIGKILL), Redis last. A worker that
dies is restarted; if the API or Redis dies, everything stops with a message saying so.
Torch-free: the workers import torch in their job processes, never here.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import redis
import typer
from pydantic import ValidationError

from core.settings import Settings
from core.specs import SpecError, load_spec
from robustlab.demo import start_demo
from robustlab.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from robustlab.processes import Child, kill_tree

# uvicorn's httptools protocol with a bound on request heads (431 past it): service/http_server.py
HTTP_PROTOCOL = "service.http_server:BoundedHttpToolsProtocol"

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
KEYS_FILE = "api-keys"  # "tenant:key" lines, in the data directory, mode 0600
DEMO_SPEC_SMALL = "examples/digits-small.yaml"  # what the banner suggests trying: a minute, not the whole demo
MAX_RESTARTS = 5  # worker restarts within RESTART_WINDOW before `up` gives up on a crash loop
RESTART_WINDOW = 60.0


class UpError(RuntimeError):
    """Something `up` cannot run with; the message says what and how to fix it."""


# --- configuration -----------------------------------------------------------------------------------


def cpu_count() -> int:
    """The CPUs this process may use (its affinity mask, e.g. a container's limit), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(demo: bool, cpus: int | None = None) -> int:
    """One worker per 2 CPUs (1 to 8), plus one for the demo job, so a user's first own job starts at
    once instead of queueing behind a demo that keeps a worker busy for minutes."""
    return max(1, min(8, (cpus or cpu_count()) // 2)) + (1 if demo else 0)


_output_lock = threading.Lock()


def print_line(line: str) -> None:
    """A line on stderr, as it is *now* (a live progress bar redirects it to print above the bar)."""
    with _output_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _StderrNow(logging.StreamHandler):  # type: ignore[type-arg]
    """A log handler that writes to the current sys.stderr, not to the one at setup time."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def cli_command() -> str:
    """How the user can run `robustlab` from this directory: 'robustlab' when it is on PATH (an activated
    venv), else the venv's script as a path ('.venv/bin/robustlab'), so the banner's suggestions work."""
    script = Path(sys.executable).parent / "robustlab"
    found = shutil.which("robustlab")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "robustlab"
    if not script.exists():
        return f"{sys.executable} -m robustlab.cli"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def default_data_dir() -> Path:
    """Where `up` keeps its data unless --data-dir says otherwise (read without validating every setting)."""
    return Path(os.environ.get("ROBUSTLAB_DATA_DIR") or Settings.model_fields["data_dir"].default)


def read_stored_key(data_dir: Path) -> str | None:
    """The first key of <data-dir>/api-keys (what `up` generated), or None."""
    try:
        lines = (data_dir / KEYS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            return line.split(":", 1)[1].strip() or None
    return None


def ensure_api_key(data_dir: Path) -> tuple[str | None, dict[str, str]]:
    """(the key to print, the environment that makes the API use it).

    Keys configured by the user (ROBUSTLAB_API_KEYS / _FILE) win and nothing is generated; else a key
    for tenant "default" is generated once, kept in <data-dir>/api-keys (0600), and reused.
    """
    if os.environ.get("ROBUSTLAB_API_KEYS") or os.environ.get("ROBUSTLAB_API_KEYS_FILE"):
        return None, {}
    path = data_dir / KEYS_FILE
    key = read_stored_key(data_dir)
    if key is None:
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"default:{key}\n")
    os.chmod(path, 0o600)  # also when an older file was made with a looser mode
    return key, {"ROBUSTLAB_API_KEYS_FILE": str(path)}


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UpError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another program (an earlier "
                          f"`robustlab up`?) uses it: stop it, or pick another port with --port") from None


def _shown(url: str) -> str:
    """A Redis URL without its password, for messages."""
    head, sep, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//***@{tail}" if sep else url


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.RedisError, ValueError) as exc:
        raise UpError(f"Redis at {_shown(url)} (from REDIS_URL / ROBUSTLAB_REDIS_URL) does not answer: {exc}. "
                      "Start it or fix the URL, or unset both to use an embedded Redis") from None


# --- the stack ---------------------------------------------------------------------------------------


class Stack:
    """Redis, the API and the workers of one `robustlab up`, started and stopped in order."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int, data_dir: Path, grace: float,
                 gpus: list[str] | None = None, threads_per_worker: int | None = None) -> None:
        self.settings = settings
        self.gpus = gpus or []
        self.host, self.port, self.grace = host, port, grace
        self.workers = len(self.gpus) if self.gpus else workers
        self.threads_per_worker = threads_per_worker  # OMP_NUM_THREADS for each worker (None: torch's default)
        self.data_dir = data_dir
        self.stopping = threading.Event()  # set by SIGINT / SIGTERM
        self.redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.api: Child | None = None
        self.worker_children: list[Child] = []
        self.api_key: str | None = None
        self._restarts: collections.deque[float] = collections.deque()

    @property
    def url(self) -> str:
        connect = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        return f"http://{connect}:{self.port}"

    def start(self, ready_timeout: float) -> None:
        check_port_free(self.host, self.port)
        if self.settings.redis_url:
            check_redis(self.settings.redis_url)
            self.redis_url = self.settings.redis_url
        else:
            try:
                self.redis = EmbeddedRedis(self.data_dir / "redis").start()
            except EmbeddedRedisError as exc:
                raise UpError(f"cannot start the embedded Redis: {exc}") from None
            self.redis_url = self.redis.url
            logger.info("embedded Redis on %s (data in %s)", self.redis_url, self.data_dir / "redis")
        self.api_key, key_env = ensure_api_key(self.data_dir)
        env = {**os.environ, **key_env, "ROBUSTLAB_REDIS_URL": self.redis_url,
               "ROBUSTLAB_DATA_DIR": str(self.data_dir)}
        # Access logs are off: 200 pollers would spend the API's time writing lines nobody reads.
        self.api = Child("api", [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
                                 "--http", HTTP_PROTOCOL, "--host", self.host, "--port", str(self.port),
                                 "--no-access-log"], env,
                         relay=print_line).start()
        if self.threads_per_worker and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(self.threads_per_worker)  # N workers × all cores would oversubscribe
        for i in range(self.workers):
            # One worker per GPU when --gpus names them: each sees only its own device.
            pinned = {"CUDA_VISIBLE_DEVICES": self.gpus[i]} if self.gpus else {}
            name = f"worker-gpu{self.gpus[i]}" if self.gpus else f"worker-{i + 1}"
            self.worker_children.append(
                Child(name, [sys.executable, "-m", "robustlab.cli", "worker"], {**env, **pinned},
                      relay=print_line).start())
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        probe = "/readyz" if self.workers else "/healthz"  # /readyz wants a live worker
        with httpx.Client(timeout=2.0) as http:
            while not self.stopping.is_set():
                self._check_children(restart_workers=False)
                try:
                    response = http.get(f"{self.url}{probe}")
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}: {response.text.strip()[:300]}"
                except httpx.TransportError as exc:
                    last = str(exc) or type(exc).__name__
                if time.monotonic() > deadline:
                    raise UpError(f"the service did not become ready within {timeout:g}s; {probe} said: {last}")
                self.stopping.wait(0.2)

    def _check_children(self, *, restart_workers: bool) -> None:
        if self.redis is not None and self.redis.process is not None and self.redis.process.poll() is not None:
            raise UpError(f"the embedded Redis exited (code {self.redis.process.returncode}); see "
                          f"{self.data_dir / 'redis' / 'redis.log'}. Stopping everything")
        if self.api is not None and self.api.exited():
            raise UpError(f"the API exited (code {self.api.returncode}); see its log above. Stopping everything")
        for worker in self.worker_children:
            if not worker.exited():
                continue
            if not restart_workers:
                raise UpError(f"{worker.name} exited (code {worker.returncode}) while starting; see its log above")
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > RESTART_WINDOW:
                self._restarts.popleft()
            if len(self._restarts) >= MAX_RESTARTS:
                raise UpError(f"workers keep dying ({MAX_RESTARTS} restarts within {RESTART_WINDOW:g}s, last "
                              f"{worker.name} with code {worker.returncode}); see their log above. Stopping everything")
            logger.warning("%s (pid %s) exited unexpectedly with code %s: restarting it",
                           worker.name, worker.pid, worker.returncode)
            self._restarts.append(now)
            worker.start()

    def supervise(self) -> None:
        """Until SIGINT/SIGTERM: restart dead workers; raise UpError if the API or Redis dies."""
        while not self.stopping.wait(0.5):
            self._check_children(restart_workers=True)

    def shutdown(self) -> None:
        """The API first (no new jobs), then the workers (grace, then SIGKILL), Redis last."""
        if self.api is not None:
            logger.info("stopping the API")
            kill_tree([self.api], grace=10.0)
        if self.worker_children:
            logger.info("stopping %d worker(s) (grace %gs)", len(self.worker_children), self.grace)
            kill_tree(self.worker_children, grace=self.grace)
        if self.redis is not None:
            logger.info("stopping the embedded Redis")
            self.redis.stop()


def _banner(stack: Stack, data_dir_given: bool, demo: bool = False) -> str:
    lines = [f"robustlab is up: {stack.url}/  (the dashboard; API docs: {stack.url}/docs)"]
    if stack.api_key:
        lines.append(f"  API key (tenant default): {stack.api_key}  (kept in {stack.data_dir / KEYS_FILE})")
    else:
        lines.append("  API keys: as configured in ROBUSTLAB_API_KEYS / ROBUSTLAB_API_KEYS_FILE")
    redis_line = _shown(stack.redis_url) + (f" (embedded, data in {stack.data_dir / 'redis'})" if stack.redis else "")
    lines.append(f"  Redis: {redis_line}")
    pinned = f" on GPUs {','.join(stack.gpus)}" if stack.gpus else ""
    for_demo = " (one of them for the demo job, so your own jobs start at once)" if demo and stack.workers > 1 else ""
    lines.append(f"  workers: {stack.workers}{pinned}{for_demo}; artifacts and job data in {stack.data_dir}")
    lines.append("Try it, in another terminal (from this directory):")
    if stack.url != f"http://127.0.0.1:{DEFAULT_PORT}":
        lines.append(f"  export ROBUSTLAB_URL={stack.url}")
    if stack.api_key and data_dir_given:
        lines.append(f"  export ROBUSTLAB_API_KEY={stack.api_key}")
    small = DEMO_SPEC_SMALL if Path(DEMO_SPEC_SMALL).is_file() else "SPEC.yaml"
    lines.append(f"  {cli_command()} submit {small} --wait   # 3 regularizers × 1 seed: about a minute")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def up(
    host: Annotated[str, typer.Option("--host", help="Interface the API listens on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", help="Port of the API.")] = DEFAULT_PORT,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, show_default=False,
                                 help="Worker processes [default: one per 2 CPUs (1-8), plus one with --demo].")
    ] = None,
    gpus: Annotated[
        str, typer.Option("--gpus", help="GPU ids, e.g. 0,1: one worker per GPU (CUDA_VISIBLE_DEVICES), not --workers")
    ] = "",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Jobs, artifacts, Redis data, API key [default: robustlab-data]")
    ] = None,
    grace: Annotated[float, typer.Option("--grace", help="Seconds workers get to stop before SIGKILL.")] = 10.0,
    ready_timeout: Annotated[float, typer.Option("--ready-timeout", help="Seconds to wait for /readyz.")] = 120.0,
    demo: Annotated[
        Path | None, typer.Option("--demo", metavar="SPEC.yaml",
                                  help="Once up, submit this spec as a compare job, follow it, save its report.")
    ] = None,
) -> None:
    """Run the whole service on this machine: Redis, the API and N workers; Ctrl-C stops it all."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s up: %(message)s", datefmt="%H:%M:%S",
                        handlers=[_StderrNow()])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every /readyz probe
    try:
        settings = Settings()
    except ValidationError as exc:  # e.g. ROBUSTLAB_MAX_ATTEMPTS=abc: name the variable, no traceback
        problems = "; ".join(f"ROBUSTLAB_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        typer.echo(f"Error: invalid setting in the environment: {problems}", err=True)
        raise typer.Exit(2) from None
    demo_spec = None
    if demo is not None:  # a bad demo spec is a usage error before anything starts
        try:
            demo_spec = load_spec(demo)
        except SpecError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
    directory = (data_dir or settings.data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = default_workers(demo is not None)
    pools = len([g for g in gpus.split(",") if g.strip()]) or workers
    # each worker gets its share of the cores as torch threads: torch's default (every core, in every
    # worker) oversubscribes the machine as soon as two workers run units side by side
    threads = max(1, cpu_count() // max(pools, 1))
    stack = Stack(settings, host, port, workers, directory, grace, [g.strip() for g in gpus.split(",") if g.strip()],
                  threads_per_worker=threads)

    def stop(signum: int, _frame: object) -> None:
        if stack.stopping.is_set():
            return
        logger.info("%s: shutting down", signal.Signals(signum).name)
        stack.stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        stack.start(ready_timeout)
        if not stack.stopping.is_set():
            typer.echo(_banner(stack, data_dir is not None, demo=demo_spec is not None), err=False)
            sys.stdout.flush()
            if demo_spec is not None:
                if stack.api_key is None:
                    logger.warning("--demo needs the generated key of `robustlab up`; keys come from settings here")
                else:
                    start_demo(stack.url, stack.api_key, demo_spec, directory / "demo-report", stack.stopping)
            stack.supervise()
    except UpError as exc:
        typer.echo(f"Error: {exc}", err=True)
        code = 1
    finally:
        # A second Ctrl-C during shutdown must not leave half the children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0:
        logger.info("stopped")
    raise typer.Exit(code)


def api(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = DEFAULT_PORT,
    processes: Annotated[int, typer.Option("--processes", min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Run the API alone (containers, several hosts): settings from the environment, Redis must exist."""
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=processes,
                access_log=False, proxy_headers=True, http=HTTP_PROTOCOL)
