"""The one error type of model loading from user files."""

from models.checkpoints import CheckpointError


class ModelSourceError(CheckpointError):
    """A user's model file or its declared conventions cannot be used; the message says why and what to do."""
