"""A real API server for tests: `uvicorn --factory service.app:create_app` in a child process.

Configured through the environment exactly as in production (ROBUSTLAB_*), on a free loopback
port, with its own Redis key prefix, RQ queue and data directory, so tests sharing one Redis never
see each other. The process is always stopped (SIGTERM, then SIGKILL) and its keys deleted.
Other tests (end to end) may reuse `running_api`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from rq import Queue

from artifactstore import ArtifactStore
from core.settings import Settings
from jobstore.store import JobStore
from robustlab.embedded_redis import free_port

REPO = Path(__file__).resolve().parents[2]
TENANTS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


def key_of(tenant: str) -> str:
    return f"test-key-{tenant}-0123456789"



@dataclass
class ApiServer:
    url: str
    settings: Settings
    process: subprocess.Popen[bytes]
    log: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, tenant: str | None = "alice", key: str | None = None) -> httpx.Client:
        """An HTTP client authenticated as `tenant` (None: no Authorization header)."""
        headers = {}
        if tenant is not None or key is not None:
            headers["Authorization"] = f"Bearer {key or key_of(str(tenant))}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=60.0)
        self.clients.append(client)
        return client

    def store(self) -> JobStore:
        return JobStore(redis.Redis.from_url(str(self.settings.redis_url), decode_responses=True),
                        self.settings.key_prefix, settings=self.settings)

    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.settings.artifact_root)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _cleanup(redis_url: str, settings: Settings) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        Queue(settings.queue, connection=client).delete(delete_jobs=True)
        for key in client.scan_iter(f"{settings.key_prefix}*"):
            client.delete(key)
    finally:
        client.close()


@contextmanager
def running_api(redis_url: str, data_dir: Path, *, tenants: tuple[str, ...] = TENANTS,
                extra_env: dict[str, str] | None = None, startup_timeout: float = 30.0) -> Iterator[ApiServer]:
    """Start the API, wait until /healthz answers, yield it; stop it and delete its keys afterwards."""
    tag = uuid.uuid4().hex[:10]
    env_settings = {
        "ROBUSTLAB_REDIS_URL": redis_url,
        "ROBUSTLAB_KEY_PREFIX": f"rltest:{tag}:",
        "ROBUSTLAB_QUEUE": f"rltest-{tag}",
        "ROBUSTLAB_DATA_DIR": str(data_dir),
        "ROBUSTLAB_API_KEYS": ",".join(f"{t}:{key_of(t)}" for t in tenants),
        **(extra_env or {}),
    }
    env = {**os.environ, **env_settings, "PYTHONPATH": str(REPO)}
    settings = Settings(**{k.removeprefix("ROBUSTLAB_").lower(): v for k, v in env_settings.items()})
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"api-{tag}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--host", "127.0.0.1",
             "--http", "service.http_server:BoundedHttpToolsProtocol",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = ApiServer(url=f"http://127.0.0.1:{port}", settings=settings, process=process, log=log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited with {process.returncode}:\n{server.log_text()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer /healthz within {startup_timeout} s:\n{server.log_text()}")
            time.sleep(0.05)
        yield server
    finally:
        for client in server.clients:
            client.close()
        _stop(process)
        _cleanup(redis_url, settings)
