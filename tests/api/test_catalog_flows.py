"""End to end: a generated catalog indexed by ``python -m indexer``, searched through a real server."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search.catalog import Catalog
from search.model.encoder import Encoder
from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog
from tests.support.http import ImageServer, assert_error
from tests.support.images import b64
from tests.support.servers import LiveServer
from tests.support.settings import settings_for

# Products of both stored formats: every fifth sample product is a PNG, the others JPEG.
PROBE_IDS = ["sku-00000", "sku-00003", "sku-00017", "sku-00039"]


@pytest.fixture(scope="module")
def data_dir(indexed_catalog: IndexedCatalog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("e2e") / "data"
    shutil.copytree(indexed_catalog.data_dir, target)
    return target


@pytest.fixture(scope="module")
def catalog_server(encoder: Encoder, tiny_model_dir: Path, data_dir: Path) -> Iterator[LiveServer]:
    """One server on a copy of the indexed catalog; the tests here only read."""
    from api.app import create_app

    server = LiveServer(create_app(settings_for(tiny_model_dir, data_dir), encoder=encoder)).start()
    yield server
    server.stop()


def search(server: LiveServer, **body: object) -> list[dict]:
    response = server.client.post("/search", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["count"] == len(payload["results"])
    return payload["results"]


def scores_of(results: list[dict]) -> list[float]:
    return [item["score"] for item in results]


def assert_descending(results: list[dict]) -> None:
    scores = scores_of(results)
    assert scores == sorted(scores, reverse=True)


# Probes ---------------------------------------------------------------------------------------------------


def test_ready_reports_the_loaded_index_and_its_size(catalog_server: LiveServer) -> None:
    body = catalog_server.client.get("/ready").json()
    assert body["status"] == "ready"
    assert body["index"]["loaded"] is True
    assert body["index"]["size"] == SAMPLE_PRODUCTS


def test_info_reports_the_catalog_size(catalog_server: LiveServer) -> None:
    body = catalog_server.client.get("/info").json()
    assert body["catalog"] == {"products": SAMPLE_PRODUCTS, "index_vectors": SAMPLE_PRODUCTS}


# Products ----------------------------------------------------------------------------------------------


def test_product_shows_the_manifest_row(catalog_server: LiveServer, indexed_catalog: IndexedCatalog) -> None:
    row = indexed_catalog.row("sku-00007")
    body = catalog_server.client.get("/products/sku-00007").json()
    assert body["id"] == "sku-00007"
    assert body["title"] == row["title"]
    assert body["category"] == row["category"]
    fields = ("color", "pattern", "finish", "brand", "sku", "price")
    assert body["attributes"] == {key: row[key] for key in fields if row.get(key)}
    assert body["image"] == row["image"]
    assert body["image_url"] == "/products/sku-00007/image"


def test_product_image_is_the_indexed_file(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog
) -> None:
    for product_id in PROBE_IDS:
        response = catalog_server.client.get(f"/products/{product_id}/image")
        assert response.status_code == 200
        assert response.content == indexed_catalog.image_bytes(product_id)
        expected = "image/png" if product_id == "sku-00000" else "image/jpeg"
        assert response.headers["content-type"] == expected


def test_unknown_product_is_404_everywhere(catalog_server: LiveServer) -> None:
    client = catalog_server.client
    for path in ("/products/no-such", "/products/no-such/similar", "/products/no-such/image"):
        assert "no-such" in assert_error(client.get(path), 404)
    assert_error(client.post("/search", json={"product_id": "no-such"}), 404)


# Similar -----------------------------------------------------------------------------------------------


def test_similar_products_come_in_descending_score_never_the_product_itself(
    catalog_server: LiveServer,
) -> None:
    for product_id in PROBE_IDS:
        response = catalog_server.client.get(f"/products/{product_id}/similar", params={"k": 10})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == 10
        ids = [item["id"] for item in results]
        assert product_id not in ids
        assert len(set(ids)) == 10
        assert_descending(results)


def test_similar_with_k_above_the_catalog_returns_every_other_product(catalog_server: LiveServer) -> None:
    response = catalog_server.client.get("/products/sku-00001/similar", params={"k": 100})
    ids = [item["id"] for item in response.json()["results"]]
    assert sorted(ids) == sorted(f"sku-{n:05d}" for n in range(SAMPLE_PRODUCTS) if n != 1)


def test_similar_by_category_stays_in_the_category(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog
) -> None:
    category = indexed_catalog.row("sku-00002")["category"]
    expected = {row["id"] for row in indexed_catalog.rows if row["category"] == category} - {"sku-00002"}
    response = catalog_server.client.get(
        "/products/sku-00002/similar", params={"k": 100, "category": category}
    )
    results = response.json()["results"]
    assert {item["id"] for item in results} == expected
    assert all(item["category"] == category for item in results)


def test_search_by_product_id_equals_similar(catalog_server: LiveServer) -> None:
    by_search = search(catalog_server, product_id="sku-00005", k=5)
    by_similar = catalog_server.client.get("/products/sku-00005/similar", params={"k": 5}).json()["results"]
    assert [item["id"] for item in by_search] == [item["id"] for item in by_similar]
    assert "sku-00005" not in [item["id"] for item in by_search]


# Search by image and text ----------------------------------------------------------------------------------


def test_search_by_a_products_own_image_finds_it_first(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog
) -> None:
    for product_id in PROBE_IDS:
        results = search(catalog_server, image=b64(indexed_catalog.image_bytes(product_id)), k=5)
        assert results[0]["id"] == product_id
        assert results[0]["score"] >= 0.999
        assert_descending(results)


def test_search_by_a_products_image_url_finds_it_first(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog, image_server: ImageServer
) -> None:
    for product_id in PROBE_IDS[:2]:
        path = indexed_catalog.image_path(product_id)
        url = image_server.add(f"/e2e/{path.name}", path.read_bytes())
        results = search(catalog_server, image=url, k=3)
        assert results[0]["id"] == product_id
        assert results[0]["score"] >= 0.999


def test_text_search_returns_k_results_sorted_by_score(catalog_server: LiveServer) -> None:
    results = search(catalog_server, text="beige matte stripes ceramic tile", k=7)
    assert len(results) == 7
    assert len({item["id"] for item in results}) == 7
    assert_descending(results)


def test_category_filter_restricts_results(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog
) -> None:
    category, count = Counter(row["category"] for row in indexed_catalog.rows).most_common(1)[0]
    results = search(catalog_server, text="tile", k=SAMPLE_PRODUCTS, filters={"category": category})
    assert len(results) == count
    assert all(item["category"] == category for item in results)
    assert_descending(results)


def test_attribute_filter_restricts_results(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog
) -> None:
    color, count = Counter(row["color"] for row in indexed_catalog.rows).most_common(1)[0]
    results = search(catalog_server, text="tile", k=SAMPLE_PRODUCTS, filters={"color": color})
    assert len(results) == count
    assert all(item["attributes"]["color"] == color for item in results)


def test_category_and_attribute_filters_combine(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog
) -> None:
    row = indexed_catalog.row("sku-00011")
    filters = {"category": row["category"], "finish": row["finish"]}
    expected = {
        item["id"]
        for item in indexed_catalog.rows
        if item["category"] == row["category"] and item["finish"] == row["finish"]
    }
    image = b64(indexed_catalog.image_bytes("sku-00011"))
    results = search(catalog_server, image=image, k=SAMPLE_PRODUCTS, filters=filters)
    assert {item["id"] for item in results} == expected
    assert results[0]["id"] == "sku-00011"


def test_filter_that_matches_nothing_returns_no_results(catalog_server: LiveServer) -> None:
    assert search(catalog_server, text="tile", k=5, filters={"color": "no-such-colour"}) == []


def test_min_score_drops_weaker_results(catalog_server: LiveServer, indexed_catalog: IndexedCatalog) -> None:
    image = b64(indexed_catalog.image_bytes("sku-00020"))
    everything = search(catalog_server, image=image, k=SAMPLE_PRODUCTS)
    threshold = everything[5]["score"]
    results = search(catalog_server, image=image, k=SAMPLE_PRODUCTS, min_score=threshold)
    assert [item["id"] for item in results] == [item["id"] for item in everything[:6]]
    assert all(item["score"] >= threshold for item in results)
    assert search(catalog_server, image=image, k=5, min_score=1.01) == []


# The stored vectors are the model's ------------------------------------------------------------------------


def test_stored_vector_equals_the_image_embedding_mode(
    catalog_server: LiveServer, indexed_catalog: IndexedCatalog, data_dir: Path
) -> None:
    catalog = Catalog.open(f"sqlite:///{data_dir / 'vitrine.db'}")
    try:
        for product_id in PROBE_IDS:
            found = catalog.embeddings(product_id)
            assert found is not None and len(found) == 1
            stored = found[0][1]
            response = catalog_server.client.post(
                "/",
                json={
                    "inputs": b64(indexed_catalog.image_bytes(product_id)),
                    "parameters": {"mode": "image_embedding"},
                },
            )
            assert response.status_code == 200, response.text
            answered = np.asarray(response.json()[0]["embedding"], dtype=np.float32)
            cosine = float(stored @ answered / (np.linalg.norm(stored) * np.linalg.norm(answered)))
            assert cosine >= 0.9999, (product_id, cosine)
            assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-4)
    finally:
        catalog.close()
