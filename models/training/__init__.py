"""Training: one readable loop (`loop.fit`), its schedule and device choice, and resumable state."""

from models.training.loop import EpochRecord, FitResult, ProgressEvent, fit

__all__ = ["EpochRecord", "FitResult", "ProgressEvent", "fit"]
