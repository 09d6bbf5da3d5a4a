"""Dataset specs: a discriminated union on `name`."""

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.specs.base import FieldError, Spec

Size = Annotated[int, Field(gt=0, description="number of samples to draw (seeded); omit for all")]
DIGITS_IMAGES = 1797
OFFICIAL_SPLITS = {"mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}


class _Split(Spec):
    """Fields every dataset takes: the small-data regime and a seeded split."""

    train_size: Size | None = None
    test_size: Size | None = None
    seed: int = Field(0, ge=0, description="seed of the sample selection")

    def _fits(self, train: int, test: int, where: str, hint: str = "") -> None:
        """A size beyond what the dataset holds fails here, at validation, not minutes into a job."""
        for field, size, available in (("train_size", self.train_size, train), ("test_size", self.test_size, test)):
            if size is not None and size > available:
                part = field.removesuffix("_size")
                raise FieldError(f"{size:,} is more than the {available:,} {part} samples of {where}: "
                                 f"use at most {available:,}{hint} (or leave {field} out for all)", field)


class DigitsDataset(_Split):
    """scikit-learn's bundled UCI digits: 1,797 images, 1×8×8, 10 classes."""

    name: Literal["digits"]
    test_fraction: float = Field(
        0.3, gt=0.0, lt=1.0, description="share of the 1,797 images held out for testing"
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> "DigitsDataset":
        test = math.ceil(DIGITS_IMAGES * self.test_fraction)  # as sklearn's stratified train_test_split
        self._fits(DIGITS_IMAGES - test, test, f"digits (1,797 images, test_fraction {self.test_fraction:g})")
        return self


class ImageFileDataset(_Split):
    """MNIST, Fashion-MNIST (IDX files) or CIFAR-10 (binary batches) from a data directory."""

    name: Literal["mnist", "fashion_mnist", "cifar10"]
    data_dir: Path | None = Field(
        None,
        description="directory with the dataset's standard files; default: "
        "$ROBUSTLAB_DATASETS_DIR/<name> or ~/.cache/robustlab/data/<name>",
    )
    download: bool = Field(False, description="download (sha256-checked) when the files are missing")
    split_test_set: bool = Field(
        False,
        description="draw disjoint train and test parts from the official test set only "
        "(for machines that hold only the test files)",
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> "ImageFileDataset":
        train, test = OFFICIAL_SPLITS[self.name]
        if not self.split_test_set:
            self._fits(train, test, f"{self.name}'s official split")
        elif (self.train_size or 0) + (self.test_size or 0) > test:
            raise FieldError(f"train_size + test_size = {(self.train_size or 0) + (self.test_size or 0):,} is more "
                             f"than the {test:,} images of {self.name}'s test set that split_test_set divides",
                             "train_size" if self.train_size else "test_size")
        return self


class NpzDataset(_Split):
    """A user's .npz with arrays x_train, y_train, x_test, y_test (loaded with allow_pickle=False)."""

    name: Literal["npz"]
    path: Path = Field(description="path of the .npz file")


UPLOAD_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
UploadId = Annotated[str, Field(
    pattern=UPLOAD_ID_PATTERN, description="the id that POST /v1/datasets (robustlab upload dataset) returned",
)]


class UploadedDataset(_Split):
    """A .npz the tenant uploaded to the service (POST /v1/datasets), referenced by its id.

    The same arrays and checks as `npz` (x_test/y_test, optionally x_train/y_train); the service
    resolves the id within the tenant, so specs sent over HTTP never name a server path.
    """

    name: Literal["upload"]
    id: UploadId


class SyntheticDataset(_Split):
    """Seeded synthetic classification sets, inputs scaled to [0, 1]."""

    name: Literal["synthetic"]
    generator: Literal["blobs", "moons", "circles", "classification"] = "blobs"
    n_samples: int = Field(1000, ge=20, le=1_000_000)
    n_features: int = Field(2, ge=2, le=100_000, description="input dimension (moons/circles: 2)")
    n_classes: int = Field(2, ge=2, le=1000, description="number of classes (moons/circles: 2)")
    noise: float = Field(0.1, ge=0.0, le=10.0)

    @model_validator(mode="after")
    def _two_d_generators(self) -> "SyntheticDataset":
        if self.generator in ("moons", "circles") and (self.n_features != 2 or self.n_classes != 2):
            raise FieldError(
                f"generator {self.generator!r} makes 2 features and 2 classes: "
                "set n_features: 2 and n_classes: 2, or use generator 'blobs' or 'classification'",
                "n_features" if self.n_features != 2 else "n_classes",
            )
        train = round(0.7 * self.n_samples)  # models.datasets.synthetic splits 70/30
        self._fits(train, self.n_samples - train, f"{self.n_samples:,} samples split 70/30", ", or raise n_samples")
        return self


class FunctionRegressionDataset(_Split):
    """Regression on an optimisation test function with exact gradients (Sobolev training, exp. 1).

    Inputs x ∈ [0, 1]^dim are mapped affinely to the function's usual domain; targets and their
    gradients (with respect to x) are exact.
    """

    name: Literal["function_regression"]
    function: Literal["styblinski_tang", "rosenbrock", "ackley", "rastrigin", "beale", "booth"] = (
        "styblinski_tang"
    )
    dim: int = Field(2, ge=1, le=1000)
    n_samples: int = Field(1000, ge=2, le=1_000_000, description="points drawn uniformly, then split")

    @model_validator(mode="after")
    def _fixed_dimension_functions(self) -> "FunctionRegressionDataset":
        if self.function in ("beale", "booth") and self.dim != 2:
            raise FieldError(f"function {self.function!r} is defined in 2 dimensions: set dim: 2", "dim")
        if self.function == "rosenbrock" and self.dim < 2:
            raise FieldError("function 'rosenbrock' needs dim >= 2", "dim")
        train = max(1, min(self.n_samples - 1, round(0.7 * self.n_samples)))  # as models.datasets.functions
        self._fits(train, self.n_samples - train, f"{self.n_samples:,} samples split 70/30", ", or raise n_samples")
        return self


DatasetSpec = Annotated[
    DigitsDataset | ImageFileDataset | NpzDataset | UploadedDataset | SyntheticDataset | FunctionRegressionDataset,
    Field(discriminator="name"),
]
