"""The float32 rows of an IVF base on disk: written once at build, then read sequentially in chunks
(tuning, rebuilds, small exact scans) or by one positional read per row (re-scoring a query's
candidates)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from search.index.errors import IndexFileError

_CHUNK = 50_000


def read_chunks(path: Path | None, count: int, dim: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first slot, rows) of a float32 row file in chunks, read sequentially."""
    if path is None or count == 0:
        return
    with open(path, "rb") as handle:
        for start in range(0, count, _CHUNK):
            rows = min(_CHUNK, count - start)
            chunk = np.fromfile(handle, dtype="<f4", count=rows * dim).reshape(rows, dim)
            yield start, chunk.astype(np.float32, copy=False)


def rows_at(path: Path, count: int, dim: int, slots: np.ndarray) -> np.ndarray:
    """The rows at sorted ``slots``, gathered during one sequential read of the file."""
    parts = []
    for start, chunk in read_chunks(path, count, dim):
        inside = slots[(slots >= start) & (slots < start + len(chunk))]
        parts.append(chunk[inside - start])
    return np.concatenate(parts)


class RowFile:
    """The float32 rows of a base by slot, read with one positional read per row.

    Not memory-mapped: the kernel maps file pages in large folios (up to 2 MB around each 3 KB row), so
    re-scoring 1,280 scattered rows (a wide filtered search) mapped 2.5 GB into the server's resident
    memory for a moment, and reads through the mapping were slower (100 rows: 0.57 ms against 0.24 ms,
    1M rows, bench/RESULTS.md). Read rows stay in the page cache, outside the process.
    """

    def __init__(self, path: Path, count: int, dim: int) -> None:
        self.path, self.count, self.dim = path, count, dim
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 -- held for the index's lifetime

    @classmethod
    def open(cls, path: Path, count: int, dim: int) -> RowFile:
        expected = count * dim * 4
        size = path.stat().st_size if path.exists() else -1
        if size != expected:
            raise IndexFileError(f"{path.name} is {size} bytes, expected {expected}")
        return cls(path, count, dim)

    def read(self, slots: np.ndarray) -> np.ndarray:
        """The rows at ``slots`` (in that order), as a new float32 array."""
        rows = np.empty((len(slots), self.dim), dtype="<f4")
        size, descriptor = self.dim * 4, self._file.fileno()
        for row, slot in zip(rows, np.asarray(slots, np.int64).tolist(), strict=True):
            if os.preadv(descriptor, [row], slot * size) != size:
                raise IndexFileError(f"{self.path.name} ends before row {slot}")
        return rows.astype(np.float32, copy=False)
