"""Model and dataset ids shorten like job ids: `/v1/datasets/51e0d2f7` is the caller's dataset whose id
starts so; two of the caller's uploads with that prefix are a 409 that asks for more characters (not a
404 that says to upload it); another tenant's prefix is never looked up; `robustlab submit --checkpoint`
takes the 8 characters too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import yaml
from typer.testing import CliRunner

from jobstore.uploads import UploadStore
from robustlab.cli import app
from service.client import RobustlabClient
from tests.integration.api_server import ApiServer, key_of, running_api
from tests.integration.processes import tiny_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(redis_url, tmp_path_factory.mktemp("short-uploads")) as started:
        yield started


def _headers(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_of(tenant)}"}


def test_a_dataset_id_prefix_reads_and_deletes_the_callers_dataset(api: ApiServer, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_test=rng.random((20, 1, 8, 8), dtype=np.float32), y_test=rng.integers(0, 3, 20))
    with RobustlabClient(api.url, key_of("alice")) as client:
        uploaded = client.upload_dataset(path, num_classes=3)
        short = uploaded["id"][:8]
        assert client.dataset(short)["id"] == uploaded["id"]
    bob = httpx.get(f"{api.url}/v1/datasets/{short}", headers=_headers("bob"), timeout=30)
    assert bob.status_code == 404  # not looked up among alice's uploads
    gone = httpx.delete(f"{api.url}/v1/datasets/{short}", headers=_headers("alice"), timeout=30)
    assert gone.status_code == 204, gone.text
    after = httpx.get(f"{api.url}/v1/datasets/{short}", headers=_headers("alice"), timeout=30)
    assert after.status_code == 404 and short in after.json()["error"]["message"]


def test_an_ambiguous_or_unknown_model_prefix_says_so(api: ApiServer, tmp_path: Path) -> None:
    store = UploadStore(redis.Redis.from_url(api.settings.redis_url or ""), api.settings.key_prefix)
    index = store._index("model", "alice")
    fake = ["fedcba01-0000-4000-8000-000000000001", "fedcba01-0000-4000-8000-000000000002"]
    store.redis.zadd(index, {fake[0]: 1, fake[1]: 2})
    try:
        answer = httpx.get(f"{api.url}/v1/models/fedcba01", headers=_headers("alice"), timeout=30)
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert error["type"] == "ambiguous_id" and "models" in error["message"] and "upload" not in error["message"]
        unknown = httpx.get(f"{api.url}/v1/models/0badc0de", headers=_headers("alice"), timeout=30)
        assert unknown.status_code == 404 and "upload it" not in unknown.text

        # The CLI expands a short --checkpoint through the same lookup, and says what the server said.
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(tiny_spec(name="short-id")))
        result = CliRunner().invoke(app, ["submit", str(spec), "--kind", "evaluate", "--checkpoint", "fedcba01",
                                          "--server", api.url, "--api-key", key_of("alice")])
        assert result.exit_code == 1 and "more than one of your models" in result.stderr, result.output
    finally:
        store.redis.zrem(index, *fake)
        store.redis.close()
