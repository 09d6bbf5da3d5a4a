"""`robustlab up` end to end, as a user runs it: a real process tree, HTTP, Redis, a worker, SIGINT.

Redis: the embedded server when REDIS_URL is unset, else that server (with a key prefix and queue
of this test's own). The job is a tiny digits compare with 2 regularizers (a few seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.embedded_redis import free_port
from robustlab.processes import descendants
from service.client import RobustlabClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

SPEC = {
    "name": "up-e2e",
    "dataset": {"name": "digits", "train_size": 200, "test_size": 100, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [16]}},
    "training": {"epochs": 2, "batch_size": 32},
    "regularizers": [{"name": "erm", "kind": "none"},
                     {"name": "doubleback", "kind": "double_backprop", "weight": 1.0}],
    "seeds": [0],
    "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.05, 0.1]},
                               {"kind": "pgd", "norm": "linf", "eps": [0.1], "steps": 3}]},
}



def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _env(key_prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROBUSTLAB_API_KEYS", "ROBUSTLAB_API_KEYS_FILE", "ROBUSTLAB_URL", "ROBUSTLAB_API_KEY")}
    # Used only when REDIS_URL points at a shared server: this test's keys and queue are its own.
    env.update(ROBUSTLAB_KEY_PREFIX=key_prefix, ROBUSTLAB_QUEUE=key_prefix.rstrip(":"), ROBUSTLAB_DEVICE="cpu",
               OMP_NUM_THREADS="1")
    return env


class Up:
    def __init__(self, process: subprocess.Popen[bytes], url: str, data_dir: Path, log: Path) -> None:
        self.process, self.url, self.data_dir, self.log = process, url, data_dir, log
        self.seen: dict[int, str] = {}  # every descendant ever observed: pid → command line

    def record_children(self) -> None:
        for pid in descendants([self.process.pid]):
            self.seen.setdefault(pid, _cmdline(pid))

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def up(tmp_path: Path, key_prefix: str) -> Iterator[Up]:
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "robustlab.cli", "up", "--port", str(port), "--workers", "1",
             "--data-dir", str(tmp_path / "data"), "--grace", "5"],
            cwd=REPO, env=_env(key_prefix), stdout=out, stderr=subprocess.STDOUT)
    running = Up(process, f"http://127.0.0.1:{port}", tmp_path / "data", log)
    try:
        yield running
    finally:
        running.record_children()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in running.seen:  # whatever the test left behind, even when it failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _wait_ready(up: Up, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert up.process.poll() is None, f"`robustlab up` exited with {up.process.returncode}:\n{up.output()}"
        if "robustlab is up" in up.output():
            key = (up.data_dir / "api-keys").read_text().strip().split(":", 1)[1]
            assert httpx.get(f"{up.url}/readyz", timeout=5).status_code == 200
            return key
        time.sleep(0.2)
    pytest.fail(f"`robustlab up` not ready within {timeout:g}s:\n{up.output()}")


def test_up_runs_a_job_end_to_end_and_leaves_no_process_behind(up: Up, tmp_path: Path) -> None:
    key = _wait_ready(up)
    assert key in up.output() and "submit examples/digits-small.yaml --wait" in up.output()
    assert f"{up.url}/  (the dashboard" in up.output()
    assert (up.data_dir / "api-keys").stat().st_mode & 0o777 == 0o600
    up.record_children()

    with RobustlabClient(up.url, key) as client:
        accepted = client.submit(SPEC, kind="compare")
        job = client.wait(accepted["id"], timeout=90, interval=0.1, on_progress=lambda _: up.record_children())
        assert job["status"] == "succeeded", (job, up.output())
        report = client.report(job["id"])
        assert sorted(s["regularizer"] for s in report["summary"]) == ["doubleback", "erm"]
        html = client.download(job["id"], "report.html", tmp_path / "report.html").read_text()
        assert "<html" in html.lower()

    # The CLI commands, against the same server.
    runner = CliRunner()
    options = ["--server", up.url, "--api-key", key]
    result = runner.invoke(app, ["status", job["id"][:8], *options])  # the 8 characters the dashboard shows
    assert result.exit_code == 0 and "succeeded" in result.output, result.output
    result = runner.invoke(app, ["report", job["id"], "--out", str(tmp_path / "fetched"), *options])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "fetched").iterdir()) == [
        "report.html", "report.json", "report.md", "results.csv"]

    up.record_children()
    commands = " | ".join(up.seen.values())
    assert "uvicorn" in commands and " worker" in commands, commands
    embedded = not (os.environ.get("REDIS_URL") or os.environ.get("ROBUSTLAB_REDIS_URL"))
    assert ("redis-server" in commands) == embedded, commands
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=30) == 0, up.output()
    survivors = {pid: cmd for pid, cmd in up.seen.items() if _alive(pid)}
    assert not survivors, f"processes left after Ctrl-C: {survivors}"


def test_up_refuses_a_port_in_use(tmp_path: Path, key_prefix: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "robustlab.cli", "up", "--port", str(port), "--data-dir", str(tmp_path)],
            cwd=REPO, env=_env(key_prefix), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_up_says_when_redis_url_does_not_answer(tmp_path: Path, key_prefix: str) -> None:
    env = {**_env(key_prefix), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    env.pop("ROBUSTLAB_REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "robustlab.cli", "up", "--port", str(free_port()), "--data-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "does not answer" in result.stderr and "unset both" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_generated_key_is_kept_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustlab.up_command import ensure_api_key, read_stored_key

    monkeypatch.delenv("ROBUSTLAB_API_KEYS", raising=False)
    monkeypatch.delenv("ROBUSTLAB_API_KEYS_FILE", raising=False)
    key, env = ensure_api_key(tmp_path)
    assert key and len(key) >= 32 and read_stored_key(tmp_path) == key
    assert (tmp_path / "api-keys").stat().st_mode & 0o777 == 0o600
    assert env == {"ROBUSTLAB_API_KEYS_FILE": str(tmp_path / "api-keys")}
    assert ensure_api_key(tmp_path) == (key, env)  # the next `up` prints the same key
    monkeypatch.setenv("ROBUSTLAB_API_KEYS", "team:configured-key-123")
    assert ensure_api_key(tmp_path) == (None, {})  # configured keys win; nothing generated


def test_up_demo_runs_the_spec_and_saves_its_report(tmp_path: Path, key_prefix: str) -> None:
    """The README's main command: `robustlab up --demo SPEC` follows one job to its report."""
    import yaml

    spec_file = tmp_path / "demo.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    port, log = free_port(), tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "robustlab.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "data"),
             "--grace", "5", "--demo", str(spec_file)],
            cwd=REPO, env=_env(key_prefix), stdout=out, stderr=subprocess.STDOUT)
    running = Up(process, f"http://127.0.0.1:{port}", tmp_path / "data", log)
    try:
        deadline = time.monotonic() + 120
        while "demo job" not in running.output() or "succeeded: open" not in running.output():
            assert process.poll() is None and time.monotonic() < deadline, running.output()
            assert "ended failed" not in running.output(), running.output()
            time.sleep(0.3)
        running.record_children()
        output = running.output()
        # Not a terminal: a log line per stage or run, with the time left in words and a dashboard link.
        progress = [line for line in output.splitlines() if " up: demo job: " in line]
        assert any("% training (" in line for line in progress), output
        assert not re.search(r"about \d+s left", output), output
        assert re.search(rf"{running.url}/#/jobs/[0-9a-f-]{{36}}", output), output
        assert "Job OK" not in output  # RQ's word for "the task returned", also for failed jobs
        report = json.loads((running.data_dir / "demo-report" / "report.json").read_text())
        assert sorted(s["regularizer"] for s in report["summary"]) == ["doubleback", "erm"]
        assert (running.data_dir / "demo-report" / "report.html").exists()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, running.output()
    finally:
        running.record_children()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in running.seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_up_refuses_a_bad_demo_spec_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path / "data"), "--demo", str(bad)])
    assert result.exit_code == 1 and "dataset" in result.output, result.output
    assert not (tmp_path / "data").exists()


def test_up_demo_on_a_terminal_draws_a_live_bar(tmp_path: Path, key_prefix: str) -> None:
    """On a terminal the demo's progress is a bar redrawn in place, with the time left in words, and
    the children's log lines are printed above it rather than through it."""
    import pty
    import select

    import yaml

    spec_file = tmp_path / "demo.yaml"
    spec_file.write_text(yaml.safe_dump({**SPEC, "training": {"epochs": 20, "batch_size": 16}}), encoding="utf-8")
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "robustlab.cli", "up", "--port", str(free_port()), "--data-dir",
         str(tmp_path / "data"), "--grace", "5", "--demo", str(spec_file)],
        cwd=REPO, env={**_env(key_prefix), "COLUMNS": "120", "TERM": "xterm"}, stdin=slave, stdout=slave,
        stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while b"succeeded: open" not in seen:
            assert process.poll() is None and time.monotonic() < deadline, seen.decode(errors="replace")[-3000:]
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        text = seen.decode(errors="replace")
        assert "━" in text and "\r" in text, text[-3000:]  # a bar, redrawn in place
        assert "demo job: training" in text, text[-3000:]
        assert not re.search(r"about \d+s left", text), text[-3000:]
        assert "robustlab is up" in text and "INFO" in text  # the children's lines still show
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        children = descendants([process.pid])  # before `up` goes: afterwards they are nobody's
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
