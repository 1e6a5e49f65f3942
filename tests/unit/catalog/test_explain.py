"""Explanations add up to the returned score in every mode, and why-not names what removed a product
(a filter key, a cut-off, the page, the fusion window), on every store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devtools.sample_hybrid import HybridCatalog
from search.catalog.explain import adds_up
from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.catalog.why_not import why_not
from search.model.encoder import Encoder
from tests.support.relevance import hybrid_service
from tests.support.stores import STORES

QUERY = "acme red striped"


@pytest.fixture(scope="module", params=STORES)
def hybrid(
    request: pytest.FixtureRequest, encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProductService, HybridCatalog]]:
    root: Path = tmp_path_factory.mktemp(f"explain-{request.param}")
    with hybrid_service(request.param, root, encoder, tmp_path_factory) as served:
        yield served


def explained(service: ProductService, **fields: object) -> list:
    fields.setdefault("positive", [Example(text=QUERY)])
    hits = service.search(SearchQuery(explain=True, k=20, **fields)).hits  # type: ignore[arg-type]
    assert hits
    return hits


@pytest.mark.parametrize(
    "fields",
    [
        {"mode": "vector"},
        {"mode": "lexical", "positive": [Example(text="acme halden marlow")]},
        {"mode": "hybrid"},
        {"mode": "hybrid", "lexical_weight": 0.2},
        {"mode": "hybrid", "lexical_weight": 0.9, "positive": [Example(text="acme marlow red")]},
        {"mode": "hybrid", "positive": [Example(text="TXK-4004")]},  # an exact SKU match: the boost
        {"mode": "lexical", "positive": [Example(text="hp-000007")]},  # an exact id in lexical mode
        {"mode": "vector", "positive": [Example(text="hp-000007")]},
    ],
    ids=["vector", "lexical", "hybrid", "hybrid-0.2", "hybrid-0.9", "sku", "id-lexical", "id-vector"],
)
def test_explain_adds_up_to_the_returned_score_in_every_mode(hybrid, fields: dict) -> None:
    service, _ = hybrid
    for hit in explained(service, **fields):
        explanation = hit.explain
        assert explanation["score"] == hit.score
        assert adds_up(explanation) == pytest.approx(hit.score, rel=1e-12, abs=1e-15)
        if fields["mode"] == "hybrid":
            w = explanation["fusion"]["lexical_weight"]
            for side, weight in (("lexical", w), ("vector", 1 - w)):
                if explanation[side] and explanation[side]["rank"] is not None:
                    assert explanation[side]["contribution"] == weight / (60 + explanation[side]["rank"])
        if explanation["vector"]:
            assert explanation["vector"]["cosine"] == hit.vector_score
            assert explanation["matched_image"]["position"] == hit.matched_image.position


def test_an_exact_match_is_explained_by_its_boost(hybrid) -> None:
    service, _ = hybrid
    hits = explained(service, mode="hybrid", positive=[Example(text="hp-000005")])
    top, rest = hits[0], hits[1:]
    assert top.record.external_id == "hp-000005" and top.explain["exact_match_boost"] > 0
    assert all(hit.explain["exact_match_boost"] == 0 for hit in rest)


def test_a_composed_query_shows_its_parts_and_they_add_up_to_the_cosine(hybrid, encoder: Encoder) -> None:
    service, _ = hybrid
    hits = explained(
        service,
        mode="vector",
        positive=[Example(text="red striped", weight=2.0), Example(product_id="hp-000003")],
        negative=[Example(text="blue dotted", weight=0.5)],
    )
    for hit in hits:
        parts = hit.explain["composed"]
        assert [(p["side"], p["kind"], p["value"]) for p in parts] == [
            ("positive", "text", "red striped"),
            ("positive", "product", "hp-000003"),
            ("negative", "text", "blue dotted"),
        ]
        assert parts[2]["coefficient"] < 0 < parts[1]["coefficient"] < parts[0]["coefficient"]
        assert sum(p["contribution"] for p in parts) == pytest.approx(hit.vector_score, abs=1e-5)


# Why not ------------------------------------------------------------------------------------------------


def query(**fields: object) -> SearchQuery:
    fields.setdefault("positive", [Example(text=QUERY)])
    fields.setdefault("mode", "hybrid")
    return SearchQuery(**fields)  # type: ignore[arg-type]


def test_why_not_a_product_in_the_results_is_null_with_its_ranks(hybrid) -> None:
    service, _ = hybrid
    first = service.search(query(k=5)).hits[2]
    answer = why_not(service.finder, query(k=5), first.record.external_id)
    assert answer["in_results"] and answer["rank"] == 3 and answer["excluded_by"] is None
    assert answer["score"] == first.score and answer["explain"]["score"] == first.score
    assert answer["vector"]["cosine"] == first.vector_score and answer["vector"]["in_window"]


def test_why_not_names_the_filter_key_that_removed_a_product(hybrid) -> None:
    service, _ = hybrid
    pid = service.search(query(k=1)).hits[0].record.external_id
    other = next(c for c in ("floor", "wall", "outdoor") if c != service.get(pid).category)
    # The failing key between two that pass: the one named is the one it fails, not the last.
    filters = Filters.parse({"finish": {"exists": True}, "category": other, "sku": {"exists": False}}, 100)
    answer = why_not(service.finder, query(filters=filters), pid)
    assert answer["excluded_by"] == {"filter": "category"} and not answer["in_results"]
    # Two failing keys: the first, in the query's order.
    both = Filters.parse({"finish": "no such finish", "category": other}, 100)
    assert why_not(service.finder, query(filters=both), pid)["excluded_by"] == {"filter": "finish"}
    assert answer["vector"]["rank"] == 1 and answer["vector"]["filtered"] is False  # its unfiltered rank


def test_why_not_names_the_cut_off(hybrid, encoder: Encoder) -> None:
    service, _ = hybrid
    hits = service.search(query(k=30)).hits
    low = min((h for h in hits if h.vector_score is not None), key=lambda h: h.vector_score)
    cut = low.vector_score + 1e-4
    answer = why_not(service.finder, query(min_vector_score=cut), low.record.external_id)
    assert answer["excluded_by"] == {"min_vector_score": cut}
    lexical = why_not(
        service.finder,
        query(mode="lexical", positive=[Example(text="acme marlow")], min_lexical_score=1e6),
        "hp-000000",
    )
    assert lexical["excluded_by"] == {"min_lexical_score": 1e6} and lexical["lexical"]["rank"] is not None
    # In vector mode min_score is the cosine: the index stopped above it, the product's own cosine says.
    far = why_not(service.finder, query(mode="vector", min_score=0.9999), low.record.external_id)
    assert far["excluded_by"] == {"min_score": 0.9999} and far["vector"]["in_window"] is False


def test_why_not_names_the_page_with_the_rank_outside_k(hybrid) -> None:
    service, _ = hybrid
    everything = [h.record.external_id for h in service.search(query(mode="vector", k=40)).hits]
    answer = why_not(service.finder, query(mode="vector", k=10), everything[26])
    assert answer["excluded_by"] == {"page": {"offset": 20, "number": 3}}
    assert answer["vector"]["rank"] == 27 and answer["rank"] is None  # outside k: found by range search
    hybrid_page = why_not(service.finder, query(k=5, offset=5), everything[0])
    assert hybrid_page["excluded_by"]["page"]["offset"] == 0 and hybrid_page["rank"] <= 5


def test_why_not_beyond_the_fusion_window_and_without_a_match(hybrid, encoder: Encoder) -> None:
    service, sample = hybrid
    vector = encoder.embed_texts([QUERY])[0]
    cosines = {
        w.external_id: max(float(np.dot(i.embedding, vector)) for i in w.images) for w in sample.writes
    }
    farthest = min((p for p in cosines if sample.brand[p] != "acme"), key=cosines.get)  # no word matches
    answer = why_not(service.finder, query(), farthest)  # 120 products, a window of 100: the last is out
    assert answer["excluded_by"] == {"window": 100}
    assert answer["vector"]["rank"] > 100 and not answer["vector"]["in_window"]
    assert answer["lexical"] == {"rank": None, "score": None, "in_window": False}
    none = why_not(service.finder, query(mode="lexical", positive=[Example(text="acme")]), "hp-000001")
    assert none["excluded_by"] == {"no_match": "lexical"}
