"""The checksummed downloader, against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from core.specs.dataset import ImageFileDataset
from models.datasets import DatasetError, download_dataset, load_dataset
from models.datasets import cifar as cifar_module
from models.datasets import download as dl
from models.datasets.download import MIRROR_ENV, RemoteFile, extract_cifar10, mirrors_for

MNIST_DIR = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / n).is_file() for n in TEST_FILES),
    reason=f"the MNIST test set is not at {MNIST_DIR} (see shared/data/README.md)",
)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves): a threaded http.server on 127.0.0.1, port chosen by the OS."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_mnist(root: Path, folder: str) -> Path:
    target = root / folder
    target.mkdir()
    for name in TEST_FILES:
        shutil.copyfile(MNIST_DIR / name, target / name)
    return target


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@needs_mnist
def test_good_download_then_load(served: tuple[str, Path], tmp_path: Path) -> None:
    base, root = served
    serve_mnist(root, "good")
    data_dir = tmp_path / "data" / "mnist"
    paths = download_dataset("mnist", data_dir, files=TEST_FILES, base_url=base + "good/")
    assert sorted(p.name for p in paths) == sorted(TEST_FILES)
    assert leftovers(data_dir) == sorted(TEST_FILES)  # no temp files left behind
    for name in TEST_FILES:
        assert (data_dir / name).read_bytes() == (MNIST_DIR / name).read_bytes()
    spec = ImageFileDataset(name="mnist", data_dir=data_dir, split_test_set=True, train_size=200,
                            test_size=100)
    bundle = load_dataset(spec)
    assert bundle.x_train.shape == (200, 1, 28, 28) and bundle.x_test.shape == (100, 1, 28, 28)


@needs_mnist
def test_spec_download_uses_env_mirror(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = served
    serve_mnist(root, "mnist")
    monkeypatch.setenv(MIRROR_ENV, base + "{name}/")
    monkeypatch.setenv(dl.DATA_DIR_ENV, str(tmp_path / "cache"))
    spec = ImageFileDataset(name="mnist", download=True, split_test_set=True, train_size=50, test_size=50)
    bundle = load_dataset(spec)
    assert len(bundle.x_train) == 50
    assert leftovers(tmp_path / "cache" / "mnist") == sorted(TEST_FILES)


@needs_mnist
@pytest.mark.parametrize("damage", ["corrupted", "truncated", "oversized"])
def test_bad_download_is_rejected_and_removed(
    served: tuple[str, Path], tmp_path: Path, damage: str
) -> None:
    base, root = served
    folder = serve_mnist(root, damage)
    images = folder / TEST_FILES[0]
    data = bytearray(images.read_bytes())
    if damage == "corrupted":
        data[len(data) // 2] ^= 0xFF  # same size, different bytes
    elif damage == "truncated":
        del data[-5000:]
    else:
        data += b"\0" * 10
    images.write_bytes(bytes(data))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError) as info:
        download_dataset("mnist", data_dir, files=TEST_FILES[:1], base_url=base + damage + "/")
    message = str(info.value)
    if damage == "oversized":
        assert "more than the expected 1648877 bytes" in message
    else:
        assert "expected 1648877 bytes with sha256 8d422c7b" in message
        assert f"got {len(data)} bytes with sha256 {hashlib.sha256(data).hexdigest()}" in message
    assert leftovers(data_dir) == []  # neither the file nor its temp copy


def test_missing_file_names_every_mirror_tried(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    with pytest.raises(DatasetError, match="404") as info:
        download_dataset("fashion_mnist", tmp_path / "d", files=TEST_FILES[1:], base_url=base + "nowhere/")
    assert base + "nowhere/t10k-labels-idx1-ubyte.gz" in str(info.value)
    assert leftovers(tmp_path / "d") == []


@needs_mnist
def test_wrong_local_file_is_replaced(served: tuple[str, Path], tmp_path: Path) -> None:
    base, root = served
    serve_mnist(root, "good")
    (tmp_path / TEST_FILES[1]).write_bytes(b"stale")
    download_dataset("mnist", tmp_path, files=TEST_FILES[1:], base_url=base + "good/")
    assert (tmp_path / TEST_FILES[1]).read_bytes() == (MNIST_DIR / TEST_FILES[1]).read_bytes()


def test_mirror_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert mirrors_for("mnist")[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert mirrors_for("cifar10", "http://host/x") == ["http://host/x/"]
    monkeypatch.setenv(MIRROR_ENV, "https://mirror.example/{name}")
    assert mirrors_for("fashion_mnist") == ["https://mirror.example/fashion_mnist/"]
    with pytest.raises(DatasetError, match="not an http"):
        mirrors_for("mnist", "file:///etc/")
    with pytest.raises(DatasetError, match="unknown file names"):
        download_dataset("mnist", Path("/nonexistent"), files=["evil.gz"], base_url="http://h/")


# --- CIFAR-10 archive: checksummed download and safe unpacking -------------------------------


def tar_gz(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def fake_batches(records: int) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    out = {}
    for name in names:
        batch = rng.integers(0, 256, (records, 3073), dtype=np.uint8)
        batch[:, 0] %= 10
        out[f"cifar-10-batches-bin/{name}"] = batch.tobytes()
    out["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    return out


def test_cifar_archive_download_and_load(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = served
    archive = tar_gz(fake_batches(4))
    (root / "cifar-10-binary.tar.gz").write_bytes(archive)
    pinned = RemoteFile("cifar-10-binary.tar.gz", hashlib.sha256(archive).hexdigest(), len(archive))
    monkeypatch.setitem(dl.REMOTE_FILES, dl.DatasetName.CIFAR10, (pinned,))
    monkeypatch.setattr(cifar_module, "RECORDS_PER_BATCH", 4)
    monkeypatch.setenv(MIRROR_ENV, base)
    bundle = load_dataset(ImageFileDataset(name="cifar10", data_dir=tmp_path, download=True))
    assert bundle.x_train.shape == (20, 3, 32, 32) and bundle.x_test.shape == (4, 3, 32, 32)
    assert (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").is_file()


@pytest.mark.parametrize(
    ("members", "links", "message"),
    [
        ({"cifar-10-batches-bin/../../evil.bin": b"x"}, (), "unsafe member"),
        ({"/tmp/evil.bin": b"x"}, (), "unsafe member"),
        ({}, ("cifar-10-batches-bin/test_batch.bin",), "non-file member"),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_unsafe_archives_are_refused(
    tmp_path: Path, members: dict[str, bytes], links: tuple[str, ...], message: str
) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(tar_gz(members, links))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=message):
        extract_cifar10(archive, out)
    assert not (tmp_path / "evil.bin").exists()
    assert leftovers(out / "cifar-10-batches-bin") == []


def test_unexpected_members_are_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz({"README": b"hi", "cifar-10-batches-bin/test_batch.bin": b"abc"}))
    written = extract_cifar10(archive, tmp_path / "out")
    assert [p.name for p in written] == ["test_batch.bin"]
    assert not (tmp_path / "out" / "README").exists()
