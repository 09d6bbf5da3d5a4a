"""The API process stays torch-free, and refuses to start without API keys (no Redis needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.settings import Settings
from service.auth import KeyRing, NoApiKeys
from service.errors import ApiError

REPO = Path(__file__).resolve().parents[2]


def test_building_the_app_does_not_import_torch() -> None:
    code = textwrap.dedent("""
        import sys
        from core.settings import Settings
        from service.app import create_app
        app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", api_keys="teamA:0123456789abcdef"))
        assert app.openapi()["paths"]
        loaded = sorted(m for m in ("torch", "torchvision", "torchattacks", "models") if m in sys.modules)
        assert not loaded, f"the API imported {loaded}"
        assert "service.routers.models" in sys.modules and "jobstore.queue" in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_no_keys_refuses_to_start() -> None:
    from service.app import create_app

    with pytest.raises(NoApiKeys, match="ROBUSTLAB_API_KEYS"):
        create_app(Settings(redis_url="redis://127.0.0.1:1/0", api_keys=""))


def test_keys_from_settings_and_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# teams\nteamB: bbbbbbbbbbbb  # second team\n\nteamC:cccccccccccc\n")
    ring = KeyRing.from_settings(Settings(api_keys="teamA:aaaaaaaaaaaa", api_keys_file=keys))
    assert [ring.tenant(k) for k in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc")] == ["teamA", "teamB", "teamC"]
    assert ring.tenant("aaaaaaaaaaab") is None and ring.tenant("") is None
    assert all("aaaaaaaaaaaa" not in repr(entry) for entry in vars(ring).values())  # only hashes are kept


@pytest.mark.parametrize("keys, message", [
    ("teamA", "expected 'tenant:key'"),
    ("team A:aaaaaaaaaaaa", "tenant 'team A'"),
    ("teamA:short", "shorter than 8"),
    ("teamA:aaaaaaaaaaaa,teamB:aaaaaaaaaaaa", "same API key"),
])
def test_bad_key_entries_are_named(keys: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyRing.from_settings(Settings(api_keys=keys))


def test_missing_keys_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoApiKeys, match="cannot read the API keys file"):
        KeyRing.from_settings(Settings(api_keys="teamA:aaaaaaaaaaaa", api_keys_file=tmp_path / "nope"))


def test_error_body_shape() -> None:
    error = ApiError(422, "invalid_spec", "bad", problems=[("spec.seeds", "must be a list")])
    assert error.body.model_dump() == {"error": {"type": "invalid_spec", "message": "bad",
                                                 "problems": [{"path": "spec.seeds", "message": "must be a list"}]}}
