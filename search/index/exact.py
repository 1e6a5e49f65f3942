"""Exact search: ``IndexIDMap2(IndexFlatIP)``, every vector in memory, with native remove and reconstruct."""

from __future__ import annotations

import faiss
import numpy as np

from search.index.selectors import id_selector


class ExactStore:
    kind = "flat"

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.remove_ids(faiss.IDSelectorBatch(ids))
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

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
        selector = id_selector(allowed, excluded)
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
        scores, ids = self.index.search(query, min(k, len(self)), params=params)
        return scores[0], ids[0]

    def memory_bytes(self) -> int:
        return len(self) * (self.dim * 4 + 8)

    def describe(self) -> dict[str, object]:
        return {"kind": "flat", "exact": True}

    def sections(self) -> list[bytes]:
        return [faiss.serialize_index(self.index).tobytes()]

    @classmethod
    def from_sections(cls, dim: int, sections: list[bytes]) -> ExactStore:
        return cls(dim, faiss.deserialize_index(np.frombuffer(sections[0], dtype=np.uint8)))
