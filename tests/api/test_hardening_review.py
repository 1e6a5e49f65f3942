"""The second hardening review: each class that did not hold, pinned at the smallest size that shows it.

1. composed queries count against the request limits; 2. GET /products and /similar bound their query
strings (facets, offsets, filters read by the one JSON reader) and are admitted like every model or
catalog route; 3. DELETE, PATCH and PUT on one id are linearisable; 4. the worst legal body never stalls
the server; 6. composed weights are summed in float64; 8. limits come from the settings everywhere;
9. /v1/* answers OpenAI's error shape. (5, the indexer's failure paths, and 7, the pages' headers, are
in their own files.)
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import numpy as np
import pytest

from search.catalog.compose import compose
from search.errors import BadInput
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image

IMAGE = b64(encode_png(patterned_image(700)))


@pytest.fixture
def count_text_embeddings(encoder, monkeypatch) -> list[int]:
    """How many texts the shared encoder embedded since the fixture started."""
    calls = [0]
    original = encoder.embed_texts

    def counting(texts):
        calls[0] += len(texts)
        return original(texts)

    monkeypatch.setattr(encoder, "embed_texts", counting)
    return calls


# 1. Composed queries are bounded -----------------------------------------------------------------------------


def test_composed_text_examples_count_against_the_text_limit_before_any_is_embedded(
    start_server, count_text_embeddings
):
    server = start_server(max_texts_per_request=4)
    within = {"positive": [{"text": f"tile {i}"} for i in range(3)], "negative": [{"text": "oak"}]}
    assert server.client.post("/search", json=within).status_code == 200
    count_text_embeddings[0] = 0
    over = {"positive": [{"text": f"tile {i}"} for i in range(4)], "negative": [{"text": "oak"}]}
    message = assert_error(server.client.post("/search", json=over), 413)
    assert "5 texts" in message and "VITRINE_MAX_TEXTS_PER_REQUEST" in message
    assert count_text_embeddings[0] == 0  # refused before the model saw any of them


def test_composed_image_examples_count_against_the_image_limit(start_server, count_image_embeddings):
    server = start_server(max_images_per_request=2)
    body = {"positive": [{"image": IMAGE}, {"image": IMAGE}], "negative": [{"image": IMAGE}]}
    message = assert_error(server.client.post("/search", json=body), 413)
    assert "3 images" in message and "VITRINE_MAX_IMAGES_PER_REQUEST" in message
    assert count_image_embeddings[0] == 0


def test_product_and_vector_examples_are_capped_by_their_setting(catalog_copy, start_server):
    server = start_server(max_product_examples=2)
    ids = catalog_copy.ids
    two = {"positive": [{"product_id": ids[0]}, {"product_id": ids[1]}]}
    assert server.client.post("/search", json=two).status_code == 200
    vector = [1.0] + [0.0] * 31
    three = {"positive": [{"product_id": ids[0]}, {"product_id": ids[1]}], "negative": [{"vector": vector}]}
    message = assert_error(server.client.post("/search", json=three), 413)
    assert "3 product and vector examples" in message and "VITRINE_MAX_PRODUCT_EXAMPLES" in message


# 2. GET /products and /similar ---------------------------------------------------------------------------------


def test_facets_are_capped_on_every_route_that_takes_them(catalog_copy, server):
    names = ",".join(f"f{i}" for i in range(21))
    some = catalog_copy.ids[0]
    for path in (f"/products?facets={names}", f"/products/{some}/similar?facets={names}"):
        assert "at most 20 facets" in assert_error(server.client.get(path), 400)
    body = {"text": "tile", "facets": [f"f{i}" for i in range(21)]}
    assert "at most 20 facets" in assert_error(server.client.post("/search", json=body), 400)
    assert server.client.get("/products?facets=" + ",".join(f"f{i}" for i in range(20))).status_code == 200


@pytest.mark.parametrize("offset", ["9223372036854775808", str(10**30), "-1", "1000000001"])
def test_listing_offsets_out_of_range_are_400(catalog_copy, server, offset):
    assert "offset" in assert_error(server.client.get(f"/products?offset={offset}"), 400)
    some = catalog_copy.ids[0]
    assert_error(server.client.get(f"/products/{some}/similar?offset={offset}"), 400)


def test_listing_limits_and_similar_k_are_checked_in_the_core(catalog_copy, server):
    assert "limit" in assert_error(server.client.get("/products?limit=0"), 400)
    assert "limit" in assert_error(server.client.get(f"/products?limit={10**30}"), 400)
    some = catalog_copy.ids[0]
    assert "k must be" in assert_error(server.client.get(f"/products/{some}/similar?k={10**30}"), 400)


@pytest.mark.parametrize(
    "filters",
    [
        "[" * 5000 + "]" * 5000,  # nested 5,000 deep
        '{"color": "\\ud800"}',  # a lone surrogate
        '{"color": NaN}',
        '{"color": ' + "9" * 5000 + "}",
        "not json",
    ],
    ids=["deep", "surrogate", "nan", "huge-int", "not-json"],
)
def test_query_string_filters_go_through_the_body_reader(catalog_copy, server, filters):
    some = catalog_copy.ids[0]
    encoded = quote(filters, safe="")
    assert "filters" in assert_error(server.client.get(f"/products?filters={encoded}"), 400)
    assert "filters" in assert_error(server.client.get(f"/products/{some}/similar?filters={encoded}"), 400)


def test_listing_and_product_reads_are_admitted_and_shed_with_429(catalog_copy, start_server, image_server):
    server = start_server(max_pending_requests=1)
    gate = threading.Event()
    url = image_server.add("/hardening/slow.png", encode_png(patterned_image(701)), gate=gate)
    some = catalog_copy.ids[0]
    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(server.client.put, "/products/slow", json={"image": url})
        deadline = time.monotonic() + 20
        while server.client.get("/ready").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.02)  # /ready is 503 "busy" once the PUT holds the one slot
        try:
            for path in (
                "/products",
                f"/products/{some}",
                f"/products/{some}/image",
                f"/products/{some}/similar",
            ):
                response = server.client.get(path)
                assert_error(response, 429)
                assert response.headers["retry-after"] == "1"
            assert_error(server.client.delete(f"/products/{some}"), 429)
        finally:
            gate.set()
        assert holding.result(30).status_code == 201
    assert server.client.get("/products").status_code == 200


# 3. DELETE, PATCH and PUT on one id --------------------------------------------------------------------------


def products_service(server):
    return server.app.state.vitrine.components.products


def test_delete_waits_for_the_products_write_lock(catalog_copy, server):
    some = catalog_copy.ids[0]
    service = products_service(server)
    with ThreadPoolExecutor(1) as pool:
        with service.writer.locks.hold([some]):  # as a PUT or PATCH of that id holds it
            deleting = pool.submit(server.client.delete, f"/products/{some}")
            time.sleep(0.5)
            assert not deleting.done(), "DELETE went ahead while a write of the same id held its lock"
        assert deleting.result(20).status_code == 200


def test_a_patch_of_a_product_removed_meanwhile_is_404_and_never_recreates_it(catalog_copy, server):
    """Another process removes the product between the PATCH's read and its commit."""
    some = catalog_copy.ids[1]
    service = products_service(server)
    writer = service.writer
    original = writer.commit

    def removed_first(prepared):
        service.catalog.remove([some])  # what another replica's DELETE does, without this process's lock
        return original(prepared)

    writer.commit = removed_first
    try:
        assert "no product" in assert_error(
            server.client.patch(f"/products/{some}", json={"title": "x"}), 404
        )
    finally:
        writer.commit = original
    assert_error(server.client.get(f"/products/{some}"), 404)


def test_a_put_whose_kept_image_vanished_plans_again_and_creates(catalog_copy, server):
    """The PUT's plan keeps the stored image (same content); the product is removed before the commit."""
    some = catalog_copy.ids[2]
    service = products_service(server)
    writer = service.writer
    original = writer.commit
    calls = []

    def removed_first(prepared):
        if not calls:
            service.catalog.remove([some])
        calls.append(len(prepared))
        return original(prepared)

    writer.commit = removed_first
    try:
        body = {"image": b64(catalog_copy.image_bytes(some)), "title": "again"}
        response = server.client.put(f"/products/{some}", json=body)
    finally:
        writer.commit = original
    assert response.status_code == 201, response.text  # planned again: created, with its image embedded
    assert response.json()["product"]["title"] == "again" and len(calls) == 2


def test_racing_delete_patch_and_put_on_one_id_answer_truthfully(server):
    """DELETE against PATCH and PUT, many rounds: a PATCH never answers "created" (it never creates) and
    a PUT carrying an image never answers 400 "image is required"."""
    answers = []
    for round_ in range(12):
        assert server.client.put("/products/race", json={"image": IMAGE, "title": "t"}).status_code in (
            200,
            201,
        )
        start = threading.Barrier(3)

        def go(method: str, body: dict | None = None, start: threading.Barrier = start):
            start.wait(5)
            if method == "delete":
                return method, server.client.delete("/products/race")
            return method, server.client.request(method.upper(), "/products/race", json=body)

        with ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(go, "delete"),
                pool.submit(go, "patch", {"title": f"p{round_}"}),
                pool.submit(go, "put", {"image": IMAGE, "title": f"u{round_}"}),
            ]
            answers += [future.result(30) for future in futures]
    for method, response in answers:
        assert response.status_code < 500, (method, response.text)
        if method == "patch":
            assert response.status_code in (200, 404), response.text
        if method == "put":
            assert response.status_code in (200, 201), response.text


# 4. The worst legal body --------------------------------------------------------------------------------------


def test_health_answers_within_a_second_while_the_worst_legal_body_is_read(start_server):
    server = start_server()  # VITRINE_MAX_REQUEST_BYTES: 64 MiB
    # 58 MB of 29 million tiny values: under the size limit, and what kept /health from answering for
    # 12-30 s when json.loads built all of it first.
    body = b'{"text": [' + b"0," * 29_000_000 + b"0]}"
    assert len(body) < 64 * 1024 * 1024
    answer: list = []
    thread = threading.Thread(
        target=lambda: answer.append(server.client.post("/search", content=body, timeout=120))
    )
    worst = 0.0
    thread.start()
    while thread.is_alive():
        started = time.monotonic()
        assert server.client.get("/health", timeout=30).status_code == 200
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.02)
    thread.join()
    assert worst < 1.0, f"/health took {worst:.2f} s while the body was read"
    assert "VITRINE_MAX_JSON_VALUES" in assert_error(answer[0], 413)


# 6. Composed weights in float64 -------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(1e39, 1e39), (1e-300, 1e-300), (1e39, 1.0), (1e-300, 1.0)])
def test_extreme_weights_do_not_read_as_cancelling_out(weights):
    a, b = np.eye(4, dtype=np.float32)[:2]
    q = compose([(a, weights[0]), (b, weights[1])])
    expected = np.array([weights[0], weights[1], 0, 0], dtype=np.float64) / max(weights)  # only ratios count
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(q, expected, atol=1e-6)


def test_examples_that_truly_cancel_out_are_still_refused():
    a = np.eye(4, dtype=np.float32)[0]
    with pytest.raises(BadInput, match="cancel out"):
        compose([(a, 1e39)], [(a, 1e39)])


def test_a_composed_search_with_huge_weights_answers(catalog_copy, server):
    ids = catalog_copy.ids
    body = {
        "positive": [{"product_id": ids[0], "weight": 1e39}, {"product_id": ids[1], "weight": 1e39}],
        "k": 3,
    }
    response = server.client.post("/search", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 3


# 8. Limits from the settings ------------------------------------------------------------------------------------


def test_filter_keys_are_capped_by_vitrine_max_attributes(start_server):
    server = start_server(max_attributes=3)
    filters = {f"k{i}": "x" for i in range(4)}
    message = assert_error(server.client.post("/search", json={"text": "tile", "filters": filters}), 400)
    assert "4 keys; the limit is 3 (VITRINE_MAX_ATTRIBUTES)" in message
    query = quote(json.dumps(filters))
    assert "the limit is 3" in assert_error(server.client.get(f"/products?filters={query}"), 400)


# 9. OpenAI's error shape on /v1/* ---------------------------------------------------------------------------


def test_v1_errors_have_openais_shape_and_other_routes_keep_theirs(start_server):
    server = start_server(api_tokens=["t0k"])
    headers = {"Authorization": "Bearer t0k"}
    bad = server.client.post("/v1/embeddings", json={"input": 3}, headers=headers)
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert "input" in error["message"]
    unauthenticated = server.client.post("/v1/embeddings", json={"input": "x"})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["type"] == "authentication_error"
    assert isinstance(
        assert_error(server.client.post("/search", json={"text": 3}, headers=headers), 400), str
    )
    assert isinstance(
        assert_error(server.client.post("/embed", json={"inputs": 3}, headers=headers), 400), str
    )


def test_an_unexpected_error_logs_its_traceback_with_long_lines_cut():
    from api.errors import LOG_LINE_CHARS, bounded_traceback

    try:
        raise RuntimeError("SELECT " + "x, " * 100_000)
    except RuntimeError as exc:
        text = bounded_traceback(exc)
    assert "Traceback" in text and "RuntimeError: SELECT x, x" in text
    assert max(len(line) for line in text.splitlines()) < LOG_LINE_CHARS + 40
