"""The one error every dataset loader raises for bad or missing data.

A subclass of ValueError so callers that already catch bad input (the spec layer, the worker's
job runner) handle it without knowing about datasets; its message always names the file and the
fix, because the person reading it is usually not the one who wrote the loader.
"""


class DatasetError(ValueError):
    """Missing, truncated, corrupted or malformed dataset files (the message says what to do)."""
