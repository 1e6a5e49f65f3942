"""Near-duplicate products through the API, on the tiny random model: the same picture re-encoded,
resized or copied byte for byte is found (``exact`` for the copy), distinct pictures are not; decisions
stick; results collapse; PUT answers name what they duplicate; the threshold is calibrated.

The distinct pictures are ``smooth_picture`` seeds that this model sees as different (cosine below 0.9,
checked by ``test_the_tiny_model_separates_copies_from_distinct_pictures``): a random 32 px model
confuses some pairs of unrelated pictures (0.59 mean, 0.97 at the 99th percentile over 200 pictures),
while re-encoded and resized copies stay above 0.99 (docs/duplicates.md)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.http import assert_error
from tests.support.images import b64, encode_png, reencoded, smooth_picture
from tests.support.indexer import run_indexer_in_process, summary_of
from tests.support.servers import TestServer
from tests.support.settings import indexer_settings

DISTINCT = (0, 1, 2, 3, 4, 6, 9, 11)  # smooth_picture seeds this model sees as different


def png(seed: int) -> bytes:
    return encode_png(smooth_picture(seed))


def put(server: TestServer, product_id: str, *images: bytes, **fields: object) -> dict:
    body = {"images": [b64(data) for data in images], **fields}
    response = server.client.put(f"/products/{product_id}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def duplicates_of(server: TestServer, product_id: str, **params: object) -> list[dict]:
    response = server.client.get(f"/products/{product_id}/duplicates", params=params)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_the_tiny_model_separates_copies_from_distinct_pictures(encoder) -> None:
    """The premise of the tests below, at the default threshold 0.97."""
    decode = [Image.open(io.BytesIO(data)).convert("RGB") for data in [png(s) for s in DISTINCT]]
    copies = [
        Image.open(io.BytesIO(reencoded(smooth_picture(s), quality, scale))).convert("RGB")
        for s in DISTINCT
        for quality, scale in ((30, 1.0), (85, 0.5))
    ]
    originals = encoder.embed_images(decode)
    again = encoder.embed_images(copies).reshape(len(DISTINCT), 2, -1)
    same = np.einsum("nd,ncd->nc", originals, again)
    between = originals @ originals.T - 2 * np.eye(len(DISTINCT))
    assert same.min() > 0.99 and between.max() < 0.9


def test_reencoded_resized_and_byte_copies_are_found_and_distinct_pictures_are_not(server) -> None:
    picture = smooth_picture(DISTINCT[0])
    put(server, "original", png(DISTINCT[0]), title="lamp")
    put(server, "low-quality", reencoded(picture, quality=25))
    put(server, "resized", reencoded(picture, quality=90, scale=0.5))
    put(server, "byte-copy", png(DISTINCT[0]))
    for n, seed in enumerate(DISTINCT[1:4]):
        put(server, f"other-{n}", png(seed))

    found = duplicates_of(server, "original")
    assert found[0]["id"] == "byte-copy"  # exact first
    assert {r["id"] for r in found} == {"byte-copy", "low-quality", "resized"}
    by_id = {r["id"]: r for r in found}
    assert by_id["byte-copy"]["exact"] is True and by_id["byte-copy"]["score"] == 1.0
    assert by_id["low-quality"]["exact"] is False and by_id["resized"]["exact"] is False
    assert all(r["score"] >= 0.97 for r in found)
    assert by_id["resized"]["image"]["position"] == 0 and by_id["resized"]["duplicate_image"]["position"] == 0
    assert set(by_id["resized"]) == {"id", "score", "image", "duplicate_image", "exact"}
    assert duplicates_of(server, "other-0") == []
    # A threshold above every copy's score leaves the byte copy alone (exact, whatever the threshold).
    assert [r["id"] for r in duplicates_of(server, "original", threshold=1.0)] == ["byte-copy"]
    assert len(duplicates_of(server, "original", limit=1)) == 1


def test_a_product_with_three_images_is_found_through_any_one_of_them(server) -> None:
    first, second, third = DISTINCT[1:4]
    put(server, "set", png(first), png(second), png(third))
    put(server, "copy-of-second", reencoded(smooth_picture(second), quality=30))
    put(server, "copy-of-third", reencoded(smooth_picture(third), quality=90, scale=0.5))
    put(server, "copy-of-first", png(first))
    put(server, "unrelated", png(DISTINCT[5]))
    for product_id, position in (("copy-of-first", 0), ("copy-of-second", 1), ("copy-of-third", 2)):
        found = duplicates_of(server, product_id)
        assert [r["id"] for r in found] == ["set"], product_id
        assert found[0]["duplicate_image"]["position"] == position
    assert {r["id"] for r in duplicates_of(server, "set")} == {
        "copy-of-first",
        "copy-of-second",
        "copy-of-third",
    }


def test_a_put_answer_lists_the_product_it_duplicates(server) -> None:
    first = put(server, "original", png(DISTINCT[2]))
    assert first["possible_duplicates"] == []
    relisted = put(server, "relisted", reencoded(smooth_picture(DISTINCT[2]), quality=40))
    assert [(d["id"], d["exact"]) for d in relisted["possible_duplicates"]] == [("original", False)]
    assert relisted["possible_duplicates"][0]["score"] >= 0.97
    copied = put(server, "copied", png(DISTINCT[2]))
    assert [(d["id"], d["exact"]) for d in copied["possible_duplicates"]] == [
        ("original", True),
        ("relisted", False),
    ]
    # Only new or changed images are reported: a metadata change reports nothing.
    again = server.client.put("/products/relisted", json={"title": "renamed"}).json()
    assert again["possible_duplicates"] == []
    assert put(server, "distinct", png(DISTINCT[3]))["possible_duplicates"] == []


def test_groups_over_the_catalog_and_the_decisions_that_shape_them(server) -> None:
    put(server, "a", png(DISTINCT[0]))
    put(server, "a-copy", reencoded(smooth_picture(DISTINCT[0]), quality=30))
    put(server, "b", png(DISTINCT[1]))
    put(server, "b-copy", reencoded(smooth_picture(DISTINCT[1]), quality=90, scale=0.5))
    put(server, "c", png(DISTINCT[2]))
    put(server, "d", png(DISTINCT[3]))

    def groups() -> list[tuple[str, ...]]:
        body = server.client.get("/duplicates").json()
        assert body["total"] == len(body["groups"])
        return sorted(tuple(sorted(g["products"])) for g in body["groups"])

    assert groups() == [("a", "a-copy"), ("b", "b-copy")]
    page = server.client.get("/duplicates", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and len(page["groups"]) == 1
    assert set(page["groups"][0]) == {"products", "representative", "min_score"}

    decided = server.client.post(
        "/duplicates/decisions", json={"products": ["a", "a-copy"], "decision": "distinct"}
    )
    assert decided.status_code == 200, decided.text
    assert groups() == [("b", "b-copy")]
    assert duplicates_of(server, "a") == []
    server.client.post("/duplicates/decisions", json={"products": ["c", "d"], "decision": "duplicate"})
    assert groups() == [("b", "b-copy"), ("c", "d")]
    assert [r["id"] for r in duplicates_of(server, "c")] == ["d"]
    listed = server.client.get("/duplicates/decisions").json()
    assert [(d["products"], d["decision"]) for d in listed["decisions"]] == [
        (["a", "a-copy"], "distinct"),
        (["c", "d"], "duplicate"),
    ]
    forgotten = server.client.request("DELETE", "/duplicates/decisions", json={"products": ["a-copy", "a"]})
    assert forgotten.status_code == 200, forgotten.text
    assert groups() == [("a", "a-copy"), ("b", "b-copy"), ("c", "d")]
    # Removing a product removes its decisions and its place in groups.
    assert server.client.delete("/products/d").status_code == 200
    assert server.client.get("/duplicates/decisions").json()["decisions"] == []
    assert groups() == [("a", "a-copy"), ("b", "b-copy")]


def test_a_distinct_decision_holds_after_a_restart_and_after_reembed(
    start_server: Callable[..., TestServer], tmp_path: Path, tmp_path_factory, encoder
) -> None:
    from devtools.random_model import write_random_model

    server = start_server()
    put(server, "a", png(DISTINCT[4]))
    put(server, "a-relisted", reencoded(smooth_picture(DISTINCT[4]), quality=30))
    put(server, "b", png(DISTINCT[5]))
    put(server, "b-relisted", reencoded(smooth_picture(DISTINCT[5]), quality=30))
    assert [r["id"] for r in duplicates_of(server, "a")] == ["a-relisted"]
    server.client.post(
        "/duplicates/decisions", json={"products": ["a", "a-relisted"], "decision": "distinct"}
    )
    server.stop()

    restarted = start_server()
    assert duplicates_of(restarted, "a") == []
    assert [r["id"] for r in duplicates_of(restarted, "b")] == ["b-relisted"]  # the control pair
    restarted.stop()

    other = write_random_model("tiny", tmp_path_factory.mktemp("other") / "tiny-seed-3", seed=3)
    result = run_indexer_in_process(indexer_settings(other, tmp_path / "data"), "reembed", "--no-progress")
    assert result.returncode == 0, summary_of(result)
    moved = run_indexer_in_process(indexer_settings(other, tmp_path / "data"), "duplicates", "--json")
    assert moved.returncode == 0, summary_of(moved)
    groups = [sorted(g["products"]) for g in json.loads(moved.stdout)["groups"]]
    assert groups == [["b", "b-relisted"]]  # in the new space the control pair is found, "a" is not


def test_collapse_keeps_one_product_per_group_and_pages_count_and_facets_agree(server) -> None:
    # Three groups (3, 2 and 2 members) and three single products, categories spread across them.
    layout = {
        "g1-a": (0, 30, "lamp"),
        "g1-b": (0, 60, "lamp"),
        "g1-c": (0, 90, "chair"),
        "g2-a": (1, 30, "chair"),
        "g2-b": (1, 85, "chair"),
        "g3-a": (2, 30, "table"),
        "g3-b": (2, 70, "lamp"),
        "s1": (3, None, "lamp"),
        "s2": (4, None, "table"),
        "s3": (6, None, "chair"),
    }
    for product_id, (index, quality, category) in layout.items():
        picture = smooth_picture(DISTINCT[index])
        data = encode_png(picture) if quality is None else reencoded(picture, quality=quality)
        put(server, product_id, data, category=category)
    group_of = {pid: DISTINCT[index] for pid, (index, _, _) in layout.items()}

    def search(**extra: object) -> dict:
        body = {"image": b64(png(DISTINCT[0])), "collapse": "duplicates", "facets": ["category"], **extra}
        response = server.client.post("/search", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    whole = search(k=20)
    ids = [r["id"] for r in whole["results"]]
    assert len(ids) == 6 and len({group_of[i] for i in ids}) == 6  # one per group, every group
    assert whole["count"] == 6
    first = whole["results"][0]
    assert first["id"] in ("g1-a", "g1-b", "g1-c")
    assert sorted([first["id"], *first["duplicates"]]) == ["g1-a", "g1-b", "g1-c"]
    assert next(r for r in whole["results"] if r["id"] == "s1")["duplicates"] == []
    # Facets count each group once: 6 results across the categories of the kept products' groups.
    assert sum(whole["facets"]["category"].values()) >= 6
    plain = server.client.post(
        "/search", json={"image": b64(png(DISTINCT[0])), "k": 20, "facets": ["category"]}
    ).json()
    assert plain["count"] == 10 and plain["facets"]["category"] == {"chair": 4, "lamp": 4, "table": 2}
    assert whole["facets"]["category"] == {"chair": 3, "lamp": 3, "table": 2}
    # Pages are stable: two pages of 3 are the whole list of 6, no product twice.
    pages = [r["id"] for offset in (0, 3) for r in search(k=3, offset=offset)["results"]]
    assert pages == ids
    # /products/{id}/similar collapses too (never the product itself).
    similar = server.client.get("/products/s1/similar", params={"collapse": "duplicates", "k": 20}).json()
    assert len(similar["results"]) == 5 and len({group_of[r["id"]] for r in similar["results"]}) == 5
    # Why-not names the collapse: a member left out points at the member kept in its place.
    folded = first["duplicates"][0]
    query = {"image": b64(png(DISTINCT[0])), "collapse": "duplicates", "k": 20}
    answer = server.client.post("/search/explain", json={"query": query, "product_id": folded}).json()
    assert answer["in_results"] is False
    assert answer["excluded_by"] == {"collapse": {"into": first["id"]}}
    del query["collapse"]
    answer = server.client.post("/search/explain", json={"query": query, "product_id": folded}).json()
    assert answer["in_results"] is True and answer["excluded_by"] is None


def test_collapse_is_right_just_after_a_write(server) -> None:
    put(server, "a", png(DISTINCT[0]))
    put(server, "b", png(DISTINCT[1]))

    def collapsed() -> list[str]:
        body = {"image": b64(png(DISTINCT[0])), "collapse": "duplicates", "k": 10}
        return [r["id"] for r in server.client.post("/search", json=body).json()["results"]]

    assert collapsed() == ["a", "b"]
    put(server, "a-copy", reencoded(smooth_picture(DISTINCT[0]), quality=30))  # joins a's group
    assert sorted(collapsed()) in (["a", "b"], ["a-copy", "b"])
    put(server, "a-copy", png(DISTINCT[2]))  # its picture changes: it leaves the group
    assert sorted(collapsed()) == ["a", "a-copy", "b"]
    put(server, "b-copy", png(DISTINCT[1]))  # an exact copy joins b's group
    assert len(collapsed()) == 3
    assert server.client.delete("/products/b").status_code == 200  # b's mate is alone again
    assert sorted(collapsed()) == ["a", "a-copy", "b-copy"]


def test_calibration_fits_and_stores_the_catalogs_threshold(
    server, tmp_path: Path, indexer_cli: Callable[..., object]
) -> None:
    rows = []
    for n, seed in enumerate(DISTINCT[:6]):
        put(server, f"p{n}", png(seed))
        put(server, f"p{n}-copy", reencoded(smooth_picture(seed), quality=30 + 10 * n))
        rows.append((f"p{n}", f"p{n}-copy", 1))
    rows += [(f"p{n}", f"p{n + 1}", 0) for n in range(5)]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b,is_duplicate\n" + "".join(f"{a},{b},{label}\n" for a, b, label in rows))

    result = indexer_cli(
        tmp_path / "data", "duplicates", "--calibrate", pairs, "--precision", "0.95", "--json"
    )
    assert result.returncode == 0, summary_of(result)
    answer = json.loads(result.stdout)
    fitted = answer["calibration"]
    assert fitted["precision"] == 1.0 and fitted["recall"] == 1.0 and fitted["pairs"] == 11
    assert 0.9 < fitted["threshold"] <= 1.0
    assert sorted(sorted(g["products"]) for g in answer["groups"]) == [
        [f"p{n}", f"p{n}-copy"] for n in range(6)
    ]
    # The stored threshold is the catalog's from now on.
    body = server.client.get("/products/p0/duplicates").json()
    assert body["threshold"] == fitted["threshold"]
    assert [r["id"] for r in body["results"]] == ["p0-copy"]


def test_duplicates_refuse_bad_input(server) -> None:
    put(server, "a", png(DISTINCT[0]))
    put(server, "b", png(DISTINCT[1]))
    assert "threshold" in assert_error(
        server.client.get("/products/a/duplicates", params={"threshold": 0}), 400
    )
    assert "threshold" in assert_error(server.client.get("/duplicates", params={"threshold": 1.5}), 400)
    assert "limit" in assert_error(server.client.get("/products/a/duplicates", params={"limit": 0}), 400)
    assert_error(server.client.get("/products/nope/duplicates"), 404)
    post = server.client.post
    assert "decision" in assert_error(
        post("/duplicates/decisions", json={"products": ["a", "b"], "decision": "same"}), 400
    )
    assert "two" in assert_error(
        post("/duplicates/decisions", json={"products": ["a"], "decision": "distinct"}), 400
    )
    assert "different" in assert_error(
        post("/duplicates/decisions", json={"products": ["a", "a"], "decision": "distinct"}), 400
    )
    assert_error(post("/duplicates/decisions", json={"products": ["a", "nope"], "decision": "distinct"}), 404)
    assert_error(post("/duplicates/decisions", json=["a", "b"]), 400)
    assert_error(server.client.request("DELETE", "/duplicates/decisions", json={"products": ["a", "b"]}), 404)
    assert "collapse" in assert_error(
        server.client.post("/search", json={"text": "x", "collapse": "everything"}), 400
    )
    assert "collapse" in assert_error(server.client.get("/products/a/similar", params={"collapse": "x"}), 400)


@pytest.mark.parametrize("bad", ["a,b\n", "a,b,maybe\n"])
def test_calibration_refuses_a_malformed_pairs_file(server, tmp_path: Path, indexer_cli, bad: str) -> None:
    put(server, "a", png(DISTINCT[0]))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b,1\n" + bad)
    result = indexer_cli(tmp_path / "data", "duplicates", "--calibrate", pairs)
    assert result.returncode == 1 and "pairs.csv:2" in result.stderr
