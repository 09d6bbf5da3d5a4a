"""A user's own data from a .npz file, validated array by array.

The file comes from outside (an upload, a colleague), so it is opened with allow_pickle=False —
a pickled object array could run code on load — and every property the rest of the lab relies on
(inputs in [0, 1] and finite, integer labels, matching lengths) is checked here, with a message
naming the array and the fix, rather than failing deep inside training.

Arrays:
- x_test, y_test: required (evaluation needs them);
- x_train, y_train: both or neither. A file with only the test arrays is valid for evaluating a
  trained model: the bundle then has empty train tensors (0×… inputs, 0 labels).
- x: N×C×H×W, N×H×W (a channel axis is added) or N×D; float in [0, 1] or uint8 (divided by 255).
- y: 1-D integer class labels ≥ 0, one per row of x. num_outputs = max label + 1 over both splits.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from core.enums import Task
from core.specs.dataset import NpzDataset, UploadedDataset
from models.datasets.base import DatasetBundle, select
from models.datasets.errors import DatasetError

log = logging.getLogger(__name__)

_PICKLE_HINT = (
    "robustlab never unpickles data files: save plain numeric arrays, e.g. "
    "np.savez(path, x_train=x.astype(np.float32), y_train=y.astype(np.int64), ...)"
)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the archive; pickled content and non-npz files become DatasetError."""
    if not path.is_file():
        raise DatasetError(f"npz file {path} does not exist: check the path (it is read on the worker)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:  # a pickle stream or an object .npy, refused by allow_pickle=False
        raise DatasetError(
            f"{path} holds pickled data, not an .npz archive of plain arrays: {_PICKLE_HINT}"
        ) from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path} is not a readable .npz archive ({error}): save it again") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(
            f"{path} holds a single array, not an .npz archive: "
            "use np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    arrays = {}
    with loaded:
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except ValueError as error:  # "Object arrays cannot be loaded when allow_pickle=False"
                raise DatasetError(
                    f"array {key!r} in {path} is a pickled object array: {_PICKLE_HINT}"
                ) from error
            except (OSError, EOFError, zipfile.BadZipFile) as error:
                raise DatasetError(
                    f"array {key!r} in {path} is unreadable ({error}): save it again"
                ) from error
    return arrays


def _inputs(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """Validated inputs as float32 in [0, 1] with a channel axis for N×H×W images."""
    if x.dtype == np.uint8:
        values = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).sum())
            raise DatasetError(f"{key} in {path} has {bad} NaN or infinite values: clean them")
        if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise DatasetError(
                f"{key} in {path} spans [{float(x.min()):g}, {float(x.max()):g}], outside [0, 1]: "
                "scale it (e.g. divide 0..255 pixels by 255), or store uint8 pixels"
            )
        values = x.astype(np.float32)
    else:
        raise DatasetError(
            f"{key} in {path} has dtype {x.dtype}: use float in [0, 1] or uint8 pixels (0..255)"
        )
    if values.ndim == 3:
        values = values[:, None]  # N×H×W -> N×1×H×W
    if values.ndim not in (2, 4):
        raise DatasetError(
            f"{key} in {path} has shape {x.shape}: expected N×C×H×W, N×H×W or N×D"
        )
    return torch.from_numpy(np.ascontiguousarray(values))


def _labels(y: np.ndarray, key: str, n: int, path: Path) -> torch.Tensor:
    """Validated 1-D non-negative integer labels, one per input row."""
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{key} in {path} has dtype {y.dtype}: class labels must be integers "
            "(e.g. y.astype(np.int64); one-hot labels: y.argmax(1))"
        )
    if y.ndim != 1:
        raise DatasetError(f"{key} in {path} has shape {y.shape}: labels must be 1-D (one per sample)")
    if len(y) != n:
        raise DatasetError(f"{key} in {path} has {len(y)} labels for {n} inputs: they must match")
    if y.size and int(y.min()) < 0:
        raise DatasetError(f"{key} in {path} has negative label {int(y.min())}: use labels 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def load_npz(spec: NpzDataset) -> DatasetBundle:
    """The validated arrays of spec.path, subsampled to train_size / test_size (seeded)."""
    return load_npz_file(Path(spec.path), spec)


def load_npz_file(path: Path, spec: NpzDataset | UploadedDataset, *, shown_as: str | None = None) -> DatasetBundle:
    """The validated arrays of the .npz at `path`; messages name it `shown_as` (never a worker path)."""
    if shown_as is not None and path.is_file():
        try:
            return load_npz_file(path, spec)
        except DatasetError as error:
            raise DatasetError(str(error).replace(str(path), shown_as)) from None
    arrays = _load_arrays(path)
    missing = [k for k in ("x_test", "y_test") if k not in arrays]
    has_train = [k in arrays for k in ("x_train", "y_train")]
    if any(has_train) and not all(has_train):
        missing += [k for k, present in zip(("x_train", "y_train"), has_train, strict=True) if not present]
    if missing:
        raise DatasetError(
            f"{path} lacks {', '.join(missing)}: it needs x_test and y_test, and x_train with y_train "
            f"for training (it has {', '.join(sorted(arrays)) or 'no arrays'})"
        )
    x_test = _inputs(arrays["x_test"], "x_test", path)
    if len(x_test) == 0:
        raise DatasetError(f"x_test in {path} is empty: evaluation needs at least one sample")
    y_test = _labels(arrays["y_test"], "y_test", len(x_test), path)
    if all(has_train):
        x_train = _inputs(arrays["x_train"], "x_train", path)
        y_train = _labels(arrays["y_train"], "y_train", len(x_train), path)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DatasetError(
                f"x_train {tuple(x_train.shape[1:])} and x_test {tuple(x_test.shape[1:])} in {path} "
                "have different sample shapes: they must match"
            )
    else:
        log.info("%s has no training arrays: loading it for evaluation only", path)
        x_train = torch.empty((0, *x_test.shape[1:]), dtype=torch.float32)
        y_train = torch.empty(0, dtype=torch.int64)
    g = torch.Generator().manual_seed(spec.seed)
    try:
        train = select(len(x_train), spec.train_size, g)
        test = select(len(x_test), spec.test_size, g)
    except ValueError as error:
        raise DatasetError(f"{path}: {error} (train_size / test_size)") from error
    num_outputs = int(torch.cat([y_train, y_test]).max()) + 1
    log.info("npz %s: %d train, %d test, %d classes", path, len(train), len(test), num_outputs)
    return DatasetBundle(
        name="npz", task=Task.CLASSIFICATION,
        x_train=x_train[train].contiguous(), y_train=y_train[train],
        x_test=x_test[test].contiguous(), y_test=y_test[test], num_outputs=num_outputs,
    )
