"""The RQ task: `worker.tasks.run_job(job_id)` (the dotted path the job store hands to RQ).

Runs in the work horse that RQ forks for each job. Everything that needs torch is imported inside
the call chain (worker.science), never when this module loads, so the worker parent stays torch-free.
"""

from __future__ import annotations

from core.settings import get_settings


def run_job(job_id: str) -> None:
    """Run one execution of job_id; the outcome is written to the job record, not returned."""
    from worker.runner import JobRunner

    JobRunner(get_settings(), job_id).run()
