"""Shared test set-up: few threads (CI has 2 cores), deterministic seeds."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    try:
        import torch
    except ImportError:  # torch-free test environments
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """REDIS_URL when set (CI: the machine's server), else a private server started for this session."""
    import os

    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from robustlab.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    """A prefix of its own for each test, so tests sharing one Redis never see each other's keys."""
    import uuid

    return f"rltest:{uuid.uuid4().hex[:12]}:"
