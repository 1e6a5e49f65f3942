"""Errors of the index package."""

from __future__ import annotations


class IndexFileError(Exception):
    """The index file is missing, damaged or for another model: rebuild it from the database."""
