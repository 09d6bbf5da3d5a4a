"""The dataset registry: every DatasetName maps to a loader that returns a DatasetBundle.

Loaders are plain functions of their spec (no registry import inside them, so each module can
be read and tested alone); this module wires them to the enum, and a test asserts that no
DatasetName is left without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.enums import DatasetName
from core.specs.dataset import (
    DigitsDataset,
    FunctionRegressionDataset,
    ImageFileDataset,
    NpzDataset,
    SyntheticDataset,
)
from models.datasets.base import DatasetBundle, select
from models.datasets.cifar import load_cifar10
from models.datasets.digits import load_digits
from models.datasets.download import default_data_dir, download_dataset
from models.datasets.errors import DatasetError
from models.datasets.functions import load_function_regression
from models.datasets.idx import load_idx_dataset
from models.datasets.npz import load_npz
from models.datasets.synthetic import load_synthetic
from models.registry import Registry

AnyDatasetSpec = DigitsDataset | ImageFileDataset | NpzDataset | SyntheticDataset | FunctionRegressionDataset
Loader = Callable[[Any], DatasetBundle]

DATASETS: Registry[DatasetName, Loader] = Registry("dataset", DatasetName)
DATASETS.register(DatasetName.DIGITS)(load_digits)
DATASETS.register(DatasetName.MNIST)(load_idx_dataset)
DATASETS.register(DatasetName.FASHION_MNIST)(load_idx_dataset)
DATASETS.register(DatasetName.CIFAR10)(load_cifar10)
DATASETS.register(DatasetName.NPZ)(load_npz)
DATASETS.register(DatasetName.SYNTHETIC)(load_synthetic)
DATASETS.register(DatasetName.FUNCTION_REGRESSION)(load_function_regression)


def load_dataset(spec: AnyDatasetSpec) -> DatasetBundle:
    """Load the dataset a spec describes (dispatch on spec.name); errors are DatasetError."""
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
