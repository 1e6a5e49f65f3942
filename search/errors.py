"""The errors of vitrine's core: what went wrong, in the domain's terms, with a message a caller can act
on. They carry no HTTP status: the API maps each kind to one in a single table (``api/errors.py``), the
indexer prints the message on one line, handler.py raises it as it is.
"""

from __future__ import annotations

import copy


class VitrineError(Exception):
    """An error the caller can act on; ``message`` says what and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def with_message(self, message: str) -> VitrineError:
        """The same error (same kind, same details) with another message, e.g. prefixed by a field."""
        renamed = copy.copy(self)
        renamed.message = message
        renamed.args = (message,)
        return renamed


class BadInput(VitrineError):
    """The request or row is malformed or breaks a rule."""


class TooLarge(VitrineError):
    """Too much of something: bytes, pixels, inputs, examples."""


class NotFound(VitrineError):
    """No such product, image or decision."""


class Conflict(VitrineError):
    """The catalog's state forbids it now: another model's vectors, a write that raced another."""


class Overloaded(VitrineError):
    """Too much work in flight; retry shortly."""


class Cancelled(VitrineError):
    """The caller went away before its work was done."""


class NotReady(VitrineError):
    """The model or catalog is still loading (or failed to)."""


class ModelLoadError(Exception):
    """The model could not be loaded; the message says how to fix it."""


class IndexDeviceError(Exception):
    """VITRINE_INDEX_DEVICE=cuda, but the index cannot search on the GPU: a start-up error naming why."""


class VectorBackendError(Exception):
    """VITRINE_VECTOR_BACKEND=pgvector, but the catalog's database cannot hold the vectors (no vector
    extension, another dimension): a start-up error naming what to do."""
