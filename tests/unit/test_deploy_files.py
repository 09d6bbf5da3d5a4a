"""The Docker deployment, checked without a Docker engine: Dockerfile targets and user, the compose
file's Redis durability, healthchecks, GPU reservation and shared volume, the build context.

`docker compose config -q` runs too where the Compose plugin is installed (it needs no engine).
"""

from __future__ import annotations

import fnmatch
import os
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


# --- deploy/k8s: Kubernetes manifests (parsed only; no cluster here) ----------------------------------

K8S = REPO / "deploy" / "k8s"
NAMESPACE = "robustlab"
SECRET = "robustlab-secrets"
REDIS_ADDRESS = f"redis.{NAMESPACE}.svc.cluster.local:6379"
# Environment variables that are not robustlab settings but are meant: torch threads, the pod's own
# name (the worker's --name), the Redis password REDIS_URL is built from and redis-cli's copy of it.
OTHER_ENV = {"OMP_NUM_THREADS", "POD_NAME", "REDIS_PASSWORD", "REDISCLI_AUTH"}


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append({**doc, "_file": path.name})
    return docs


def _of(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _manifests() if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _of(kind) if d["metadata"]["name"] == name]
    return doc


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    """name → value (literal) or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(deployment).get("env", [])}


def _workers() -> list[dict[str, Any]]:
    return [d for d in _of("Deployment") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]


def _quantity(text: Any) -> float:
    """A Kubernetes quantity (8, 500m, 4Gi, 3gb) as a number (bytes for memory)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert match, text
    units = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9,
             "kb": 1e3, "mb": 1e6, "gb": 1e9}
    return float(match.group(1)) * units[match.group(2)]


def _deploy_doc_section(title: str) -> str:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_k8s_manifests_parse_and_hold_every_part() -> None:
    docs = _manifests()
    kinds = sorted({d["kind"] for d in docs})
    assert {"Namespace", "ConfigMap", "StatefulSet", "Service", "NetworkPolicy", "Deployment", "ScaledObject",
            "TriggerAuthentication"} <= set(kinds), kinds
    assert "Secret" not in kinds, "secrets are created with kubectl (docs/deploy.md §4), never inlined in a manifest"
    assert {d["metadata"]["name"] for d in _of("Service")} == {"redis", "api"}
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in docs if d["kind"] != "Namespace")
    assert len(_workers()) >= 2 and _named("Deployment", "api")
    for deployment in [*_of("Deployment"), *_of("StatefulSet")]:
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), deployment["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "robustlab"  # what the network policy admits
        assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted({d["_file"] for d in docs}), "a manifest is not applied"
    assert kustomization["namespace"] == NAMESPACE


def test_k8s_redis_is_durable_private_and_bounded() -> None:
    redis_set = _named("StatefulSet", "redis")
    container = _container(redis_set)
    args = " ".join(container["args"])
    for setting in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--dir /data",
                    "--requirepass $(REDIS_PASSWORD)"):
        assert setting in args, setting
    maxmemory = container["args"][container["args"].index("--maxmemory") + 1]
    assert _quantity(maxmemory) < _quantity(container["resources"]["limits"]["memory"]), \
        "maxmemory must be below the pod's memory limit, or the kernel kills Redis before noeviction refuses"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    claim = redis_set["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"]
    assert _named("Service", "redis")["spec"]["type"] == "ClusterIP"
    policy = _named("NetworkPolicy", "redis-clients")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "robustlab"}}} in sources


def test_k8s_every_worker_pool_has_a_scaled_object_on_its_own_queue() -> None:
    import redis as redis_lib

    from jobstore.queue import job_queue

    unconnected = redis_lib.Redis()  # only to ask RQ for its key of a queue name; never connects
    api_env = _env(_named("Deployment", "api"))
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in _of("ScaledObject")}
    auths = {d["metadata"]["name"] for d in _of("TriggerAuthentication")}
    queues = {}
    for worker in _workers():
        name, env = worker["metadata"]["name"], _env(worker)
        assert name in scaled, f"worker Deployment {name} has no ScaledObject"
        spec = scaled.pop(name)["spec"]
        queue = env["ROBUSTLAB_QUEUE"]
        queues[queue] = name
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == job_queue(unconnected, queue).key == f"rq:queue:{queue}"
        assert trigger["metadata"]["address"] == REDIS_ADDRESS  # KEDA resolves it from its own namespace
        assert trigger["authenticationRef"]["name"] in auths
        per_worker = int(trigger["metadata"]["listLength"])
        # Fair dispatch keeps at most QUEUE_DEPTH deliveries in the list KEDA reads: the pool can reach
        # its maximum only if that many fit.
        assert int(env["ROBUSTLAB_QUEUE_DEPTH"]) >= spec["maxReplicaCount"] * per_worker, name
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        if api_env["ROBUSTLAB_QUEUE"] != queue:  # only its own workers fill this queue: one must stay
            assert spec["minReplicaCount"] >= 1, f"{name} would never wake from zero"
        assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30  # time to hand a unit back
    assert not scaled, f"ScaledObjects without a worker Deployment: {sorted(scaled)}"
    assert len(queues) == len(_workers()), "two pools on one queue"
    assert api_env["ROBUSTLAB_QUEUE"] in queues, "the API dispatches into a queue no pool takes"
    pool = _named("Deployment", queues[api_env["ROBUSTLAB_QUEUE"]])
    assert api_env["ROBUSTLAB_QUEUE_DEPTH"] == _env(pool)["ROBUSTLAB_QUEUE_DEPTH"]


def test_k8s_worker_resources_gpus_and_threads() -> None:
    for worker in _workers():
        name, env, container = worker["metadata"]["name"], _env(worker), _container(worker)
        resources = container["resources"]
        assert resources["requests"].get("cpu") and resources["limits"].get("memory"), name
        assert int(env["OMP_NUM_THREADS"]) == _quantity(resources["requests"]["cpu"]), \
            f"{name}: one torch thread per core the pod requests"
        assert container["args"][:1] == ["worker"]
        if "gpu" in name:
            assert resources["limits"]["nvidia.com/gpu"] == 1, name
            assert resources["requests"].get("nvidia.com/gpu", 1) == 1
            assert env["ROBUSTLAB_DEVICE"] == "cuda" and "cuda" in container["image"]
            assert "CUDA_VISIBLE_DEVICES" not in env  # the device plugin sets it
        else:
            assert "nvidia.com/gpu" not in resources["limits"] and env["ROBUSTLAB_DEVICE"] == "cpu"
            assert int(env["ROBUSTLAB_JOB_MEMORY_LIMIT_MB"]) * 2**20 < _quantity(resources["limits"]["memory"])


def _option_names(command: str) -> set[str]:
    """The options `robustlab COMMAND` takes, as click sees them."""
    import typer.main

    from robustlab.cli import app

    group: Any = typer.main.get_command(app)
    return {opt for param in group.commands[command].params for opt in param.opts if opt.startswith("-")}


def test_k8s_env_names_are_real_settings_and_values_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import Settings

    settings_env = {f"ROBUSTLAB_{field.upper()}" for field in Settings.model_fields}
    config = _named("ConfigMap", "robustlab-config")["data"]
    for deployment in _of("Deployment"):
        env = _env(deployment)
        names = set(env) | set(config)
        unknown = {n for n in names if n not in settings_env | OTHER_ENV and n != "REDIS_URL"
                   and not n.startswith("AWS_")}
        assert not unknown, f"{deployment['metadata']['name']}: not settings of core/settings.py: {sorted(unknown)}"
        # Kubernetes expands $(VAR) only from variables defined before it in the list.
        order = [e["name"] for e in _container(deployment)["env"]]
        assert order.index("REDIS_PASSWORD") < order.index("REDIS_URL")
        assert env["REDIS_URL"] == f"redis://:$(REDIS_PASSWORD)@{REDIS_ADDRESS}/0"
        # The literal values are valid settings.
        for key in list(os.environ):
            if key.startswith("ROBUSTLAB_") or key == "REDIS_URL":
                monkeypatch.delenv(key)
        for key, value in {**config, **env}.items():
            if isinstance(value, str):
                monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.redis_url and settings.artifact_root.startswith("s3://")
        assert settings.queue == env["ROBUSTLAB_QUEUE"]
        # The command line uses real options of `robustlab worker` / `robustlab api`.
        args = _container(deployment)["args"]
        assert args[0] in ("worker", "api")
        assert {a for a in args[1:] if a.startswith("--")} <= _option_names(args[0]), args


def test_k8s_secrets_are_referenced_not_inlined_and_match_the_docs() -> None:
    referenced: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                assert node["secretKeyRef"]["name"] == SECRET
                referenced.add(node["secretKeyRef"]["key"])
            if "secretName" in node:
                assert node["secretName"] == SECRET
                referenced.update(item["key"] for item in node.get("items", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in _manifests():
        walk(doc)
    for auth in _of("TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == SECRET
            referenced.add(ref["key"])
    section = _deploy_doc_section("## 4. Kubernetes")
    command = re.search(r"create secret generic (\S+)(.*?)\n(?!\s)", section, re.DOTALL)
    assert command and command.group(1) == SECRET
    created = set(re.findall(r"--from-(?:literal|file)=([\w-]+)=", command.group(2)))
    assert created == referenced, (created, referenced)
    for doc in _manifests():  # no credential values in any manifest
        text = yaml.safe_dump(doc)
        assert not re.search(r"AKIA[0-9A-Z]{16}|requirepass [^$]", text)


def test_k8s_docs_agree_with_the_manifests() -> None:
    section = _deploy_doc_section("## 4. Kubernetes")
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| `worker-") and len(cells) == 7:  # the pool table (not the file table)
            rows[cells[0]] = cells[1:6]
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in _of("ScaledObject")}
    assert set(rows) == {w["metadata"]["name"] for w in _workers()}, "the pool table lists other pools"
    for worker in _workers():
        name, env = worker["metadata"]["name"], _env(worker)
        spec = scaled[name]
        assert rows[name] == [env["ROBUSTLAB_QUEUE"], spec["triggers"][0]["metadata"]["listName"],
                              env["ROBUSTLAB_QUEUE_DEPTH"], str(spec["minReplicaCount"]),
                              str(spec["maxReplicaCount"])], name
    listed = set(re.findall(r"^\| `([\w.-]+\.yaml|Dockerfile\.s3)` \|", section, re.MULTILINE))
    assert listed == {p.name for p in K8S.iterdir()} - {"kustomization.yaml"}, "the file table and deploy/k8s differ"
    api_env = _env(_named("Deployment", "api"))
    assert f"The API dispatches into `{api_env['ROBUSTLAB_QUEUE']}`" in section
    config = _named("ConfigMap", "robustlab-config")["data"]
    for name in re.findall(r"`((?:ROBUSTLAB|AWS)_[A-Z_]+)`", section):
        in_pods = any(name in _env(d) for d in _of("Deployment")) or name in config
        assert in_pods, f"docs/deploy.md §4 names {name}, which no manifest sets"
    assert REDIS_ADDRESS in section


def test_fleet_walkthrough_uses_real_commands_and_settings() -> None:
    from core.settings import Settings

    section = _deploy_doc_section("### One compare on a fleet of GPU hosts")
    settings_env = {f"ROBUSTLAB_{field.upper()}" for field in Settings.model_fields}
    client_env = {"ROBUSTLAB_URL", "ROBUSTLAB_API_KEY"}  # read by the CLI as a client, not by Settings
    for name in set(re.findall(r"\b(ROBUSTLAB_[A-Z_]+)=", section)):
        assert name in settings_env | client_env, name
    for line in section.splitlines():
        for command in ("worker", "api", "status"):
            if f"robustlab {command} " in line:
                options = set(re.findall(r"\s(--[a-z-]+)", line.split(f"robustlab {command} ", 1)[1]))
                assert options <= _option_names(command), (line, options)
    assert "CUDA_VISIBLE_DEVICES=$gpu" in section and "--units" in section
    for setting in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert setting in section
