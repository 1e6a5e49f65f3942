"""Why a product is, or is not, in a search's results (POST /search/explain).

The query runs through the search's own steps (``CatalogSearch.prepare`` and ``rank``), then the
product is looked for in every list: its rank and score in the vector and the lexical list even when
it is outside the page or the lists' window (found by a range search and the full lexical ranking), and
the first step that removed it:

    {"filter": "<key>"}        a filter key it fails (the first, in the query's order)
    {"query_example": "<id>"}  it is an example of the query itself (never its own result)
    {"min_score": t}, {"min_vector_score": t}, {"min_lexical_score": t}   a cut-off it falls below
    {"window": n}              it matched, but ranked below the n candidates each list hands to fusion
    {"no_match": "<list>"}     the list that ranks this mode has no score for it (no query word matched)
    {"max_sorted": n}          a sort's set was cut at n (VITRINE_SEARCH_MAX_SORTED) before it
    {"collapse": {"into": id}} ``collapse: "duplicates"`` kept another member of its duplicate group
    {"page": {...}}            it is in the ranking, on another page (its offset)
    null                       it is in the results
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import and_

from search.catalog.filters import Filters
from search.catalog.query import Candidate, SearchQuery
from search.catalog.records import ProductRecord
from search.catalog.schema import Product
from search.catalog.search import CatalogSearch, Prepared, Ranking
from search.errors import NotFound

UNLIMITED = 1_000_000_000  # the lexical ranking in full (a diagnostic: the cost of every match)


def why_not(finder: CatalogSearch, query: SearchQuery, external_id: str) -> dict[str, Any]:
    """Where ``external_id`` went in ``query``'s search (see the module's doc for the answer's keys)."""
    catalog = finder.catalog
    record = catalog.get(external_id)
    if record is None:
        raise NotFound(f"no product with id {external_id!r}")
    prepared = finder.prepare(query)
    with catalog.reading():
        ranking = finder.rank(query, prepared)
        failed_filter = _failed_filter(finder, query.filters, record.id)
        vector = _vector_place(finder, query, prepared, ranking, record, failed_filter is None)
        lexical = _lexical_place(finder, query, prepared, ranking, record.id, failed_filter is None)
        position = next((i for i, c in enumerate(ranking.ranked) if c.product == record.id), None)
        reason = _reason(finder, query, prepared, ranking, record, position, failed_filter, vector, lexical)
        found = ranking.ranked[position] if position is not None else None
        explanation = finder.explainer(query, prepared, [found])(found, None) if found else None
    in_results = position is not None and query.offset <= position < query.offset + query.k
    return {
        "product_id": external_id,
        "mode": prepared.mode,
        "in_results": in_results,
        "rank": None if position is None else position + 1,
        "score": found.score if found else None,
        "vector": vector,
        "lexical": lexical,
        "excluded_by": reason,
        "explain": explanation,
    }


def _failed_filter(finder: CatalogSearch, filters: Filters, product: int) -> str | None:
    """The first filter key the product fails (one statement per key), None when it passes them all."""
    for condition in filters.conditions:
        clause = Filters((condition,)).clause()
        if not finder.catalog.product_ids(and_(Product.id == product, clause)):
            return condition.field
    return None


def _vector_place(
    finder: CatalogSearch,
    query: SearchQuery,
    prepared: Prepared,
    ranking: Ranking,
    record: ProductRecord,
    passes_filter: bool,
) -> dict[str, Any] | None:
    """The product's rank and best cosine in the vector list; outside the window, its rank among the
    products at least as close (filtered when it passes the filter)."""
    if prepared.vector is None:
        return None
    listed = next((c for c in ranking.vector if c.product == record.id), None)
    if listed is not None:
        return {"rank": listed.vector_rank, "cosine": listed.vector_score, "in_window": True}
    images = finder.catalog.embeddings_of([record.external_id]).get(record.external_id) or []
    if not images or set(prepared.excluded) & {image_id for image_id, _ in images}:
        return {"rank": None, "cosine": None, "in_window": False}
    query_vector = np.asarray(prepared.vector, dtype=np.float32)
    cosine = max(float(np.dot(vector, query_vector)) for _, vector in images)
    filters = query.filters if passes_filter else Filters()
    size = max(finder.vectors.size, 1)
    closer = finder.vectors.nearest(query_vector, size, filters, prepared.excluded, cosine - 1e-5)
    rank = next((i + 1 for i, c in enumerate(closer) if c.product == record.id), None)
    return {"rank": rank, "cosine": cosine, "in_window": False, "filtered": passes_filter}


def _lexical_place(
    finder: CatalogSearch,
    query: SearchQuery,
    prepared: Prepared,
    ranking: Ranking,
    product: int,
    passes_filter: bool,
) -> dict[str, Any] | None:
    """The product's rank and score in the full-text list; outside the window, in the full ranking."""
    if prepared.mode == "vector":
        return None
    at = next((i for i, (pid, _) in enumerate(ranking.lexical.ranking) if pid == product), None)
    if at is not None:
        return {"rank": at + 1, "score": ranking.lexical.ranking[at][1], "in_window": True}
    where = ranking.where if passes_filter else None
    full = finder.catalog.lexical(" ".join(query.texts), where, UNLIMITED).ranking
    at = next((i for i, (pid, _) in enumerate(full) if pid == product), None)
    if at is None:
        return {"rank": None, "score": None, "in_window": False}
    return {"rank": at + 1, "score": full[at][1], "in_window": False, "filtered": passes_filter}


def _reason(
    finder: CatalogSearch,
    query: SearchQuery,
    prepared: Prepared,
    ranking: Ranking,
    record: ProductRecord,
    position: int | None,
    failed_filter: str | None,
    vector: dict[str, Any] | None,
    lexical: dict[str, Any] | None,
) -> dict[str, Any] | None:
    if failed_filter is not None:
        return {"filter": failed_filter}
    if record.external_id in {e.product_id for e in query.examples}:
        return {"query_example": record.external_id}
    if position is not None:
        return None if query.offset <= position < query.offset + query.k else _page(position, query.k)
    fused = next((c for c in ranking.fused if c.product == record.id), None)
    if fused is None:  # not in either list's window: what would its own scores say?
        cosine = vector["cosine"] if vector else None
        text = lexical["score"] if lexical else None
        score = cosine if prepared.mode == "vector" else text if prepared.mode == "lexical" else None
        # A fused score outside the window is not known: min_score is not what removed it then.
        fused = Candidate(record.id, float("inf") if score is None else score, None, cosine, text)
    cut = query.cutoffs.reason(fused) if query.cutoffs else None
    if cut is not None:
        return cut
    collapsed = collapse_reason(finder, query, ranking, record)
    if collapsed is not None:
        return collapsed
    if any(c.product == record.id for c in ranking.fused) and query.sort:  # the sorted set was cut
        return {"max_sorted": finder.limits.max_sorted} if query.cutoffs else {"window": query.k}
    own = vector if prepared.mode == "vector" else lexical if prepared.mode == "lexical" else None
    if own is not None and own["rank"] is not None and not query.sort:
        return _page(own["rank"] - 1, query.k)  # one list is the ranking: its rank is the page
    if any(side is not None and side["rank"] is not None for side in (vector, lexical)):
        return {"window": ranking.window}
    return {"no_match": prepared.mode}


def _page(position: int, k: int) -> dict[str, Any]:
    return {"page": {"offset": position // k * k, "number": position // k + 1}}


def collapse_reason(
    finder: CatalogSearch, query: SearchQuery, ranking: Ranking, record: ProductRecord
) -> dict[str, Any] | None:
    """{"collapse": {"into": id}} when a collapsing search kept another member of the product's
    duplicate group in its place; None otherwise."""
    if not query.collapse:
        return None
    group = finder.duplicate_group_of(record.id)
    kept = next((pid for pid, g in ranking.groups.items() if g == group), None) if group is not None else None
    if kept is None or kept == record.id:
        return None
    into = finder.catalog.get_by_ids([kept]).get(kept)
    return {"collapse": {"into": into.external_id if into else None}}
