"""Vector candidates: the products nearest a query vector, through the vector index.

The index holds one vector per image and knows nothing of products. Here image hits become product
candidates (a product scores as its best image, and names it), the index is asked again with a larger
k when too few distinct products came back, and filters are applied without listing every product
they allow when they are broad. Each round of hits costs one statement: it names the hits' products
and, with a filter, checks it on them.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from search.catalog.filters import Filters
from search.catalog.query import Candidate, best_per_product
from search.catalog.store import Catalog
from search.catalog.sync import IndexSync
from search.errors import BadInput
from search.index.query_log import QueryLog
from search.index.vector_index import SearchHit, VectorIndex

# A filter is first checked on the nearest 1/share times the hits wanted, for these shares in turn:
# filters allowing at least 1/16 of the catalog (near the query) never list their ids.
BROAD_FILTER_SHARES = (1 / 4, 1 / 16)
BROAD_FILTER_MAX_HITS = 2_000  # each is re-scored and checked: past this, listing the ids is as cheap


class VectorRetrieval(Protocol):
    """What a search asks of the vector side: FAISS (``IndexRetrieval``) or pgvector
    (``search.catalog.pgvector.retrieval.PgVectorRetrieval``) answer it alike."""

    @property
    def dim(self) -> int | None: ...

    @property
    def size(self) -> int: ...  # image vectors searched

    def catch_up(self) -> None: ...

    def nearest(
        self,
        vector: np.ndarray,
        want: int,
        filters: Filters,
        excluded: list[int],
        min_score: float | None,
    ) -> list[Candidate]: ...


class VectorSync(Protocol):
    """The vector backend's upkeep as the service and the maintenance commands call it: ``IndexSync``
    (FAISS, an index per process) or ``PgVectorSync`` (the catalog's PostgreSQL)."""

    backend: str
    model: str
    dim: int | None
    index_path: Path | None
    query_log: QueryLog | None

    @property
    def index(self) -> Any: ...  # VectorIndex or PgVectorIndex: len, dim, revision, kind, describe, search

    def refresh(self) -> Any: ...

    def rebuild(self) -> int: ...

    def compact(self) -> int: ...

    def save(self) -> None: ...

    def checkpoint(self) -> None: ...

    def tune(self, text_samples: np.ndarray | None = None) -> dict[str, Any]: ...

    def start_background_rebuild(self) -> threading.Thread | None: ...


class IndexRetrieval:
    """Vector candidates from the process's FAISS index, kept at the catalog's revision by ``sync``."""

    def __init__(self, catalog: Catalog, sync: IndexSync) -> None:
        self.catalog = catalog
        self.sync = sync

    @property
    def dim(self) -> int | None:
        return self.sync.dim

    @property
    def size(self) -> int:
        return len(self.sync.index)

    def catch_up(self) -> None:
        """Bring the index to the catalog's revision. Called before a search pins its read connection:
        a search waiting for the sync lock must not hold a pooled connection that the sync needs."""
        self.sync.refresh()

    def nearest(
        self,
        vector: np.ndarray,
        want: int,
        filters: Filters,
        excluded: list[int],
        min_score: float | None,
    ) -> list[Candidate]:
        """At most ``want`` products, best first, each scored by its best image.

        Several images per product mean k image hits can be fewer than k products: the index is asked
        again for more image hits until ``want`` distinct products are found or it has no more."""
        index = self.sync.index  # caught up by catch_up() before the search's reads began
        if vector.shape[-1] != index.dim and len(index):
            raise BadInput(f"the query vector has {vector.shape[-1]} dimensions; the index has {index.dim}")
        allowed = None
        if filters:
            broad = self._broad_filter(index, vector, want, filters, excluded, min_score)
            if broad is not None:
                return broad
            allowed = self.catalog.image_ids(filters.clause())  # a selective filter: few ids
        fetch = want * 2
        while True:
            hits = index.search(
                vector, fetch, allowed_ids=allowed, excluded_ids=excluded, min_score=min_score
            )
            best = _by_product(hits, self.catalog.owners([hit.id for hit in hits]))
            exhausted = len(hits) < fetch or fetch >= len(index)
            if len(best) >= want or exhausted:
                return best[:want]
            fetch *= 4

    def _broad_filter(
        self,
        index: VectorIndex,
        vector: np.ndarray,
        want: int,
        filters: Filters,
        excluded: list[int],
        min_score: float | None,
    ) -> list[Candidate] | None:
        """A broad filter checked on the nearest hits instead of listed in full; None if it is too
        selective for that (the caller lists the few ids it allows).

        Listing the ids a filter allows costs in proportion to them (a second for 30% of a million).
        Here the index is asked for ``1/share`` times the hits, searching as widely as for a filter of
        that share, and the filter is checked in SQL on just those hits: when at least ``share`` of them
        pass, the hits kept are as complete as with the list. Only allowed products are returned.
        """
        fetch = want * 2
        checked = filters.clause(per_row=True)
        for share in BROAD_FILTER_SHARES:
            wide = math.ceil(fetch / share)
            if wide >= len(index) or wide > BROAD_FILTER_MAX_HITS:
                return None  # a small catalog or a deep page: the allow-list it is
            hits = index.search(vector, wide, excluded_ids=excluded, min_score=min_score, share=share)
            owners = self.catalog.owners([hit.id for hit in hits], checked)
            kept = [hit for hit in hits if hit.id in owners]
            if len(kept) >= fetch:
                best = _by_product(kept, owners)
                if len(best) >= want:
                    return best[:want]
            if len(kept) < share * wide / 8:
                return None  # far more selective than the next share: listing is cheaper than trying
        return None


def _by_product(hits: list[SearchHit], owners: dict[int, int]) -> list[Candidate]:
    """Each product's best image among ``hits`` (best first): hits of removed images are dropped."""
    return best_per_product((hit.id, owners[hit.id], hit.score) for hit in hits if hit.id in owners)
