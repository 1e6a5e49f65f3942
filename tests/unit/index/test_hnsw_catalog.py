"""The catalog served from an HNSW index (VITRINE_INDEX_TYPE=hnsw): same API, same guarantees."""

from __future__ import annotations

import json
import subprocess

from tests.support.catalogs import SAMPLE_PRODUCTS
from tests.support.images import b64, encode_png, patterned_image
from tests.support.indexer import summary_of


def test_switching_to_hnsw_rebuilds_the_index_and_search_works(catalog_copy, start_server):
    server = start_server(index_type="hnsw")  # the catalog's index file is flat: rebuilt at start
    assert server.client.get("/ready").json()["index"]["size"] == SAMPLE_PRODUCTS
    for product_id in ("sku-00003", "sku-00017"):
        body = {"image": b64(catalog_copy.image_bytes(product_id)), "k": 3}
        top = server.client.post("/search", json=body).json()["results"][0]
        assert top["id"] == product_id and top["score"] >= 0.999
    similar = server.client.get("/products/sku-00003/similar?k=5").json()["results"]
    assert "sku-00003" not in [hit["id"] for hit in similar]
    scores = [hit["score"] for hit in similar]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5


def test_hnsw_catalog_sees_puts_and_deletes_at_once(catalog_copy, start_server):
    server = start_server(index_type="hnsw")
    image = encode_png(patterned_image(500))
    assert (
        server.client.put("/products/hnsw-new", json={"image": b64(image), "color": "teal"}).status_code
        == 201
    )
    top = server.client.post("/search", json={"image": b64(image), "k": 1}).json()["results"][0]
    assert top["id"] == "hnsw-new"
    assert server.client.delete("/products/hnsw-new").status_code == 200
    results = server.client.post("/search", json={"image": b64(image), "k": 5}).json()["results"]
    assert "hnsw-new" not in [hit["id"] for hit in results]
    assert server.client.get("/ready").json()["index"]["size"] == SAMPLE_PRODUCTS


def test_indexer_verify_and_stats_with_hnsw(catalog_copy, indexer_cli):
    def indexer(*args: str) -> subprocess.CompletedProcess[str]:
        return indexer_cli(catalog_copy.data_dir, *args, index_type="hnsw")

    verify = indexer("verify")  # the file on disk is flat: reported, not silently replaced
    assert verify.returncode == 1 and "HNSW" in verify.stdout, summary_of(verify)
    rebuild = indexer("rebuild")
    assert rebuild.returncode == 0, summary_of(rebuild)
    verify = indexer("verify")
    assert verify.returncode == 0, summary_of(verify)
    stats = json.loads(indexer("stats").stdout)
    assert stats["index_type"].startswith("HNSW32")
    assert stats["index_vectors"] == SAMPLE_PRODUCTS
