"""`pip wheel --no-deps .` makes a wheel that installs in a fresh venv and runs `robustlab gate --local`
outside the checkout, with the files a checkout has and a wheel may forget (the dashboard's static
files, py.typed, every subpackage).

Offline and without a second copy of torch: the sources are copied to a scratch directory and built
there without build isolation (this venv's setuptools); the fresh venv gets the wheel with --no-deps
--no-index, and finds the dependencies through a .pth line naming this venv's site-packages (whose own
.pth files are not read that way: their start-up hooks are copied, all but the checkout's editable
install). A real process in a directory that is not the checkout proves the installed package runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # generous: a loaded 2-core machine


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode in (0, 1, 2), f"{command}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _packages() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_of_the_source_tree_is_in_the_wheels_list() -> None:
    """A subpackage left out of [tool.setuptools] packages would be missing from the wheel only."""
    tops = {p.split(".")[0] for p in _packages()}
    found = {".".join(init.parent.relative_to(REPO).parts) for top in tops for init in (REPO / top).rglob("__init__.py")
             if "__pycache__" not in init.parts}
    assert found == set(_packages()), sorted(found ^ set(_packages()))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for top in {p.split(".")[0] for p in _packages()}:
        shutil.copytree(REPO / top, source / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    result = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "-w", str(out), "."], cwd=source)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("robustlab-*.whl")
    return built


def test_the_wheel_holds_the_dashboard_and_the_type_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {p.name for p in (REPO / "service" / "dashboard" / "static").iterdir()}
    assert {f"service/dashboard/static/{n}" for n in static} <= names
    assert {"robustlab/py.typed", "core/py.typed", "robustlab/gate/command.py"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "robustlab = robustlab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_wheel_gates_the_example_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    fresh = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip())
    deps = Path(sysconfig.get_paths()["purelib"])
    (fresh / "robustlab-deps.pth").write_text(f"{deps}\n")  # torch & co., read-only
    for hook in deps.glob("*.pth"):  # their start-up hooks (the torchvision CPU compat), not the editable install
        if not hook.name.startswith("__editable__") and not (fresh / hook.name).exists():
            shutil.copy(hook, fresh / hook.name)
    install = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr

    work = tmp_path / "ci"
    work.mkdir()
    shutil.copy(REPO / "examples" / "ci" / "model.onnx", work / "model.onnx")
    spec = yaml.safe_load((REPO / "examples" / "ci" / "spec.yaml").read_text())
    spec["dataset"]["test_size"] = 100  # the example, smaller: this proves the install, not the model
    spec["evaluation"]["attacks"] = [{"kind": "fgsm", "norm": "linf", "eps": [0.05]}]
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    (work / "policy.yaml").write_text(yaml.safe_dump({"min_clean_accuracy": 0.8, "require_checks_pass": False}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ROBUSTLAB_URL", "GITHUB_STEP_SUMMARY")}

    where = _run([str(python), "-c", "import robustlab, service.dashboard as d, pathlib; "
                  "print(robustlab.__file__); print(sorted(p.name for p in (pathlib.Path(d.__file__).parent / "
                  "'static').iterdir()))"], cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(fresh)), where.stdout  # the wheel's files, not the checkout's
    assert "index.html" in where.stdout

    gate = _run([str(env_dir / "bin" / "robustlab"), "gate", "--local", "--model", "model.onnx", "--spec",
                 "spec.yaml", "--policy", "policy.yaml", "--junit", "gate.xml", "--threads", "1"], cwd=work, env=env)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "robustlab gate: passed" in gate.stderr and (work / "gate.xml").is_file()
