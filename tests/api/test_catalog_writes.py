"""Catalog writes: PUT/DELETE through the API and ``indexer add``/``remove`` through the CLI are visible to
searches at once, a running server sees the CLI's writes without a restart, and a deleted product never
comes back."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog
from tests.support.http import ImageServer, assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.indexer import finish_indexer, start_indexer, summary_of
from tests.support.servers import LiveServer

StartServer = Callable[..., LiveServer]


@pytest.fixture
def server(catalog_copy: IndexedCatalog, start_server: StartServer) -> LiveServer:
    """A server on a private copy of the indexed sample catalog."""
    return start_server()


def search_ids(server: LiveServer, **body: object) -> list[str]:
    response = server.client.post("/search", json={"k": SAMPLE_PRODUCTS + 10, **body})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["results"]]


def top_hit(server: LiveServer, image: bytes) -> dict:
    response = server.client.post("/search", json={"image": b64(image), "k": 1})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def similar_ids(server: LiveServer, product_id: str) -> list[str]:
    response = server.client.get(f"/products/{product_id}/similar", params={"k": 100})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["results"]]


def index_size(server: LiveServer) -> int:
    """The server's index after catching up with the database: a search does that first (GET /info
    only reads)."""
    assert server.client.post("/search", json={"text": "tile", "mode": "vector", "k": 1}).status_code == 200
    return server.client.get("/info").json()["catalog"]["index_vectors"]


def stored_embedding(data_dir: Path, product_id: str) -> bytes:
    """The stored vector of the product's (only) image."""
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        return conn.execute(
            "SELECT i.embedding FROM product_images i JOIN products p ON p.id = i.product_id "
            "WHERE p.external_id = ?",
            (product_id,),
        ).fetchone()[0]


def assert_gone(server: LiveServer, product_id: str, image: bytes) -> None:
    """Not fetchable, not similar to anything, not found by its own image or by text."""
    assert_error(server.client.get(f"/products/{product_id}"), 404)
    assert_error(server.client.get(f"/products/{product_id}/similar"), 404)
    assert_error(server.client.get(f"/products/{product_id}/image"), 404)
    assert product_id not in search_ids(server, image=b64(image))
    assert product_id not in search_ids(server, text="tile")
    assert product_id not in similar_ids(server, "sku-00000" if product_id != "sku-00000" else "sku-00001")


# PUT ----------------------------------------------------------------------------------------------------


def test_put_new_product_is_searchable_at_once(server: LiveServer) -> None:
    image = encode_png(patterned_image(101))
    response = server.client.put(
        "/products/new-1",
        json={"image": b64(image), "title": "New tile", "category": "test tile", "color": "red", "size": 30},
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "created"
    product = response.json()["product"]
    assert product["id"] == "new-1"
    assert product["attributes"] == {"color": "red", "size": 30}
    hit = top_hit(server, image)
    assert hit["id"] == "new-1" and hit["score"] >= 0.999
    assert hit["title"] == "New tile"
    assert search_ids(server, text="tile", filters={"category": "test tile"}) == ["new-1"]
    assert search_ids(server, text="tile", filters={"size": 30}) == ["new-1"]
    assert "new-1" in similar_ids(server, "sku-00000")
    assert index_size(server) == SAMPLE_PRODUCTS + 1


def test_put_base64_image_is_stored_and_served(server: LiveServer) -> None:
    image = encode_png(patterned_image(102))
    assert server.client.put("/products/new-2", json={"image": b64(image)}).status_code == 201
    response = server.client.get("/products/new-2/image")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == image


def test_put_url_image_answers_image_with_a_redirect(server: LiveServer, image_server: ImageServer) -> None:
    image = encode_png(patterned_image(103))
    url = image_server.add("/writes/new-3.png", image)
    response = server.client.put("/products/new-3", json={"image": url, "title": "From a URL"})
    assert response.status_code == 201, response.text
    assert response.json()["product"]["image"] == url
    redirect = server.client.get("/products/new-3/image", follow_redirects=False)
    assert redirect.status_code in (302, 307)
    assert redirect.headers["location"] == url
    assert top_hit(server, image)["id"] == "new-3"


def test_put_new_image_replaces_the_products_vector(server: LiveServer, catalog_copy: IndexedCatalog) -> None:
    old_image = catalog_copy.image_bytes("sku-00003")
    new_image = encode_png(patterned_image(104))
    response = server.client.put("/products/sku-00003", json={"image": b64(new_image), "title": "Replaced"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "updated"
    hit = top_hit(server, new_image)
    assert hit["id"] == "sku-00003" and hit["score"] >= 0.999
    old_hit = top_hit(server, old_image)
    assert old_hit["id"] != "sku-00003" or old_hit["score"] < 0.999
    assert index_size(server) == SAMPLE_PRODUCTS
    assert server.client.get("/products/sku-00003/image").content == new_image


def test_put_without_image_updates_metadata_and_keeps_the_vector(
    server: LiveServer, catalog_copy: IndexedCatalog, count_image_embeddings: list[int]
) -> None:
    before = stored_embedding(catalog_copy.data_dir, "sku-00004")
    response = server.client.put("/products/sku-00004", json={"title": "Renamed", "category": "renamed tile"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "updated"
    assert count_image_embeddings[0] == 0
    assert stored_embedding(catalog_copy.data_dir, "sku-00004") == before
    assert server.client.get("/products/sku-00004").json()["title"] == "Renamed"
    assert search_ids(server, text="tile", filters={"category": "renamed tile"}) == ["sku-00004"]
    hit = top_hit(server, catalog_copy.image_bytes("sku-00004"))
    assert (hit["id"], hit["title"]) == ("sku-00004", "Renamed")
    # The stored image is kept too.
    assert server.client.get("/products/sku-00004/image").content == catalog_copy.image_bytes("sku-00004")


def test_put_same_product_again_is_unchanged_without_re_embedding(
    server: LiveServer, count_image_embeddings: list[int]
) -> None:
    body = {"image": b64(encode_png(patterned_image(105))), "title": "Same", "color": "blue"}
    assert server.client.put("/products/new-5", json=body).status_code == 201
    assert count_image_embeddings[0] == 1
    response = server.client.put("/products/new-5", json=body)
    assert response.status_code == 200
    assert response.json()["status"] == "unchanged"
    assert count_image_embeddings[0] == 1


def test_put_same_image_with_new_metadata_is_not_re_embedded(
    server: LiveServer, catalog_copy: IndexedCatalog, count_image_embeddings: list[int]
) -> None:
    before = stored_embedding(catalog_copy.data_dir, "sku-00010")
    body = {"image": b64(catalog_copy.image_bytes("sku-00010")), "title": "Uploaded again"}
    response = server.client.put("/products/sku-00010", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "updated"
    assert count_image_embeddings[0] == 0
    assert stored_embedding(catalog_copy.data_dir, "sku-00010") == before
    assert server.client.get("/products/sku-00010").json()["title"] == "Uploaded again"


def test_put_new_product_without_image_is_400(server: LiveServer) -> None:
    message = assert_error(server.client.put("/products/new-6", json={"title": "No picture"}), 400)
    assert "image" in message
    assert_error(server.client.get("/products/new-6"), 404)


def test_put_with_a_body_id_differing_from_the_path_is_400(server: LiveServer) -> None:
    body = {"id": "other", "image": b64(encode_png(patterned_image(106)))}
    message = assert_error(server.client.put("/products/new-7", json=body), 400)
    assert "other" in message and "new-7" in message
    assert_error(server.client.get("/products/new-7"), 404)
    assert_error(server.client.get("/products/other"), 404)


def test_put_with_a_matching_body_id_is_accepted(server: LiveServer) -> None:
    body = {"id": "new-8", "image": b64(encode_png(patterned_image(107)))}
    assert server.client.put("/products/new-8", json=body).status_code == 201
    assert server.client.get("/products/new-8").json()["attributes"] == {}


def test_attribute_filters_compare_typed_values_exactly(server: LiveServer) -> None:
    bodies = {
        "num-30": {"size": 30, "outdoor": True},
        "num-30.7": {"size": 30.7, "outdoor": False},
        "num-31": {"size": 31},
    }
    for seed, (product_id, attributes) in enumerate(bodies.items(), start=110):
        body = {"image": b64(encode_png(patterned_image(seed))), **attributes}
        assert server.client.put(f"/products/{product_id}", json=body).status_code == 201
    assert search_ids(server, text="tile", filters={"size": 30}) == ["num-30"]
    assert search_ids(server, text="tile", filters={"size": 30.7}) == ["num-30.7"]
    assert search_ids(server, text="tile", filters={"outdoor": True}) == ["num-30"]
    assert search_ids(server, text="tile", filters={"outdoor": False}) == ["num-30.7"]


def test_attribute_filters_match_text_and_numbers_by_their_text_form(server: LiveServer) -> None:
    # A CSV manifest gives "60" where a JSON body gives 60: both mean size 60. "60cm" and 60.5 do not.
    bodies = {
        "csv-60": {"size": "60"},
        "json-60": {"size": 60},
        "cm-60": {"size": "60cm"},
        "half": {"size": 60.5},
    }
    for seed, (product_id, attributes) in enumerate(bodies.items(), start=130):
        body = {"image": b64(encode_png(patterned_image(seed))), **attributes}
        assert server.client.put(f"/products/{product_id}", json=body).status_code == 201
    assert sorted(search_ids(server, text="tile", filters={"size": 60})) == ["csv-60", "json-60"]
    assert sorted(search_ids(server, text="tile", filters={"size": "60"})) == ["csv-60", "json-60"]
    assert search_ids(server, text="tile", filters={"size": 60.5}) == ["half"]
    assert search_ids(server, text="tile", filters={"size": "60cm"}) == ["cm-60"]
    assert search_ids(server, text="tile", filters={"size": 0}) == []


def test_updated_attributes_replace_the_old_ones_in_filters(server: LiveServer) -> None:
    image = b64(encode_png(patterned_image(140)))
    assert server.client.put("/products/recolour", json={"image": image, "color": "red"}).status_code == 201
    assert server.client.put("/products/recolour", json={"image": image, "color": "blue"}).status_code == 200
    assert search_ids(server, text="tile", filters={"color": "red"}) == []
    assert search_ids(server, text="tile", filters={"color": "blue"}) == ["recolour"]


def test_first_product_of_an_empty_catalog_is_searchable(start_server: StartServer) -> None:
    server = start_server()
    assert server.client.get("/ready").json()["index"] == {"loaded": True, "size": 0, "revision": 0}
    assert server.client.post("/search", json={"text": "tile"}).json()["results"] == []
    image = encode_png(patterned_image(120))
    assert server.client.put("/products/first", json={"image": b64(image)}).status_code == 201
    hit = top_hit(server, image)
    assert hit["id"] == "first" and hit["score"] >= 0.999
    assert similar_ids(server, "first") == []
    assert index_size(server) == 1


# DELETE -------------------------------------------------------------------------------------------------


def test_delete_removes_the_product_from_every_read(server: LiveServer, catalog_copy: IndexedCatalog) -> None:
    response = server.client.delete("/products/sku-00006")
    assert response.status_code == 200
    assert response.json() == {"deleted": "sku-00006"}
    assert_gone(server, "sku-00006", catalog_copy.image_bytes("sku-00006"))
    assert_error(server.client.post("/search", json={"product_id": "sku-00006"}), 404)
    assert index_size(server) == SAMPLE_PRODUCTS - 1
    assert server.client.get("/info").json()["catalog"]["products"] == SAMPLE_PRODUCTS - 1


def test_delete_of_an_unknown_product_is_404(server: LiveServer) -> None:
    assert_error(server.client.delete("/products/no-such"), 404)
    assert index_size(server) == SAMPLE_PRODUCTS


def test_deleted_product_stays_deleted_after_restart_and_rebuild(
    server: LiveServer,
    catalog_copy: IndexedCatalog,
    start_server: StartServer,
    indexer_cli: Callable[..., object],
) -> None:
    image = catalog_copy.image_bytes("sku-00012")
    assert server.client.delete("/products/sku-00012").status_code == 200
    server.stop()

    restarted = start_server()
    assert_gone(restarted, "sku-00012", image)
    assert index_size(restarted) == SAMPLE_PRODUCTS - 1
    restarted.stop()

    rebuilt = indexer_cli(catalog_copy.data_dir, "rebuild")
    assert rebuilt.returncode == 0, summary_of(rebuilt)
    assert f"{SAMPLE_PRODUCTS - 1} vectors" in rebuilt.stdout
    after_rebuild = start_server()
    assert_gone(after_rebuild, "sku-00012", image)
    assert index_size(after_rebuild) == SAMPLE_PRODUCTS - 1


# The CLI's writes reach a running server -------------------------------------------------------------------


def write_manifest(folder: Path, seeds: dict[str, int]) -> Path:
    """A CSV manifest of products with generated images, one per id."""
    (folder / "pictures").mkdir(parents=True)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "title", "category"])
        for product_id, seed in seeds.items():
            (folder / "pictures" / f"{product_id}.png").write_bytes(encode_png(patterned_image(seed)))
            writer.writerow([product_id, f"pictures/{product_id}.png", f"CLI product {seed}", "cli tile"])
    return manifest


def test_cli_add_is_visible_to_a_running_server(
    server: LiveServer, catalog_copy: IndexedCatalog, indexer_cli: Callable[..., object], tmp_path: Path
) -> None:
    assert index_size(server) == SAMPLE_PRODUCTS
    manifest = write_manifest(tmp_path / "more", {"cli-1": 201, "cli-2": 202})
    result = indexer_cli(catalog_copy.data_dir, "add", manifest, "--no-progress")
    assert result.returncode == 0, summary_of(result)
    assert "2 rows: 2 added" in result.stdout

    hit = top_hit(server, (tmp_path / "more" / "pictures" / "cli-2.png").read_bytes())
    assert hit["id"] == "cli-2" and hit["score"] >= 0.999
    assert server.client.get("/products/cli-1").json()["title"] == "CLI product 201"
    assert sorted(search_ids(server, text="tile", filters={"category": "cli tile"})) == ["cli-1", "cli-2"]
    assert index_size(server) == SAMPLE_PRODUCTS + 2


def test_cli_remove_is_visible_to_a_running_server(
    server: LiveServer, catalog_copy: IndexedCatalog, indexer_cli: Callable[..., object]
) -> None:
    image = catalog_copy.image_bytes("sku-00008")
    assert top_hit(server, image)["id"] == "sku-00008"
    result = indexer_cli(catalog_copy.data_dir, "remove", "sku-00008", "no-such")
    assert result.returncode == 0, summary_of(result)
    assert "removed 1 product(s); not found: no-such" in result.stdout
    assert_gone(server, "sku-00008", image)
    assert index_size(server) == SAMPLE_PRODUCTS - 1


@pytest.mark.e2e  # an indexer process of its own, racing the API
def test_api_writes_racing_an_indexer_run_lose_nothing(
    server: LiveServer,
    catalog_copy: IndexedCatalog,
    tiny_model_dir: Path,
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    # Two writers on one SQLite file: each write transaction takes the lock at BEGIN and waits its turn.
    # The indexer is a process of its own here: two processes, two SQLite file locks, as in production.
    manifest = write_manifest(tmp_path / "race", {f"race-cli-{i}": 300 + i for i in range(60)})
    process = start_indexer(
        tiny_model_dir, catalog_copy.data_dir, "add", manifest, "--no-progress", "--batch-size", "4"
    )
    for i in range(12):
        body = {"image": b64(encode_png(patterned_image(400 + i))), "title": f"api {i}"}
        assert server.client.put(f"/products/race-api-{i}", json=body).status_code == 201
    assert server.client.delete("/products/sku-00001").status_code == 200
    result = finish_indexer(process)
    assert result.returncode == 0, summary_of(result)

    expected = SAMPLE_PRODUCTS - 1 + 60 + 12
    assert index_size(server) == expected
    verify = indexer_cli(catalog_copy.data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)
    with sqlite3.connect(catalog_copy.data_dir / "vitrine.db") as conn:
        ids = [row[0] for row in conn.execute("SELECT external_id FROM products")]
    assert len(ids) == len(set(ids)) == expected
    assert "sku-00001" not in ids


# The image route stays inside the images folder ---------------------------------------------------------------


@pytest.mark.parametrize(
    "image_file", ["../../etc/passwd", "/etc/passwd", "../vitrine.db", "../index/products.faiss"]
)
def test_product_image_cannot_escape_the_images_folder(
    server: LiveServer, catalog_copy: IndexedCatalog, image_file: str
) -> None:
    with sqlite3.connect(catalog_copy.data_dir / "vitrine.db") as conn:
        conn.execute(
            "UPDATE product_images SET image_file = ? WHERE product_id = "
            "(SELECT id FROM products WHERE external_id = 'sku-00009')",
            (image_file,),
        )
    response = server.client.get("/products/sku-00009/image")
    assert_error(response, 404)


@pytest.mark.parametrize(
    "path",
    [
        "/products/..%2F..%2Fetc%2Fpasswd/image",
        "/products/..%2Fvitrine.db/image",
        "/products/%2E%2E/image",
        "/products/..%5C..%5Cvitrine.db/image",
        "/products/images%2F..%2F..%2Fvitrine.db/image",
    ],
)
def test_product_image_ids_with_path_segments_never_reach_a_file(
    server: LiveServer, catalog_copy: IndexedCatalog, path: str
) -> None:
    response = server.client.get(path)
    assert response.status_code in (400, 404), response.status_code
    assert b"root:" not in response.content
    assert response.content != (catalog_copy.data_dir / "vitrine.db").read_bytes()
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("raw_id", ["%20padded", "padded%20", "a%2Fb"])
def test_put_refuses_ids_that_would_not_round_trip(server: LiveServer, raw_id: str) -> None:
    # Surrounding spaces would be stored stripped and never found again; "/" cannot be a path segment.
    response = server.client.put(f"/products/{raw_id}", json={"image": b64(encode_png(patterned_image(150)))})
    assert response.status_code in (400, 404)
    assert set(response.json()) == {"error"}
