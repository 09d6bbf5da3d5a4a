"""The three kinds of execution of a unit-based job, inside the work horse (jobstore.units):

- plan: the job's first execution splits it into units (worker.science.plan_units) and hands it
  over to them (jobstore.units.plan), then ends without finishing the job;
- a unit: fetches what it needs from the units before it (a checkpoint, the teacher's, the
  baseline's) and its job's uploads, runs (training resumes from its own mirrored state), and
  publishes its files under `jobs/<job>/units/<unit>/result-<token>/` with the usual fenced finish;
- assemble: once every unit succeeded, the job's last execution fetches their files, merges them
  into the report and publishes it as the job's result.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from artifactstore import check_name
from core.jobs import JobKind, UnitKind
from core.specs import ExperimentSpec
from core.specs.regularizers import Sobolev
from jobstore.records import JobRecord
from jobstore.units import plan, units_of
from worker.progress import ExecutionStopped, ProgressReporter
from worker.resume import ResumeSync

if TYPE_CHECKING:
    from worker.runner import JobRunner
    from worker.science import ModelInputs

log = logging.getLogger(__name__)


class UnitMissing(RuntimeError):
    """A unit this one needs has no published result (it should have succeeded first)."""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


class UnitExecution:
    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.settings = runner.settings

    def _reporter(self, runs: list[tuple[str, int]], steps: int, **kwargs: object) -> ProgressReporter:
        r = self.runner
        return ProgressReporter(r.store, r.job_id, r.token, runs=runs, stage_steps=steps, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ plan
    def plan(self, record: JobRecord, spec: ExperimentSpec) -> str | None:
        """Plan the job's units; returns the first that may start at once (this process runs it next)."""
        r = self.runner
        reporter = self._reporter([], 1)
        reporter.report("planning", "splitting the job into work units", 0.0, force=True)
        uploads = r._fetch_uploads(record, spec)
        if record.kind is JobKind.EVALUATE:
            r._fetch_checkpoint(record)  # a missing or altered model fails the job now, not in every unit
        from worker.science import plan_units  # torch from here on (work horse only)

        works = plan_units(spec, record.kind, uploads)
        if r.heartbeat is not None:
            r.heartbeat.stop()  # the hand-over ends this execution's ownership: no beat may follow it
        ids = plan(r.store, record, r.token, works)
        if ids is None:
            raise ExecutionStopped(f"job {record.id}: cancelled or fenced out while planning")
        r._event("planned", units=len(ids))
        log.info("job %s: %d units queued", record.id, len(ids))
        return next((unit_id for unit_id, work in zip(ids, works, strict=True) if not work.after), None)

    # ------------------------------------------------------------------ one unit
    def _siblings(self, record: JobRecord) -> dict[str, JobRecord]:
        parent = self.runner.store.get(record.parent or "")
        if parent is None:
            raise UnitMissing(f"the job {record.parent} of this unit is gone")
        return {u.work.name: u for u in units_of(self.runner.store, parent) if u.work is not None}

    def _fetch(self, unit: JobRecord, name: str, into: Path) -> Path:
        """A file `name` that `unit` published, copied to `into/name`."""
        if not unit.result_prefix:
            raise UnitMissing(f"unit {unit.work.name if unit.work else unit.id!r} has no result yet")
        local = into / check_name(name)
        self.runner.artifacts.get_file(unit.result_prefix, name, local)
        return local

    def run_unit(self, record: JobRecord, spec: ExperimentSpec) -> list[str]:
        from worker import science  # torch from here on (work horse only)

        r, work = self.runner, record.work
        assert work is not None
        parent = r.store.get(record.parent or "")
        if parent is None:
            raise UnitMissing(f"the job {record.parent} of this unit is gone")
        uploads = r._fetch_uploads(record, spec)
        siblings = self._siblings(record)
        inputs_dir = r.work_dir / "units"
        if work.kind is UnitKind.TRAIN:
            resume = ResumeSync(r.artifacts, r.job_id, r.work_dir, still_owner=r._owner)
            restored = resume.restore()
            if restored:
                r._event("restored", files=restored)
            reporter = self._reporter([(work.run, work.seed)], 1, train_share=0.98, on_epoch=resume.sync,
                                      on_event=r._event)
            reporter.report("training", f"{work.name}: loading the data", 0.0, force=True)
            reg = spec.regularizer(work.run)
            teacher = None
            if isinstance(reg, Sobolev) and reg.teacher in siblings_runs(spec):
                unit = siblings[science.train_unit_name(reg.teacher, work.seed)]
                teacher = self._fetch(unit, science.checkpoint_name(reg.teacher, work.seed), inputs_dir / "teacher")
            names = science.run_train_unit(spec, work, r.work_dir, self.settings.device, reporter, uploads, teacher)
            resume.sync()
            return names
        reporter = self._reporter([], len(spec.evaluation.attacks) + (3 if work.finish else 1))
        reporter.report("evaluating", f"{work.name}: loading the model", 0.0, force=True)
        inputs = self._model_inputs(record, spec, parent, siblings, work.run, work.seed, inputs_dir)
        return science.run_eval_unit(spec, record.kind, work, inputs, r.work_dir, self.settings.device, reporter,
                                     uploads, self.settings.max_upload_bytes)

    def _model_inputs(self, record: JobRecord, spec: ExperimentSpec, parent: JobRecord,
                      siblings: dict[str, JobRecord], run: str, seed: int, into: Path) -> ModelInputs:
        from worker import science

        r = self.runner
        if record.kind is JobKind.EVALUATE:
            return science.ModelInputs(path=r._fetch_checkpoint(parent))
        name = science.checkpoint_name(run, seed)
        path = self._fetch(siblings[science.train_unit_name(run, seed)], name, into / "model")
        baseline = science.baseline_name(spec)
        surrogate = None
        if run != baseline:
            surrogate = self._fetch(siblings[science.train_unit_name(baseline, seed)],
                                    science.checkpoint_name(baseline, seed), into / "baseline")
        return science.ModelInputs(path=path, surrogate=surrogate, name=run, seed=seed)

    # ------------------------------------------------------------------ assemble
    def assemble(self, record: JobRecord, spec: ExperimentSpec) -> list[str]:
        from worker import science  # torch from here on (work horse only)

        r = self.runner
        reporter = self._reporter([], 3)
        reporter.report("reporting", "merging the units into the report", 0.99, force=True)
        uploads = r._fetch_uploads(record, spec)
        units = {u.work.name: u for u in units_of(r.store, record) if u.work is not None}
        into = r.work_dir / "units"
        models = []
        keys = [("", 0)] if record.kind is JobKind.EVALUATE else \
            [(name, seed) for seed in spec.seeds for name in spec.training_order()]
        for run, seed in keys:
            inputs = self._model_inputs(record, spec, record, units, run, seed, into / _slug(f"{run}-{seed}"))
            shards = [u for u in units.values() if u.work and u.work.kind is UnitKind.EVALUATE
                      and u.work.run == run and u.work.seed == seed]
            shards.sort(key=lambda u: u.work.start if u.work else 0)
            for unit in shards:
                folder = into / _slug(unit.work.name if unit.work else unit.id)
                if unit.work and unit.work.finish:
                    inputs.run_file = self._fetch(unit, science.RUN_FILE, folder)
                inputs.shards.append(self._fetch(unit, science.SHARD_FILE, folder))
            models.append(inputs)
            if record.kind is JobKind.COMPARE:  # the job's artifacts include every trained checkpoint
                target = r.work_dir / science.checkpoint_name(run, seed)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(inputs.path.read_bytes())
        return science.assemble(spec, record.kind, models, r.work_dir, self.settings.device, reporter, uploads,
                                self.settings.max_upload_bytes)


def siblings_runs(spec: ExperimentSpec) -> set[str]:
    """The run names of the spec (a Sobolev teacher named so is another unit's model)."""
    return {reg.name for reg in spec.regularizers}
