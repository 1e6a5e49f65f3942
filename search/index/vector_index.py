"""``VectorIndex``: the one interface over the index kinds, thread-safe, with the revision it reflects.

The index is a cache of the database: its file records the catalog revision it reflects and is written
atomically with checksums (see ``file_format``), so a crash leaves the previous file and a damaged file
is detected before FAISS reads it. Where it searches (CPU, or a GPU copy) is decided once per index,
when it is created, loaded or rebuilt (``gpu.choose_device``), and reported by ``describe``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import IndexDeviceError
from search.index.errors import IndexFileError
from search.index.exact import ExactStore
from search.index.file_format import read_state, write_state
from search.index.gpu import DEVICE, GPU_KINDS, Placement, choose_device, free_gpu_bytes, gpu_count
from search.index.hnsw import HnswStore
from search.index.ivf import BaseFiles, IvfStore
from search.index.spec import IndexSpec

log = logging.getLogger(__name__)

Store = ExactStore | HnswStore | IvfStore
# A temp file this old beside the index belongs to no running writer (a part takes minutes at most).
STALE_TEMP_SECONDS = 6 * 3600


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float


class VectorIndex:
    """Thread-safe vector index (int64 ids -> unit vectors) with the catalog revision it reflects."""

    def __init__(
        self,
        dim: int,
        model: str,
        revision: int = 0,
        spec: IndexSpec | None = None,
        store: Store | None = None,
    ) -> None:
        self.dim = dim
        self.model = model
        self.revision = revision
        self.spec = spec or IndexSpec()
        if store is None:
            store = HnswStore(dim, self.spec) if self.spec.resolve(0) == "hnsw" else ExactStore(dim)
        self._store: Store = store
        self._lock = threading.Lock()
        self.placement = self._place()

    @classmethod
    def build(
        cls,
        dim: int,
        model: str,
        revision: int,
        spec: IndexSpec,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        *,
        count: int,
        path: Path,
        text_samples: np.ndarray | None = None,
        text_source: str = "given",
    ) -> VectorIndex:
        """An index of ``count`` vectors from (ids, vectors) batches; its kind chosen by ``spec``.

        An IVF index writes its immutable parts beside ``path`` while it is built (``save`` then commits).
        """
        kind = spec.resolve(count)
        store: Store
        if kind == "ivf":
            store = IvfStore.build(dim, spec, batches, path, text_samples, text_source)
        else:
            store = HnswStore(dim, spec) if kind == "hnsw" else ExactStore(dim)
            for ids, vectors in batches:
                if len(ids):
                    store.upsert(*_last_of_each(*_checked(dim, ids, vectors)))
        return cls(dim, model, revision, spec, store)  # placed once, at its full size

    @property
    def kind(self) -> str:
        return self._store.kind

    def __len__(self) -> int:
        return len(self._store)

    def ids(self) -> np.ndarray:
        with self._lock:
            return self._store.ids()

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids, vectors = _last_of_each(*_checked(self.dim, ids, vectors))
        with self._lock:
            self._store.upsert(ids, vectors)

    def remove(self, ids: np.ndarray | list[int]) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock:
            return self._store.remove(ids)

    def reconstruct(self, vector_id: int) -> np.ndarray | None:
        with self._lock:
            return self._store.reconstruct(vector_id)

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        allowed_ids: list[int] | np.ndarray | None = None,
        excluded_ids: list[int] | None = None,
        min_score: float | None = None,
        share: float = 1.0,
    ) -> list[SearchHit]:
        """Top-k by cosine for one query; optional id allow-list (filters) and exclusions (itself).

        ``share``: the part of the hits the caller will keep (a filter it checks on the hits, not given
        as ids here); an approximate index searches as widely as for a filter of that share, so the
        hits kept are as complete as the recall target asks.
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        allowed = None if allowed_ids is None else np.asarray(allowed_ids, dtype=np.int64)
        if allowed is not None and len(allowed) == 0:
            return []
        with self._lock:
            if k <= 0 or len(self._store) == 0:
                return []
            if isinstance(self._store, IvfStore):
                scores, ids = self._store.search(query, k, allowed, list(excluded_ids or []), share=share)
            else:
                scores, ids = self._store.search(query, k, allowed, list(excluded_ids or []))
        hits = [SearchHit(int(i), float(s)) for s, i in zip(scores, ids, strict=True) if i >= 0]
        if min_score is not None:
            hits = [hit for hit in hits if hit.score >= min_score]
        return hits

    def neighbours(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each of many queries, in one batched FAISS call: (scores,
        ids), each ``(len(queries), k)``, -1 ids padding. Scores are approximate on IVF (its 8-bit codes,
        no re-scoring): a caller keeping hits near a cut re-scores them. ``nprobe``: IVF lists probed
        (near-copies lie in the query's own list; default the tuned count)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            if k <= 0 or len(self._store) == 0 or len(queries) == 0:
                return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            return self._store.neighbours(queries, min(k, len(self._store)), nprobe)

    def near_pairs(self, cut: float) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """Every pair of stored vectors with cosine >= ``cut`` by a self-join of the IVF lists (exact
        scores); None for the other kinds (their callers search each vector's neighbours instead).
        Searches go on meanwhile: the built base is immutable; the side index is read under the lock."""
        if not isinstance(self._store, IvfStore):
            return None
        store = self._store

        def pairs() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            yield from store.near_pairs(cut)
            with self._lock:
                changed = store.delta_pairs(cut)
            yield from changed

        return pairs()

    # Where searches run ----------------------------------------------------------------------------

    def _place(self) -> Placement:
        """Decide where this index searches and copy it to the GPU if there (cuda: or fail, clearly)."""
        store = self._store
        gpus = gpu_count()
        index_bytes = store.gpu_bytes() if isinstance(store, ExactStore | IvfStore) else store.memory_bytes()
        free = free_gpu_bytes() if gpus and self.kind in GPU_KINDS and self.spec.device != "cpu" else None
        placement = choose_device(self.spec.device, gpus, self.kind, index_bytes, free)
        if placement.device == "cuda" and self.dim and isinstance(store, ExactStore | IvfStore):
            try:
                store.to_gpu()
            except RuntimeError as exc:  # FAISS's CUDA errors (out of memory, no kernel for the card...)
                if self.spec.device == "cuda":
                    raise IndexDeviceError(
                        f"VITRINE_INDEX_DEVICE=cuda, but copying the index to the GPU failed: {exc}"
                    ) from exc
                placement = Placement("cpu", f"copying the index to the GPU failed: {exc}")
        if self.dim:
            log.info(
                "vector index (%s, %d vectors) searches on %s: %s",
                self.kind,
                len(store),
                placement.device,
                placement.reason,
            )
        return placement

    @property
    def search_device(self) -> tuple[str, str]:
        """("cuda:N" or "cpu", why), as it is now (a GPU copy that failed since is reported)."""
        if self.placement.device == "cpu":
            return "cpu", self.placement.reason
        error = getattr(self._store, "gpu_error", None)
        if error is not None:
            return "cpu", f"the GPU copy failed while serving: {error}"
        return f"cuda:{DEVICE}", f"{self.placement.reason}; filtered searches run on the CPU index"

    # Upkeep and self-measurement -----------------------------------------------------------------------

    def wants_rebuild(self) -> bool:
        """Changes since the build (side index, deletion marks) or growth call for a fresh build."""
        if self.spec.outgrown(self.kind, len(self)):
            return True
        return isinstance(self._store, IvfStore) and self._store.wants_rebuild()

    def tune(self, text_samples: np.ndarray | None = None, text_source: str = "given") -> dict[str, Any]:
        """Measure recall@10 against exact search (and re-choose the IVF probe count); returns the facts."""
        store = self._store
        if isinstance(store, IvfStore):
            tuned = store.tune(
                text_samples, text_source=text_source
            )  # reads only: searches keep running meanwhile
            with self._lock:
                store.tuned = tuned
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """Kind, parameters, measured recall and memory, as /info and `indexer stats` show them."""
        facts = {
            **self._store.describe(),
            "vectors": len(self),
            "memory_bytes": self._store.memory_bytes(),
            "description": self.spec.describe(self.kind),
        }
        facts["search_device"], facts["search_device_reason"] = self.search_device
        if self.kind == "flat":
            facts["measured_recall_at_10"] = {"image_like": 1.0, "text_like": 1.0}
        return facts

    # Persistence ---------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically: readers see the old file or the new one, never half of one."""
        with self._lock:
            sections = self._store.sections()
            meta: dict[str, Any] = {
                "revision": self.revision,
                "dim": self.dim,
                "model": self.model,
                "count": len(self._store),
                "kind": self.kind,
                "spec": {
                    key: value
                    for key, value in asdict(replace(self.spec, kind=self.kind)).items()
                    if key != "device"  # where this process searches, not a fact of the file
                },
            }
            if isinstance(self._store, IvfStore):
                meta["ivf"] = self._store.meta()
        write_state(path, meta, sections)

    def parts(self) -> set[str]:
        """File names of the immutable parts this index reads (IVF base files)."""
        if not isinstance(self._store, IvfStore):
            return set()
        generation = self._store.files.generation
        return {f".{generation}.f32", f".{generation}.ivf"}

    def remove_stale_parts(self, path: Path) -> None:
        """Delete IVF part files beside ``path`` that neither this index nor the saved file uses.

        A process that still maps a deleted part keeps reading it (POSIX keeps the data until unmapped).
        """
        keep = {path.name + suffix for suffix in self.parts()}
        try:
            saved, _ = read_state(path)
            if "ivf" in saved:
                generation = saved["ivf"]["generation"]
                keep |= {BaseFiles.raw_path(path, generation).name, BaseFiles.ivf_path(path, generation).name}
        except IndexFileError:
            pass
        for candidate in path.parent.glob(path.name + ".*"):
            if candidate.suffix in (".f32", ".ivf") and candidate.name not in keep:
                candidate.unlink(missing_ok=True)
            elif candidate.suffix == ".tmp" and time.time() - candidate.stat().st_mtime > STALE_TEMP_SECONDS:
                candidate.unlink(missing_ok=True)  # left by a process killed while writing

    @classmethod
    def load(cls, path: Path, *, model: str, dim: int, spec: IndexSpec | None = None) -> VectorIndex:
        spec = spec or IndexSpec()
        meta, sections = read_state(path)
        if meta.get("model") != model or meta.get("dim") != dim:
            raise IndexFileError(
                f"{path} holds {meta.get('dim')}-d vectors of {meta.get('model')!r}, not {dim}-d of {model!r}"
            )
        stored_spec = IndexSpec(**meta.get("spec", {}))
        kind = meta.get("kind", stored_spec.kind)
        if not spec.accepts(kind) or (kind == "hnsw" and stored_spec.hnsw_m != spec.hnsw_m):
            raise IndexFileError(f"{path} is a {stored_spec.describe(kind)} index, not {spec.describe()}")
        store: Store
        if kind == "hnsw":
            store = HnswStore.from_sections(dim, spec, sections)
        elif kind == "ivf":
            store = IvfStore.from_sections(dim, spec, meta["ivf"], sections, path)
        else:
            store = ExactStore.from_sections(dim, sections)
        index = cls(dim, model, int(meta["revision"]), spec, store)
        if len(index) != meta.get("count"):
            raise IndexFileError(f"{path} holds {len(index)} vectors, its header says {meta.get('count')}")
        return index


def _checked(dim: int, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.shape != (len(ids), dim):
        raise ValueError(f"vectors must have shape ({len(ids)}, {dim}), not {vectors.shape}")
    return ids, vectors


def _last_of_each(ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An id twice in one call: the last vector wins, as if upserted one after the other."""
    if len(np.unique(ids)) == len(ids):
        return ids, vectors
    _, first_in_reversed = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - first_in_reversed)
    return ids[keep], vectors[keep]
