"""The upload checker on hostile datasets: declared sizes read before decompression, pickles, NaNs,
labels out of range, too many samples; every refusal says what is wrong."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.datasets.errors import DatasetError
from worker.upload_check import check_dataset

MAX_BYTES = 10 * 1024 * 1024


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_test": rng.random((n, 1, 8, 8), dtype=np.float32), "y_test": rng.integers(0, 10, n)}


def test_a_good_dataset_is_described(tmp_path: Path) -> None:
    arrays = {**_good(), "x_train": np.zeros((30, 8, 8), np.uint8), "y_train": np.arange(30) % 10}
    details = check_dataset(_npz(tmp_path / "ok.npz", **arrays), MAX_BYTES, 1000, None)
    assert details == {"ok": True, "train_samples": 30, "test_samples": 20, "sample_shape": [1, 8, 8],
                       "num_classes": 10}


def test_pickled_objects_are_refused_before_anything_is_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x_test=np.array([object(), object()], dtype=object), y_test=np.array([0, 1]))
    with pytest.raises(DatasetError, match="holds Python objects"):
        check_dataset(path, MAX_BYTES, 1000, None)


def test_nan_inputs_and_labels_out_of_range(tmp_path: Path) -> None:
    arrays = _good()
    arrays["x_test"][3, 0, 0, 0] = np.nan
    with pytest.raises(DatasetError, match="1 NaN or infinite values"):
        check_dataset(_npz(tmp_path / "nan.npz", **arrays), MAX_BYTES, 1000, None)
    arrays = _good()
    arrays["y_test"][0] = 12
    with pytest.raises(DatasetError, match="labels up to 12, out of range for num_classes 10"):
        check_dataset(_npz(tmp_path / "labels.npz", **arrays), MAX_BYTES, 1000, 10)


def test_a_million_tiny_samples_exceed_the_sample_cap(tmp_path: Path) -> None:
    path = _npz(tmp_path / "many.npz", x_test=np.zeros((1_000_000, 2), np.uint8), y_test=np.zeros(1_000_000, np.int8))
    with pytest.raises(DatasetError, match="1,000,000 samples, over the limit of 200,000"):
        check_dataset(path, MAX_BYTES, 200_000, None)


def test_a_compression_bomb_is_refused_from_its_declared_size(tmp_path: Path) -> None:
    """~1 GB of zeros compressed to ~1 MB: refused from the zip directory, nothing is inflated."""
    path = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (250_000_000,)})
    zeros = bytes(16 * 1024 * 1024)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x_test.npy", "w", force_zip64=True) as member:
        member.write(header.getvalue())
        for _ in range(60):
            member.write(zeros)
    assert path.stat().st_size < 5 * 1024 * 1024
    with pytest.raises(DatasetError, match="unpacks to more than"):
        check_dataset(path, MAX_BYTES, 1000, None)


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"\x80\x04 pickle?")
    with pytest.raises(DatasetError, match=r"not an \.npz archive"):
        check_dataset(tmp_path / "x.npz", MAX_BYTES, 1000, None)


def test_a_pt_compression_bomb_is_refused_before_torch_load(tmp_path: Path) -> None:
    import torch

    from models.checkpoints import CheckpointError, read_state_dict

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(4)}, plain)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
        out.writestr("bomb/data/9", bytes(200 * 1024 * 1024))  # 200 MB of zeros in ~200 KB
    assert bomb.stat().st_size < 2 * 1024 * 1024
    with pytest.raises(CheckpointError, match="compression bomb"):
        read_state_dict(bomb)
    assert set(read_state_dict(plain)) == {"w"}


def test_a_torchscript_archive_named_pt_is_refused_as_torchscript(tmp_path: Path) -> None:
    import torch

    from models.checkpoints import CheckpointError, read_state_dict

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "scripted.pt"))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        read_state_dict(tmp_path / "scripted.pt")


def test_a_long_upload_name_keeps_its_suffix() -> None:
    from service.uploads import safe_filename

    name = safe_filename("a" * 400 + ".ONNX")
    assert name == "a" * 150 + ".onnx"
    assert safe_filename("../../etc/passwd") == "checkpoint"  # no suffix: the default stem, no path
    assert safe_filename("..\\evil dir\\my model.safetensors") == "my_model.safetensors"
