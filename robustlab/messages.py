"""What the command line says: a spec's summary, its problems, and any error, whole.

Torch-free and free of the command modules, so that every command module (`cli`, `client_commands`,
`train_command`, the gate) can use it without importing another command module: the CLI's modules
import this one, never each other (`robustlab/cli.py` only registers them).

An error is printed with all its lines and its paths intact: a message that names the files that are
missing, or how to fetch them, is useful only when the reader sees the whole of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from core.specs import ExperimentSpec, SpecError


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def model_label(model: Any) -> str:
    """`mlp`, or for a user's own model file its format (and name): `onnx`, `timm:resnet18`."""
    architecture = getattr(model, "architecture", None)
    if architecture is not None:
        return str(architecture)
    name = getattr(model, "name", None)
    return f"{model.format}:{name}" if name else str(model.format)


def summary(spec: ExperimentSpec) -> dict[str, Any]:
    """What a valid spec will do, in numbers: what `validate` prints and `--json` returns."""
    regularizers, seeds = len(spec.regularizers), len(spec.seeds)
    return {
        "name": spec.name,
        "regularizers": regularizers,
        "seeds": seeds,
        "runs": regularizers * seeds,
        "architecture": model_label(spec.model),
        "dataset": spec.dataset.name,
        "epochs": spec.training.epochs,
        "attacks": len(spec.evaluation.attacks),
        "spec_sha256": spec.spec_hash(),
    }


def summary_line(spec: ExperimentSpec) -> str:
    """One line for a valid spec, e.g. `OK digits-quick: 12 regularizers × 3 seeds = 36 runs, ...`."""
    s = summary(spec)
    return (
        f"OK {s['name']}: {plural(s['regularizers'], 'regularizer')} × {plural(s['seeds'], 'seed')}"
        f" = {plural(s['runs'], 'run')}, {s['architecture']} on {s['dataset']},"
        f" {plural(s['epochs'], 'epoch')}, {plural(s['attacks'], 'attack')},"
        f" spec sha256 {s['spec_sha256'][:12]}"
    )


def echo_spec_error(spec_file: Path, exc: SpecError, *, err: bool) -> None:
    """One line for a file-level problem; otherwise a header and one line per problem."""
    if len(exc.problems) == 1 and not exc.problems[0].path:
        typer.echo(f"FAIL {spec_file}: {exc.problems[0].message}", err=err)
        return
    typer.echo(f"FAIL {spec_file}: {plural(len(exc.problems), 'problem')}", err=err)
    for problem in exc.problems:
        typer.echo(f"  {problem}", err=err)


def error_text(exc: BaseException) -> str:
    """The whole message of an exception, every line, quotes and paths as they are.

    `str(KeyError("x"))` is `'x'` (the repr), so a KeyError's message is its argument; an OSError
    says what failed on which path (`No such file or directory: nope.onnx`).
    """
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    elif isinstance(exc, OSError) and exc.strerror:
        paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
        text = f"{exc.strerror}: {' -> '.join(paths)}" if paths else exc.strerror
    else:
        text = str(exc)
    text = text.strip()
    return text or type(exc).__name__


def echo_error(error: BaseException | str) -> None:
    """`Error: ...` on stderr, with every line of the message."""
    typer.echo(f"Error: {error if isinstance(error, str) else error_text(error)}", err=True)
