"""Retention of uploads: models and datasets nobody named in a job for `upload_ttl_seconds` are deleted.

Uploads have a life cycle like jobs (DESIGN §6): each is kept `upload_ttl_seconds` after it was
stored or last named by a submitted job (jobstore.uploads), then the reaper's pass deletes its
record and its files (`checkpoints/<id>/`, `datasets/<id>/`). An upload that a queued or running
job still names is kept another period instead (the delete script refuses it atomically).
"""

from __future__ import annotations

import logging

from artifactstore import ArtifactStore
from core.settings import Settings
from jobstore.uploads import UploadStore

log = logging.getLogger(__name__)
PREFIX = {"model": "checkpoints", "dataset": "datasets"}


def expire_uploads(uploads: UploadStore, artifacts: ArtifactStore | None, settings: Settings) -> list[str]:
    """Delete the uploads past their retention; returns the ids deleted."""
    deleted = []
    for kind, upload_id in uploads.due():
        if not uploads.expire(kind, upload_id, settings.upload_ttl_seconds):
            continue
        deleted.append(upload_id)
        if artifacts is not None:
            try:
                artifacts.delete_prefix(f"{PREFIX[kind]}/{upload_id}")
            except OSError as exc:
                log.warning("retention: could not delete the files of %s %s: %s", kind, upload_id, exc)
        log.info("retention: %s %s deleted", kind, upload_id)
    return deleted
