"""Dataset loaders: shapes, ranges, dtypes, seeded determinism, and clear errors for bad files."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from core.enums import DatasetName, Task
from core.specs.dataset import (
    DigitsDataset,
    FunctionRegressionDataset,
    ImageFileDataset,
    NpzDataset,
    SyntheticDataset,
)
from models.datasets import DATASETS, DatasetBundle, DatasetError, load_dataset
from models.datasets import cifar as cifar_module
from models.datasets.functions import FUNCTIONS, evaluate, reference_stats

MNIST_DIR = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"the MNIST test set is not at {MNIST_DIR} (see shared/data/README.md)",
)


def check_bundle(b: DatasetBundle, n_train: int, n_test: int, sample_shape: tuple[int, ...]) -> None:
    """The invariants every classification bundle keeps."""
    assert b.x_train.shape == (n_train, *sample_shape) and b.x_test.shape == (n_test, *sample_shape)
    assert b.x_train.dtype == b.x_test.dtype == torch.float32
    assert b.y_train.dtype == b.y_test.dtype == torch.int64
    assert b.y_train.shape == (n_train,) and b.y_test.shape == (n_test,)
    assert b.x_train.is_contiguous() and b.x_test.is_contiguous()
    for x in (b.x_train, b.x_test):
        assert x.numel() == 0 or (x.min() >= 0.0 and x.max() <= 1.0)
    assert b.task is Task.CLASSIFICATION


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


def test_every_dataset_name_is_registered() -> None:
    assert DATASETS.missing() == []
    assert set(DATASETS) == set(DatasetName)


def test_digits_shapes_seed_and_sizes() -> None:
    full = load_dataset(DigitsDataset(name="digits"))
    check_bundle(full, 1257, 540, (1, 8, 8))
    assert full.num_outputs == 10 and full.x_train.max() == 1.0
    assert set(full.y_test.tolist()) == set(range(10))  # stratified: every class in the test part
    a = load_dataset(DigitsDataset(name="digits", train_size=50, test_size=20, seed=3))
    b = load_dataset(DigitsDataset(name="digits", train_size=50, test_size=20, seed=3))
    c = load_dataset(DigitsDataset(name="digits", train_size=50, test_size=20, seed=4))
    check_bundle(a, 50, 20, (1, 8, 8))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    with pytest.raises(ValueError, match="use at most 540"):  # refused by the spec, before any loading
        DigitsDataset(name="digits", test_size=600)


# --- IDX (MNIST, Fashion-MNIST) --------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + (
        array.astype(np.uint8).tobytes()
    )


def write_idx_pair(folder: Path, prefix: str, n: int, offset: int = 0) -> None:
    """n distinct 28×28 images (the index is written into the first pixels) and their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = (np.arange(n) + offset) % 256
    images[:, 0, 1] = (np.arange(n) + offset) // 256
    images[:, 5:9, 5:9] = 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def test_idx_split_test_set_is_disjoint_and_seeded(tmp_path: Path) -> None:
    write_idx_pair(tmp_path, "t10k", 60)
    spec = ImageFileDataset(name="fashion_mnist", data_dir=tmp_path, split_test_set=True,
                            train_size=30, test_size=20, seed=1)
    a, b = load_dataset(spec), load_dataset(spec)
    check_bundle(a, 30, 20, (1, 28, 28))
    assert a.num_outputs == 10 and a.x_train.max() == 1.0
    assert not rows(a.x_train) & rows(a.x_test)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset(spec.model_copy(update={"seed": 2}))
    assert not torch.equal(a.x_train, c.x_train)
    halves = load_dataset(spec.model_copy(update={"train_size": None, "test_size": None}))
    assert len(halves.x_train) == len(halves.x_test) == 30
    with pytest.raises(DatasetError, match="exceed the 60"):
        load_dataset(spec.model_copy(update={"train_size": 50}))


def test_idx_official_splits_and_missing_files(tmp_path: Path) -> None:
    write_idx_pair(tmp_path, "train", 40)
    write_idx_pair(tmp_path, "t10k", 20, offset=1000)
    b = load_dataset(ImageFileDataset(name="mnist", data_dir=tmp_path, train_size=25))
    check_bundle(b, 25, 20, (1, 28, 28))
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="download: true") as info:
        load_dataset(ImageFileDataset(name="mnist", data_dir=tmp_path))
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in str(info.value)
    assert "split_test_set" in str(info.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw, gz: gz[: len(gz) // 2], "corrupted or truncated gzip"),
        (lambda raw, gz: gz[:-8] + bytes(b ^ 0xFF for b in gz[-8:-4]) + gz[-4:], "corrupted or trunc"),
        (lambda raw, gz: gzip.compress(raw[:-100]), "truncated: the header promises"),
        (lambda raw, gz: gzip.compress(raw + b"\0"), "longer than its header"),
        (lambda raw, gz: gzip.compress(b"\0\0\x0d\x03" + raw[4:]), "not a 3-d unsigned-byte IDX"),
    ],
    ids=["truncated-gzip", "bad-crc", "short-payload", "long-payload", "bad-magic"],
)
def test_idx_damage_is_detected(
    tmp_path: Path, damage: Callable[[bytes, bytes], bytes], message: str
) -> None:
    write_idx_pair(tmp_path, "t10k", 30)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz = path.read_bytes()
    path.write_bytes(damage(gzip.decompress(gz), gz))
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(ImageFileDataset(name="mnist", data_dir=tmp_path, split_test_set=True))
    assert str(path) in str(info.value) and "download again" in str(info.value)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    write_idx_pair(tmp_path, "t10k", 30)
    labels = np.zeros(29, dtype=np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DatasetError, match="30 images but"):
        load_dataset(ImageFileDataset(name="mnist", data_dir=tmp_path, split_test_set=True))


@needs_mnist
def test_real_mnist_test_set_split() -> None:
    spec = ImageFileDataset(name="mnist", data_dir=MNIST_DIR, split_test_set=True,
                            train_size=1000, test_size=500, seed=0)
    b = load_dataset(spec)
    check_bundle(b, 1000, 500, (1, 28, 28))
    assert not rows(b.x_train) & rows(b.x_test)
    assert set(b.y_train.tolist()) == set(range(10))


@needs_mnist
def test_real_mnist_truncated_copy(tmp_path: Path) -> None:
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        data = (MNIST_DIR / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) - 1000] if "images" in name else data)
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz is a corrupted or truncated"):
        load_dataset(ImageFileDataset(name="mnist", data_dir=tmp_path, split_test_set=True))


# --- CIFAR-10 (binary batches) ----------------------------------------------------------------


def write_cifar_batch(path: Path, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, size=(n, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(records.tobytes())
    return records


def test_cifar_binary_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar_module, "RECORDS_PER_BATCH", 8)
    folder = tmp_path / "cifar-10-batches-bin"
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}.bin", 8, seed=i)
    test_records = write_cifar_batch(folder / "test_batch.bin", 8, seed=0)
    b = load_dataset(ImageFileDataset(name="cifar10", data_dir=tmp_path, seed=5))
    check_bundle(b, 40, 8, (3, 32, 32))
    # Layout: label byte, then the red, green and blue planes, each 32×32 row-major.
    x, y = cifar_module.read_batch(folder / "test_batch.bin")
    assert x.dtype == torch.uint8 and torch.equal(y, torch.from_numpy(test_records[:, 0].astype(np.int64)))
    assert torch.equal(x[0], torch.from_numpy(test_records[0, 1:].reshape(3, 32, 32)))
    assert rows(b.x_test) == rows(x.float() / 255)
    split = load_dataset(ImageFileDataset(name="cifar10", data_dir=tmp_path, split_test_set=True,
                                          train_size=5, test_size=3))
    check_bundle(split, 5, 3, (3, 32, 32))
    assert not rows(split.x_train) & rows(split.x_test)
    (folder / "test_batch.bin").write_bytes((folder / "test_batch.bin").read_bytes()[:-1])
    with pytest.raises(DatasetError, match=r"test_batch\.bin is truncated"):
        load_dataset(ImageFileDataset(name="cifar10", data_dir=tmp_path))
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetError, match="binary version"):
        load_dataset(ImageFileDataset(name="cifar10", data_dir=tmp_path))


# --- npz ------------------------------------------------------------------------------------


def save_npz(path: Path, **arrays: np.ndarray) -> NpzDataset:
    np.savez(path, **arrays)
    return NpzDataset(name="npz", path=path)


def test_npz_good_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    spec = save_npz(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (30, 6, 6), dtype=np.uint8), y_train=np.arange(30) % 3,
        x_test=rng.random((10, 1, 6, 6)).astype(np.float64), y_test=np.full(10, 4, dtype=np.int32),
    )
    b = load_dataset(spec.model_copy(update={"train_size": 20}))
    check_bundle(b, 20, 10, (1, 6, 6))
    assert b.num_outputs == 5
    only_test = save_npz(tmp_path / "t.npz", x_test=rng.random((5, 4)), y_test=np.arange(5))
    e = load_dataset(only_test)
    check_bundle(e, 0, 5, (4,))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_test": np.full((3, 4), 1.5), "y_test": np.zeros(3, int)}, r"outside \[0, 1\]"),
        ({"x_test": np.full((3, 4), np.nan), "y_test": np.zeros(3, int)}, "NaN or infinite"),
        ({"x_test": np.zeros((3, 4), np.int16), "y_test": np.zeros(3, int)}, "dtype int16"),
        ({"x_test": np.zeros((3, 1, 2, 2, 2)), "y_test": np.zeros(3, int)}, "has shape"),
        ({"x_test": np.zeros((3, 4)), "y_test": np.zeros((3, 1), int)}, "must be 1-D"),
        ({"x_test": np.zeros((3, 4)), "y_test": np.zeros(2, int)}, "2 labels for 3 inputs"),
        ({"x_test": np.zeros((3, 4)), "y_test": np.zeros(3)}, "must be integers"),
        ({"x_test": np.zeros((3, 4)), "y_test": -np.ones(3, int)}, "negative label"),
        ({"x_train": np.zeros((3, 4)), "x_test": np.zeros((3, 4)), "y_test": np.zeros(3, int)},
         "lacks y_train"),
        ({"x_train": np.zeros((3, 5)), "y_train": np.zeros(3, int), "x_test": np.zeros((3, 4)),
          "y_test": np.zeros(3, int)}, "different sample shapes"),
        ({"x_test": np.array([object(), 1], dtype=object), "y_test": np.zeros(2, int)},
         "pickled object array"),
    ],
    ids=["range", "nan", "dtype", "ndim", "y-2d", "length", "float-labels", "negative",
         "half-train", "shapes", "object"],
)
def test_npz_validation_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    spec = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_npz_rejects_pickles_and_missing_files(tmp_path: Path) -> None:
    pickled = tmp_path / "p.npz"
    pickled.write_bytes(b"\x80\x04\x95" + b"\0" * 20)  # a pickle stream, not a zip archive
    with pytest.raises(DatasetError, match="never unpickles"):
        load_dataset(NpzDataset(name="npz", path=pickled))
    object_npy = tmp_path / "o.npy"
    np.save(object_npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="never unpickles"):
        load_dataset(NpzDataset(name="npz", path=object_npy))
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(DatasetError, match="single array"):
        load_dataset(NpzDataset(name="npz", path=tmp_path / "plain.npy"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(NpzDataset(name="npz", path=tmp_path / "nope.npz"))


# --- synthetic ------------------------------------------------------------------------------


@pytest.mark.parametrize("generator", ["blobs", "moons", "circles", "classification"])
def test_synthetic_generators(generator: str) -> None:
    two_d = generator in ("moons", "circles")
    spec = SyntheticDataset.model_validate({
        "name": "synthetic", "generator": generator, "n_samples": 200,
        "n_features": 2 if two_d else 5, "n_classes": 2 if two_d else 3, "seed": 7,
    })
    a, b = load_dataset(spec), load_dataset(spec)
    check_bundle(a, 140, 60, (spec.n_features,))
    assert a.num_outputs == spec.n_classes and set(a.y_train.tolist()) == set(range(spec.n_classes))
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0  # scaled by the training range
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, load_dataset(spec.model_copy(update={"seed": 8})).x_train)
    small = load_dataset(spec.model_copy(update={"train_size": 10, "test_size": 5}))
    check_bundle(small, 10, 5, (spec.n_features,))


def test_synthetic_errors() -> None:
    with pytest.raises(DatasetError, match="n_features"):
        load_dataset(SyntheticDataset(name="synthetic", generator="classification", n_classes=10))
    with pytest.raises(ValueError, match="raise n_samples"):  # refused by the spec, before any loading
        SyntheticDataset(name="synthetic", n_samples=100, train_size=80)


# --- function regression --------------------------------------------------------------------


def torch_reference(name: str, x: torch.Tensor) -> torch.Tensor:
    """The functions written again in torch, for autograd (N×dim float64 -> N)."""
    if name == "styblinski_tang":
        return 0.5 * (x**4 - 16 * x**2 + 5 * x).sum(1)
    if name == "rosenbrock":
        return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(1)
    if name == "ackley":
        r = (x**2).mean(1).sqrt()
        return -20 * torch.exp(-0.2 * r) - torch.exp(torch.cos(2 * torch.pi * x).mean(1)) + 20 + np.e
    if name == "rastrigin":
        return 10 * x.shape[1] + (x**2 - 10 * torch.cos(2 * torch.pi * x)).sum(1)
    p, q = x[:, 0], x[:, 1]
    if name == "beale":
        return (1.5 - p + p * q) ** 2 + (2.25 - p + p * q**2) ** 2 + (2.625 - p + p * q**3) ** 2
    return (p + 2 * q - 7) ** 2 + (2 * p + q - 5) ** 2  # booth


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_gradients_match_autograd(name: str) -> None:
    dim = 2 if name in ("beale", "booth") else 5
    fn = FUNCTIONS[name]
    u = torch.rand(64, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u.requires_grad_(True)
    mean, std = reference_stats(name, dim)
    y_torch = (torch_reference(name, fn.lo + (fn.hi - fn.lo) * u) - mean) / std
    (grad,) = torch.autograd.grad(y_torch.sum(), u)
    y, dydu = evaluate(name, u.detach().numpy())
    np.testing.assert_allclose(y[:, 0], y_torch.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dydu, grad.numpy(), rtol=1e-9, atol=1e-9)


def test_function_regression_bundle() -> None:
    spec = FunctionRegressionDataset(name="function_regression", function="rosenbrock", dim=3,
                                     n_samples=100, seed=2)
    a, b = load_dataset(spec), load_dataset(spec)
    assert a.task is Task.REGRESSION and a.num_outputs == 1
    assert a.x_train.shape == (70, 3) and a.y_train.shape == (70, 1) and a.x_test.shape == (30, 3)
    assert a.dydx_train is not None and a.dydx_test is not None
    assert a.dydx_train.shape == (70, 3) and a.dydx_test.shape == (30, 3)
    assert all(t.dtype == torch.float32 for t in (a.x_train, a.y_train, a.dydx_train))
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    y, dydu = evaluate("rosenbrock", a.x_test.double().numpy())  # targets exact for stored inputs
    np.testing.assert_allclose(a.y_test.numpy(), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.dydx_test.numpy(), dydu, rtol=1e-5, atol=1e-4)
    c = load_dataset(spec.model_copy(update={"seed": 3, "train_size": 10, "test_size": 5}))
    assert c.x_train.shape == (10, 3) and not torch.equal(c.x_train, a.x_train[:10])
