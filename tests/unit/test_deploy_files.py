"""The Docker deployment, checked without a Docker engine: Dockerfile targets and user, the compose
file's Redis durability, healthchecks, GPU reservation and shared volume, the build context.

`docker compose config -q` runs too where the Compose plugin is installed (it needs no engine).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, list[str]]:
    """Dockerfile stage name → its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(2), [line])
        elif current:
            current.append(line)
    return stages


def _args() -> dict[str, str]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))


def _instruction(stage: list[str], keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.split(None, 1)[0].upper() == keyword]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


# --- Dockerfile --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_dockerfile_targets_run_robustlab_as_non_root(target: str) -> None:
    stage = _stages()[target]
    users = _instruction(stage, "USER")
    assert users, f"target {target} sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert _instruction(stage, "ENTRYPOINT") == ['["robustlab"]']
    copied = " ".join(_instruction(stage, "COPY"))
    assert "/opt/venv" in copied and f"--from={target}-build" in copied
    assert any("/healthz" in h for h in _instruction(stage, "HEALTHCHECK"))


def test_dockerfile_bases_and_torch_builds() -> None:
    stages, args = _stages(), _args()
    base = {name: lines[0].split()[1] for name, lines in stages.items()}
    resolve = lambda image: re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)  # noqa: E731
    assert resolve(base["cpu"]) == resolve(base["cpu-build"]) == "python:3.11-slim"
    assert resolve(base["cuda"]).startswith("nvidia/cuda:") and "runtime" in resolve(base["cuda"])
    cpu_runs = " ".join(_instruction(stages["cpu-build"], "RUN"))
    assert "download.pytorch.org/whl/cpu" in cpu_runs and "-c constraints/cpu.txt" in cpu_runs
    cuda_runs = " ".join(_instruction(stages["cuda-build"], "RUN")).replace("${CUDA_WHEELS}", args["CUDA_WHEELS"])
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", cuda_runs)
    assert list(stages)[-1] == "cpu"  # a plain `docker build .` gives the CPU image


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)


def test_build_context_has_what_the_dockerfile_copies() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", "runs", "robustlab-data"} <= set(patterns)
    sources = set()
    for stage in _stages().values():
        for copy in _instruction(stage, "COPY"):
            if not copy.startswith("--from"):
                sources.update(copy.split()[:-1])
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"
    packages = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] + "/" for p in packages} <= sources, "a package of pyproject.toml is not copied"


# --- docker-compose.yml ------------------------------------------------------------------------------


def test_compose_redis_is_durable_private_and_checked() -> None:
    redis = _compose()["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = " ".join(redis["command"])
    for setting in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert setting in command
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "ports" not in redis, "Redis must not be published: RQ runs what its job data names (DESIGN §6)"


def test_compose_api_and_worker_share_artifacts_and_redis() -> None:
    compose = _compose()
    services = compose["services"]
    api, worker = services["api"], services["worker"]
    assert "api" in api["command"] and "worker" in worker["command"]
    assert api["build"]["target"] == "cpu" and worker["build"]["target"] == "cuda"
    for service in (api, worker, services["worker-cpu"]):
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "artifacts:/data" in service["volumes"]
    assert "artifacts" in compose["volumes"]
    assert "ROBUSTLAB_API_KEYS" in api["environment"] or "ROBUSTLAB_API_KEYS_FILE" in api["environment"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert all(str(p).startswith("127.0.0.1:") for p in api["ports"])


def test_compose_worker_reserves_one_gpu() -> None:
    devices = _compose()["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_compose_config_validates_where_compose_is_installed() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        check=False).returncode != 0:
        pytest.skip("no Docker Compose plugin here; the YAML checks above still ran")
    result = subprocess.run([docker, "compose", "config", "-q"], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_smoke_script_is_valid_bash() -> None:
    script = REPO / "scripts" / "docker-smoke.sh"
    assert script.stat().st_mode & 0o111, "scripts/docker-smoke.sh is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
