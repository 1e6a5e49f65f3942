"""Exact search: ``IndexIDMap2(IndexFlatIP)``, every vector in memory, with native remove and reconstruct.

With a GPU copy (``to_gpu``) every write goes to the CPU index first, then to the copy, in the same
locked call: a search never sees the copy behind the CPU index. Unfiltered searches (with or without
exclusions) run on the copy; allow-list searches on the CPU index (GPU indexes ignore selectors).
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

from search.index.gpu import DeviceCopy, GpuFlat, copy_to_gpu, drop_gpu_copy
from search.index.selectors import id_selector


class ExactStore:
    kind = "flat"

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.gpu: GpuFlat | None = None
        self.gpu_error: str | None = None
        self._device_copy: DeviceCopy = copy_to_gpu

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.remove_ids(faiss.IDSelectorBatch(ids))
        self.index.add_with_ids(vectors, ids)
        self._keep_gpu_in_step(lambda gpu: gpu.upsert(ids, vectors))

    def remove(self, ids: np.ndarray) -> int:
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        self._keep_gpu_in_step(lambda gpu: gpu.remove(ids))
        return removed

    # The GPU copy ----------------------------------------------------------------------------------

    def to_gpu(self, device_copy: DeviceCopy = copy_to_gpu) -> None:
        """Serve unfiltered searches from a GPU copy (``device_copy``: how a FAISS index gets there)."""
        self._device_copy = device_copy
        self.gpu = None  # the old copy's memory first
        self.gpu = GpuFlat(self.dim, self.ids(), self._vectors(), device_copy)

    def gpu_bytes(self) -> int:
        return self.memory_bytes()

    def _keep_gpu_in_step(self, change: Callable[[GpuFlat], None]) -> None:
        if self.gpu is None:
            return
        try:
            change(self.gpu)
            if self.gpu.dead > GpuFlat.COMPACT_AFTER:
                self.to_gpu(self._device_copy)  # a fresh copy without the dead slots
        except RuntimeError as exc:  # FAISS raises RuntimeError for CUDA errors (out of memory...)
            drop_gpu_copy(self, exc)

    def _vectors(self) -> np.ndarray:
        """The stored vectors, in the order of ``ids()``, as a view of the flat storage."""
        flat = faiss.downcast_index(self.index.index)
        return faiss.rev_swig_ptr(flat.get_xb(), len(self) * self.dim).reshape(len(self), self.dim)

    def reconstruct(self, vector_id: int) -> np.ndarray | None:
        try:
            return self.index.reconstruct(int(vector_id))
        except RuntimeError:  # FAISS raises for an unknown id
            return None

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, excluded: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self.gpu is not None and allowed is None:
            try:
                found = self.gpu.search(query, k, excluded)
            except RuntimeError as exc:
                drop_gpu_copy(self, exc)
            else:
                if found is not None:  # None: more dead slots or exclusions than the GPU's k
                    return found
        selector = id_selector(allowed, excluded)
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
        scores, ids = self.index.search(query, min(k, len(self)), params=params)
        return scores[0], ids[0]

    def neighbours(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched exact k-NN (CPU: FAISS spreads the queries over its threads)."""
        if len(self) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self.index.search(queries, min(k, len(self)))

    def memory_bytes(self) -> int:
        return len(self) * (self.dim * 4 + 8)

    def describe(self) -> dict[str, object]:
        return {"kind": "flat", "exact": True}

    def sections(self) -> list[bytes]:
        return [faiss.serialize_index(self.index).tobytes()]

    @classmethod
    def from_sections(cls, dim: int, sections: list[bytes]) -> ExactStore:
        return cls(dim, faiss.deserialize_index(np.frombuffer(sections[0], dtype=np.uint8)))
