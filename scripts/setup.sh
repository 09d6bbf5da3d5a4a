#!/usr/bin/env bash
# Set up .venv for a CPU machine: robustlab (editable) with the extras given (default: models, i.e.
# timm), CPU torch through constraints/cpu.txt, the torchvision CPU compat hook, and the security
# constraints installed over torchattacks' spurious requests~=2.25.1 pin (pip warns about that pin;
# torchattacks never imports requests). Used by the README's main command and by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-models}"
python3 -m venv .venv
.venv/bin/pip install -q -c constraints/cpu.txt -e ".[$extras]" ./packaging/torchvision-cpu-compat
.venv/bin/pip install -q -r constraints/security.txt 2>&1 | grep -v "requires requests~=2.25.1\|dependency resolver\|dependency conflicts" || true
