"""Cut-offs on each list's own score, and a sort within the set that passed them, on every store:
every hit passes, the order is the sort's (missing values last, ties in relevance order), the total is
the set's size, paging walks the set without gaps or repeats, and the facets count the set."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.sample_hybrid import HybridCatalog
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.catalog.sorting import SortKey
from search.errors import BadInput
from search.model.encoder import Encoder
from tests.support.relevance import best_cosines, hybrid_service
from tests.support.stores import STORES

QUERY = "acme red striped"


@pytest.fixture(scope="module", params=STORES)
def hybrid(
    request: pytest.FixtureRequest, encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProductService, HybridCatalog]]:
    root: Path = tmp_path_factory.mktemp(f"sort-{request.param}")
    with hybrid_service(request.param, root, encoder, tmp_path_factory) as served:
        yield served


def threshold_between(values: list[float], rank: int) -> float:
    """A cut-off between the ``rank``-th and the next best value, where they differ clearly."""
    ordered = sorted(values, reverse=True)
    while ordered[rank - 1] - ordered[rank] < 1e-4:
        rank += 1
    return (ordered[rank - 1] + ordered[rank]) / 2


def every_page(service: ProductService, query: SearchQuery) -> tuple[list, int]:
    hits, total, offset = [], None, 0
    while True:
        query.offset = offset
        answer = service.search(query)
        total = answer.total if total is None else total
        assert answer.total == total  # the same set on every page
        hits += answer.hits
        if len(answer.hits) < query.k:
            return hits, total
        offset += query.k


def price_order_holds(hits: list, order: str) -> bool:
    prices = [hit.record.attributes.get("price") for hit in hits]
    present = [p for p in prices if p is not None]
    missing_last = all(p is None for p in prices[len(present) :])
    return missing_last and present == sorted(present, reverse=order == "desc")


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_a_sort_orders_every_product_above_the_vector_cut_off(hybrid, encoder: Encoder, order: str) -> None:
    service, sample = hybrid
    cosines = best_cosines(sample, encoder.embed_texts([QUERY])[0])
    cut = threshold_between(list(cosines.values()), 30)
    passing = {pid for pid, cosine in cosines.items() if cosine >= cut}
    query = SearchQuery(
        [Example(text=QUERY)],
        mode="hybrid",
        min_vector_score=cut,
        sort=[SortKey("price", order)],
        k=7,
        facets=["category"],
    )
    hits, total = every_page(service, query)
    assert total == len(passing) == len(hits)
    assert [hit.record.external_id for hit in hits if hit.vector_score < cut] == []
    assert {hit.record.external_id for hit in hits} == passing  # no gap, no repeat across pages
    assert price_order_holds(hits, order)
    # Equal prices keep their relevance order (the unsorted ranking of the same set).
    relevance = [
        h.record.external_id
        for h in service.search(
            SearchQuery([Example(text=QUERY)], mode="hybrid", min_vector_score=cut, k=100)
        ).hits
    ]
    for a, b in itertools.pairwise(hits):
        if a.record.attributes.get("price") == b.record.attributes.get("price"):
            assert relevance.index(a.record.external_id) < relevance.index(b.record.external_id)
    query.offset = 0
    assert sum(service.search(query).facets["category"].values()) == total  # facets count the set


def test_a_lexical_cut_off_keeps_only_products_scoring_above_it(hybrid) -> None:
    service, _ = hybrid
    plain = service.search(SearchQuery([Example(text="acme halden marlow")], mode="lexical", k=100)).hits
    cut = threshold_between([hit.lexical_score for hit in plain], 10)
    expected = {hit.record.external_id for hit in plain if hit.lexical_score >= cut}
    query = SearchQuery(
        [Example(text="acme halden marlow")],
        mode="lexical",
        min_lexical_score=cut,
        sort=[SortKey("finish")],
        k=4,
    )
    hits, total = every_page(service, query)
    assert {hit.record.external_id for hit in hits} == expected and total == len(expected)
    assert all(hit.lexical_score >= cut for hit in hits)
    finishes = [hit.record.attributes["finish"] for hit in hits]
    assert finishes == sorted(finishes)  # text compares as text


def test_without_a_cut_off_a_sort_orders_the_top_k_by_relevance(hybrid) -> None:
    service, _ = hybrid
    top = service.search(SearchQuery([Example(text=QUERY)], mode="hybrid", k=12)).hits
    answer = service.search(
        SearchQuery([Example(text=QUERY)], mode="hybrid", k=12, sort=[SortKey("updated_at", "desc")])
    )
    assert {h.record.external_id for h in answer.hits} == {h.record.external_id for h in top}
    assert answer.total == 12
    stamps = [hit.record.updated_at for hit in answer.hits]
    assert stamps == sorted(stamps, reverse=True)
    # The second batch was written later: its products come before the first batch's.
    batches = [int(h.record.external_id.split("-")[1]) >= 60 for h in answer.hits]
    assert batches == sorted(batches, reverse=True)


def test_two_sort_keys_and_a_min_score_in_vector_mode(hybrid, encoder: Encoder) -> None:
    service, sample = hybrid
    vector = encoder.embed_texts([QUERY])[0]
    cut = threshold_between(list(best_cosines(sample, vector).values()), 40)
    query = SearchQuery(
        [Example(vector=tuple(float(x) for x in vector))],
        min_score=cut,
        sort=[SortKey("finish", "desc"), SortKey("price")],
        k=9,
    )
    hits, total = every_page(service, query)
    assert total == len(hits) >= 40 and all(hit.score >= cut for hit in hits)
    keys = [(h.record.attributes["finish"], h.record.attributes.get("price", float("inf"))) for h in hits]
    finishes = [f for f, _ in keys]
    assert finishes == sorted(finishes, reverse=True)
    for finish in set(finishes):
        prices = [p for f, p in keys if f == finish]
        assert prices == sorted(prices)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "vector", "min_lexical_score": 1.0}, "min_lexical_score applies to the lexical"),
        ({"mode": "lexical", "min_vector_score": 0.1}, "min_vector_score applies to the vector"),
        ({"mode": "hybrid", "min_vector_score": float("nan")}, "min_vector_score must be a finite number"),
    ],
)
def test_a_cut_off_that_cannot_apply_is_refused(hybrid, fields: dict, message: str) -> None:
    service, _ = hybrid
    with pytest.raises(BadInput, match=message):
        service.search(SearchQuery([Example(text=QUERY)], **fields))


def test_the_vector_side_steps_up_until_every_product_above_the_cut_off_is_found(
    hybrid, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sort's wide window is asked for in steps (x 8 from FIRST_STEP): from a first step of 2, the
    60 products above the cut-off take three requests (2, 16, 128), and none is missed."""
    from search.catalog import search

    service, sample = hybrid
    cosines = best_cosines(sample, encoder.embed_texts([QUERY])[0])
    cut = threshold_between(list(cosines.values()), 60)
    passing = {pid for pid, cosine in cosines.items() if cosine >= cut}
    asked: list[int] = []
    nearest = service.finder.vectors.nearest
    monkeypatch.setattr(search, "FIRST_STEP", 2)
    monkeypatch.setattr(
        service.finder.vectors,
        "nearest",
        lambda v, want, *rest: asked.append(want) or nearest(v, want, *rest),
    )
    query = SearchQuery(
        [Example(text=QUERY)], mode="vector", min_vector_score=cut, sort=[SortKey("price")], k=100
    )
    answer = service.search(query)
    assert {hit.record.external_id for hit in answer.hits} == passing and answer.total == len(passing)
    assert asked == [2, 16, 128]
