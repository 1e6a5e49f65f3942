"""Vector candidates from the catalog's PostgreSQL (the pgvector backend): the same answers as
``IndexRetrieval`` -- at most ``want`` products, each scored by its best image -- with the filter in the
SQL statement instead of an id list or a check on the hits.

A filter allowing at most ``exact_limit`` products is searched exactly (every allowed vector compared; the
count that decides it is bounded, and skipped when the planner's estimate is far above the limit); a
broader one goes through the index with iterative scans, its breadth scaled by 1/share (the planner's
estimate of the filter's share), the filter checked on each vector the scan yields. Several images per
product mean k image hits can be fewer than k products: the statement is run again for more hits until
``want`` products are found or no more are left, as the FAISS path does.
"""

from __future__ import annotations

import numpy as np

from search.catalog.filters import Filters
from search.catalog.pgvector.index import PgVectorIndex
from search.catalog.pgvector.search import (
    allowed_products,
    estimated_share,
    image_hits,
    set_breadth,
)
from search.catalog.query import Candidate, best_per_product
from search.catalog.store import Catalog
from search.errors import BadInput

# A filter the planner estimates at more than this many times the exact limit is taken as broad.
CLEARLY_BROAD = 4


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
        """The vectors need no catching up (a commit is searchable at once); the index's facts (its size,
        which the plan choice reads, and what /ready shows) follow the catalog's revision."""
        if self.catalog.revision() != self.index.revision:
            self.index.refresh()

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
                estimate = estimated_share(connection, where)
                # Far above the limit by the planner's estimate: broad, without counting (a bounded
                # count still reads exact_limit rows of the filter's index). Near or
                # below it, or without statistics, the count decides: an estimate must never send a
                # selective filter wide.
                size = max(len(self.index), 1)
                if estimate is None or estimate * size <= CLEARLY_BROAD * spec.exact_limit:
                    allowed = allowed_products(connection, where, spec.exact_limit)
                    exact = allowed <= spec.exact_limit
                    estimate = estimate if estimate is not None else allowed / size  # at least that
                share = estimate
            plan = "exact" if exact else ("wide" if where is not None else "index")
            set_breadth(connection, spec, plan, share, self.index.breadth)
            if plan == "wide":  # checked on the vectors the scan yields, not listed in full
                where = filters.clause(per_row=True)
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
                    per_row=plan == "wide",
                )
                best = best_per_product((hit.image, hit.product, hit.score) for hit in hits)
                if len(best) >= want or len(hits) < fetch:  # enough products, or no more hits
                    return best[:want]
                fetch *= 4
