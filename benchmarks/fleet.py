"""The makespan of one job on 1, 2, 3 … workers of one machine: a job spread over its work units.

    .venv/bin/python benchmarks/fleet.py                          # both scenarios, 1/2/3 and 1/2 workers
    .venv/bin/python benchmarks/fleet.py --compare-workers 1,2 --evaluate-workers 1,2 --json runs/fleet.json

Scenarios (DESIGN §7, issue 20):
1. compare: examples/digits-quick.yaml (12 regularizers × 3 seeds: 36 training units and 36
   evaluation units) with 1, 2 and 3 workers;
2. evaluate: a 2,000-sample evaluation (synthetic 10-class data, 64 features, an MLP trained here
   first, the standard suite, `shard_size` 200: 10 units) with 1 and 2 workers.
Each configuration runs on a fresh embedded Redis and data directory; every worker gets its share
of the cores as torch threads (cores ÷ workers, at least 1), as `robustlab up --workers N` gives
it. Reported: makespan (submission to the report), the ratio to 1 worker, how many distinct workers
ran units, and whether report.json's metrics equal those of the 1-worker run (they must: the same
spec gives the same numbers on any fleet). Target on 2 cores: 2 workers ≤ 0.6 × 1 worker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from artifactstore import ArtifactStore  # noqa: E402
from core.jobs import JobKind, JobRequest, JobStatus  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.specs import load_spec, parse_spec  # noqa: E402
from jobstore.queue import redis_client  # noqa: E402
from jobstore.records import CheckpointRecord  # noqa: E402
from jobstore.store import JobStore  # noqa: E402
from jobstore.units import units_of  # noqa: E402
from robustlab.embedded_redis import EmbeddedRedis  # noqa: E402

EVALUATE_SPEC: dict[str, Any] = {
    "name": "fleet-evaluate",
    "dataset": {"name": "synthetic", "generator": "classification", "n_samples": 7000, "n_features": 64,
                "n_classes": 10, "noise": 0.1, "train_size": 2000, "test_size": 2000, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [128, 128]}},
    "training": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 0.001, "device": "cpu"},
    "regularizers": [{"name": "erm", "kind": "none"}],
    "seeds": [0],
    "evaluation": {"shard_size": 200},
}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def metrics(report: dict[str, Any]) -> list[Any]:
    return [(r["clean_accuracy"], [(a["label"], a["eps"], a["accuracy"]) for a in r["robust"]],
             r.get("outcomes")) for r in report["runs"]]


def run(spec: dict[str, Any], kind: JobKind, workers: int, model: Path | None = None) -> dict[str, Any]:
    """One job on a fresh store with `workers` workers; its makespan, spread and report metrics."""
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        data = Path(tmp)
        redis_server = EmbeddedRedis(data / "redis").start()
        prefix, queue = "fleet:", "fleet"
        env = {**os.environ, "ROBUSTLAB_REDIS_URL": redis_server.url, "ROBUSTLAB_KEY_PREFIX": prefix,
               "ROBUSTLAB_QUEUE": queue, "ROBUSTLAB_DATA_DIR": str(data), "ROBUSTLAB_DEVICE": "cpu",
               "OMP_NUM_THREADS": str(max(1, cores() // workers)), "PYTHONUNBUFFERED": "1"}
        settings = Settings(redis_url=redis_server.url, key_prefix=prefix, queue=queue, data_dir=data)
        store = JobStore(redis_client(redis_server.url), prefix, settings=settings)
        procs = []
        try:
            checkpoint = None
            if model is not None:
                payload = model.read_bytes()
                upload = CheckpointRecord(id=str(uuid.uuid4()), tenant="bench",
                                          sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload),
                                          architecture="mlp", params=spec["model"]["params"], filename=model.name,
                                          created_at=datetime.now(UTC))
                ArtifactStore(settings.artifact_root).put_file(f"checkpoints/{upload.id}", model.name, model)
                store.add_checkpoint(upload)
                checkpoint = upload.id
            for i in range(workers):
                log = (data / f"worker-{i}.log").open("wb")
                procs.append(subprocess.Popen([sys.executable, "-m", "robustlab.cli", "worker", "--name", f"w{i + 1}"],
                                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
            while len(store.live_workers(queue)) < workers:
                time.sleep(0.2)
            started = time.monotonic()
            job, _ = store.create("bench", JobRequest(kind=kind, spec=parse_spec(spec), checkpoint=checkpoint),
                                  max_active=10)
            while not (record := store.get(job.id)) or not record.status.finished:
                time.sleep(0.2)
            makespan = time.monotonic() - started
            if record.status is not JobStatus.SUCCEEDED:
                tail = (data / "worker-0.log").read_text()[-2000:]
                raise RuntimeError(f"{kind.value} on {workers} workers: {record.status.value} {record.error}\n{tail}")
            units = units_of(store, record)
            report = json.loads(ArtifactStore(settings.artifact_root).open(record.result_prefix or "",
                                                                          "report.json").read())
            return {"workers": workers, "threads_per_worker": int(env["OMP_NUM_THREADS"]),
                    "makespan_seconds": round(makespan, 1), "units": len(units),
                    "workers_used": len({u.worker for u in units}), "metrics": metrics(report)}
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            redis_server.stop()


def train_model(directory: Path) -> Path:
    """The MLP the evaluate scenario attacks, trained by `robustlab train` (not timed)."""
    (directory / "spec.yaml").write_text(yaml.safe_dump(EVALUATE_SPEC))
    subprocess.run([sys.executable, "-m", "robustlab.cli", "train", "spec.yaml", "--out", "trained"], cwd=directory,
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(cores())})
    return directory / "trained" / "checkpoints" / "erm-seed0.safetensors"


def scenario(name: str, counts: list[int], job: Any) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        row = job(count)
        rows.append(row)
        base = rows[0]
        row["ratio_to_first"] = round(row["makespan_seconds"] / base["makespan_seconds"], 3)
        row["same_metrics_as_first"] = row["metrics"] == base["metrics"]
        print(f"{name}: {count} worker(s) × {row['threads_per_worker']} thread(s): {row['makespan_seconds']:.1f} s, "
              f"{row['units']} units on {row['workers_used']} worker(s), ×{row['ratio_to_first']:.2f} of "
              f"{base['workers']} worker(s), same metrics: {row['same_metrics_as_first']}", flush=True)
    for row in rows:
        del row["metrics"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-workers", default="1,2,3", help="worker counts for the compare ('' skips it)")
    parser.add_argument("--evaluate-workers", default="1,2", help="worker counts for the evaluate ('' skips it)")
    parser.add_argument("--compare-spec", default=str(REPO / "examples" / "digits-quick.yaml"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"cores": cores()}
    if args.compare_workers:
        spec = load_spec(Path(args.compare_spec)).model_dump(mode="json")
        spec["training"]["device"] = "cpu"
        results["compare"] = scenario("compare", [int(c) for c in args.compare_workers.split(",")],
                                      lambda n: run(spec, JobKind.COMPARE, n))
    if args.evaluate_workers:
        with tempfile.TemporaryDirectory(prefix="fleet-model-") as tmp:
            model = train_model(Path(tmp))
            results["evaluate"] = scenario("evaluate", [int(c) for c in args.evaluate_workers.split(",")],
                                           lambda n: run(EVALUATE_SPEC, JobKind.EVALUATE, n, model))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
