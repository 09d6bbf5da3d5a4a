"""The dataset registry: every DatasetName maps to a loader that returns a DatasetBundle.

Loaders are plain functions of their spec (no registry import inside them, so each module can
be read and tested alone); this module wires them to the enum, and a test asserts that no
DatasetName is left without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.enums import DatasetName
from core.specs.dataset import (
    DigitsDataset,
    FunctionRegressionDataset,
    ImageFileDataset,
    NpzDataset,
    SyntheticDataset,
    UploadedDataset,
)
from models.datasets.base import DatasetBundle, select
from models.datasets.cifar import load_cifar10
from models.datasets.digits import load_digits
from models.datasets.download import default_data_dir, download_dataset
from models.datasets.errors import DatasetError
from models.datasets.functions import load_function_regression
from models.datasets.idx import load_idx_dataset
from models.datasets.npz import load_npz, load_npz_file
from models.datasets.synthetic import load_synthetic
from models.registry import Registry

AnyDatasetSpec = (
    DigitsDataset | ImageFileDataset | NpzDataset | UploadedDataset | SyntheticDataset | FunctionRegressionDataset
)
Loader = Callable[[Any], DatasetBundle]

DATASETS: Registry[DatasetName, Loader] = Registry("dataset", DatasetName)
DATASETS.register(DatasetName.DIGITS)(load_digits)
DATASETS.register(DatasetName.MNIST)(load_idx_dataset)
DATASETS.register(DatasetName.FASHION_MNIST)(load_idx_dataset)
DATASETS.register(DatasetName.CIFAR10)(load_cifar10)
DATASETS.register(DatasetName.NPZ)(load_npz)
DATASETS.register(DatasetName.SYNTHETIC)(load_synthetic)


@DATASETS.register(DatasetName.UPLOAD)
def _upload_without_file(spec: UploadedDataset) -> DatasetBundle:
    """Reached only without the uploaded file at hand (load_dataset resolves ids the worker fetched)."""
    raise DatasetError(
        f"dataset upload {spec.id} is not available here: uploaded datasets are used through the service "
        "(robustlab submit / --server); locally, name the file itself: {name: npz, path: FILE.npz}"
    )
DATASETS.register(DatasetName.FUNCTION_REGRESSION)(load_function_regression)


def load_dataset(spec: AnyDatasetSpec, *, upload_files: Mapping[str, Path] | None = None) -> DatasetBundle:
    """Load the dataset a spec describes (dispatch on spec.name); errors are DatasetError.

    `upload_files` maps upload ids to the local copies the worker fetched from the artifact store.
    """
    if isinstance(spec, UploadedDataset) and upload_files and spec.id in upload_files:
        return load_npz_file(upload_files[spec.id], spec, shown_as=f"dataset upload {spec.id}")
    return DATASETS[spec.name](spec)


__all__ = [
    "DATASETS",
    "AnyDatasetSpec",
    "DatasetBundle",
    "DatasetError",
    "default_data_dir",
    "download_dataset",
    "load_dataset",
    "select",
]
