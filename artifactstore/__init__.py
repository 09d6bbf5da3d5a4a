"""The artifact store: checkpoints, reports and resumable training state, outside Redis.

A storage adapter of its own (DESIGN §4), used by the workers (write results, resume state, reap)
and the API (stream reports and artifacts, check names). Torch-free; it talks to fsspec only.
"""

from artifactstore.store import ArtifactStore, UnsafeName, check_name

__all__ = ["ArtifactStore", "UnsafeName", "check_name"]
