"""MNIST and Fashion-MNIST from the standard IDX files (gzip or plain).

The IDX header promises the array's shape; the payload must hold exactly that many bytes, so a
truncated or padded file fails here with the file's name and the fix, instead of surfacing later
as a reshape error or, worse, as silently shifted images.
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from core.enums import Task
from core.specs.dataset import ImageFileDataset
from models.datasets.base import DatasetBundle, select
from models.datasets.download import default_data_dir, download_dataset
from models.datasets.errors import DatasetError

log = logging.getLogger(__name__)

IDX_UBYTE = 0x08
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
NUM_CLASSES = 10
_FIX = "delete it and download again (download: true), or replace it with a good copy"


def _read_bytes(path: Path) -> bytes:
    """The decompressed bytes (plain files are read as they are); gzip damage becomes DatasetError."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DatasetError(f"{path} is a corrupted or truncated gzip file ({error}): {_FIX}") from error


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one unsigned-byte IDX file with `ndim` dimensions, checking header and length."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"{path} is too short to hold an IDX header: {_FIX}")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != IDX_UBYTE or dims != ndim:
        raise DatasetError(
            f"{path} is not a {ndim}-d unsigned-byte IDX file (magic {data[:4].hex()}, expected "
            f"0000{IDX_UBYTE:02x}{ndim:02x}): wrong file or corrupted; {_FIX}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} ends inside its IDX header: {_FIX}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    promised = int(np.prod(shape, dtype=np.int64))
    got = len(data) - header
    if got != promised:
        what = "truncated" if got < promised else "longer than its header says"
        raise DatasetError(
            f"{path} is {what}: the header promises {promised} bytes for shape {shape}, "
            f"the file holds {got}; {_FIX}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N×1×28×28 uint8 and labels int64 from one IDX pair, cross-checked.

    Pixels stay uint8 until the samples are selected: a quarter of the memory of float32.
    """
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path} holds {images.shape[1:]} images, expected 28×28: {_FIX}")
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels: "
            f"the pair does not belong together; {_FIX}"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DatasetError(f"{labels_path} has label {int(labels.max())} ≥ {NUM_CLASSES}: {_FIX}")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # N×1×28×28 uint8 (copy: writable)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _locate(data_dir: Path, name: str) -> Path | None:
    """The .gz file, or its decompressed twin (as torchvision leaves them), or None."""
    for candidate in (data_dir / name, data_dir / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def ensure_files(spec: ImageFileDataset, names: tuple[str, ...]) -> list[Path]:
    """Paths of the needed files, downloading them when allowed; else an error listing them."""
    data_dir = spec.data_dir or default_data_dir(spec.name)
    found = [_locate(data_dir, n) for n in names]
    if all(p is not None for p in found):
        return [p for p in found if p is not None]
    missing = [data_dir / n for n, p in zip(names, found, strict=True) if p is None]
    if not spec.download:
        listing = "\n  ".join(str(p) for p in missing)
        hint = "" if spec.split_test_set else " (or set split_test_set: true to need only the t10k files)"
        raise DatasetError(
            f"{spec.name} files are missing:\n  {listing}\n"
            f"set download: true, or place the standard files there{hint}"
        )
    download_dataset(spec.name, data_dir, files=[p.name for p in missing])
    return [data_dir / n for n in names]


def split_sizes(n: int, train_size: int | None, test_size: int | None) -> tuple[int, int]:
    """Sizes of two disjoint parts of n samples: unset sizes share what is left (half each)."""
    if train_size is None and test_size is None:
        train_size = n // 2
    if train_size is None:
        train_size = n - (test_size or 0)
    if test_size is None:
        test_size = n - train_size
    if train_size + test_size > n or train_size < 0 or test_size < 0:
        raise DatasetError(
            f"train_size {train_size} + test_size {test_size} exceed the {n} samples available "
            "for disjoint parts: lower them"
        )
    return train_size, test_size


def split_one_set(
    x: torch.Tensor, y: torch.Tensor, spec: ImageFileDataset
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint seeded train and test parts of one set (the official test set)."""
    n_train, n_test = split_sizes(len(x), spec.train_size, spec.test_size)
    perm = select(len(x), None, torch.Generator().manual_seed(spec.seed))
    train, test = perm[:n_train], perm[n_train : n_train + n_test]
    return x[train], y[train], x[test], y[test]


def subsample(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
    spec: ImageFileDataset,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded train_size / test_size subsets of the official splits."""
    g = torch.Generator().manual_seed(spec.seed)
    train = select(len(x_train), spec.train_size, g)
    test = select(len(x_test), spec.test_size, g)
    return x_train[train], y_train[train], x_test[test], y_test[test]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to contiguous float32 in [0, 1]."""
    return (x.to(torch.float32) / 255.0).contiguous()


def load_idx_dataset(spec: ImageFileDataset) -> DatasetBundle:
    """MNIST or Fashion-MNIST as a DatasetBundle (see ImageFileDataset for the fields)."""
    if spec.split_test_set:
        x, y = read_split(*ensure_files(spec, TEST_FILES))
        parts = split_one_set(x, y, spec)
    else:
        paths = ensure_files(spec, TRAIN_FILES + TEST_FILES)
        parts = subsample(*read_split(paths[0], paths[1]), *read_split(paths[2], paths[3]), spec)
    x_train, y_train, x_test, y_test = to_unit(parts[0]), parts[1], to_unit(parts[2]), parts[3]
    log.info("%s: %d train, %d test images", spec.name, len(x_train), len(x_test))
    return DatasetBundle(
        name=spec.name, task=Task.CLASSIFICATION, x_train=x_train, y_train=y_train,
        x_test=x_test, y_test=y_test, num_outputs=NUM_CLASSES,
    )

