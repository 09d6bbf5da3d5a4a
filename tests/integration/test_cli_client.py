"""The CLI as a client of a real service: exit codes of `status`, 8-character ids, `submit --wait` in a log.

`robustlab submit --wait` runs here the way CI runs it: output is not a terminal (CliRunner), so
progress must come as lines, not as a bar nobody sees. The stack is the API in a child process and
one real worker; a second API without workers keeps jobs queued for the queue and cancel cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from jobstore.records import Keys
from robustlab.cli import app
from service.client import RobustlabClient
from tests.integration.api_server import ApiServer, key_of, running_api
from tests.integration.processes import Service, tiny_spec
from tests.integration.service_stack import running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Service]]:
    with running_stack(redis_url, tmp_path_factory.mktemp("cli-stack")) as started:
        yield started


@pytest.fixture(scope="module")
def idle_api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """An API whose queue no worker reads: every job stays queued until cancelled."""
    with running_api(redis_url, tmp_path_factory.mktemp("cli-idle")) as api:
        yield api


def _cli(api: ApiServer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "--server", api.url, "--api-key", key_of("alice")])
    return result.exit_code, result.stdout, result.stderr


def _spec_file(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "spec.yaml"
    # About a second per run: long enough for the poller to see the job train (it polls every 0.25-3 s).
    spec = tiny_spec(epochs=8, regularizers=2, train_size=1200, hidden=128, batch_size=16)
    path.write_text(yaml.safe_dump({**spec, **changes}), encoding="utf-8")
    return path


def test_submit_wait_prints_progress_lines_without_a_terminal_and_short_ids_work(
        stack: tuple[ApiServer, Service], tmp_path: Path) -> None:
    api, service = stack
    code, out, err = _cli(api, "submit", str(_spec_file(tmp_path)), "--wait", "--timeout", "120")
    assert code == 0, (err, service.log())
    job_id = re.search(r"submitted ([0-9a-f-]{36})", err)
    assert job_id is not None, err
    short = job_id.group(1)[:8]
    lines = [line for line in err.splitlines() if line.startswith(short)]
    # One line per stage or run, each with the job's short id, no terminal control codes.
    assert any(" running " in line and "%" in line for line in lines), err
    # Which stages a poll catches depends on the machine's speed: only the forced first one is certain.
    assert any("training (" in line for line in lines) and len(lines) >= 3, err
    assert lines[-1].startswith(f"{short} succeeded 100%"), err
    assert "\x1b[" not in err and "\r" not in err
    assert f"job {job_id.group(1)} succeeded" in out

    # The 8 characters the lines (and the dashboard) show are enough for every command.
    code, out, _ = _cli(api, "status", short)
    assert code == 0 and out.startswith(f"{job_id.group(1)} succeeded"), out
    code, out, err = _cli(api, "report", short, "--out", str(tmp_path / "report"))
    assert code == 0, err
    assert (tmp_path / "report" / "report.json").stat().st_size > 0


def test_status_exits_non_zero_for_a_cancelled_job_and_zero_while_queued(idle_api: ApiServer,
                                                                        tmp_path: Path) -> None:
    with RobustlabClient(idle_api.url, key_of("alice")) as client:
        job = client.submit(tiny_spec(name="stays-queued"))
        code, out, _ = _cli(idle_api, "status", job["id"][:8])
        assert code == 0 and " queued" in out and "waiting for a free worker" in out, out
        client.cancel(job["id"])
    code, out, _ = _cli(idle_api, "status", job["id"])
    assert code == 1 and "cancelled" in out, out
    code, _, err = _cli(idle_api, "status", "0123abcd")  # nobody's job
    assert code == 1 and "no job" in err, err


def test_submit_wait_says_how_many_of_ones_jobs_are_ahead(idle_api: ApiServer, tmp_path: Path) -> None:
    with RobustlabClient(idle_api.url, key_of("alice")) as client:
        earlier = [client.submit(tiny_spec(name=f"ahead-{i}"))["id"] for i in range(2)]
        try:
            code, _, err = _cli(idle_api, "submit", str(_spec_file(tmp_path)), "--wait", "--timeout", "2")
            assert code != 0 and "did not finish within 2s" in err, err
            assert re.search(r"^[0-9a-f]{8} queued behind 2 of your jobs", err, re.MULTILINE), err
        finally:
            for job_id in earlier:
                client.cancel(job_id)


def test_an_ambiguous_short_id_asks_for_more_characters(idle_api: ApiServer) -> None:
    import redis

    keys = Keys(idle_api.settings.key_prefix)
    client = redis.Redis.from_url(idle_api.settings.redis_url or "")
    fake = ["abcdef01-0000-4000-8000-000000000001", "abcdef01-0000-4000-8000-000000000002"]
    client.zadd(keys.tenant_jobs("alice"), {fake[0]: 1, fake[1]: 2})
    try:
        headers = {"Authorization": f"Bearer {key_of('alice')}"}
        answer = httpx.get(f"{idle_api.url}/v1/jobs/abcdef01", headers=headers, timeout=10)
        assert answer.status_code == 409 and answer.json()["error"]["type"] == "ambiguous_id", answer.text
        # Another tenant's prefix is not looked up in alice's jobs: a plain 404.
        bob = httpx.get(f"{idle_api.url}/v1/jobs/abcdef01",
                        headers={"Authorization": f"Bearer {key_of('bob')}"}, timeout=10)
        assert bob.status_code == 404
    finally:
        client.zrem(keys.tenant_jobs("alice"), *fake)
        client.close()
