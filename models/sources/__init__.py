"""Models from users' files: the one entry point from a spec's `model` section and a file to a module.

- registry architectures: `models.checkpoints.load_model` (self-describing safetensors, or a
  `.pt`/`.pth` state_dict described by the spec's model section and the dataset's shape);
- `format: onnx`: checked protobuf converted by onnx2torch (`onnx_model`);
- `format: timm | torchvision`: the library's architecture by name + a state_dict (`named`).
User formats are wrapped in `InputConventions`, so every model takes [0, 1] C×H×W inputs and
returns logits. Never accepted: pickled modules, TorchScript, `torch.export` `.pt2` archives
(torch 2.13's loader unpickles payloads flagged as pickled, see docs/user-models.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.specs.model import Normalization, is_user_model
from models.checkpoints import SAFETENSORS_SUFFIX, TORCH_SUFFIXES, load_model
from models.sources.conventions import InputConventions, UserModel, check_fits_data, check_outputs
from models.sources.errors import ModelSourceError

log = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"
MODEL_SUFFIXES = (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES, ONNX_SUFFIX)
DEFAULT_MAX_BYTES = 2 * 1024**3  # local files; the service passes its upload cap
REFUSED = {
    ".pt2": "torch.export archives are refused: torch's loader falls back to unpickling their payloads",
    ".ts": "TorchScript is refused: loading it runs code",
    ".pkl": "pickled files are refused: loading them runs code",
    ".pickle": "pickled files are refused: loading them runs code",
}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in REFUSED:
        raise ModelSourceError(f"{path.name}: {REFUSED[suffix]}; use .onnx, .safetensors or a .pt state_dict")
    if suffix not in MODEL_SUFFIXES:
        raise ModelSourceError(f"{path.name}: unknown model file type {suffix or '(no suffix)'!r}; "
                               f"use one of {', '.join(MODEL_SUFFIXES)}")
    return suffix


def load_user_model(path: Path, spec: UserModel, device: str | torch.device = "cpu", *,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> InputConventions:
    """A user-format model (onnx / timm / torchvision) wrapped in its input conventions, checked, eval mode."""
    suffix = _suffix(path)
    if spec.format == "onnx":
        if suffix != ONNX_SUFFIX:
            raise ModelSourceError(f"model.format is onnx but {path.name} is not an .onnx file")
        from models.sources.onnx_model import load_onnx

        net: nn.Module = load_onnx(path, max_bytes)
    else:
        if suffix == ONNX_SUFFIX:
            raise ModelSourceError(f"{path.name} is an ONNX file: set model.format: onnx")
        from models.sources.named import load_named

        net = load_named(path, spec, device)
    model = InputConventions(net, spec).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # attacks need input gradients only
    check_outputs(model, spec, device)
    return model


def load_any_model(path: Path, model_spec: Any, *, input_shape: tuple[int, ...], num_outputs: int,
                   device: str | torch.device = "cpu", max_bytes: int = DEFAULT_MAX_BYTES) -> nn.Module:
    """The model in `path` as the spec's model section describes it, fitted to the dataset's shape."""
    if is_user_model(model_spec):
        check_fits_data(model_spec, tuple(input_shape), num_outputs)
        return load_user_model(path, model_spec, device, max_bytes=max_bytes)
    if _suffix(path) == ONNX_SUFFIX:
        raise ModelSourceError(f"{path.name} is an ONNX file: describe it with model: {{format: onnx, "
                               "input_shape: [...], num_classes: N}")
    if path.suffix.lower() == SAFETENSORS_SUFFIX and _describes_itself(path):
        return load_model(path, device=str(device))
    # A state_dict of a registry architecture: the spec's model section and the data describe it.
    normalization = model_spec.normalization
    mean, std = (normalization.mean, normalization.std) if isinstance(normalization, Normalization) else (None, None)
    return load_model(path, architecture=model_spec.architecture, params=model_spec.params.model_dump(mode="json"),
                      input_shape=list(input_shape), num_outputs=num_outputs, mean=mean, std=std,
                      device=str(device))


def _describes_itself(path: Path) -> bool:
    from models.checkpoints import read_metadata

    return bool(read_metadata(path))


__all__ = ["MODEL_SUFFIXES", "InputConventions", "ModelSourceError", "load_any_model", "load_user_model"]
