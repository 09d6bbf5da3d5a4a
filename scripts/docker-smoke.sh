#!/usr/bin/env bash
# Smoke test of the Docker deployment, for a machine with Docker (and Compose v2):
#   build both image targets, start redis + api + a worker, submit the demo job, fetch its report.
# Uses the GPU worker when `docker info` shows the nvidia runtime, else the CPU worker (profile cpu).
# Usage: scripts/docker-smoke.sh [SPEC (inside the image, default examples/digits-quick.yaml)]
# Leaves the report in ./docker-smoke-report/ and stops everything (volumes included) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SPEC=${1:-examples/digits-quick.yaml}
OUT=docker-smoke-report
export COMPOSE_PROJECT_NAME=robustlab-smoke
export ROBUSTLAB_API_KEYS="smoke:$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
KEY=${ROBUSTLAB_API_KEYS#smoke:}
URL=http://127.0.0.1:8000

cleanup() { docker compose --profile cpu down --volumes --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== build: cpu and cuda targets"
docker build --target cpu -t robustlab:cpu .
docker build --target cuda -t robustlab:cuda .
docker run --rm robustlab:cpu --version
docker run --rm --entrypoint id robustlab:cpu -u | grep -qv '^0$' || { echo "the cpu image runs as root"; exit 1; }
docker run --rm --entrypoint id robustlab:cuda -u | grep -qv '^0$' || { echo "the cuda image runs as root"; exit 1; }

echo "== compose config"
docker compose config -q

if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
    WORKER=worker
else
    echo "(no nvidia runtime: using the CPU worker)"
    WORKER=worker-cpu
fi

echo "== up: redis api $WORKER"
docker compose --profile cpu up -d redis api "$WORKER"
for _ in $(seq 60); do
    if curl -fsS "$URL/readyz" >/dev/null 2>&1; then break; fi
    sleep 2
done
curl -fsS "$URL/readyz" || { docker compose logs --tail 50; exit 1; }
echo

echo "== submit $SPEC and wait"
JOB=$(docker compose exec -T -e ROBUSTLAB_API_KEY="$KEY" api robustlab submit "$SPEC" --server "$URL")
echo "job $JOB"
for _ in $(seq 600); do
    STATUS=$(curl -fsS -H "Authorization: Bearer $KEY" "$URL/v1/jobs/$JOB" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    case "$STATUS" in succeeded|failed|cancelled) break ;; esac
    sleep 2
done
echo "status: $STATUS"
[ "$STATUS" = succeeded ] || { docker compose logs --tail 100 "$WORKER"; exit 1; }

echo "== fetch the report into $OUT/"
mkdir -p "$OUT"
for name in report report.html report.md results.csv; do
    target=$OUT/$name; [ "$name" = report ] && target=$OUT/report.json
    curl -fsS -H "Authorization: Bearer $KEY" "$URL/v1/jobs/$JOB/$name" -o "$target"
done
python3 -c "import json; r = json.load(open('$OUT/report.json')); print('report:', sorted(r)[:8])"
ls -l "$OUT"
echo "OK"
