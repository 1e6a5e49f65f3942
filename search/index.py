"""The vector index: FAISS inner product over L2-normalised embeddings (inner product = cosine).

Two kinds, one interface (ids are the catalog's product row ids):
- ``flat`` (default): ``IndexIDMap2(IndexFlatIP)``, exact, with native remove and reconstruct;
- ``hnsw``: ``IndexHNSWFlat`` (inner product), approximate and fast for large catalogs. HNSW cannot
  remove vectors, so each version of a product gets a new slot, replaced or removed slots are masked
  out of every search with a bitmap selector, and the graph is rebuilt without them once they pile up.

The index is a cache of the database: its file records the catalog revision it reflects, and is
written atomically (temp file, fsync, rename) with a checksum, so a crash leaves the previous file and
a damaged file is detected before FAISS reads it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from search.files import atomic_write
from search.index_spec import IndexSpec

__all__ = ["IndexFileError", "IndexSpec", "SearchHit", "VectorIndex"]

MAGIC = b"VITRINE-INDEX-1\n"
# Below this many allowed vectors a filtered search is exact (a dot product over just those vectors):
# cheaper than walking a graph for a few, and no recall lost to a selective filter.
EXACT_FILTER_LIMIT = 20_000


class IndexFileError(Exception):
    """The index file is missing, damaged or for another model: rebuild it from the database."""


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float


class _FlatStore:
    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
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

    def reconstruct(self, product_id: int) -> np.ndarray | None:
        try:
            return self.index.reconstruct(int(product_id))
        except RuntimeError:  # FAISS raises for an unknown id
            return None

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, excluded: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        selector = _id_selector(allowed, excluded)
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
        scores, ids = self.index.search(query, min(k, len(self)), params=params)
        return scores[0], ids[0]

    def sections(self) -> list[bytes]:
        return [faiss.serialize_index(self.index).tobytes()]

    @classmethod
    def from_sections(cls, dim: int, sections: list[bytes]) -> _FlatStore:
        return cls(dim, faiss.deserialize_index(np.frombuffer(sections[0], dtype=np.uint8)))


class _HnswStore:
    """HNSW over slots; ``slot_product[slot]`` is the product in that slot, -1 once replaced or removed."""

    def __init__(
        self,
        dim: int,
        spec: IndexSpec,
        index: faiss.Index | None = None,
        slot_product: np.ndarray | None = None,
    ) -> None:
        self.dim = dim
        self.spec = spec
        if index is None:
            index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.hnsw_ef_construction
        self.index = index
        self.slot_product = slot_product if slot_product is not None else np.zeros(0, np.int64)
        self.product_slot = {int(p): s for s, p in enumerate(self.slot_product) if p >= 0}

    def __len__(self) -> int:
        return len(self.product_slot)

    def ids(self) -> np.ndarray:
        return np.fromiter(self.product_slot, dtype=np.int64, count=len(self.product_slot))

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.remove(ids)
        first = len(self.slot_product)
        self.index.add(vectors)
        self.slot_product = np.concatenate([self.slot_product, ids])
        for offset, product_id in enumerate(ids):
            self.product_slot[int(product_id)] = first + offset
        self._compact_if_mostly_dead()

    def remove(self, ids: np.ndarray) -> int:
        removed = 0
        for product_id in ids:
            slot = self.product_slot.pop(int(product_id), None)
            if slot is not None:
                self.slot_product[slot] = -1
                removed += 1
        return removed

    def reconstruct(self, product_id: int) -> np.ndarray | None:
        slot = self.product_slot.get(int(product_id))
        return None if slot is None else self.index.reconstruct(slot)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, excluded: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            mask = self.slot_product >= 0
        else:
            mask = np.zeros(len(self.slot_product), dtype=bool)
            slots = [self.product_slot.get(int(p), -1) for p in allowed]
            mask[[slot for slot in slots if slot >= 0]] = True
        for product_id in excluded:
            slot = self.product_slot.get(int(product_id))
            if slot is not None:
                mask[slot] = False
        selected = int(mask.sum())
        if selected == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        bitmap = np.packbits(mask, bitorder="little")  # FAISS reads bit (slot & 7) of byte slot >> 3
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        k = min(k, selected)
        if allowed is not None and selected <= EXACT_FILTER_LIMIT:
            # Few allowed vectors: scan just those in the graph's flat storage, exactly.
            storage = faiss.downcast_index(self.index.storage)
            scores, slots = storage.search(query, k, params=faiss.SearchParameters(sel=selector))
        else:
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.spec.hnsw_ef_search, k))
            scores, slots = self.index.search(query, k, params=params)
        del bitmap  # kept alive until here: the selector only points at it
        return scores[0], np.where(slots[0] >= 0, self.slot_product[np.maximum(slots[0], 0)], -1)

    def _vectors(self) -> np.ndarray:
        """All stored vectors (dead slots too) as a zero-copy view of the graph's flat storage."""
        storage = faiss.downcast_index(self.index.storage)
        count = int(self.index.ntotal)
        return faiss.rev_swig_ptr(storage.get_xb(), count * self.dim).reshape(count, self.dim)

    def _compact_if_mostly_dead(self) -> None:
        # Masked slots still cost graph hops: rebuild without them once they are half the graph.
        dead = len(self.slot_product) - len(self.product_slot)
        if dead < 1000 or dead * 2 < len(self.slot_product):
            return
        slots = np.flatnonzero(self.slot_product >= 0)
        fresh = _HnswStore(self.dim, self.spec)
        if len(slots):
            fresh.upsert(self.slot_product[slots], np.ascontiguousarray(self._vectors()[slots]))
        self.index, self.slot_product, self.product_slot = fresh.index, fresh.slot_product, fresh.product_slot

    def sections(self) -> list[bytes]:
        return [faiss.serialize_index(self.index).tobytes(), self.slot_product.astype("<i8").tobytes()]

    @classmethod
    def from_sections(cls, dim: int, spec: IndexSpec, sections: list[bytes]) -> _HnswStore:
        index = faiss.deserialize_index(np.frombuffer(sections[0], dtype=np.uint8))
        index.hnsw.efSearch = spec.hnsw_ef_search
        slot_product = np.frombuffer(sections[1], dtype="<i8").astype(np.int64)
        if len(slot_product) != index.ntotal:
            raise IndexFileError(f"slot map has {len(slot_product)} entries for {index.ntotal} vectors")
        return cls(dim, spec, index, slot_product)


class VectorIndex:
    """Thread-safe vector index with the catalog revision it reflects."""

    def __init__(self, dim: int, model: str, revision: int = 0, spec: IndexSpec | None = None) -> None:
        self.dim = dim
        self.model = model
        self.revision = revision
        self.spec = spec or IndexSpec()
        self._store: _FlatStore | _HnswStore = (
            _HnswStore(dim, self.spec) if self.spec.kind == "hnsw" else _FlatStore(dim)
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._store)

    def ids(self) -> np.ndarray:
        with self._lock:
            return self._store.ids()

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must have shape ({len(ids)}, {self.dim}), not {vectors.shape}")
        if len(np.unique(ids)) != len(ids):
            # An id twice in one call: the last vector wins, as if upserted one after the other.
            reversed_ids = ids[::-1]
            _, first_in_reversed = np.unique(reversed_ids, return_index=True)
            keep = np.sort(len(ids) - 1 - first_in_reversed)
            ids, vectors = ids[keep], vectors[keep]
        with self._lock:
            self._store.upsert(ids, vectors)

    def remove(self, ids: np.ndarray | list[int]) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock:
            return self._store.remove(ids)

    def reconstruct(self, product_id: int) -> np.ndarray | None:
        with self._lock:
            return self._store.reconstruct(product_id)

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        allowed_ids: list[int] | np.ndarray | None = None,
        excluded_ids: list[int] | None = None,
        min_score: float | None = None,
    ) -> list[SearchHit]:
        """Top-k by cosine for one query; optional id allow-list (filters) and exclusions (itself)."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        allowed = None if allowed_ids is None else np.asarray(allowed_ids, dtype=np.int64)
        if allowed is not None and len(allowed) == 0:
            return []
        with self._lock:
            if k <= 0 or len(self._store) == 0:
                return []
            scores, ids = self._store.search(query, k, allowed, list(excluded_ids or []))
        hits = [SearchHit(int(i), float(s)) for s, i in zip(scores, ids, strict=True) if i >= 0]
        if min_score is not None:
            hits = [hit for hit in hits if hit.score >= min_score]
        return hits

    # Persistence --------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically: readers see the old file or the new one, never half of one."""
        with self._lock:
            sections = self._store.sections()
            meta = {
                "revision": self.revision,
                "dim": self.dim,
                "model": self.model,
                "count": len(self._store),
                "spec": asdict(self.spec),
                "sections": [len(section) for section in sections],
            }
        header = json.dumps(meta, sort_keys=True).encode()
        body = b"".join([MAGIC, struct.pack("<Q", len(header)), header, *sections])
        atomic_write(path, [body, hashlib.sha256(body).digest()])

    @classmethod
    def load(cls, path: Path, *, model: str, dim: int, spec: IndexSpec | None = None) -> VectorIndex:
        spec = spec or IndexSpec()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IndexFileError(f"no index file at {path}") from None
        except OSError as exc:
            raise IndexFileError(f"cannot read {path}: {exc}") from None
        body, digest = data[:-32], data[-32:]
        if len(data) < len(MAGIC) + 40 or not body.startswith(MAGIC):
            raise IndexFileError(f"{path} is not a vitrine index file")
        if hashlib.sha256(body).digest() != digest:
            raise IndexFileError(f"{path} is damaged (checksum mismatch)")
        (header_len,) = struct.unpack("<Q", body[len(MAGIC) : len(MAGIC) + 8])
        start = len(MAGIC) + 8
        meta = json.loads(body[start : start + header_len])
        if meta.get("model") != model or meta.get("dim") != dim:
            raise IndexFileError(
                f"{path} holds {meta.get('dim')}-d vectors of {meta.get('model')!r}, not {dim}-d of {model!r}"
            )
        stored_spec = IndexSpec(**meta.get("spec", {}))
        if stored_spec.kind != spec.kind or (spec.kind == "hnsw" and stored_spec.hnsw_m != spec.hnsw_m):
            raise IndexFileError(f"{path} is a {stored_spec.describe()} index, not {spec.describe()}")
        sections, offset = [], start + header_len
        for length in meta.get("sections", [len(body) - offset]):
            sections.append(body[offset : offset + length])
            offset += length
        index = cls(dim, model, int(meta["revision"]), spec)
        if spec.kind == "hnsw":
            index._store = _HnswStore.from_sections(dim, spec, sections)
        else:
            index._store = _FlatStore.from_sections(dim, sections)
        if len(index) != meta.get("count"):
            raise IndexFileError(f"{path} holds {len(index)} vectors, its header says {meta.get('count')}")
        return index


def _id_selector(allowed: np.ndarray | None, excluded: list[int]) -> faiss.IDSelector | None:
    keep: list[faiss.IDSelector] = []
    conditions: list[faiss.IDSelector] = []
    if allowed is not None:
        conditions.append(faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64)))
    if excluded:
        inner = faiss.IDSelectorBatch(np.asarray(excluded, dtype=np.int64))
        keep.append(inner)
        conditions.append(faiss.IDSelectorNot(inner))
    if not conditions:
        return None
    selector = conditions[0] if len(conditions) == 1 else faiss.IDSelectorAnd(*conditions)
    # The SWIG wrappers do not own the selectors they wrap: keep every part alive on the outer one.
    selector.referenced_objects = keep + conditions
    return selector
