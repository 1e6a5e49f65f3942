"""The one error type of vitrine. The API turns it into ``{"error": message}`` with its status."""

from __future__ import annotations


class VitrineError(Exception):
    """An error the caller can act on; ``status`` is the HTTP status it maps to."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadInput(VitrineError):
    status = 400


class TooLarge(VitrineError):
    status = 413


class Unauthorized(VitrineError):
    status = 401


class NotFound(VitrineError):
    status = 404


class Overloaded(VitrineError):
    status = 429


class Cancelled(VitrineError):
    """The caller went away before its work was done (nginx's 499: client closed request)."""

    status = 499


class NotReady(VitrineError):
    status = 503


class ModelLoadError(Exception):
    """The model could not be loaded; the message says how to fix it."""


class IndexDeviceError(Exception):
    """VITRINE_INDEX_DEVICE=cuda, but the index cannot search on the GPU: a start-up error naming why."""
