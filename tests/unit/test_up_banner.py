"""`robustlab up`'s defaults and banner: enough workers, a command that works from the checkout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from robustlab import up_command
from robustlab.up_command import cli_command, default_workers


@pytest.mark.parametrize(("cpus", "demo", "workers"), [
    (1, False, 1), (2, False, 1), (2, True, 2), (8, False, 4), (8, True, 5), (64, False, 8), (64, True, 9),
])
def test_a_worker_per_two_cpus_plus_one_for_the_demo(cpus: int, demo: bool, workers: int) -> None:
    assert default_workers(demo, cpus) == workers


def test_the_suggested_command_works_without_an_activated_venv(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "robustlab").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(up_command.shutil, "which", lambda name: None)  # venv not activated
    assert cli_command() == ".venv/bin/robustlab"
    monkeypatch.setattr(up_command.shutil, "which", lambda name: str(venv_bin / "robustlab"))  # activated
    assert cli_command() == "robustlab"


def test_the_banner_links_the_dashboard_and_suggests_a_short_spec() -> None:
    from core.settings import Settings

    stack = up_command.Stack(Settings(), "127.0.0.1", 8000, 2, Path("robustlab-data"), 1.0)
    stack.api_key, stack.redis_url = "k" * 43, "redis://127.0.0.1:1/0"
    text = up_command._banner(stack, data_dir_given=False, demo=True)
    assert "http://127.0.0.1:8000/  (the dashboard" in text
    assert "one of them for the demo job" in text
    assert "submit examples/digits-small.yaml --wait" in text and "digits-quick" not in text
