"""``PgVectorIndex``: the image-level vector search of the pgvector backend, with the facts a FAISS
``VectorIndex`` gives /info, /ready, /metrics and ``indexer stats`` (size, dimension, revision, kind),
and the searches the duplicate finder makes (``search``, ``neighbours``, ``reconstruct``).

Nothing is held in the process: the size, revision and search breadth (configured, measured by
pgvector/tuning.py and stored in the database, or guessed until then) are the catalog's as of the last
``refresh``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from sqlalchemy import select, text

from search.catalog.pgvector import tuning
from search.catalog.pgvector.search import image_hits, set_breadth
from search.catalog.pgvector.table import (
    GUESSED_EF_SEARCH,
    GUESSED_PROBES,
    TABLE,
    VECTORS,
    PgVectorSpec,
    ann_index,
)
from search.catalog.records import bytes_to_vector
from search.catalog.schema import ProductImage
from search.catalog.store import Catalog
from search.index.vector_index import SearchHit

# Below this many rows (the planner's estimate) the size is counted exactly; above, the estimate serves.
EXACT_COUNT_BELOW = 200_000
# Until a breadth is measured, IVFFlat scans at least this many vectors (probes x vectors per list):
# text-like queries need it, and more of them on a small catalog, whose lists are small. Measured text
# recall@10 (bench/RESULTS.md):
# 32 probes scanning 800 vectors at 10k gave 0.74, ~2,500 scanned gave 0.94 at 10k and 0.93 at 30k but
# 0.96-0.98 at 100k; 5,000 is chosen to keep small catalogs above 0.95 too.
MIN_SCANNED = 5_000


class PgVectorIndex:
    kind = "pgvector"

    def __init__(self, catalog: Catalog, model: str, dim: int | None, spec: PgVectorSpec) -> None:
        self.catalog = catalog
        self.model = model
        self.dim = dim or 0
        self.spec = spec
        self.size = 0
        self.revision = 0
        self.definition: str | None = None  # the vector index's CREATE INDEX, None while searches are exact
        self.tuning: tuning.Tuning | None = None  # the measurement stored in the database, if any
        # Unfiltered breadth (ivfflat probes, hnsw ef_search): configured, measured, or guessed.
        self.breadth, self.breadth_source = self.choose_breadth()

    def __len__(self) -> int:
        return self.size

    def refresh(self) -> PgVectorIndex:
        """The size, revision and index definition as the database has them now."""
        with self.catalog.connection() as connection:
            if connection.scalar(text("SELECT to_regclass(:t)"), {"t": TABLE}) is None:
                self.size, self.definition = 0, None
            else:
                estimate = connection.scalar(
                    text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": TABLE}
                )
                if estimate is None or estimate < EXACT_COUNT_BELOW:
                    estimate = connection.scalar(text(f"SELECT count(*) FROM {TABLE}"))
                self.size = int(estimate or 0)
                self.definition = ann_index(connection)
            self.tuning = tuning.load(connection)
        self.breadth, self.breadth_source = self.choose_breadth()
        self.revision = self.catalog.revision()
        return self

    @property
    def lists(self) -> int | None:
        """IVFFlat's lists, read from the index definition (None: no IVFFlat index)."""
        found = re.search(r"lists\s*=\s*'?(\d+)", self.definition or "")
        return int(found.group(1)) if found else None

    def choose_breadth(self) -> tuple[int, str]:
        """The unfiltered breadth and where it comes from: the settings, a measurement that holds for
        this index at this size, or a guess until one is measured."""
        if self.spec.configured_breadth:
            return self.spec.configured_breadth, "configured"
        if self.tuning is not None and self.tuning.fits(self.definition, self.size):
            return self.tuning.breadth, "measured"
        if self.spec.index == "hnsw":
            return GUESSED_EF_SEARCH, "guessed"
        return guessed_probes(self.lists, self.size), "guessed"

    # Searches ------------------------------------------------------------------------------------------

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        excluded_ids: list[int] | None = None,
        min_score: float | None = None,
        share: float = 1.0,
    ) -> list[SearchHit]:
        """Top-k images by cosine (exact scores), without ``excluded_ids``, stopping at ``min_score``."""
        if k <= 0 or not self.dim:
            return []
        with self.catalog.connection() as connection:
            set_breadth(connection, self.spec, "index" if share >= 1 else "wide", share, self.breadth)
            hits = image_hits(connection, query, k, dim=self.dim, excluded=excluded_ids, min_score=min_score)
        return [SearchHit(hit.image, hit.score) for hit in hits]

    def neighbours(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query: (scores, ids), -1 ids padding. One statement
        per query (``nprobe`` is FAISS's; the configured breadth serves here)."""
        queries = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        scores = np.full((len(queries), k), -1.0, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if not self.dim:
            return scores[:, :0], ids[:, :0]
        with self.catalog.connection() as connection:
            set_breadth(connection, self.spec, "index", breadth=self.breadth)
            for row, query in enumerate(queries):
                for col, hit in enumerate(image_hits(connection, query, k, dim=self.dim)):
                    scores[row, col], ids[row, col] = hit.score, hit.image
        return scores, ids

    def near_pairs(self, cut: float) -> None:
        """No self-join here: the duplicate finder asks each vector's neighbours instead."""
        return None

    def reconstruct(self, vector_id: int) -> np.ndarray | None:
        """The stored float32 vector of an image (the catalog's own column, not the halfvec)."""
        with self.catalog.connection() as connection:
            blob = connection.scalar(select(ProductImage.embedding).where(ProductImage.id == int(vector_id)))
        return None if blob is None else bytes_to_vector(blob)

    def ids(self) -> np.ndarray:
        with self.catalog.connection() as connection:
            return np.fromiter(connection.scalars(select(VECTORS.c.image_id)), dtype=np.int64)

    # Facts -----------------------------------------------------------------------------------------------

    @property
    def search_device(self) -> tuple[str, str]:
        return "database", "pgvector: the catalog's PostgreSQL searches"

    def wants_rebuild(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        name = "ef_search" if spec.index == "hnsw" else "probes"
        breadth: dict[str, Any] = {name: self.breadth, f"{name}_source": self.breadth_source}
        if spec.index == "hnsw":
            breadth["m"] = spec.hnsw_m
        else:
            breadth["lists"] = self.lists or spec.lists or "4 * sqrt(vectors)"
        facts: dict[str, Any] = {
            "kind": self.kind,
            "description": spec.describe(self.kind),
            "vectors": self.size,
            "dim": self.dim,
            "table": TABLE,
            "index": spec.index,
            "index_definition": self.definition,
            "exact_search": self.definition is None,
            "exact_filter_limit": spec.exact_limit,
            **breadth,
            "recall_target": spec.recall_target,
            "memory_bytes": 0,  # in the database: nothing in this process
            "search_device": self.search_device[0],
            "search_device_reason": self.search_device[1],
        }
        if self.definition is None:
            facts["measured_recall_at_10"] = {"image_like": 1.0, "text_like": 1.0}
        elif self.tuning is not None and self.breadth_source != "guessed":
            measured = self.tuning
            facts["measured_recall_at_10"] = measured.table.get(str(self.breadth), measured.recall)
            facts["tuning_samples"] = measured.samples
            facts[f"recall_by_{name}"] = measured.table
            facts["tuning"] = {
                "measured_on_vectors": measured.vectors,
                "text_like_p50_ms": measured.p50_ms,
                "seconds": measured.seconds,
            }
        return facts


def guessed_probes(lists: int | None, size: int) -> int:
    """GUESSED_PROBES, raised so that at least ``MIN_SCANNED`` vectors are scanned (lists hold
    size / lists vectors each), and never more than the lists."""
    if lists is None or size <= 0:
        return GUESSED_PROBES
    return min(lists, max(GUESSED_PROBES, math.ceil(MIN_SCANNED * lists / size)))
