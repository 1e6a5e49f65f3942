"""HNSW (``IndexHNSWFlat``, inner product): approximate and fast for near queries, no native remove.

Each version of a vector gets a new slot; replaced or removed slots are masked out of every search with
a bitmap selector, and the graph is rebuilt without them once they pile up.
"""

from __future__ import annotations

import faiss
import numpy as np

from search.index.errors import IndexFileError
from search.index.selectors import bitmap_selector
from search.index.spec import IndexSpec

# Below this many allowed vectors a filtered search is exact (a dot product over just those vectors):
# cheaper than walking a graph for a few, and no recall lost to a selective filter.
EXACT_FILTER_LIMIT = 20_000


class HnswStore:
    """HNSW over slots; ``slot_ids[slot]`` is the vector id in that slot, -1 once replaced or removed."""

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        spec: IndexSpec,
        index: faiss.Index | None = None,
        slot_ids: np.ndarray | None = None,
    ) -> None:
        self.dim = dim
        self.spec = spec
        if index is None:
            index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.hnsw_ef_construction
        self.index = index
        self.slot_ids = slot_ids if slot_ids is not None else np.zeros(0, np.int64)
        self.id_slot = {int(p): s for s, p in enumerate(self.slot_ids) if p >= 0}

    def __len__(self) -> int:
        return len(self.id_slot)

    def ids(self) -> np.ndarray:
        return np.fromiter(self.id_slot, dtype=np.int64, count=len(self.id_slot))

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.remove(ids)
        first = len(self.slot_ids)
        self.index.add(vectors)
        self.slot_ids = np.concatenate([self.slot_ids, ids])
        for offset, vector_id in enumerate(ids):
            self.id_slot[int(vector_id)] = first + offset
        self._compact_if_mostly_dead()

    def remove(self, ids: np.ndarray) -> int:
        removed = 0
        for vector_id in ids:
            slot = self.id_slot.pop(int(vector_id), None)
            if slot is not None:
                self.slot_ids[slot] = -1
                removed += 1
        return removed

    def reconstruct(self, vector_id: int) -> np.ndarray | None:
        slot = self.id_slot.get(int(vector_id))
        return None if slot is None else self.index.reconstruct(slot)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, excluded: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            mask = self.slot_ids >= 0
        else:
            mask = np.zeros(len(self.slot_ids), dtype=bool)
            slots = [self.id_slot.get(int(p), -1) for p in allowed]
            mask[[slot for slot in slots if slot >= 0]] = True
        for vector_id in excluded:
            slot = self.id_slot.get(int(vector_id))
            if slot is not None:
                mask[slot] = False
        selected = int(mask.sum())
        if selected == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        selector = bitmap_selector(mask)
        k = min(k, selected)
        if allowed is not None and selected <= EXACT_FILTER_LIMIT:
            # Few allowed vectors: scan just those in the graph's flat storage, exactly.
            storage = faiss.downcast_index(self.index.storage)
            scores, slots = storage.search(query, k, params=faiss.SearchParameters(sel=selector))
        else:
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.spec.hnsw_ef_search, k))
            scores, slots = self.index.search(query, k, params=params)
        return scores[0], np.where(slots[0] >= 0, self.slot_ids[np.maximum(slots[0], 0)], -1)

    def neighbours(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched k-NN over the live slots."""
        mask = self.slot_ids >= 0
        k = min(k, int(mask.sum()))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        params = faiss.SearchParametersHNSW(
            sel=bitmap_selector(mask), efSearch=max(self.spec.hnsw_ef_search, k)
        )
        scores, slots = self.index.search(queries, k, params=params)
        return scores, np.where(slots >= 0, self.slot_ids[np.maximum(slots, 0)], -1)

    def _vectors(self) -> np.ndarray:
        """All stored vectors (dead slots too) as a zero-copy view of the graph's flat storage."""
        storage = faiss.downcast_index(self.index.storage)
        count = int(self.index.ntotal)
        return faiss.rev_swig_ptr(storage.get_xb(), count * self.dim).reshape(count, self.dim)

    def _compact_if_mostly_dead(self) -> None:
        # Masked slots still cost graph hops: rebuild without them once they are half the graph.
        dead = len(self.slot_ids) - len(self.id_slot)
        if dead < 1000 or dead * 2 < len(self.slot_ids):
            return
        slots = np.flatnonzero(self.slot_ids >= 0)
        fresh = HnswStore(self.dim, self.spec)
        if len(slots):
            fresh.upsert(self.slot_ids[slots], np.ascontiguousarray(self._vectors()[slots]))
        self.index, self.slot_ids, self.id_slot = fresh.index, fresh.slot_ids, fresh.id_slot

    def memory_bytes(self) -> int:
        return int(self.index.ntotal) * (self.dim * 4 + self.spec.hnsw_m * 2 * 4 + 8)

    def describe(self) -> dict[str, object]:
        return {"kind": "hnsw", "m": self.spec.hnsw_m, "ef_search": self.spec.hnsw_ef_search}

    def sections(self) -> list[bytes]:
        return [faiss.serialize_index(self.index).tobytes(), self.slot_ids.astype("<i8").tobytes()]

    @classmethod
    def from_sections(cls, dim: int, spec: IndexSpec, sections: list[bytes]) -> HnswStore:
        index = faiss.deserialize_index(np.frombuffer(sections[0], dtype=np.uint8))
        index.hnsw.efSearch = spec.hnsw_ef_search
        slot_ids = np.frombuffer(sections[1], dtype="<i8").astype(np.int64)
        if len(slot_ids) != index.ntotal:
            raise IndexFileError(f"slot map has {len(slot_ids)} entries for {index.ntotal} vectors")
        return cls(dim, spec, index, slot_ids)
