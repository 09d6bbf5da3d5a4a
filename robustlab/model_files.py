"""Model files on the client side, torch-free: which files robustlab reads, what describes them, and
what a registry state_dict needs to be rebuilt on a server (`robustlab upload model`, `evaluate
--server`, `gate`).

A robustlab checkpoint's architecture is read from its safetensors header with the safetensors
library (numpy, no torch); any other file (.pt/.pth state_dict, .onnx) is described by a spec's
`model` section, so a CI machine needs neither torch nor a GPU to send a model to a server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from core.specs import ExperimentSpec, SpecError, SyntheticDataset, UploadedDataset, is_user_model, parse_spec
from service.client import RobustlabClient

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".onnx")
REFUSED_SUFFIXES = {
    ".pt2": "torch.export archives are refused (torch's loader unpickles their payloads): export to ONNX",
    ".ts": "TorchScript is refused (loading it runs code): export to ONNX, or save a state_dict",
    ".pkl": "pickled files are refused (loading them runs code): save a state_dict (.safetensors/.pt) or ONNX",
    ".pickle": "pickled files are refused (loading them runs code): save a state_dict (.safetensors/.pt) or ONNX",
}


class ModelFileError(Exception):
    """A model file (or its description) robustlab cannot use; the message says why and what to do."""


def checkpoint_metadata(path: Path) -> dict[str, Any] | None:
    """The robustlab metadata of a .safetensors file (None for other files or none stored).

    Read with the safetensors library (header only, no tensors; framework numpy, so no torch),
    which also enforces the format's own header limits; robustlab keeps its JSON under "robustlab".
    """
    if path.suffix.lower() != ".safetensors":
        return None
    broken = f"{path} is not a readable safetensors file (truncated or not a checkpoint): save or copy it again"
    if not path.is_file():
        raise ModelFileError(f"cannot read the checkpoint {path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = (handle.metadata() or {}).get("robustlab")
        return json.loads(meta) if isinstance(meta, str) else None
    except (SafetensorError, OSError, ValueError, RuntimeError):  # a damaged header, bad JSON
        raise ModelFileError(broken) from None


def check_model_file(path: Path) -> None:
    """A model file robustlab can read, by its suffix: the refusal says why and what to use instead."""
    suffix = path.suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise ModelFileError(f"{path.name}: {REFUSED_SUFFIXES[suffix]}")
    if suffix not in MODEL_SUFFIXES:
        raise ModelFileError(f"{path.name}: unknown model file type {suffix or '(no suffix)'!r}: use "
                             ".safetensors, .pt/.pth (a state_dict) or .onnx")
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist or is not a file: check the path")


def parse_model_json(text: str) -> dict[str, Any]:
    """A model section given as JSON text (--model-json), validated like a spec's `model` section."""
    try:
        model = json.loads(text)
    except ValueError as exc:
        raise ModelFileError(f"--model-json is not JSON ({exc}): e.g. "
                             "'{\"format\": \"onnx\", \"input_shape\": [1, 8, 8], \"num_classes\": 10}'") from None
    if not isinstance(model, dict):
        raise ModelFileError("--model-json must be a JSON object, the spec's model section")
    stub = {"name": "model-json", "dataset": {"name": "digits"}, "model": model,
            "regularizers": [{"name": "erm", "kind": "none"}]}
    try:
        return parse_spec(stub).model.model_dump(mode="json")
    except SpecError as exc:
        raise ModelFileError("--model-json: " + "; ".join(str(p) for p in exc.problems)) from None


def upload_section(path: Path, model: Any) -> dict[str, Any] | None:
    """The model section sent with a file: a user format's as declared; for a registry checkpoint that
    describes itself, what its metadata says; else the spec's (architecture and params)."""
    if model is None:
        return None
    if isinstance(model, dict):
        return model
    if is_user_model(model):
        return dict(model.model_dump(mode="json"))
    meta = checkpoint_metadata(path)
    if meta and meta.get("architecture"):
        return {"architecture": str(meta["architecture"]), "params": meta.get("params") or {}}
    return dict(model.model_dump(mode="json"))


# One sample's shape and the classes of the built-in datasets: what a registry .pt state_dict needs to be
# rebuilt on the server (a robustlab .safetensors checkpoint carries them in its metadata).
BUILTIN_SHAPES: dict[str, tuple[list[int], int]] = {
    "digits": ([1, 8, 8], 10), "mnist": ([1, 28, 28], 10), "fashion_mnist": ([1, 28, 28], 10),
    "cifar10": ([3, 32, 32], 10),
}


def needs_shape(path: Path, model: dict[str, Any] | None) -> bool:
    """A registry state_dict (.pt/.pth, or .safetensors without robustlab metadata) does not say the input
    shape and classes it was trained for."""
    if model is not None and "format" in model:
        return False
    suffix = path.suffix.lower()
    return suffix in (".pt", ".pth") or (suffix == ".safetensors" and checkpoint_metadata(path) is None)


def data_shape(client: RobustlabClient, spec: ExperimentSpec) -> tuple[list[int], int] | None:
    """(one sample's shape, classes) of the spec's dataset, without torch: built-in, synthetic, or an upload."""
    dataset = spec.dataset
    if dataset.name in BUILTIN_SHAPES:
        return BUILTIN_SHAPES[dataset.name]
    if isinstance(dataset, SyntheticDataset):
        return [dataset.n_features], dataset.n_classes
    if isinstance(dataset, UploadedDataset):
        info = client.dataset(dataset.id)
        if info.get("sample_shape") and info.get("num_classes"):
            return [int(v) for v in info["sample_shape"]], int(info["num_classes"])
    return None
