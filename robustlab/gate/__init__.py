"""`robustlab gate`: a model judged against a policy, for CI (exit 0 pass, 1 fail, 2 cannot judge).

- `policy.py`: the policy file (what must be reached), read like a spec;
- `verdict.py`: a report (and a baseline) judged against a policy; pure, no I/O;
- `output.py`: the verdict as a markdown summary, JUnit XML and JSON;
- `server.py`: evaluation on a robustlab service (upload, evaluate job, follow, fetch);
- `command.py`: the `robustlab gate` command that ties them together.

Torch-free: `--local` imports the science only when it evaluates. The gate depends on the shared
CLI helpers (`robustlab.messages`, `robustlab.model_files`), never on another command module.
"""

from __future__ import annotations


class GateError(Exception):
    """The gate cannot judge (exit 2); the message says what is wrong and how to fix it."""
