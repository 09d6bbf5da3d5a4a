"""The whole service for client and gate tests: the API (a uvicorn child process) and real workers.

    with running_stack(redis_url, tmp_path / "stack") as (api, service):
        RobustlabClient(api.url, key_of("alice")) ...

Built from `api_server.running_api` and `processes.Service`, sharing one Redis key prefix, RQ queue
and data directory; every process is killed when the block ends, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.api_server import ApiServer, running_api
from tests.integration.processes import Service


@contextmanager
def running_stack(redis_url: str, data_dir: Path, *, workers: int = 1,
                  extra_env: dict[str, str] | None = None) -> Iterator[tuple[ApiServer, Service]]:
    with running_api(redis_url, data_dir, extra_env=extra_env) as api:
        service = Service(redis_url, api.settings.key_prefix, data_dir,
                          env_overrides={"ROBUSTLAB_QUEUE": api.settings.queue, **(extra_env or {})})
        try:
            for number in range(workers):
                service.start_worker(f"w{number + 1}")
            yield api, service
        finally:
            service.stop_all()
