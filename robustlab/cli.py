"""The `robustlab` command line: list what a spec may name, validate specs, train them locally.

This module must stay importable without torch: `list`, `validate` and `--version` run on
machines without it (CI, the service's container). Commands that need torch import `models`
inside their function, never at the top of this module (tests/unit/test_dependency_rules.py).
Exit codes: 0 success, 1 an invalid spec or unreadable file, 2 a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from core import catalog
from core.specs import ExperimentSpec, SpecError, is_user_model, load_spec
from robustlab import __version__
from robustlab.messages import echo_error, echo_spec_error, model_label, summary, summary_line
from robustlab.threads import ThreadsOption

app = typer.Typer(
    name="robustlab",
    help="Adversarial-robustness lab: train models with input-gradient regularizers, attack them, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold specs or paths a user did not ask to print
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Adversarial-robustness lab: train models with input-gradient regularizers, attack them, compare."""


# --- list ------------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(parameter: dict[str, Any]) -> str:
    """`0 ≤ x ≤ 1e+06`, or the choices `a|b`: what values a parameter takes (its items' for lists)."""
    if "enum" in parameter:  # plus any non-literal branch of the type, e.g. a Normalization mapping
        others = [t for t in parameter["type"].split(" | ") if t[:1] != "'" and t != "None"]
        return "|".join([*(str(v) for v in parameter["enum"]), *others])
    limits = parameter.get("items", parameter)
    low = [f"{_number(limits[k])} {op} " for k, op in (("minimum", "≤"), ("exclusive_minimum", "<"))
           if k in limits]
    high = [f" {op} {_number(limits[k])}" for k, op in (("maximum", "≤"), ("exclusive_maximum", "<"))
            if k in limits]
    return f"{''.join(low[:1])}x{''.join(high[:1])}" if low or high else ""


def _parameter_line(parameter: dict[str, Any]) -> str:
    """`weight = 1.0  (0 ≤ x ≤ 1e+06)`, or `teacher (required)`."""
    if parameter["required"]:
        head = f"{parameter['name']} (required)"
    else:
        default = parameter["default"]
        shown = _number(default) if isinstance(default, float) else json.dumps(default)
        head = f"{parameter['name']} = {shown}"
    bounds = _bounds(parameter)
    return f"{head}  ({bounds})" if bounds else head


def _table(category: str, entries: list[dict[str, Any]]) -> Table:
    table = Table(title=category, show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("parameters = defaults")
    table.add_column("description")
    for entry in entries:
        lines = "\n".join(_parameter_line(p) for p in entry["parameters"]) or "-"
        # Text, not markup: defaults such as [256, 256] contain brackets that rich reads as styles.
        table.add_row(Text(entry["name"]), Text(lines), Text(entry["description"]))
    return table


@app.command("list")
def list_command(
    category: Annotated[
        str | None, typer.Argument(metavar="CATEGORY", help=f"One of: {', '.join(catalog.CATEGORIES)}.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    models: Annotated[str | None, typer.Option(
        "--models", metavar="LIBRARY", help="Instead: the architecture names `model: {format: timm | torchvision, "
        "name: ...}` may use, as the installed library lists them (needs torch).")] = None,
) -> None:
    """List the regularizers, architectures, datasets or attacks a spec may name, with their parameters."""
    if models is not None:
        _list_library_models(models, as_json)
        return
    if category is None:
        typer.echo(f"Error: name a CATEGORY ({', '.join(catalog.CATEGORIES)}) or --models timm|torchvision", err=True)
        raise typer.Exit(2)
    try:
        entries = catalog.catalog(category)
    except KeyError:
        typer.echo(
            f"Error: unknown category {category!r}: use one of {', '.join(catalog.CATEGORIES)}", err=True
        )
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(entries, indent=2, ensure_ascii=False))
    else:
        Console().print(_table(category, entries))


def _list_library_models(library: str, as_json: bool) -> None:
    if library not in ("timm", "torchvision"):
        typer.echo(f"Error: --models {library!r}: use timm or torchvision", err=True)
        raise typer.Exit(2)
    from models.sources.errors import ModelSourceError  # torch from here on
    from models.sources.named import library_names

    try:
        names = library_names(library)
    except ModelSourceError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(names, indent=2) if as_json else "\n".join(names))


# --- validate --------------------------------------------------------------------------------------


@app.command()
def validate(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="A spec file (YAML or JSON).")],
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"valid", "problems", "summary"} as JSON.')
    ] = False,
    model_file: Annotated[Path | None, typer.Option(
        "--model", "--checkpoint", metavar="FILE", help="Also check the model file the spec will evaluate "
        "(`robustlab evaluate --model FILE`): it exists and is of a kind robustlab reads.")] = None,
    server: Annotated[str | None, typer.Option(
        "--server", metavar="URL", help="Also check that the upload ids the spec names (dataset, Sobolev "
        "teachers) are yours on this service.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="With --server: the API key "
                                                "(or env ROBUSTLAB_API_KEY).")] = None,
) -> None:
    """Check a spec without running it: exit 0 with a summary, or 1 with every problem.

    Besides the schema: the files it names exist (an npz dataset, a teacher checkpoint, --model),
    a timm / torchvision architecture name is one the installed library has (no weights are
    fetched), and with --server its upload ids are the caller's.
    """
    from robustlab.spec_checks import file_problems, library_problems, upload_ids, upload_problems

    try:
        spec = load_spec(spec_file)
        problems = file_problems(spec, model_file) + library_problems(spec)
        if server and upload_ids(spec):
            with client_commands._connect(server, api_key) as client:
                problems += upload_problems(spec, client)
        if problems:
            raise SpecError(str(spec_file), problems)
    except SpecError as exc:
        if as_json:
            problems_json = [{"path": p.path, "message": p.message} for p in exc.problems]
            typer.echo(json.dumps({"valid": False, "problems": problems_json, "summary": None}, indent=2))
        else:
            echo_spec_error(spec_file, exc, err=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"valid": True, "problems": [], "summary": summary(spec)}, indent=2))
    else:
        typer.echo(summary_line(spec))


# --- train -----------------------------------------------------------------------------------------
# Needs torch: `models` is imported inside the command, never at module level, so that `list`,
# `validate` and `--version` keep working without torch (tests/unit/test_dependency_rules.py).


@app.command()
def train(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Experiment spec to train.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (checkpoints, state, summary).")],
    device: Annotated[
        str, typer.Option("--device", help="auto | cpu | cuda | mps (default: the spec's training.device)")
    ] = "",
    threads: ThreadsOption = None,
) -> None:
    """Train every regularizer × seed of a spec locally; resumes where an earlier call stopped."""
    console = Console()
    try:
        spec = load_spec(spec_file)
    except SpecError as exc:
        echo_spec_error(spec_file, exc, err=True)
        raise typer.Exit(1) from None
    if device not in ("", "auto", "cpu", "cuda", "mps"):
        typer.echo(f"Error: unknown device {device!r}: use auto, cpu, cuda or mps", err=True)
        raise typer.Exit(2)
    if is_user_model(spec.model):
        typer.echo(f"Error: model.format {model_label(spec.model)!r} describes a model file to evaluate, which train "
                   "cannot train: use `robustlab evaluate --model FILE --spec SPEC`, or name a registry "
                   "architecture (`robustlab list architectures`)", err=True)
        raise typer.Exit(1)
    from robustlab.train_command import run_training  # torch from here on

    try:
        run_training(spec, out, device or None, console, threads=threads)
    except (ValueError, RuntimeError, OSError) as exc:  # DatasetError, CheckpointError, device, disk
        echo_error(exc)  # every line: a missing dataset's message lists its files and how to fetch them
        raise typer.Exit(1) from None


# --- compare / evaluate ----------------------------------------------------------------------------


def _load_or_exit(spec_file: Path) -> ExperimentSpec:
    try:
        return load_spec(spec_file)
    except SpecError as exc:
        echo_spec_error(spec_file, exc, err=True)
        raise typer.Exit(1) from None


def _run_or_exit(action: Any) -> Any:
    """Run a torch-side action; a bad dataset, checkpoint, device or disk: its whole message, exit 1."""
    try:
        return action()
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        echo_error(exc)
        raise typer.Exit(1) from None


DeviceOption = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps (default: the spec's)")]


@app.command()
def compare(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Experiment spec.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for reports and checkpoints.")],
    device: DeviceOption = "",
    threads: ThreadsOption = None,
) -> None:
    """Train and evaluate every regularizer × seed; write report.json/.md/.html, results.csv."""
    spec = _load_or_exit(spec_file)
    from robustlab.compare_command import run_compare  # torch from here on

    _run_or_exit(lambda: run_compare(spec, out, device or None, Console(), threads=threads))


@app.command()
def evaluate(
    model_file: Annotated[Path, typer.Option(
        "--model", "--checkpoint", metavar="FILE",
        help="A model file: a robustlab .safetensors checkpoint, a .pt/.pth state_dict, or .onnx "
             "(timm/torchvision: .safetensors weights); the spec's model section describes it.")],
    spec_file: Annotated[Path, typer.Option("--spec", help="Spec: its model section describes FILE; its dataset "
                                            "and evaluation sections say what to attack it with.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for the report.")],
    device: DeviceOption = "",
    server: Annotated[str | None, typer.Option(
        "--server", metavar="URL", help="Evaluate on this robustlab service instead: upload FILE (and a local "
        "npz dataset), run an evaluate job, download its report into --out.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="With --server: the API key "
                                                "(or env ROBUSTLAB_API_KEY).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="With --server: give up after this many s.")]
    = None,
    threads: ThreadsOption = None,
) -> None:
    """Evaluate a model file (any format the spec's model section describes) with the spec's dataset and attacks."""
    spec = _load_or_exit(spec_file)
    from robustlab.model_files import ModelFileError, check_model_file

    try:
        check_model_file(model_file)  # a wrong path is said before any dataset is loaded or uploaded
    except ModelFileError as exc:
        echo_error(exc)
        raise typer.Exit(1) from None
    if server:
        _evaluate_on_server(spec, model_file, out, server, api_key, timeout)
        return
    from robustlab.compare_command import run_evaluate  # torch from here on

    _run_or_exit(lambda: run_evaluate(spec, model_file, out, device or None, Console(), threads=threads))


def _evaluate_on_server(spec: ExperimentSpec, model_file: Path, out: Path, server: str, api_key: str | None,
                        timeout: float | None) -> None:
    from robustlab.gate import GateError
    from robustlab.gate.server import evaluate_on_server
    from robustlab.model_files import ModelFileError

    try:
        out.mkdir(parents=True, exist_ok=True)
        report, job_id, page = evaluate_on_server(server, api_key, model_file, spec, out, timeout)
    except (GateError, ModelFileError, OSError) as exc:
        echo_error(exc)
        raise typer.Exit(1) from None
    console = Console()
    if report.runs:  # the same summary as a local evaluate: the model, intervals, checks
        from robustlab.evaluation_summary import evaluation_table

        console.print(evaluation_table(report))
    console.print(f"job {job_id}: report files in {out}; the job's page: {page}", highlight=False)


# --- the service: `up` runs it on this machine; `submit`, `status`, `report` talk to it over HTTP -----
# Torch-free modules (the workers import torch in their job processes only).

from robustlab import client_commands, up_command  # noqa: E402

app.command("up")(up_command.up)
app.command("api")(up_command.api)
app.command("submit")(client_commands.submit)
app.command("status")(client_commands.status)
app.command("report")(client_commands.report)
app.add_typer(client_commands.upload_app, name="upload")

from robustlab.gate import command as gate_command  # noqa: E402  (torch-free; --local imports torch when it runs)

app.command("gate")(gate_command.gate)


from robustlab import worker_command  # noqa: E402  (torch-free; registered here, defined there)

app.command("worker")(worker_command.worker)


@app.command()
def render(
    report_file: Annotated[Path, typer.Argument(metavar="REPORT.json", help="A report.json of compare or evaluate.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.md/.html, results.csv, plots/*.svg.")],
) -> None:
    """Redraw every report file (tables, HTML page, CSV, standalone SVG charts) from a report.json."""
    from pydantic import ValidationError

    from core.reports import Report
    from reports.files import write_report

    try:
        report = Report.model_validate_json(report_file.read_bytes())
    except OSError as exc:
        typer.echo(f"Error: cannot read {report_file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(top level)"
        typer.echo(f"Error: {report_file} is not a robustlab report.json: {where}: {first['msg']} "
                   f"({exc.error_count()} problem(s))", err=True)
        raise typer.Exit(1) from None
    for path in write_report(report, out):
        typer.echo(str(path))


def main() -> None:
    """Console-script entry point (`robustlab = "robustlab.cli:main"` in pyproject.toml)."""
    app(prog_name="robustlab")


if __name__ == "__main__":
    main()
