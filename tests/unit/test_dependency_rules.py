"""The dependency rule of DESIGN §4, checked twice: statically by import-linter, and by importing.

core, reports, the artifact store, service and the CLI never import torch; models never imports
Redis, RQ, HTTP, worker or service. The static check reads every import statement (including lazy
ones inside functions); the dynamic one catches what it cannot see (imports through third-party
packages, importlib).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    here = str(Path(sys.executable).parent)
    found = shutil.which("lint-imports", path=here) or shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: install the dev extras (pip install -e '.[dev]')")
    return found


def _run_lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
        timeout=300, check=False,
    )


# --- static: import-linter -------------------------------------------------------------------------


def test_import_linter_contracts_are_kept() -> None:
    result = _run_lint_imports(REPO)
    assert result.returncode == 0, f"import-linter failed:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout


def test_contracts_state_the_rule() -> None:
    """Deleting or weakening a contract must fail a test, not silently pass lint-imports."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert config["include_external_packages"] is True  # else third-party modules are not checked
    forbidden = {
        source: set(c["forbidden_modules"])
        for c in config["contracts"] if c["type"] == "forbidden" for source in c["source_modules"]
    }
    assert {"torch", "models", "worker", "service"} <= forbidden["core"]
    assert {"torch", "torchattacks", "models"} <= forbidden["service"]
    assert {"torch", "models", "worker", "service", "redis"} <= forbidden["artifactstore"]  # a storage adapter
    assert {"torch", "models", "worker", "service", "robustlab", "redis"} <= forbidden["reports"]
    assert "reports" in forbidden["core"]  # core is the ground: reports sits on it, never below it
    assert {"redis", "rq", "fastapi", "worker", "service"} <= forbidden["models"]
    assert {"jobstore", "artifactstore"} <= forbidden["models"]  # the science does no storage I/O
    # robustlab/cli.py only registers the commands: a command module that imports it makes a cycle
    for module in ("robustlab.client_commands", "robustlab.up_command", "robustlab.gate", "robustlab.train_command"):
        assert "robustlab.cli" in forbidden[module], module
    independent = [set(c["modules"]) for c in config["contracts"] if c["type"] == "independence"]
    assert {"robustlab.gate", "robustlab.client_commands"} in independent


def test_contracts_catch_a_violation(tmp_path: Path) -> None:
    """A copy of core with a forbidden import, and a service that imports the science, must break."""
    shutil.copytree(REPO / "core", tmp_path / "core", ignore=shutil.ignore_patterns("__pycache__"))
    for package in ("reports", "models", "artifactstore", "worker", "service", "robustlab"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    # The CLI modules the contracts name, empty: every one must exist for import-linter to run.
    (tmp_path / "robustlab" / "gate").mkdir()
    (tmp_path / "robustlab" / "gate" / "__init__.py").write_text("", encoding="utf-8")
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    named = {m for c in config["contracts"] for m in [*c.get("source_modules", []), *c.get("forbidden_modules", []),
                                                       *c.get("modules", [])] if m.startswith("robustlab.")}
    for module in named - {"robustlab.gate"}:
        (tmp_path / (module.replace(".", "/") + ".py")).write_text("", encoding="utf-8")
    (tmp_path / "core" / "specs" / "sneaky.py").write_text("def f():\n    import torch\n", encoding="utf-8")
    (tmp_path / "service" / "app.py").write_text("import models\n", encoding="utf-8")
    (tmp_path / "models" / "queue.py").write_text("import redis\n", encoding="utf-8")
    (tmp_path / "reports" / "plots.py").write_text("import torch\n", encoding="utf-8")
    (tmp_path / "robustlab" / "client_commands.py").write_text(  # the import cycle issue 22 removed
        "def f():\n    from robustlab.cli import echo\n", encoding="utf-8")
    result = _run_lint_imports(tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout
    for contract in ("core is torch-free", "reports is torch-free", "service never imports torch",
                     "models has no Redis", "never import robustlab.cli"):
        assert f"{contract}" in " ".join(result.stdout.split()), result.stdout
    assert "5 broken" in result.stdout, result.stdout


# --- dynamic: what importing actually loads --------------------------------------------------------

# Records who imported a watched top-level module, so a failure names the culprit.
_WATCH = """
import sys, traceback
WATCHED = {watched!r}
who = {{}}

class Watch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.split(".")[0]
        if top in WATCHED and top not in who:
            who[top] = "".join(traceback.format_stack(limit=12)[:-1])
        return None

sys.meta_path.insert(0, Watch)
"""


def test_core_reports_service_and_cli_do_not_import_torch() -> None:
    result = _python(_WATCH.format(watched=["torch", "torchattacks", "torchvision", "models"]) + """
import artifactstore, core, core.enums, core.specs, core.catalog, service, robustlab.cli
import reports, reports.files, reports.html_page, reports.plots, reports.render, reports.statistics
from core import catalog
from core.specs import load_spec
from robustlab.cli import app
for category in catalog.CATEGORIES:
    catalog.catalog(category)
load_spec("examples/digits-quick.yaml")
for args in (["list", "regularizers", "--json"], ["validate", "examples/digits-quick.yaml"]):
    try:
        app(args, prog_name="robustlab")
    except SystemExit as exit:
        assert exit.code == 0, (args, exit.code)
loaded = sorted(m for m in WATCHED if m in sys.modules)
for m in loaded:
    print(f"--- {m} imported by:\\n{who.get(m, '?')}", file=sys.stderr)
assert not loaded, f"torch-free code imported {loaded}"
""")
    assert result.returncode == 0, result.stderr


def test_models_imports_no_redis_http_worker_or_service() -> None:
    result = _python(_WATCH.format(watched=["redis", "rq", "fastapi", "starlette", "uvicorn", "httpx",
                                            "worker", "service"]) + """
import importlib, pkgutil
import models

failed = []
def record(name):
    failed.append((name, repr(sys.exc_info()[1])))

names = ["models"] + [m.name for m in pkgutil.walk_packages(models.__path__, "models.", onerror=record)]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append((name, repr(exc)))
if failed:
    print("models modules that do not import (unfinished or broken?):", file=sys.stderr)
    for name, error in failed:
        print(f"  {name}: {error}", file=sys.stderr)
    sys.exit(3)
print(len(names), "modules")
loaded = sorted(m for m in WATCHED if m in sys.modules)
for m in loaded:
    print(f"--- {m} imported by:\\n{who.get(m, '?')}", file=sys.stderr)
assert not loaded, f"models imported {loaded}"
""")
    if result.returncode == 3:
        pytest.fail(f"cannot check models: some modules fail to import\n{result.stderr}")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) > 1  # the walk found the subpackages, not just `models`
