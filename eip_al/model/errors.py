"""Model errors that the CLI reports as user mistakes (kept free of torch for a fast CLI start)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another version or does not fit the model."""


class ElementError(ValueError):
    """A frame contains an element the model was not trained on."""
