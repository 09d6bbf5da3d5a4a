"""Load on the service over loopback: status polling with ETags, job submission, enqueue-to-start.

    .venv/bin/python benchmarks/service_load.py                      # starts `robustlab up` itself
    .venv/bin/python benchmarks/service_load.py --url http://127.0.0.1:8000 --api-key KEY
    .venv/bin/python benchmarks/service_load.py --json runs/service_load.json

Phases (bounded in time and count):
1. enqueue-to-start on an idle worker: submit a tiny job, time from the 202 to the record's
   `started_at` (server clock) and to the first poll that sees `running` (client clock; polled
   every 5 ms), wait for it to finish, repeat;
2. load: `--pollers` concurrent clients each GET /v1/jobs/{id} with If-None-Match every
   `--poll-interval` seconds (jittered), while `--submitters` clients POST tiny jobs and cancel them
   (so the worker is not swamped); p50/p99 per endpoint, throughput, errors.
3. the same load again `--while training` (a compare job trains on the worker meanwhile, on the
   same cores) and `--while validating` (another process keeps ten 245 KB spec_text validations in
   flight, the flood that once stalled the API for seconds), e.g. `--while idle,training,validating`.
Targets (DESIGN §7, 2 cores): 0 errors, status p99 < 25 ms with 200 pollers, enqueue-to-start < 250 ms;
status p99 < 100 ms while the validations run.
The client runs on the same cores as the server: its own overhead is part of every latency here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from robustlab.embedded_redis import free_port

REPO = Path(__file__).resolve().parents[1]

TINY_SPEC: dict[str, Any] = {
    "name": "bench-tiny",
    "dataset": {"name": "digits", "train_size": 64, "test_size": 32, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [8]}},
    "training": {"epochs": 1, "batch_size": 32},
    "regularizers": [{"name": "erm", "kind": "none"}],
    "seeds": [0],
    "evaluation": {"attacks": [{"kind": "fgsm", "norm": "linf", "eps": [0.1]}]},
}
FINISHED = {"succeeded", "failed", "cancelled"}



class Up:
    """`robustlab up` in a subprocess on a free port with a scratch data directory."""

    def __init__(self, workers: int, log: Path) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="robustlab-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix = f"rlbench:{uuid.uuid4().hex[:8]}:"
        env = {**os.environ, "ROBUSTLAB_KEY_PREFIX": prefix, "ROBUSTLAB_QUEUE": prefix.rstrip(":"),
               "ROBUSTLAB_MAX_QUEUED_JOBS_PER_TENANT": "100000"}
        env.pop("ROBUSTLAB_API_KEYS", None)
        env.pop("ROBUSTLAB_API_KEYS_FILE", None)
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "robustlab.cli", "up", "--port", str(self.port), "--workers", str(workers),
             "--data-dir", str(self.data_dir)], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        keys = self.data_dir / "api-keys"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"`robustlab up` exited with {self.process.returncode}; see {self.log.name}")
            try:
                if keys.exists() and httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return keys.read_text().strip().split(":", 1)[1]
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"`robustlab up` not ready within {timeout:g}s; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)  # jobs, artifacts and Redis data of this run only


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(ordered), "mean_ms": 1e3 * statistics.fmean(ordered), "p50_ms": 1e3 * pick(0.50),
            "p90_ms": 1e3 * pick(0.90), "p99_ms": 1e3 * pick(0.99), "max_ms": 1e3 * ordered[-1]}


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.codes: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: list[str] = []

    async def call(self, http: httpx.AsyncClient, endpoint: str, method: str, url: str, ok: tuple[int, ...],
                   **kwargs: Any) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response = await http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.errors.append(f"{endpoint}: {type(exc).__name__} {exc}")
            return None
        self.latencies[endpoint].append(time.perf_counter() - start)
        self.codes[endpoint][response.status_code] += 1
        if response.status_code not in ok:
            self.errors.append(f"{endpoint}: HTTP {response.status_code} {response.text[:200]}")
            return None
        return response


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def enqueue_to_start(http: httpx.AsyncClient, runs: int, job_timeout: float) -> dict[str, Any]:
    """Submit to an idle worker; time the 202 → started_at (server) and → first `running` seen (client)."""
    server, client = [], []
    for _ in range(runs):
        response = await http.post("/v1/jobs", json={"kind": "compare", "spec": TINY_SPEC})
        accepted = time.perf_counter()
        response.raise_for_status()
        job_id = response.json()["id"]
        seen_running: float | None = None
        deadline = accepted + job_timeout
        job: dict[str, Any] = {}
        while time.perf_counter() < deadline:
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            if seen_running is None and job["status"] != "queued":
                seen_running = time.perf_counter() - accepted
                if job.get("started_at"):
                    # created_at is stamped before the 202 is sent: the server-side enqueue-to-start.
                    server.append(_parse_time(job["started_at"]) - _parse_time(job["created_at"]))
            if job["status"] in FINISHED:
                break
            await asyncio.sleep(0.005 if seen_running is None else 0.1)
        if seen_running is None:
            raise SystemExit(f"job {job_id} did not start within {job_timeout:g}s: is a worker running?")
        client.append(seen_running)
        if job.get("status") != "succeeded":
            print(f"  note: job {job_id} ended {job.get('status')}: {job.get('error')}", file=sys.stderr)
        await asyncio.sleep(0.5)  # let the worker go idle again (back in its blocking dequeue)
    return {"server_created_to_started": _stats(server), "client_202_to_running_seen": _stats(client)}


async def load(http: httpx.AsyncClient, pollers: int, submitters: int, duration: float, poll_interval: float,
               submit_interval: float, max_requests: int) -> dict[str, Any]:
    recorder = Recorder()
    # Jobs to poll: a few cancelled at once (their record no longer changes: mostly 304s).
    targets = []
    for _ in range(10):
        response = await recorder.call(http, "setup", "POST", "/v1/jobs", (202,),
                                       json={"kind": "compare", "spec": TINY_SPEC})
        if response is not None:
            targets.append(response.json()["id"])
            await recorder.call(http, "setup", "POST", f"/v1/jobs/{targets[-1]}/cancel", (200, 202))
    if not targets:
        raise SystemExit(f"cannot create jobs to poll: {recorder.errors[:3]}")
    stop_at = time.perf_counter() + duration
    budget = [max_requests]

    def more() -> bool:
        budget[0] -= 1
        return budget[0] >= 0 and time.perf_counter() < stop_at

    async def poller() -> None:
        job_id = random.choice(targets)
        etag: str | None = None
        await asyncio.sleep(random.uniform(0, poll_interval))  # spread the first wave
        while more():
            headers = {"If-None-Match": etag} if etag else {}
            response = await recorder.call(http, "GET /v1/jobs/{id}", "GET", f"/v1/jobs/{job_id}", (200, 304),
                                           headers=headers)
            if response is not None and response.status_code == 200:
                etag = response.headers.get("ETag")
            if poll_interval:
                await asyncio.sleep(poll_interval * random.uniform(0.8, 1.2))

    async def submitter() -> None:
        while more():
            response = await recorder.call(http, "POST /v1/jobs", "POST", "/v1/jobs", (202,),
                                           json={"kind": "compare", "spec": TINY_SPEC})
            if response is not None:
                await recorder.call(http, "POST /v1/jobs/{id}/cancel", "POST",
                                    f"/v1/jobs/{response.json()['id']}/cancel", (200, 202))
            await asyncio.sleep(submit_interval)

    started = time.perf_counter()
    await asyncio.gather(*(poller() for _ in range(pollers)), *(submitter() for _ in range(submitters)))
    elapsed = time.perf_counter() - started
    endpoints = {}
    for endpoint, values in recorder.latencies.items():
        if endpoint == "setup":
            continue
        endpoints[endpoint] = {**_stats(values), "per_second": len(values) / elapsed,
                               "status_codes": dict(recorder.codes[endpoint])}
    total = sum(len(v) for k, v in recorder.latencies.items() if k != "setup")
    return {"pollers": pollers, "submitters": submitters, "poll_interval_s": poll_interval,
            "seconds": elapsed, "requests": total, "requests_per_second": total / elapsed,
            "errors": len(recorder.errors), "first_errors": recorder.errors[:5], "endpoints": endpoints}


TRAINING_SPEC: dict[str, Any] = {
    **TINY_SPEC, "name": "bench-training",
    "dataset": {"name": "digits", "train_size": 1200, "test_size": 100, "seed": 0},
    "model": {"architecture": "mlp", "params": {"hidden": [256, 256]}},
    "training": {"epochs": 500, "batch_size": 8},
}

FLOOD = """
import sys, threading, httpx
url, key, clients = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = ["name: flood", "dataset: {name: digits}", "model:", "  architecture: mlp", "  params:", "    hidden: [16]"]
i = 0
while sum(len(l) + 1 for l in lines) < 245_000:
    lines.append(f"    extra_{i}: {{a: [1, 2, 3], b: 'text {i}'}}"); i += 1
text = "\\n".join(lines + ["regularizers: [{name: erm, kind: none}]"])
counts = {"ok": 0, "error": 0}
def flood():
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        while True:
            try:
                ok = c.post("/v1/specs/validate", json={"spec_text": text}).status_code == 200
            except httpx.HTTPError:
                ok = False
            counts["ok" if ok else "error"] += 1
            print(counts["ok"], counts["error"], flush=True)
for _ in range(clients):
    threading.Thread(target=flood, daemon=True).start()
threading.Event().wait()
"""


async def with_background(http: httpx.AsyncClient, url: str, key: str, kind: str, run: Any) -> dict[str, Any]:
    """Run the load (`run`) while a job trains or while validations flood the API; returns its result."""
    if kind == "idle":
        return dict(await run())
    if kind == "training":
        job_id = (await http.post("/v1/jobs", json={"kind": "compare", "spec": TRAINING_SPEC})).json()["id"]
        deadline = time.perf_counter() + 120
        while (await http.get(f"/v1/jobs/{job_id}")).json()["progress"]["stage"] != "training":
            if time.perf_counter() > deadline:
                raise SystemExit(f"the training job {job_id} did not start training within 120 s")
            await asyncio.sleep(0.2)
        try:
            result = dict(await run())
        finally:
            await http.post(f"/v1/jobs/{job_id}/cancel")
        result["background"] = f"job {job_id} training"
        return result
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, url, key, "10"], stdout=subprocess.PIPE, text=True)
    try:
        await asyncio.sleep(3.0)  # all ten validations in flight
        result = dict(await run())
    finally:
        flood.kill()
        out, _ = flood.communicate(timeout=30)
    last = (out.strip().splitlines() or ["0 0"])[-1].split()
    result["background"] = f"10 clients validating 245 KB specs: {last[0]} answered 200, {last[1]} errors"
    return result


async def main_async(args: argparse.Namespace, url: str, key: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.pollers + args.submitters + 10,
                          max_keepalive_connections=args.pollers + args.submitters + 10)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=30.0) as http:
        result: dict[str, Any] = {"url": url, "cpus": os.cpu_count()}
        if args.start_runs:
            print(f"enqueue-to-start: {args.start_runs} jobs on an idle worker ...", file=sys.stderr)
            result["enqueue_to_start"] = await enqueue_to_start(http, args.start_runs, args.job_timeout)
        for kind in args.while_.split(","):
            print(f"load while {kind}: {args.pollers} pollers, {args.submitters} submitters, {args.duration:g}s ...",
                  file=sys.stderr)

            def run() -> Any:
                return load(http, args.pollers, args.submitters, args.duration, args.poll_interval,
                            args.submit_interval, args.max_requests)

            name = "load" if kind == "idle" else f"load_while_{kind}"
            result[name] = await with_background(http, url, key, kind, run)
            print(_summary({name: result[name]}), file=sys.stderr)  # each phase as soon as it is done
        return result


def _summary(result: dict[str, Any]) -> str:
    lines = []
    start = result.get("enqueue_to_start")
    if start:
        s, c = start["server_created_to_started"], start["client_202_to_running_seen"]
        if s:
            lines.append(f"enqueue-to-start (server created→started): p50 {s['p50_ms']:.0f} ms, "
                         f"max {s['max_ms']:.0f} ms (n={s['n']})")
        lines.append(f"enqueue-to-start (client 202→running seen): p50 {c['p50_ms']:.0f} ms, "
                     f"max {c['max_ms']:.0f} ms (n={c['n']})")
    for name, load_ in result.items():
        if not name.startswith("load"):
            continue
        lines.append(f"{name}: {load_['requests']} requests in {load_['seconds']:.1f}s = "
                     f"{load_['requests_per_second']:.0f}/s, errors {load_['errors']}"
                     + (f" ({load_['background']})" if load_.get("background") else ""))
        for endpoint, s in load_["endpoints"].items():
            lines.append(f"  {endpoint:28s} n={s['n']:6d} p50 {s['p50_ms']:6.1f} ms  p99 {s['p99_ms']:6.1f} ms  "
                         f"max {s['max_ms']:6.1f} ms  {s['per_second']:7.1f}/s  {s['status_codes']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service (default: start `robustlab up` on a free port)")
    parser.add_argument("--api-key", default=os.environ.get("ROBUSTLAB_API_KEY"))
    parser.add_argument("--workers", type=int, default=1, help="workers of the `robustlab up` started here")
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="s between one poller's requests (0: none)")
    parser.add_argument("--submitters", type=int, default=4)
    parser.add_argument("--submit-interval", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=20.0, help="s of load")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop the load after this many")
    parser.add_argument("--start-runs", type=int, default=10, help="enqueue-to-start samples (0: skip)")
    parser.add_argument("--job-timeout", type=float, default=120.0)
    parser.add_argument("--while", dest="while_", default="idle",
                        help="comma-separated backgrounds of the load phase: idle, training, validating")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    up = None
    if args.url:
        if not args.api_key:
            parser.error("--url needs --api-key (or ROBUSTLAB_API_KEY)")
        url, key = args.url, args.api_key
    else:
        up = Up(args.workers, Path(tempfile.gettempdir()) / "robustlab-bench-up.log")
        print(f"starting `robustlab up` on {up.url} (log: {up.log.name}) ...", file=sys.stderr)
    try:
        if up is not None:
            url, key = up.url, up.wait_ready()
        result = asyncio.run(main_async(args, url, key))
    finally:
        if up is not None:
            up.stop()
    print(_summary(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
