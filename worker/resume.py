"""Resumable training state kept in the artifact store, so a retried job continues where it stopped.

`compare` keeps per-epoch state in `<work>/state/*.pt` and finished runs in
`<work>/checkpoints/*.safetensors`, and resumes from them when run again on the same directory.
A retry may land on another worker or machine, so these files are mirrored to the artifact store
under `jobs/<id>/resume/` after every finished epoch and every finished run, and copied back into
the (possibly empty) work directory before an execution starts. The store's copy wins over a local
one: the store always holds what the latest execution finished, wherever it ran.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from artifactstore import ArtifactStore

log = logging.getLogger(__name__)

MIRRORED = ("state", "checkpoints")  # sub-directories of the work dir that make a run resumable


class ResumeSync:
    def __init__(self, store: ArtifactStore, job_id: str, work_dir: Path, *,
                 still_owner: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.prefix = f"jobs/{job_id}/resume"
        self.work_dir = work_dir
        self.still_owner = still_owner  # a fenced-out execution must not overwrite newer state
        self._uploaded: dict[str, float] = {}  # name -> mtime of the copy in the store

    def restore(self) -> list[str]:
        """Copy the store's resume files into the work dir; returns their names."""
        names = [n for n in self.store.list(self.prefix) if n.split("/", 1)[0] in MIRRORED]
        for name in names:
            local = self.work_dir / name
            self.store.get_file(self.prefix, name, local)
            self._uploaded[name] = local.stat().st_mtime
        if names:
            log.info("restored %d resume files from %s/%s", len(names), self.store.url, self.prefix)
        return names

    def sync(self) -> int:
        """Upload resume files that changed since the last sync; returns how many were uploaded."""
        if not self.still_owner():
            return 0
        count = 0
        for sub in MIRRORED:
            folder = self.work_dir / sub
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                # temporary files being written (state and checkpoints are replaced atomically)
                if not path.is_file() or path.name.startswith(".") or path.suffix in (".tmp", ".partial"):
                    continue
                name = f"{sub}/{path.name}"
                mtime = path.stat().st_mtime
                if self._uploaded.get(name) == mtime:
                    continue
                self.store.put_file(self.prefix, name, path)
                self._uploaded[name] = mtime
                count += 1
        return count

    def discard(self) -> None:
        """The job is finished: its resume state is no longer needed."""
        self.store.delete_prefix(self.prefix)
