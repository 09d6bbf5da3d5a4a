"""`robustlab gate`: evaluate a model file and pass or fail it against a policy, for CI.

The model file (--model, alias --checkpoint) is a robustlab .safetensors checkpoint, a .pt/.pth
state_dict of a registry architecture, or an .onnx graph (or timm/torchvision weights); the spec's
`model` section describes it (docs/user-models.md).
Exit codes: 0 the policy is met, 1 it is not (whatever the model: one near chance misses its thresholds
like any other, and the summary names the likely cause), 2 the gate could not judge (bad policy or spec,
broken model file, unreachable server, wrong key, failed job, a metric the report lacks). Every
error goes whole to stderr; the markdown summary goes to stdout (and is appended to
$GITHUB_STEP_SUMMARY when that is set, and written to --summary FILE); --junit and --json write the
same verdict for CI tools.

Where it evaluates: --local runs `robustlab evaluate` in this process (torch is imported only
then); --server URL (or ROBUSTLAB_URL) uploads the model file (with the spec's model section, and
a local npz dataset) and runs an evaluate job there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from core.reports import Report
from core.specs import ExperimentSpec, SpecError, load_spec
from robustlab.gate import GateError
from robustlab.gate.output import GateRun, headline, junit_xml, markdown, verdict_json
from robustlab.gate.policy import JOB_ID, GatePolicy, PolicyError, load_policy, same_eps
from robustlab.gate.server import evaluate_on_server, fetch_baseline
from robustlab.gate.verdict import Verdict, judge
from robustlab.messages import error_text
from robustlab.model_files import ModelFileError, check_model_file, checkpoint_metadata
from robustlab.threads import ThreadsOption


def _one_line(problems: list[tuple[str, str]]) -> str:
    return "; ".join(f"{path}: {message}" if path else message for path, message in problems)


def _policy(path: Path) -> GatePolicy:
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise GateError(f"bad policy {path}: {_one_line(exc.problems)}") from None


def _spec(path: Path) -> ExperimentSpec:
    try:
        return load_spec(path)
    except SpecError as exc:
        raise GateError(f"bad spec {path}: {_one_line([(p.path, p.message) for p in exc.problems])}") from None


def unevaluated(policy: GatePolicy, spec: ExperimentSpec) -> list[str]:
    """Requirements the spec's evaluation cannot produce: found before minutes of evaluation, not after."""
    radii = [(a.kind, a.norm, eps) for a in spec.evaluation.attacks for eps in a.eps]
    missing = []
    for want in policy.min_robust_accuracy:
        kinds = {k for k, _, _ in radii} if want.attack == "worst_case" else {want.attack}
        if not any(k in kinds and n == want.norm and same_eps(e, want.eps) for k, n, e in radii):
            missing.append(f"{want.attack} {want.norm} eps={want.eps:g}")
    return missing


def _baseline(policy: GatePolicy, override: str | None, policy_file: Path,
              server: str | None, api_key: str | None) -> tuple[Report | None, str | None]:
    """The baseline report: --baseline (a path relative to here), else the policy's (relative to the
    policy file, so the policy means the same from any directory); a job id is fetched from the server."""
    source = (override or policy.baseline or "").strip()
    if not source and policy.max_regression is not None:
        raise GateError(f"the policy {policy_file} sets max_regression but names no baseline to compare with: pass "
                        "--baseline REPORT.json|JOB_ID, or add `baseline: ...` to the policy")
    if not source:
        return None, None
    if policy.max_regression is None:  # only --baseline can get here: the policy checks its own pair
        raise GateError(f"--baseline needs max_regression in the policy {policy_file} (the absolute drop allowed, "
                        "e.g. 0.02; 0 allows none)")
    if JOB_ID.match(source.lower()):
        return fetch_baseline(server, api_key, source), f"job {source}"
    path = Path(source)
    if override is None and not path.is_absolute():
        path = policy_file.parent / path
    try:
        return Report.model_validate_json(path.read_bytes()), str(path)
    except OSError as exc:
        raise GateError(f"cannot read the baseline report {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise GateError(f"the baseline {path} is not a robustlab report.json ({exc.error_count()} problems, "
                        f"first: {exc.errors()[0]['msg']})") from None


def _evaluate_locally(spec: ExperimentSpec, checkpoint: Path, out: Path | None, threads: int | None,
                      policy: GatePolicy, base: Report | None, run: GateRun) -> Verdict:
    """Attack in rounds until the policy is decided (robustlab.gate.early); the report to `out`."""
    from reports.files import write_report
    from robustlab.gate.early import evaluate_early  # torch from here on
    from robustlab.threads import apply_threads

    console = Console(stderr=True, soft_wrap=True)  # CI logs: one line per message, never wrapped
    choice = apply_threads(threads)
    console.print(f"torch threads: {choice.threads} ({choice.reason}; --threads N to change)", highlight=False)
    started = time.monotonic()

    def say(stage: str) -> None:
        console.print(f"[{time.monotonic() - started:5.0f}s] {stage}", highlight=False, markup=False)

    try:
        result = evaluate_early(spec, checkpoint, policy, base, progress=say)
    except (ValueError, RuntimeError, OSError, KeyError) as exc:  # CheckpointError, ModelSourceError, DatasetError
        raise GateError(f"evaluating {checkpoint} failed: {error_text(exc)}") from None
    run.samples_used, run.samples_available, run.rounds = result.samples_used, result.samples_available, result.rounds
    run.report = result.report
    if out is not None:
        written = write_report(result.report, out)
        console.print("wrote " + ", ".join(str(f) for f in written), highlight=False)
        run.report_location = str((out / "report.html").resolve())
    return result.verdict


def _write(path: Path, text: str, *, append: bool = False) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if append else "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise GateError(f"cannot write {path}: {exc.strerror or exc}") from None


def _emit(verdict: Verdict, run: GateRun, junit: Path | None, json_out: Path | None,
          summary_file: Path | None = None) -> None:
    summary = markdown(verdict, run)
    typer.echo(summary)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        _write(Path(step_summary), summary + "\n", append=True)
    if summary_file is not None:
        _write(summary_file, summary)
    if junit is not None:
        _write(junit, junit_xml(verdict, run))
    if json_out is not None:
        _write(json_out, verdict_json(verdict, run))


def _judge(run: GateRun, policy_file: Path, checkpoint: Path, spec_file: Path, server: str | None,
           api_key: str | None, out: Path | None, baseline: str | None, timeout: float | None,
           threads: int | None = None) -> Verdict:
    policy, spec = _policy(policy_file), _spec(spec_file)
    run.spec_name = spec.name
    missing = unevaluated(policy, spec)
    if missing:
        attacks = ", ".join(f"{a.kind} {a.norm} {a.eps}" for a in spec.evaluation.attacks)
        raise GateError(f"the policy asks for {', '.join(missing)}, which the spec {spec_file} does not evaluate "
                        f"(it evaluates {attacks}): add them to its evaluation.attacks, or change the policy")
    check_model_file(checkpoint)
    base, run.baseline = _baseline(policy, baseline, policy_file, server, api_key)
    if run.mode == "server":
        checkpoint_metadata(checkpoint)  # a broken file is reported here, before anything is uploaded
        report, run.job_id, run.report_location = evaluate_on_server(
            server, api_key, checkpoint, spec, out, timeout)
    else:
        return _evaluate_locally(spec, checkpoint, out, threads, policy, base, run)
    run.report = report
    run.samples_used = run.samples_available = max((r.samples for r in report.runs), default=0) or None
    return judge(report, policy, base)


def gate(
    policy_file: Annotated[Path, typer.Option("--policy", metavar="POLICY.yaml", help="What must be reached.")],
    checkpoint: Annotated[Path, typer.Option(
        "--model", "--checkpoint", metavar="FILE",
        help="The model file: .safetensors, .pt/.pth (state_dict) or .onnx, described by the spec's model section.")],
    spec_file: Annotated[Path, typer.Option(
        "--spec", metavar="SPEC.yaml", help="Its model section describes FILE; its dataset and attacks evaluate it.")],
    server: Annotated[str | None, typer.Option("--server", metavar="URL", help="Evaluate on this robustlab API "
                                               "(or env ROBUSTLAB_URL; with neither: --local)")] = None,
    local: Annotated[bool, typer.Option("--local", help="Evaluate in this process (needs torch).")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", metavar="FILE", help="Write JUnit XML here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Write the verdict as JSON.")]
    = None,
    summary_file: Annotated[Path | None, typer.Option(
        "--summary", metavar="FILE", help="Write the markdown summary here too (GitLab, Jenkins; on GitHub it is "
        "appended to $GITHUB_STEP_SUMMARY anyway).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key (or env ROBUSTLAB_API_KEY).")] = None,
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Keep report.json/.html/.md here "
                                             "(a later run's baseline).")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", metavar="REPORT|JOB_ID", help="The report to "
                                                 "compare with (a path relative to here, or a job id), instead of the "
                                                 "policy's `baseline:`; the policy's max_regression is the drop "
                                                 "allowed.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Server: give up waiting after this many s.")]
    = None,
    threads: ThreadsOption = None,
) -> None:
    """Evaluate a model file and check it against a policy: exit 0 pass, 1 fail, 2 error (CI gate)."""
    started = time.monotonic()
    server = server or (None if local else os.environ.get("ROBUSTLAB_URL") or None)
    run = GateRun(mode="server" if server else "local", checkpoint=str(checkpoint), server=server)
    try:
        if local and server:
            raise GateError("--local and --server exclude each other: choose where to evaluate")
        typer.echo(f"robustlab gate: evaluating {checkpoint.name} "
                   f"{'on ' + server if server else 'locally'} ...", err=True)
        verdict = _judge(run, policy_file, checkpoint, spec_file, server, api_key, out, baseline, timeout, threads)
    except (GateError, ModelFileError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        verdict = Verdict(criteria=[], errors=[str(exc)])
    run.seconds = time.monotonic() - started
    try:
        _emit(verdict, run, junit, json_out, summary_file)
    except GateError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(headline(verdict), err=True)
    raise typer.Exit(verdict.exit_code)

