"""Safe checkpoints: safetensors with JSON metadata, and `.pt` state_dicts through weights_only.

Why this module is strict (DESIGN §6): checkpoints arrive from users, and a pickle can run any
code when it is loaded. So: safetensors is the native format; `.pt`/`.pth` files are read only by
`torch.load(weights_only=True)` (never `weights_only=False`, no fallback); the model is always a
registry architecture, never code from the file; and keys, shapes, dtypes and finiteness are
checked before any tensor reaches the model. The model is first built on the meta device, so
metadata describing a huge network allocates nothing before it is compared with the file.
Every failure is a `CheckpointError` with one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from core.enums import Architecture
from models.architectures import NormalizedModel, build_model, validate_params

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = "robustlab"
SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth")
_REQUIRED = ("architecture", "params", "input_shape", "num_outputs")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what is wrong and how to fix it."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split()).split(". ")[0][:300]  # first sentence: torch's run long


def _names(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: NormalizedModel,
    *,
    architecture: str,
    params: Mapping[str, Any] | BaseModel,
    input_shape: Sequence[int],
    num_outputs: int,
    spec_hash: str | None,
    epoch: int | None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model` as safetensors, with everything needed to rebuild it in the metadata.

    Atomic (temp file in the same folder, then os.replace), so a crash never leaves a half-written
    checkpoint under the real name. Tensors that share storage (tied weights) are cloned, because
    safetensors refuses shared tensors; loading gives each name its value back.
    """
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"{path.name}: save checkpoints as {SAFETENSORS_SUFFIX} files")
    try:
        params_dict = validate_params(architecture, params).model_dump(mode="json")
        meta = {
            "format_version": FORMAT_VERSION, "architecture": Architecture(architecture).value,
            "params": params_dict, "input_shape": [int(v) for v in input_shape],
            "num_outputs": int(num_outputs), "spec_hash": spec_hash, "epoch": epoch,
            "extra": dict(extra or {}),
        }
        meta_json = json.dumps(meta, allow_nan=False, sort_keys=True)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot save {path.name}: {_one_line(exc)}") from exc

    tensors: dict[str, Tensor] = {}
    storages: set[int] = set()
    for name, value in model.state_dict().items():
        tensor = value.detach().cpu()
        storage = tensor.untyped_storage()
        whole = storage.nbytes() == tensor.numel() * tensor.element_size()
        if storage.data_ptr() in storages or not whole or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()  # a private, exactly-sized copy
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))  # same folder: atomic replace
    try:
        save_file(tensors, tmp_name, metadata={METADATA_KEY: meta_json})
        with open(tmp_name, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)  # only left behind when something failed
    logger.info("saved checkpoint %s (%s, epoch %s)", path, meta["architecture"], epoch)
    return path


def _parse_metadata(raw: Mapping[str, str] | None, name: str) -> dict[str, Any] | None:
    """The robustlab metadata of a safetensors header, checked; None when the file has none."""
    if not raw or METADATA_KEY not in raw:
        return None
    try:
        meta = json.loads(raw[METADATA_KEY])
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # json.JSONDecodeError is one
        raise CheckpointError(
            f"{name}: the robustlab metadata is bad JSON ({exc}); re-save the checkpoint") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: checkpoint format_version {meta.get('format_version')!r} is not the supported "
            f"{FORMAT_VERSION}; re-save it with this version of robustlab"
        )
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{name}: the metadata lacks {', '.join(missing)}; re-save it")
    if meta["architecture"] not in {m.value for m in Architecture}:
        known = ", ".join(m.value for m in Architecture)
        raise CheckpointError(
            f"{name}: unknown architecture {meta['architecture']!r} in the metadata; "
            f"robustlab builds only {known}"
        )
    return meta


def _check_file(path: Path) -> None:
    if not path.is_file():  # before any reader, for a message better than theirs
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file: check the path")


def _read_safetensors(path: Path, *, tensors: bool) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file ({_one_line(exc)}): it may be truncated "
            "or corrupted; copy or save it again"
        ) from None
    return state, _parse_metadata(raw, path.name)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The robustlab metadata of a `.safetensors` checkpoint (header only, no tensors read).

    Returns {} for a safetensors file saved without robustlab metadata.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"{path.name}: only {SAFETENSORS_SUFFIX} checkpoints carry metadata")
    return _read_safetensors(path, tensors=False)[1] or {}


def _refuse_compression_bomb(path: Path) -> None:
    """torch.save stores tensors uncompressed: a .pt zip that inflates far beyond its size is a bomb."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
            scripted = any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return  # torch.load reports the damage
    if scripted:
        raise CheckpointError(
            f"{path.name} is a TorchScript archive (torch.jit.save), which is refused: loading it runs code. "
            "Save the weights instead (torch.save(model.state_dict(), ...)) or export to ONNX"
        )
    if inflated > 4 * path.stat().st_size + 16 * 1024 * 1024:
        raise CheckpointError(
            f"{path.name} inflates to {inflated:,} bytes from {path.stat().st_size:,}: torch.save never compresses "
            "like that (a compression bomb?); save a plain state_dict with torch.save or use safetensors"
        )


def _read_torch(path: Path) -> dict[str, Tensor]:
    """A `.pt` state_dict through torch.load(weights_only=True) only: pickled code never runs."""
    if torch.__version__ < "2.10":
        raise CheckpointError(
            f"{path.name}: refusing .pt files with torch {torch.__version__} (weights_only bypasses "
            "before 2.10); upgrade torch or convert the checkpoint to safetensors"
        )
    _refuse_compression_bomb(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch.load raises many types; none of them ran the payload
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(
                f"{path.name} holds code or Python objects beyond tensors (or is not a PyTorch file): "
                "it was rejected by torch.load(weights_only=True) and NOT executed; save a plain "
                "state_dict (torch.save(model.state_dict(), ...)) or use safetensors"
            ) from None
        raise CheckpointError(
            f"{path.name} is not a readable PyTorch file ({type(exc).__name__}: {_one_line(exc)}): "
            "it may be truncated or corrupted; copy or save it again"
        ) from None
    # {"state_dict": {...}, "epoch": 3}-style wrappers: take the state_dict inside
    inner = [obj[k] for k in _WRAPPER_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)]
    obj = inner[0] if inner else obj
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state_dict; "
                              "save model.state_dict()")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"{path.name}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                                  "save only model.state_dict()")
    return dict(obj)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a `.safetensors` file or a `.pt`/`.pth` state_dict (weights_only), unchecked."""
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path, tensors=True)[0]
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    raise CheckpointError(f"{path.name}: unknown weights file type {suffix or '(no suffix)'!r}; "
                          "use .safetensors (preferred) or a .pt/.pth state_dict")


STATE_HINT = "load it with the architecture, params, input_shape and num_outputs it was saved with"


def check_state(state: dict[str, Tensor], expected: Mapping[str, Tensor], name: str, what: str,
                hint: str = STATE_HINT, error: type[CheckpointError] = CheckpointError) -> None:
    """Keys, shapes, dtypes and finiteness, before anything is copied into the model."""
    for key, tensor in expected.items():  # BatchNorm counters are optional in foreign files
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros(tensor.shape, dtype=tensor.dtype)
    structure: list[str] = []
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing:
        structure.append(f"missing keys {_names(missing)}")
    if unexpected:
        structure.append(f"unexpected keys {_names(unexpected)}")
    values: list[str] = []
    for key in (k for k in expected if k in state):
        want, got = expected[key], state[key]
        if got.layout != torch.strided:
            structure.append(f"{key} is a {got.layout} tensor, not a dense one")
        elif got.shape != want.shape:
            structure.append(f"{key} has shape {tuple(got.shape)} but the model expects {tuple(want.shape)}")
        elif got.is_floating_point() != want.is_floating_point() or got.is_complex():
            structure.append(f"{key} has dtype {got.dtype} but the model expects {want.dtype}")
        elif got.is_floating_point() and not bool(torch.isfinite(got).all()):
            values.append(f"{key} contains NaN or inf")
        elif key == "normalize.std" and not bool((got > 0).all()):
            values.append("normalize.std has values <= 0")
    if structure:
        raise error(f"{name} does not fit {what}: {'; '.join(structure[:6])}; {hint}")
    if values:
        raise error(
            f"{name} has unusable values: {'; '.join(values[:6])}; "
            "the training diverged or the file is damaged, use another checkpoint"
        )


def load_model(
    path: str | os.PathLike[str],
    *,
    architecture: str | None = None,
    params: Mapping[str, Any] | BaseModel | None = None,
    input_shape: Sequence[int] | None = None,
    num_outputs: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> NormalizedModel:
    """Rebuild a registry model from a checkpoint, checked, on `device`, in eval mode.

    `.safetensors` files saved by `save_checkpoint` describe themselves: arguments may only be given
    for files without metadata (or repeat what it says). `.pt`/`.pth` state_dicts need
    architecture, params ({} for the defaults), input_shape and num_outputs. A state_dict of the
    bare network (no `normalize.`/`net.` keys) gets identity normalization unless mean/std are given.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        state, meta = _read_safetensors(path, tensors=True)
    elif suffix in TORCH_SUFFIXES:
        state, meta = _read_torch(path), None
    else:
        raise CheckpointError(
            f"{path.name}: unknown checkpoint type {suffix or '(no suffix)'!r}; "
            "use .safetensors (preferred) or a .pt/.pth state_dict"
        )
    given: dict[str, Any] = {"architecture": architecture, "params": params, "input_shape": input_shape,
             "num_outputs": num_outputs}
    if meta is not None:
        conflicts = [k for k, v in given.items() if v is not None and not _same(k, v, meta)]
        if conflicts:
            raise CheckpointError(
                f"{path.name} describes itself in its metadata, which disagrees on {', '.join(conflicts)}; "
                "omit those arguments"
            )
        given = {k: meta[k] for k in _REQUIRED}
    elif any(v is None for v in given.values()):
        lacking = ", ".join(k for k, v in given.items() if v is None)
        raise CheckpointError(
            f"{path.name} has no robustlab metadata: pass {lacking} "
            "(params={} for the defaults) to say which registry model it holds"
        )
    arch, shape = str(given["architecture"]), [int(v) for v in given["input_shape"]]

    full = "normalize.mean" in state or "normalize.std" in state or (
        bool(state) and all(k.startswith("net.") for k in state))
    if full and (mean is not None or std is not None):
        raise CheckpointError(f"{path.name} carries its own normalization: do not pass mean/std")
    if not full:
        state = {f"net.{k}": v for k, v in state.items()}
    stats = _skeleton_stats(state, shape, full, mean, std)
    try:
        validated = validate_params(arch, given["params"])
        with torch.device("meta"):  # allocates nothing; the file's tensors fill it after the checks
            model = build_model(arch, validated, shape, int(given["num_outputs"]), *stats)
    except (ValueError, TypeError, KeyError) as exc:
        source = "its metadata" if meta is not None else "the arguments"
        raise CheckpointError(f"{path.name}: cannot build {arch} from {source}: {_one_line(exc)}") from None
    expected = model.state_dict()
    if not full:  # a bare net gets the mean/std arguments, or the identity
        for key, values, fill in (("normalize.mean", stats[0], 0.0), ("normalize.std", stats[1], 1.0)):
            data = [fill] * expected[key].numel() if values is None else values
            state[key] = torch.tensor(data, dtype=torch.float32).reshape(expected[key].shape)
    what = f"{arch} {validated.model_dump()}, input_shape {tuple(shape)}, {given['num_outputs']} outputs"
    check_state(state, expected, path.name, what)

    model = model.to_empty(device=device)  # every tensor is then overwritten by the checked state
    model.load_state_dict(state, strict=True)
    model.eval()
    logger.info("loaded checkpoint %s (%s)", path, arch)
    return model


def _skeleton_stats(
    state: Mapping[str, Tensor], shape: Sequence[int], full: bool,
    mean: Sequence[float] | None, std: Sequence[float] | None,
) -> tuple[list[float] | None, list[float] | None]:
    """Normalization statistics to build the model with before its weights are checked.

    A full state_dict brings its own (sized like the file where both fit; the values are loaded
    later, and the shape check catches a wrong size); a bare net uses the arguments or None.
    """
    if not full:
        return (None if mean is None else list(mean)), (None if std is None else list(std))
    size = shape[0] if len(shape) == 3 else 1
    if len(shape) == 1 and "normalize.mean" in state and state["normalize.mean"].numel() == shape[0]:
        size = shape[0]
    return [0.0] * size, [1.0] * size


def _same(key: str, value: Any, meta: Mapping[str, Any]) -> bool:
    """Whether an argument repeats what the metadata says (params compared after validation)."""
    try:
        if key == "params":
            arch = meta["architecture"]
            return bool(validate_params(arch, value) == validate_params(arch, meta["params"]))
        if key == "input_shape":
            return [int(v) for v in value] == list(meta[key])
        return bool(value == meta[key])
    except (ValueError, TypeError):
        return False
