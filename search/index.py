"""The vector index: FAISS inner product over L2-normalised embeddings (inner product = cosine).

``IndexIDMap2(IndexFlatIP)``: exact search, ids are the catalog's product row ids, and it supports
remove and reconstruct. The index is a cache of the database: its file records the catalog revision
it reflects, and is written atomically (temp file, fsync, rename) with a checksum, so a crash leaves
the previous file and a damaged file is detected before FAISS reads it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from search.files import atomic_write

MAGIC = b"VITRINE-INDEX-1\n"
INDEX_TYPE = "IDMap2,Flat,IP"


class IndexFileError(Exception):
    """The index file is missing, damaged or for another model: rebuild it from the database."""


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float


class VectorIndex:
    """Thread-safe FAISS index with the catalog revision it reflects."""

    def __init__(self, dim: int, model: str, revision: int = 0, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.model = model
        self.revision = revision
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must have shape ({len(ids)}, {self.dim}), not {vectors.shape}")
        with self._lock:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray | list[int]) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock:
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def reconstruct(self, product_id: int) -> np.ndarray | None:
        with self._lock:
            try:
                return self._index.reconstruct(int(product_id))
            except RuntimeError:  # FAISS raises for an unknown id
                return None

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
        selector = _selector(allowed_ids, excluded_ids)
        if allowed_ids is not None and len(allowed_ids) == 0:
            return []
        with self._lock:
            k = min(k, int(self._index.ntotal))
            if k <= 0:
                return []
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            scores, ids = self._index.search(query, k, params=params)
        hits = [SearchHit(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        if min_score is not None:
            hits = [hit for hit in hits if hit.score >= min_score]
        return hits

    # Persistence --------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically: readers see the old file or the new one, never half of one."""
        with self._lock:
            payload = faiss.serialize_index(self._index).tobytes()
            meta = {
                "revision": self.revision,
                "dim": self.dim,
                "model": self.model,
                "count": int(self._index.ntotal),
                "index_type": INDEX_TYPE,
            }
        header = json.dumps(meta, sort_keys=True).encode()
        body = MAGIC + struct.pack("<Q", len(header)) + header + payload
        atomic_write(path, [body, hashlib.sha256(body).digest()])

    @classmethod
    def load(cls, path: Path, *, model: str, dim: int) -> VectorIndex:
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
        payload = np.frombuffer(body[start + header_len :], dtype=np.uint8)
        index = faiss.deserialize_index(payload)
        if index.ntotal != meta.get("count"):
            raise IndexFileError(f"{path} holds {index.ntotal} vectors, its header says {meta.get('count')}")
        return cls(dim, model, int(meta["revision"]), index)


def _selector(allowed: list[int] | np.ndarray | None, excluded: list[int] | None) -> faiss.IDSelector | None:
    keep: list[faiss.IDSelector] = []
    conditions: list[faiss.IDSelector] = []
    if allowed is not None and len(allowed):
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
