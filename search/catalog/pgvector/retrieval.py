"""Vector candidates from the catalog's PostgreSQL (the pgvector backend): the same answers as
``IndexRetrieval`` -- at most ``want`` products, each scored by its best image -- with the filter in the
SQL statement instead of an id list or a check on the hits.

A filter allowing at most ``exact_limit`` images is searched exactly (every allowed vector compared; the
count is bounded, so it costs no more than that); a broader one goes through the index with iterative
scans, its breadth scaled by 1/share (the planner's estimate of the filter's share). Several images per
product mean k image hits can be fewer than k products: the statement is run again for more hits until
``want`` products are found or no more are left, as the FAISS path does.
"""

from __future__ import annotations

import numpy as np

from search.catalog.filters import Filters
from search.catalog.pgvector.index import PgVectorIndex
from search.catalog.pgvector.search import ImageHit, allowed_images, estimated_share, image_hits, set_breadth
from search.catalog.query import Candidate
from search.catalog.store import Catalog
from search.errors import BadInput


class PgVectorRetrieval:
    def __init__(self, catalog: Catalog, index: PgVectorIndex) -> None:
        self.catalog = catalog
        self.index = index

    @property
    def dim(self) -> int | None:
        return self.index.dim or None

    @property
    def size(self) -> int:
        return len(self.index)

    def catch_up(self) -> None:
        """Nothing to catch up: a commit is searchable in the database at once."""

    def nearest(
        self,
        vector: np.ndarray,
        want: int,
        filters: Filters,
        excluded: list[int],
        min_score: float | None,
    ) -> list[Candidate]:
        """At most ``want`` products, best first, each scored by its best image."""
        dim = self.index.dim
        if not dim or want <= 0:
            return []
        if vector.shape[-1] != dim:
            raise BadInput(f"the query vector has {vector.shape[-1]} dimensions; the index has {dim}")
        where = filters.clause() if filters else None
        spec = self.index.spec
        with self.catalog.connection() as connection:
            exact, share = False, 1.0
            if where is not None:
                exact = allowed_images(connection, where, spec.exact_limit) <= spec.exact_limit
                if not exact:
                    share = estimated_share(connection, where)
            plan = "exact" if exact else ("wide" if where is not None else "index")
            set_breadth(connection, spec, plan, share)
            fetch = want * 2
            while True:
                hits = image_hits(
                    connection,
                    vector,
                    fetch,
                    dim=dim,
                    where=where,
                    excluded=excluded,
                    min_score=min_score,
                    exact=exact,
                )
                best = best_per_product(hits)
                if len(best) >= want or len(hits) < fetch:  # enough products, or no more hits
                    return best[:want]
                fetch *= 4


def best_per_product(hits: list[ImageHit]) -> list[Candidate]:
    """Each product's best image among ``hits`` (sorted best first)."""
    best: dict[int, Candidate] = {}
    for hit in hits:
        if hit.product not in best:
            best[hit.product] = Candidate(
                hit.product, hit.score, hit.image, hit.score, vector_rank=len(best) + 1
            )
    return list(best.values())
