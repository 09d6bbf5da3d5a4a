"""CIFAR-10 from the BINARY batches (`cifar-10-batches-bin/*.bin`), never the pickled version.

The python version of CIFAR-10 is a set of pickles, and unpickling a downloaded file runs
whatever code it carries; the binary version is plain records of 1 label byte + 3,072 pixel bytes
(1,024 red, 1,024 green, 1,024 blue, row-major 32×32), so reading it needs no trust at all. Each
batch holds exactly RECORDS_PER_BATCH records, which lets truncation be caught by the length.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from core.enums import Task
from core.specs.dataset import ImageFileDataset
from models.datasets.base import DatasetBundle
from models.datasets.download import CIFAR10_DIR, default_data_dir, download_dataset
from models.datasets.errors import DatasetError
from models.datasets.idx import split_one_set, subsample, to_unit

log = logging.getLogger(__name__)

RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_BATCH = 10_000  # every official batch; tests lower it to write small fakes
NUM_CLASSES = 10
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
_FIX = "delete it and download again (download: true), or replace it with a good copy"


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One binary batch: images N×3×32×32 uint8 (converted after selection), labels int64."""
    data = path.read_bytes()
    expected = RECORDS_PER_BATCH * RECORD_BYTES
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than a CIFAR-10 batch"
        raise DatasetError(
            f"{path} is {what}: a binary CIFAR-10 batch holds {RECORDS_PER_BATCH} records of "
            f"{RECORD_BYTES} bytes = {expected} bytes, the file has {len(data)}; {_FIX}"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(RECORDS_PER_BATCH, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if int(labels.max()) >= NUM_CLASSES:
        raise DatasetError(
            f"{path} has label byte {int(labels.max())} ≥ {NUM_CLASSES}: corrupted, or the "
            f"CIFAR-100 binary format; {_FIX}"
        )
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return torch.from_numpy(images), torch.from_numpy(labels)


def read_batches(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read_batch(p) for p in paths]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _batch_dir(data_dir: Path) -> Path:
    """`data_dir/cifar-10-batches-bin` as the archive unpacks, or data_dir itself if it holds them."""
    nested = data_dir / CIFAR10_DIR
    if not (nested / TEST_BATCH).is_file() and (data_dir / TEST_BATCH).is_file():
        return data_dir
    return nested


def ensure_batches(spec: ImageFileDataset, names: tuple[str, ...]) -> list[Path]:
    """Paths of the needed batches, downloading the archive when allowed; else a clear error."""
    data_dir = spec.data_dir or default_data_dir(spec.name)
    folder = _batch_dir(data_dir)
    missing = [folder / n for n in names if not (folder / n).is_file()]
    if missing:
        if not spec.download:
            listing = "\n  ".join(str(p) for p in missing)
            raise DatasetError(
                f"cifar10 files are missing:\n  {listing}\nset download: true, or unpack "
                f"cifar-10-binary.tar.gz (the binary version, not the python one) into {data_dir}"
            )
        download_dataset(spec.name, data_dir)
        folder = data_dir / CIFAR10_DIR
        still = [folder / n for n in names if not (folder / n).is_file()]
        if still:
            raise DatasetError(f"the downloaded CIFAR-10 archive lacks {still}: delete it and retry")
    return [folder / n for n in names]


def load_cifar10(spec: ImageFileDataset) -> DatasetBundle:
    """CIFAR-10 as a DatasetBundle; split_test_set draws both parts from test_batch.bin only."""
    if spec.split_test_set:
        x, y = read_batches(ensure_batches(spec, (TEST_BATCH,)))
        parts = split_one_set(x, y, spec)
    else:
        paths = ensure_batches(spec, (*TRAIN_BATCHES, TEST_BATCH))
        parts = subsample(*read_batches(paths[:-1]), *read_batches(paths[-1:]), spec)
    x_train, y_train, x_test, y_test = to_unit(parts[0]), parts[1], to_unit(parts[2]), parts[3]
    log.info("cifar10: %d train, %d test images", len(x_train), len(x_test))
    return DatasetBundle(
        name=spec.name, task=Task.CLASSIFICATION, x_train=x_train, y_train=y_train,
        x_test=x_test, y_test=y_test, num_outputs=NUM_CLASSES,
    )
