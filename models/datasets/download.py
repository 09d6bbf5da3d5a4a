"""Checksummed downloads of MNIST, Fashion-MNIST and CIFAR-10 (binary version).

Every file is pinned by size and sha256, so a flaky mirror, a captive portal or a tampered copy
can never reach the loaders: bytes stream into a temporary file next to the target, are checked,
and only then renamed into place (atomic on one filesystem). Nothing is ever unpickled; the
CIFAR-10 archive is the binary version and is unpacked member by member, refusing anything but
plain files under `cifar-10-batches-bin/`.

Checksum sources (see the module tables): TensorFlow Datasets' `url_checksums/mnist.txt`,
`fashion_mnist.txt` and `cifar10.txt` (url, size, sha256); the two MNIST t10k values also match
the files in the shared data folder and the md5 values torchvision checks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.enums import DatasetName
from models.datasets.errors import DatasetError

log = logging.getLogger(__name__)

MIRROR_ENV = "ROBUSTLAB_DATASET_MIRROR"
DATA_DIR_ENV = "ROBUSTLAB_DATASETS_DIR"  # not ROBUSTLAB_DATA_DIR: that is the service's job data
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file as published: its name under a mirror's base URL, sha256 and size in bytes."""

    name: str
    sha256: str
    size: int


MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz",
               "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422),
    RemoteFile("train-labels-idx1-ubyte.gz",
               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542),
)
FASHION_MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz",
               "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26_421_880),
    RemoteFile("train-labels-idx1-ubyte.gz",
               "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29_515),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4_422_102),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5_148),
)
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    170_052_171,
)
CIFAR10_DIR = "cifar-10-batches-bin"

REMOTE_FILES: dict[DatasetName, tuple[RemoteFile, ...]] = {
    DatasetName.MNIST: MNIST_FILES,
    DatasetName.FASHION_MNIST: FASHION_MNIST_FILES,
    DatasetName.CIFAR10: (CIFAR10_ARCHIVE,),
}
MIRRORS: dict[DatasetName, tuple[str, ...]] = {
    DatasetName.MNIST: (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    # Plain http is what the dataset authors publish; the sha256 pins make it safe.
    DatasetName.FASHION_MNIST: ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    DatasetName.CIFAR10: ("https://www.cs.toronto.edu/~kriz/",),
}


def default_data_dir(name: DatasetName | str) -> Path:
    """`$ROBUSTLAB_DATASETS_DIR/<name>`, else `~/.cache/robustlab/data/<name>`."""
    root = os.environ.get(DATA_DIR_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "robustlab" / "data"
    return base / DatasetName(name).value


def mirrors_for(name: DatasetName | str, base_url: str | None = None) -> list[str]:
    """Base URLs to try in order: the argument, else $ROBUSTLAB_DATASET_MIRROR, else the table.

    An override may contain `{name}` (replaced by the dataset name) so one mirror can serve every
    dataset from its own folder. Only http(s) is accepted: a `file://` or `ftp://` base would
    bypass the place files are meant to come from.
    """
    member = DatasetName(name)
    override = base_url or os.environ.get(MIRROR_ENV)
    bases = [override.replace("{name}", member.value)] if override else list(MIRRORS[member])
    for base in bases:
        if not base.startswith(("http://", "https://")):
            raise DatasetError(f"dataset mirror {base!r} is not an http(s) URL: fix {MIRROR_ENV}")
    return [b if b.endswith("/") else b + "/" for b in bases]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, target: Path, expected: RemoteFile, timeout: float = 60.0) -> Path:
    """Stream `url` into a temp file beside `target`, check size and sha256, rename into place.

    On any failure the temp file is removed and `target` is untouched, so a half-written file can
    never be mistaken for a good one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > expected.size:  # a wrong or hostile file: stop before filling the disk
                    raise DatasetError(
                        f"{url} sent more than the expected {expected.size} bytes of "
                        f"{expected.name}: the mirror serves a different file; use another mirror"
                    )
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if size != expected.size or got != expected.sha256:
            raise DatasetError(
                f"download of {expected.name} from {url} failed its check: expected "
                f"{expected.size} bytes with sha256 {expected.sha256}, got {size} bytes with sha256 "
                f"{got}; the file was discarded: retry, or use another mirror ({MIRROR_ENV})"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("downloaded %s (%d bytes, sha256 ok) to %s", url, size, target)
    return target


def _fetch_from_mirrors(remote: RemoteFile, target: Path, bases: list[str], timeout: float) -> None:
    failures = []
    for base in bases:
        url = base + remote.name
        try:
            fetch(url, target, remote, timeout=timeout)
            return
        except (urllib.error.URLError, OSError, DatasetError) as error:
            # HTTPError and timeouts are URLError/OSError; try the next mirror.
            log.warning("download of %s failed: %s", url, error)
            failures.append(f"{url}: {error}")
    raise DatasetError(
        f"could not download {remote.name} into {target.parent}:\n  " + "\n  ".join(failures)
        + f"\nretry later, set {MIRROR_ENV} to a reachable mirror, or place the file there by hand"
    )


def download_dataset(
    name: DatasetName | str,
    data_dir: Path,
    *,
    files: Collection[str] | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Make sure `data_dir` holds the dataset's verified files; returns their paths.

    `files` restricts MNIST-style downloads to some file names (e.g. only the t10k pair, for
    `split_test_set`). Files already present with the right sha256 are kept; present but wrong
    ones are replaced. For CIFAR-10 the archive is fetched and unpacked into
    `data_dir/cifar-10-batches-bin/`, and the batch paths are returned.
    """
    member = DatasetName(name)
    if member not in REMOTE_FILES:
        raise DatasetError(f"dataset {member.value!r} has no download: it needs no files or your own")
    data_dir = Path(data_dir)
    bases = mirrors_for(member, base_url)
    wanted = [r for r in REMOTE_FILES[member] if files is None or r.name in files]
    if files is not None and len(wanted) != len(set(files)):
        known = ", ".join(r.name for r in REMOTE_FILES[member])
        raise DatasetError(f"unknown file names in {sorted(files)} for {member.value}: use {known}")
    paths = []
    for remote in wanted:
        target = data_dir / remote.name
        if target.is_file():
            if sha256_of(target) == remote.sha256:
                log.info("%s already present and verified", target)
                paths.append(target)
                continue
            log.warning("%s has the wrong sha256: downloading it again", target)
        _fetch_from_mirrors(remote, target, bases, timeout)
        paths.append(target)
    if member is DatasetName.CIFAR10:
        return extract_cifar10(data_dir / CIFAR10_ARCHIVE.name, data_dir)
    return paths


def _safe_member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """The member's relative path when it is a plain file under CIFAR10_DIR, None to skip it."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")):
        raise DatasetError(f"{archive} has an unsafe member {member.name!r}: delete it, download again")
    if member.isdir():
        return None
    if not member.isfile():  # links, devices, fifos: never needed, never followed
        raise DatasetError(f"{archive} has a non-file member {member.name!r}: delete it, download again")
    if not path.parts or path.parts[0] != CIFAR10_DIR or len(path.parts) != 2:
        log.warning("skipping unexpected member %s of %s", member.name, archive)
        return None
    return path


def extract_cifar10(archive: Path, data_dir: Path) -> list[Path]:
    """Unpack the binary CIFAR-10 archive's batch files into `data_dir` (no tar extraction API).

    Each member is checked (relative, no '..', a plain file, inside `cifar-10-batches-bin/`) and
    copied through a temp file, so a hostile archive can write nothing outside that folder.
    """
    out_dir = Path(data_dir) / CIFAR10_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                rel = _safe_member_path(member, archive)
                if rel is None:
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = out_dir / rel.name
                fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{rel.name}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out, source:
                        shutil.copyfileobj(source, out, CHUNK)
                    os.replace(tmp_name, target)
                except BaseException:
                    Path(tmp_name).unlink(missing_ok=True)
                    raise
                written.append(target)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DatasetError(
            f"{archive} could not be unpacked ({error}): delete it and download again"
        ) from error
    log.info("unpacked %d files from %s into %s", len(written), archive, out_dir)
    return written
