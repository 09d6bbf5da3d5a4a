"""How long `robustlab gate --local` takes on this machine for the CI example (examples/ci/), as the
GitHub Actions and GitLab CI examples run it: wall and CPU seconds per run, for the default thread
choice and for given --threads values, with the machine's cores and load (a busy machine is slower).

    python benchmarks/ci_gate_time.py                      # default threads, then --threads 1 and 2
    python benchmarks/ci_gate_time.py --threads 1 --repeat 3

The result goes to docs/user-guide.md ("How long a gate takes").
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "examples" / "ci"


def gate(threads: int | None, out: Path) -> tuple[float, float, int, str]:
    """One gate run in a child process: (wall s, CPU s of the child, exit code, its verdict line)."""
    command = [sys.executable, "-m", "robustlab.cli", "gate", "--local", "--policy", str(CI / "policy.yaml"),
               "--spec", str(CI / "spec.yaml"), "--model", str(CI / "model.onnx"), "--junit", str(out / "gate.xml")]
    command += ["--threads", str(threads)] if threads else []
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ROBUSTLAB_URL", "GITHUB_STEP_SUMMARY")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode not in (0, 1):
        raise SystemExit(f"the gate could not judge (exit {result.returncode}):\n{result.stderr[-2000:]}")
    verdict = [line for line in result.stderr.splitlines() if line.startswith("robustlab gate: ")]
    return wall, cpu, result.returncode, verdict[-1] if verdict else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="*", default=[0, 1, 2], help="0: the default choice")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from robustlab.threads import available_cores, choose_threads

    cores = available_cores()
    print(f"{cores} cores available to this process (os.cpu_count() {os.cpu_count()}); default choice: "
          f"{choose_threads(None, {}).threads} thread(s); load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        for threads in args.threads:
            for _ in range(args.repeat):
                wall, cpu, code, verdict = gate(threads or None, Path(scratch))
                label = f"--threads {threads}" if threads else "default threads"
                print(f"{label:>16}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, exit {code}, "
                      f"load average {os.getloadavg()[0]:.1f}; {verdict}")


if __name__ == "__main__":
    main()
