"""Plain values that go in and out of the catalog store: no sessions, no ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageRecord:
    """One stored picture of a product (no embedding); ``id`` is its vector id in the index."""

    id: int
    position: int
    image_ref: str
    image_file: str | None
    image_sha256: str | None
    embedding_model: str


@dataclass(frozen=True)
class ProductRecord:
    """A product as the API shows it: its fields and its pictures in order."""

    id: int
    external_id: str
    title: str | None
    category: str | None
    attributes: dict[str, Any]
    images: tuple[ImageRecord, ...]
    revision: int
    created_at: datetime
    updated_at: datetime
    # The model's tags (search/catalog/tagging.py), beside the merchant's attributes, never in them.
    tags: dict[str, Any] = field(default_factory=dict)

    def image(self, position: int) -> ImageRecord | None:
        return next((image for image in self.images if image.position == position), None)


@dataclass
class ImageWrite:
    """One picture of a product write. ``keep_id`` names a stored image whose vector stays (its ref,
    file and position may change); otherwise ``embedding`` is the new vector."""

    image_ref: str
    image_sha256: str | None = None
    image_file: str | None = None
    embedding: np.ndarray | None = None
    embedding_model: str = ""
    keep_id: int | None = None


@dataclass
class ProductWrite:
    """One product upsert. ``images`` None keeps the stored pictures (a metadata-only change); a list
    replaces them: stored images not kept are removed, new ones added, all in the given order."""

    external_id: str
    title: str | None = None
    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    images: list[ImageWrite] | None = None
    # A change of a stored product (PATCH, reembed): if it is gone by the time the transaction runs, the
    # write fails with ProductGone instead of creating it again.
    must_exist: bool = False


@dataclass
class Changes:
    """What a process's index must apply to reach ``revision``: vector ids out, vectors in."""

    revision: int
    removed_ids: list[int]
    upserted_ids: np.ndarray
    upserted_vectors: np.ndarray


class ChangesPruned(Exception):
    """The removal log no longer reaches back to the asked revision: rebuild instead of catching up."""


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def bytes_to_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")
