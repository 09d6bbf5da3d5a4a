"""The upload checker's pool and limits, with real child processes: a bounded number run, a bounded
number wait (429 past it), each runs with an address-space cap, without the API's secrets, in an
empty working directory; the slots are fair between tenants; a cancelled check's process dies."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from core.settings import Settings
from service.check_pool import CheckPool
from service.errors import ApiError
from service.upload_check import clean_environment, run_checker

WAIT_FOR_FLAG = ("import json, pathlib, sys, time\n"
                 "flag = pathlib.Path(sys.argv[1])\n"
                 "deadline = time.monotonic() + 120\n"
                 "while not flag.exists() and time.monotonic() < deadline: time.sleep(0.05)\n"
                 "print(json.dumps({'ok': flag.exists()}))")


def test_a_full_pool_turns_uploads_away_with_429(tmp_path: Path) -> None:
    settings = Settings(check_memory_mb=512)
    flag = tmp_path / "release"

    async def held(command: list[str], settings: Settings):  # type: ignore[no-untyped-def]
        return await run_checker(command, settings, program=(sys.executable, "-c", WAIT_FOR_FLAG))

    async def scenario() -> None:
        pool = CheckPool(running=1, waiting=1, runner=held, per_tenant=5)
        first = asyncio.create_task(pool.run([str(flag)], settings, "a"))
        while sum(pool.running.values()) < 1:  # the first check holds the only slot
            await asyncio.sleep(0.01)
        second = asyncio.create_task(pool.run([str(flag)], settings, "a"))
        while pool.waiting < 1:  # the second waits its turn
            await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as busy:
            await pool.run([str(flag)], settings, "a")
        assert busy.value.status == 429 and busy.value.headers == {"Retry-After": "10"}
        flag.touch()
        assert [r.ok for r in await asyncio.gather(first, second)] == [True, True]

    asyncio.run(scenario())


def test_a_checker_that_allocates_past_its_limit_fails_cleanly() -> None:
    settings = Settings(check_memory_mb=400)
    hog = "x = bytearray(2 * 1024**3)"
    result = asyncio.run(run_checker([], settings, program=(sys.executable, "-c", hog)))
    assert not result.ok and "more memory" in result.error


def test_the_checker_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLAB_API_KEYS", "alice:secret")
    monkeypatch.setenv("REDIS_URL", "redis://:password@redis:6379/0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    env = clean_environment()
    assert not {k for k in env if "KEY" in k or "REDIS" in k or "SECRET" in k}
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "1"


def _fake_runner(log: list[tuple[str, str]], release: asyncio.Event):  # type: ignore[no-untyped-def]
    async def runner(command: list[str], settings: Settings) -> str:
        log.append(("start", command[0]))
        await release.wait()
        return command[0]
    return runner


def test_one_tenant_cannot_hold_every_slot_nor_the_whole_line() -> None:
    """Tenant A floods the pool: it runs one check of two slots, keeps at most its per-tenant number in
    flight (429 beyond), and tenant B's upload starts at once, even with the line full."""
    settings = Settings()

    async def scenario() -> None:
        log: list[tuple[str, str]] = []
        release = asyncio.Event()
        pool = CheckPool(running=2, waiting=1, runner=_fake_runner(log, release), per_tenant=2)
        a1 = asyncio.create_task(pool.run(["a1"], settings, "A"))
        a2 = asyncio.create_task(pool.run(["a2"], settings, "A"))
        while len(log) < 1 or pool.waiting < 1:
            await asyncio.sleep(0.01)
        refused = 0
        for i in range(9):  # nine more of A's: its own backlog is full
            with pytest.raises(ApiError) as busy:
                await pool.run([f"a{i + 3}"], settings, "A")
            refused += busy.value.status == 429
        assert refused == 9 and log == [("start", "a1")]  # A runs one check although two slots exist
        b1 = asyncio.create_task(pool.run(["b1"], settings, "B"))
        while len(log) < 2:
            await asyncio.sleep(0.01)
        assert log[1] == ("start", "b1")  # B's starts at once, on the slot A may not take
        c1 = asyncio.create_task(pool.run(["c1"], settings, "C"))  # a new tenant still gets in line
        while pool.waiting < 2:
            await asyncio.sleep(0.01)
        release.set()
        assert await asyncio.gather(a1, a2, b1, c1) == ["a1", "a2", "b1", "c1"]
        assert pool.waiting == 0 and not pool.running

    asyncio.run(scenario())


def test_a_freed_slot_goes_to_the_tenant_running_fewest() -> None:
    settings = Settings()

    async def scenario() -> None:
        log: list[tuple[str, str]] = []
        release = asyncio.Event()
        pool = CheckPool(running=3, waiting=10, runner=_fake_runner(log, release), per_tenant=3)
        tasks = [asyncio.create_task(pool.run([name], settings, name[0])) for name in ("a1", "a2", "a3")]
        while len(log) < 2 or pool.waiting < 1:
            await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(pool.run(["b1"], settings, "b")))
        while len(log) < 3:
            await asyncio.sleep(0.01)
        assert [name for _, name in log] == ["a1", "a2", "b1"]  # b overtakes a3: a runs 2 already
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_a_cancelled_check_kills_its_process_and_leaves_the_line(tmp_path: Path) -> None:
    """A client that disconnects cancels its request: the checker process dies, a waiter leaves the line."""
    settings = Settings(check_memory_mb=512)
    pid_file = tmp_path / "pid"
    sleeper = (f"import os, pathlib, time\npathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
               "time.sleep(120)")

    async def slow(command: list[str], settings: Settings):  # type: ignore[no-untyped-def]
        return await run_checker(command, settings, program=(sys.executable, "-c", sleeper))

    async def scenario() -> None:
        pool = CheckPool(running=1, waiting=5, runner=slow, per_tenant=5)
        running = asyncio.create_task(pool.run([], settings, "a"))
        waiting = asyncio.create_task(pool.run([], settings, "a"))
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        pid = int(pid_file.read_text())
        waiting.cancel()
        running.cancel()
        for task in (running, waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert pool.waiting == 0 and not pool.running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped

    asyncio.run(scenario())


def test_the_checker_runs_in_an_empty_temporary_directory() -> None:
    where = "import json, os; print(json.dumps({'ok': True, 'cwd': os.getcwd(), 'files': os.listdir('.')}))"
    result = asyncio.run(run_checker([], Settings(check_memory_mb=512), program=(sys.executable, "-c", where)))
    assert result.ok and result.details is not None, result
    assert result.details["files"] == [] and "robustlab-check-" in result.details["cwd"]
    assert not Path(result.details["cwd"]).exists()  # removed afterwards
