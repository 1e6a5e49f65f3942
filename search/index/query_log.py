"""A sample of served query vectors (text and vector queries): the text side of the modality gap.

IVF probe counts are tuned on it, so the index keeps its recall for the queries it really serves.
Kept as a ring buffer in memory and saved beside the index file.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np

from search.files import atomic_write


class QueryLog:
    def __init__(self, path: Path, capacity: int = 1000) -> None:
        self.path = path
        self.capacity = capacity
        self._vectors: list[np.ndarray] = []
        self._next = 0
        self.added = 0  # queries logged by this process (the server re-tunes every so many)
        self._lock = threading.Lock()
        try:
            saved = np.load(path)
            if saved.ndim == 2:
                self._vectors = list(saved[-capacity:].astype(np.float32))
        except (OSError, ValueError):
            pass  # no sample yet (or an unreadable one): start empty

    def __len__(self) -> int:
        return len(self._vectors)

    def add(self, vector: np.ndarray) -> None:
        with self._lock:
            self.added += 1
            if self._vectors and len(vector) != len(self._vectors[0]):
                self._vectors, self._next = [], 0  # another model's dimension: start over
            if len(self._vectors) < self.capacity:
                self._vectors.append(np.asarray(vector, np.float32))
            else:
                self._vectors[self._next] = np.asarray(vector, np.float32)
                self._next = (self._next + 1) % self.capacity

    def sample(self, dim: int) -> np.ndarray | None:
        with self._lock:
            if not self._vectors or len(self._vectors[0]) != dim:
                return None
            return np.stack(self._vectors)

    def save(self) -> None:
        with self._lock:
            if not self._vectors:
                return
            buffer = io.BytesIO()
            np.save(buffer, np.stack(self._vectors))
        atomic_write(self.path, [buffer.getvalue()])
