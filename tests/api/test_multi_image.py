"""Several images per product: each image is its own vector, search answers products (best image,
named), similar excludes every image of the product, one image can change without the others."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import LiveServer

StartServer = Callable[..., LiveServer]
SEEDS = {"front": 301, "side": 302, "back": 303}


def png(seed: int) -> bytes:
    return encode_png(patterned_image(seed))


@pytest.fixture
def server(start_server: StartServer) -> LiveServer:
    server = start_server()
    for i in range(6):  # neighbours with one image each
        response = server.client.put(
            f"/products/other-{i}", json={"image": b64(png(400 + i)), "color": "red"}
        )
        assert response.status_code == 201, response.text
    return server


def search(server: LiveServer, **body: object) -> list[dict]:
    response = server.client.post("/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def put_three(server: LiveServer) -> dict:
    images = [b64(png(seed)) for seed in SEEDS.values()]
    response = server.client.put("/products/trio", json={"images": images, "title": "Three views"})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_product_with_three_images_is_found_by_each_once_naming_the_image(server: LiveServer) -> None:
    product = put_three(server)["product"]
    assert [image["position"] for image in product["images"]] == [0, 1, 2]
    assert [image["url"] for image in product["images"]] == [f"/products/trio/images/{i}" for i in range(3)]
    for position, seed in enumerate(SEEDS.values()):
        results = search(server, image=b64(png(seed)), k=5)
        ids = [item["id"] for item in results]
        assert ids[0] == "trio" and ids.count("trio") == 1, ids
        assert results[0]["score"] >= 0.999
        assert results[0]["matched_image"]["position"] == position
        assert results[0]["matched_image"]["url"] == f"/products/trio/images/{position}"
        served = server.client.get(results[0]["matched_image"]["url"])
        assert served.status_code == 200 and served.content == png(seed)
    assert server.client.get("/ready").json()["index"]["size"] == 6 + 3


def test_k_counts_products_not_images(server: LiveServer) -> None:
    put_three(server)
    results = search(server, image=b64(png(SEEDS["front"])), k=7)
    ids = [item["id"] for item in results]
    assert len(ids) == len(set(ids)) == 7  # every product once, though the index holds 9 vectors


def test_similar_excludes_every_image_of_the_product(server: LiveServer) -> None:
    put_three(server)
    response = server.client.get("/products/trio/similar", params={"k": 20})
    assert response.status_code == 200, response.text
    ids = [item["id"] for item in response.json()["results"]]
    assert sorted(ids) == [f"other-{i}" for i in range(6)]


def test_removing_one_image_keeps_the_others_searchable_without_re_embedding(
    server: LiveServer, count_image_embeddings: list[int]
) -> None:
    put_three(server)
    assert count_image_embeddings[0] == 3
    keep = [b64(png(SEEDS["front"])), b64(png(SEEDS["back"]))]
    response = server.client.patch("/products/trio", json={"images": keep})
    assert response.status_code == 200, response.text
    assert count_image_embeddings[0] == 3  # the two kept images keep their vectors
    assert response.json()["changes"]["images"] == {"added": [], "removed": ["upload"], "kept": 2}
    for seed, position in ((SEEDS["front"], 0), (SEEDS["back"], 1)):
        top = search(server, image=b64(png(seed)), k=1)[0]
        assert (top["id"], top["matched_image"]["position"]) == ("trio", position)
        assert top["score"] >= 0.999
    dropped = search(server, image=b64(png(SEEDS["side"])), k=10)
    assert all(item["score"] < 0.999 for item in dropped)
    assert server.client.get("/ready").json()["index"]["size"] == 6 + 2
    assert_error(server.client.get("/products/trio/images/2"), 404)


def test_adding_an_image_embeds_only_the_new_one(
    server: LiveServer, count_image_embeddings: list[int]
) -> None:
    put_three(server)
    images = [b64(png(seed)) for seed in SEEDS.values()] + [b64(png(304))]
    response = server.client.patch("/products/trio", json={"images": images})
    assert response.status_code == 200, response.text
    assert count_image_embeddings[0] == 3 + 1
    top = search(server, image=b64(png(304)), k=1)[0]
    assert (top["id"], top["matched_image"]["position"]) == ("trio", 3)


def test_manifest_images_lists_and_shared_ids_index_every_image(
    start_server: StartServer, tmp_path: Path, indexer_cli: Callable[..., object]
) -> None:
    folder = tmp_path / "catalog"
    folder.mkdir()
    for seed in (501, 502, 503, 504):
        (folder / f"{seed}.png").write_bytes(png(seed))
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "title"])
        writer.writerow(["multi", "501.png|502.png", "Two in one cell"])
        writer.writerow(["single", "503.png", "One"])
        writer.writerow(["multi", "504.png", ""])
    data_dir = tmp_path / "data"
    result = indexer_cli(data_dir, "add", folder / "manifest.csv", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rows: 2 added" in result.stdout and "4 images embedded" in result.stdout
    verify = indexer_cli(data_dir, "verify")
    assert verify.returncode == 0, verify.stdout
    assert '"database_images": 4' in verify.stdout and '"index_vectors": 4' in verify.stdout
    server = start_server()
    for position, seed in enumerate((501, 502, 504)):
        top = search(server, image=b64(png(seed)), k=1)[0]
        assert (top["id"], top["matched_image"]["position"]) == ("multi", position)
    again = indexer_cli(data_dir, "add", folder / "manifest.csv", "--no-progress")
    assert "0 added, 0 re-embedded, 0 metadata updated, 2 unchanged" in again.stdout
