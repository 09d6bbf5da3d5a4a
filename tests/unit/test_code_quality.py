"""The lint and type checks, run as tests so that a red `ruff check .` or `mypy` fails the suite.

Both run from the repository root with the configuration in pyproject.toml ([tool.ruff],
[tool.mypy]), exactly as a developer would run them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# mypy's incremental cache, outside the working tree and kept between test sessions: a cold run
# takes ~10 s, a warm one well under a second.
MYPY_CACHE = Path(tempfile.gettempdir()) / "robustlab-test-mypy-cache"


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} not found: install the dev extras (pip install -e '.[dev]')")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
        timeout=300, check=False,
    )


def test_ruff_check_passes() -> None:
    result = _run_module("ruff", "check", ".")
    assert result.returncode == 0, f"`ruff check .` failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.timeout(300)
def test_mypy_passes() -> None:
    result = _run_module("mypy", "--cache-dir", str(MYPY_CACHE))
    assert result.returncode == 0, f"`mypy` failed:\n{result.stdout}\n{result.stderr}"
