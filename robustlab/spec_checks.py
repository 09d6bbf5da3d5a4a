"""What `robustlab validate` checks beyond the spec's schema, without running anything.

A spec can be valid and still fail at run time: the npz file it names is not there, a Sobolev
teacher's checkpoint path is wrong, a timm / torchvision architecture name has a typo, an upload id
is another tenant's or was deleted. Each is found here in a second or so:

- `file_problems`: the files the spec names (relative to the working directory, as at run time) and
  the model file given with `--model`;
- `library_problems`: timm / torchvision names against the installed library's list (imports the
  library, and so torch, only for such a spec; no weights are downloaded: robustlab never does);
- `upload_problems`: upload ids (dataset, Sobolev teachers) against the caller's uploads on a server.

Torch-free at import; each returns `core.specs.Problem`s, printed like the schema's.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from core.specs import ExperimentSpec, NpzDataset, UploadedDataset, is_user_model
from core.specs.dataset import UPLOAD_ID_PATTERN
from core.specs.loading import Problem
from core.specs.regularizers import Sobolev
from robustlab.model_files import MODEL_SUFFIXES, ModelFileError, check_model_file
from service.client import ClientError, RobustlabClient

UPLOAD_ID = re.compile(UPLOAD_ID_PATTERN)


def _missing(path: Path, what: str) -> str:
    where = "" if path.is_absolute() else f" (relative paths start in the working directory, {Path.cwd()})"
    return f"{what} {path} does not exist or is not a file{where}: check the path"


def _teachers(spec: ExperimentSpec) -> list[tuple[int, str]]:
    return [(i, str(r.teacher)) for i, r in enumerate(spec.regularizers) if isinstance(r, Sobolev)]


def file_problems(spec: ExperimentSpec, model_file: Path | None = None) -> list[Problem]:
    """Files the spec (and --model) names that are not there or not of a kind robustlab reads."""
    problems = []
    if isinstance(spec.dataset, NpzDataset) and not spec.dataset.path.is_file():
        problems.append(Problem("dataset.path", _missing(spec.dataset.path, "the dataset file")))
    runs = {r.name for r in spec.regularizers}
    for i, teacher in _teachers(spec):
        if teacher in runs or teacher == "dataset" or UPLOAD_ID.match(teacher):
            continue
        path = Path(teacher)
        if path.suffix.lower() in MODEL_SUFFIXES and not path.is_file():
            problems.append(Problem(f"regularizers[{i}].teacher", _missing(path, "the teacher checkpoint")))
    if model_file is not None:
        try:
            check_model_file(model_file)
        except ModelFileError as exc:
            problems.append(Problem("--model", str(exc)))
    return problems


def library_problems(spec: ExperimentSpec) -> list[Problem]:
    """A timm / torchvision architecture name the installed library does not have (with the closest names)."""
    model = spec.model
    if not is_user_model(model) or model.format not in ("timm", "torchvision"):
        return []
    library = model.format
    if importlib.util.find_spec(library) is None:
        extra = "pip install 'robustlab[models]' (or timm)" if library == "timm" else "pip install torchvision"
        return [Problem("model.format", f"{library} is not installed, so {model.name!r} cannot be checked or "
                                        f"built: {extra}")]
    from models.sources.errors import ModelSourceError  # torch from here on: only for such a spec
    from models.sources.named import library_names, unknown_name

    try:
        names = library_names(library)
    except ModelSourceError as exc:
        return [Problem("model.format", str(exc))]
    if model.name in names:
        return []
    return [Problem("model.name", str(unknown_name(library, model.name, names)))]


def _uploads(spec: ExperimentSpec) -> list[tuple[str, str, str]]:
    """(field path, kind, id) of every upload the spec names."""
    wanted: list[tuple[str, str, str]] = []
    if isinstance(spec.dataset, UploadedDataset):
        wanted.append(("dataset.id", "dataset", spec.dataset.id))
    wanted += [(f"regularizers[{i}].teacher", "model", t) for i, t in _teachers(spec) if UPLOAD_ID.match(t)]
    return wanted


def upload_ids(spec: ExperimentSpec) -> list[str]:
    return [upload_id for _, _, upload_id in _uploads(spec)]


def upload_problems(spec: ExperimentSpec, client: RobustlabClient) -> list[Problem]:
    """Upload ids the spec names that the server does not know for this caller (or at all)."""
    problems = []
    for path, kind, upload_id in _uploads(spec):
        try:
            (client.dataset if kind == "dataset" else client.model)(upload_id)
        except ClientError as exc:
            if exc.status == 404:
                problems.append(Problem(path, f"{client.base_url} has no {kind} upload {upload_id} of yours (another "
                                              f"key's uploads are not visible, deleted ones are gone): upload it "
                                              f"with `robustlab upload {kind} FILE` and use the id it prints"))
            else:
                problems.append(Problem(path, f"cannot check the {kind} upload {upload_id}: {exc.message}"))
    return problems
