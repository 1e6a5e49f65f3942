"""Hybrid ranking: lexical (full-text) and vector rankings fused by weighted reciprocal rank fusion, on a
generated catalog whose titles carry the truth (see devtools/sample_hybrid.py for what is simulated)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.sample_hybrid import LOOKS, HybridCatalog, build_hybrid_catalog
from search.catalog import Catalog
from search.catalog.db import migrate
from search.catalog.fusion import reciprocal_rank_fusion
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.images.store import ImageStore
from search.model.encoder import Encoder
from search.wiring import build_products


def test_fusion_matches_a_hand_computed_example() -> None:
    # lexical A B C, vector C D A, K = 60:
    #   w = 0.5: A = .5/61 + .5/63 = C (tie: A came first), B = .5/62 = D (tie: B came first)
    #   w = 0.9: A = .9/61 + .1/63 = .016341, C = .9/63 + .1/61 = .015925, B = .9/62 = .014516, D = .1/62
    half = reciprocal_rank_fusion(["A", "B", "C"], ["C", "D", "A"], 0.5)
    assert [item for item, _ in half] == ["A", "C", "B", "D"]
    assert half[0][1] == pytest.approx(0.5 / 61 + 0.5 / 63) and half[2][1] == pytest.approx(0.5 / 62)
    lexical_heavy = reciprocal_rank_fusion(["A", "B", "C"], ["C", "D", "A"], 0.9)
    assert [item for item, _ in lexical_heavy] == ["A", "C", "B", "D"]
    assert [score for _, score in lexical_heavy] == pytest.approx(
        [0.9 / 61 + 0.1 / 63, 0.9 / 63 + 0.1 / 61, 0.9 / 62, 0.1 / 62]
    )
    assert [item for item, _ in reciprocal_rank_fusion(["A", "B"], ["B", "A"], 0.0)] == ["B", "A"]


@pytest.fixture(scope="module")
def hybrid(
    encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProductService, HybridCatalog]]:
    root: Path = tmp_path_factory.mktemp("hybrid")
    url = f"sqlite:///{root / 'vitrine.db'}"
    migrate(url)
    catalog = Catalog.open(url)
    # The looks' directions are the tiny encoder's own embeddings of their descriptions; those are
    # close together (random weights), so the image noise is small.
    directions = encoder.embed_texts(list(LOOKS))
    sample = build_hybrid_catalog(120, directions, noise=0.005, model=encoder.info.model_id)
    catalog.upsert(sample.writes)
    service = build_products(
        catalog,
        model=encoder.info.model_id,
        index_path=root / "index.faiss",
        image_store=ImageStore(root / "images"),
        encoder=encoder,
    )
    yield service, sample
    catalog.close()


def ids(service: ProductService, text: str, mode: str, k: int = 10) -> list[str]:
    return [
        hit.record.external_id
        for hit in service.search(SearchQuery([Example(text=text)], mode=mode, k=k)).hits
    ]


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_a_sku_code_finds_its_product_first(hybrid: tuple[ProductService, HybridCatalog], mode: str) -> None:
    service, sample = hybrid
    for query, truth in sample.sku_queries()[::17]:
        assert ids(service, query, mode)[:1] == sorted(truth), query


def test_the_vector_side_alone_cannot_find_a_sku(hybrid: tuple[ProductService, HybridCatalog]) -> None:
    service, sample = hybrid
    found = sum(
        ids(service, query, "vector")[:1] == sorted(truth) for query, truth in sample.sku_queries()[::17]
    )
    assert found <= 1  # what makes the lexical side necessary


def test_a_visual_description_still_finds_matching_products_in_hybrid(
    hybrid: tuple[ProductService, HybridCatalog],
) -> None:
    service, sample = hybrid
    for query, _, truth in sample.look_queries():
        top = ids(service, query, "hybrid", k=10)
        assert len(top) == 10 and set(top[: len(truth)]) <= truth, query  # every product of the look first
        assert ids(service, query, "lexical") == []  # no title holds a colour or a pattern


def test_an_exact_id_comes_first_in_every_mode(hybrid: tuple[ProductService, HybridCatalog]) -> None:
    service, _ = hybrid
    for mode in ("vector", "lexical", "hybrid"):
        assert ids(service, "hp-000042", mode)[:1] == ["hp-000042"], mode


def test_a_hybrid_search_with_a_filter_and_facets_is_one_transaction_of_few_statements(hybrid) -> None:
    """First the index is caught up (the revision, on a connection of its own, released before the
    search pins one: a search waiting for the catch-up must hold no pooled connection). Then the steps
    share one connection (one BEGIN), each step one statement: the filter's image ids, the vector hits'
    owners, the lexical ranking with the exact-id match, the page's products with their images, the
    facets. The previous search ran 13-16 statements on 7-8 connections for the same query."""
    from sqlalchemy import event

    from search.catalog.filters import Filters

    service, _ = hybrid
    query = SearchQuery(
        [Example(text="acme red striped")],
        mode="hybrid",
        filters=Filters.parse({"category": "floor"}, 100),
        facets=["category"],
        k=10,
    )
    service.search(query)
    statements: list[str] = []
    listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(service.catalog.engine, "before_cursor_execute", listener)
    try:
        service.search(query)
    finally:
        event.remove(service.catalog.engine, "before_cursor_execute", listener)
    begins = [i for i, s in enumerate(statements) if s.strip().upper().startswith("BEGIN")]
    assert begins == [0, 2], statements
    assert "catalog_state.revision" in statements[1], statements
    assert not any("catalog_state" in s for s in statements[2:]), statements
    assert len(statements) <= 8, statements
