"""The upload checker's pool and limits, with real child processes: a bounded number run, a bounded
number wait (429 past it), each runs with an address-space cap and without the API's secrets."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from core.settings import Settings
from service.errors import ApiError
from service.upload_check import CheckPool, clean_environment, run_checker

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
        pool = CheckPool(running=1, waiting=1, runner=held)
        first = asyncio.create_task(pool.run([str(flag)], settings))
        while not pool.slots.locked():  # the first check holds the only slot
            await asyncio.sleep(0.01)
        second = asyncio.create_task(pool.run([str(flag)], settings))
        while pool.waiting < 1:  # the second waits its turn
            await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as busy:
            await pool.run([str(flag)], settings)
        assert busy.value.status == 429 and busy.value.headers == {"Retry-After": "10"}
        flag.touch()
        assert [r.ok for r in await asyncio.gather(first, second)] == [True, True]

    asyncio.run(scenario())


def test_a_checker_that_allocates_past_its_limit_fails_cleanly() -> None:
    settings = Settings(check_memory_mb=400)
    hog = "x = bytearray(2 * 1024**3)"
    result = asyncio.run(run_checker([], settings, program=(sys.executable, "-c", hog)))
    assert not result.ok and "more memory or time" in result.error


def test_the_checker_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLAB_API_KEYS", "alice:secret")
    monkeypatch.setenv("REDIS_URL", "redis://:password@redis:6379/0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    env = clean_environment()
    assert not {k for k in env if "KEY" in k or "REDIS" in k or "SECRET" in k}
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "1"
