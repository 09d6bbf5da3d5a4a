"""The artifact store: checkpoints, reports and resumable training state, outside Redis (DESIGN §5).

A local directory by default; any fsspec URL (s3://bucket/prefix, gcs://..., memory://) when the
workers span machines. Names are relative paths made of safe parts only: a name with `..`, an
absolute path, a backslash or a control character is refused before any file system call, so an
artifact request can never reach outside its job's prefix.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


class UnsafeName(ValueError):
    """An artifact name that could escape its prefix or that the store would not round-trip."""


def check_name(name: str) -> str:
    """`name` if every '/'-separated part is a plain file name (no '..', no leading dot or slash)."""
    parts = name.split("/")
    if not name or len(parts) > 8 or any(not SAFE_PART.match(p) or p in {".", ".."} for p in parts):
        raise UnsafeName(f"invalid artifact name {name!r}: use letters, digits, '.', '_', '-', '+' "
                         "in '/'-separated parts, none starting with '.' (no '..', no absolute paths)")
    return name


class ArtifactStore:
    def __init__(self, root: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.root = self.root.rstrip("/")
        self.url = root

    def _path(self, prefix: str, name: str) -> str:
        return f"{self.root}/{check_name(prefix)}/{check_name(name)}"

    def put_file(self, prefix: str, name: str, local: Path) -> None:
        """Copy a local file in; readers never see a half-written artifact on a local store."""
        target = self._path(prefix, name)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if isinstance(self.fs, LocalFileSystem):
            tmp = target + ".partial"
            shutil.copyfile(local, tmp)
            Path(tmp).replace(target)
        else:
            self.fs.put_file(str(local), target)

    def get_file(self, prefix: str, name: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self._path(prefix, name), str(local))

    def open(self, prefix: str, name: str) -> IO[bytes]:
        handle: IO[bytes] = self.fs.open(self._path(prefix, name), "rb")
        return handle

    def exists(self, prefix: str, name: str) -> bool:
        return bool(self.fs.exists(self._path(prefix, name)))

    def size(self, prefix: str, name: str) -> int:
        return int(self.fs.size(self._path(prefix, name)))

    def list(self, prefix: str) -> list[str]:
        """Names under the prefix (recursive), sorted; in-progress '.partial' files left out."""
        base = f"{self.root}/{check_name(prefix)}"
        if not self.fs.exists(base):
            return []
        names = (p[len(base) + 1:] if p.startswith(base) else p for p in self.fs.find(base))
        return sorted(n for n in names if n and not n.endswith(".partial"))

    def iter_bytes(self, prefix: str, name: str, chunk: int = 1 << 16) -> Iterator[bytes]:
        with self.open(prefix, name) as handle:
            while block := handle.read(chunk):
                yield block

    def delete_prefix(self, prefix: str) -> None:
        base = f"{self.root}/{check_name(prefix)}"
        if self.fs.exists(base):
            self.fs.rm(base, recursive=True)
