#!/usr/bin/env bash
# The test command of the README and of .ci/run: set up a venv, install the project with its test
# tools (CPU torch via constraints/cpu.txt), make sure headless Chromium is there for the dashboard's
# browser tests (Debian packages; they skip, saying why, where it cannot be installed), run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
            || echo "note: could not install chromium; the browser tests will be skipped" >&2
    else
        echo "note: chromium/chromedriver missing; install them (apt-get install chromium chromium-driver) or the browser tests skip" >&2
    fi
fi
bash scripts/setup.sh dev  # the venv: robustlab with its test tools (see scripts/setup.sh)
exec .venv/bin/python -m pytest "$@"
