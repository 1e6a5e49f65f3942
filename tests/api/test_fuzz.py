"""Property-based fuzz of the hand-read bodies (POST /, POST /search, PUT /products/{id}) against a real
server: whatever arrives, no 5xx, every 4xx is ``{"error": str}``, and a rejected write changes nothing.

Bodies mix well-formed requests with hostile pieces: lone surrogates, NaN/Infinity/1e400 and huge
integers written raw into the JSON text, wrong types anywhere, unknown modes and keys.

The default profile (tests/conftest.py) runs a few dozen cases per route; the long one is a command:
``pytest tests/api/test_fuzz.py --hypothesis-profile=fuzz-long`` (3,400 cases per test, 20,400 in all).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from search.endpoint import MODES
from tests.support.images import b64, encode_png, image_bytes, patterned_image
from tests.support.servers import LiveServer


class Raw(str):
    """A literal written into the JSON text as it is (what json.dumps would refuse to write)."""


HOSTILE_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "9" * 4301,
    "-" + "9" * 30,
    "18446744073709551616",
]
SURROGATES = ["\ud800", "a\udfffb", "\udc00" * 3]


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)}: {to_json(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)  # ensure_ascii: a lone surrogate becomes the escape \ud800


texts = st.one_of(st.text(max_size=30), st.sampled_from(SURROGATES), st.just("x" * 5000))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(HOSTILE_LITERALS).map(Raw),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def fuzz_server(start_shared_server, image_server) -> LiveServer:
    server = start_shared_server(max_attributes=8, max_title_chars=200)
    image_server.add("/fuzz/ok.png", encode_png(patterned_image(900)))
    image_server.add("/fuzz/text.txt", b"not an image")
    for i in range(3):
        body = {"image": b64(encode_png(patterned_image(901 + i))), "title": f"seed {i}", "color": "red"}
        assert server.client.put(f"/products/seed-{i}", json=body).status_code in (200, 201)
    return server


def images(image_server_port: int) -> st.SearchStrategy:
    base = f"http://127.0.0.1:{image_server_port}"
    return st.one_of(
        st.sampled_from(
            [
                b64(image_bytes(size=(20, 12))),
                b64(image_bytes(fmt="JPEG", size=(40, 40))),
                "data:image/png;base64," + b64(image_bytes(size=(8, 8))),
                f"{base}/fuzz/ok.png",
                f"{base}/fuzz/text.txt",
                f"{base}/fuzz/missing.png",
                "http://10.0.0.1/a.png",
                "ftp://example.com/a.png",
                "not base64 at all!",
                "",
            ]
        ),
        texts,
    )


def inference_bodies(image: st.SearchStrategy) -> st.SearchStrategy:
    single = st.one_of(image, texts)
    inputs = st.one_of(
        single,
        st.lists(single, max_size=4),
        st.fixed_dictionaries(
            {},
            optional={
                "image": image,
                "images": st.lists(image, max_size=3),
                "text": texts,
                "texts": st.lists(texts, max_size=3),
            },
        ),
        json_values,
    )
    parameters = st.fixed_dictionaries(
        {},
        optional={
            "mode": st.one_of(st.sampled_from(MODES), json_values),
            "candidate_labels": st.one_of(st.lists(texts, max_size=4), json_values),
            "hypothesis_template": st.one_of(st.sampled_from(["{}", "a photo of {}.", "{}" * 300]), texts),
            "multi_label": st.one_of(st.booleans(), json_values),
            "top_k": st.one_of(st.integers(-3, 5), json_values),
        },
    )
    well_formed = st.fixed_dictionaries(
        {"inputs": inputs}, optional={"parameters": st.one_of(parameters, json_values)}
    )
    return st.one_of(well_formed, json_values)


def search_bodies(image: st.SearchStrategy) -> st.SearchStrategy:
    well_formed = st.fixed_dictionaries(
        {},
        optional={
            "text": texts,
            "image": image,
            "product_id": st.one_of(st.sampled_from(["seed-0", "seed-1", "nope"]), texts),
            "vector": st.one_of(st.lists(st.floats(-2, 2), min_size=32, max_size=32), json_values),
            "k": st.one_of(st.integers(-2, 1200), json_values),
            "filters": st.one_of(st.dictionaries(texts, scalars, max_size=4), json_values),
            "min_score": st.one_of(st.floats(-1, 1), json_values),
        },
    )
    return st.one_of(well_formed, json_values)


product_ids = st.one_of(
    st.sampled_from(["seed-0", "seed-1", "seed-2", "fuzz-new", "a b", "é", "x" * 300]),
    st.text(min_size=1, max_size=20),
)


def put_bodies(image: st.SearchStrategy) -> st.SearchStrategy:
    fields = st.fixed_dictionaries(
        {},
        optional={
            "image": image,
            "title": st.one_of(texts, json_values),
            "category": st.one_of(texts, json_values),
        },
    )
    attributes = st.dictionaries(texts, json_values, max_size=10)
    well_formed = st.tuples(fields, attributes).map(lambda pair: {**pair[1], **pair[0]})
    return st.one_of(well_formed, json_values)


def assert_answer(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text[:200]
        body = response.json()
        assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]


def post(server: LiveServer, path: str, body: Any):
    return server.client.post(
        path, content=to_json(body).encode(), headers={"Content-Type": "application/json"}
    )


@pytest.fixture(scope="module")
def image_strategy(image_server) -> st.SearchStrategy:
    return images(image_server.port)


def test_fuzz_inference_bodies(fuzz_server, image_strategy):
    @given(body=inference_bodies(image_strategy))
    def check(body: Any) -> None:
        assert_answer(post(fuzz_server, "/", body))

    check()


def test_fuzz_search_bodies(fuzz_server, image_strategy):
    @given(body=search_bodies(image_strategy))
    def check(body: Any) -> None:
        assert_answer(post(fuzz_server, "/search", body))

    check()


def test_fuzz_put_bodies_and_rejected_writes_change_nothing(fuzz_server, image_strategy):
    @given(product_id=product_ids, body=put_bodies(image_strategy))
    def check(product_id: str, body: Any) -> None:
        path = "/products/" + quote(product_id, safe="")
        before = fuzz_server.client.get(path)
        response = fuzz_server.client.put(
            path, content=to_json(body).encode(), headers={"Content-Type": "application/json"}
        )
        assert_answer(response)
        if response.status_code >= 400:
            after = fuzz_server.client.get(path)
            assert (after.status_code, after.content) == (before.status_code, before.content)

    check()


# Query strings and composed queries (the second review) -------------------------------------------------------

query_ints = st.one_of(
    st.integers(-5, 2000),
    st.sampled_from([2**31, 2**63, 2**63 + 1, 10**30, -(2**63)]),
).map(str) | st.sampled_from(["", "x", "1.5", "1e3", " 3", "NaN"])


def filters_text() -> st.SearchStrategy:
    deep = st.integers(1, 6000).map(lambda depth: "[" * depth + "]" * depth)
    nested_objects = st.integers(1, 3000).map(lambda depth: '{"a": ' * depth + "1" + "}" * depth)
    return st.one_of(
        json_values.map(to_json),
        st.dictionaries(texts, scalars, max_size=4).map(to_json),
        deep,
        nested_objects,
        texts,
        st.just('{"color": "\\ud800"}'),
    )


facet_lists = st.one_of(
    st.lists(st.one_of(texts, st.sampled_from(["color", "category", "title"])), max_size=30).map(",".join),
    st.integers(0, 700).map(lambda n: ",".join(f"f{i}" for i in range(n))),
)


# httpx refuses to build a URL past 65,536 characters; a URL that long is the HTTP server's to refuse.
CLIENT_URL_LIMIT = 60_000


def query_string(params: dict[str, str]) -> str:
    query = "&".join(
        f"{key}={quote(value.encode('utf-8', 'surrogatepass'), safe='')}" for key, value in params.items()
    )
    assume(len(query) < CLIENT_URL_LIMIT)
    return query


def test_fuzz_product_listing_query_strings(fuzz_server):
    @given(
        params=st.fixed_dictionaries(
            {},
            optional={
                "limit": query_ints,
                "offset": query_ints,
                "filters": filters_text(),
                "facets": facet_lists,
            },
        )
    )
    def check(params: dict[str, str]) -> None:
        assert_answer(fuzz_server.client.get("/products?" + query_string(params)))

    check()


def test_fuzz_similar_query_strings(fuzz_server):
    @given(
        product_id=product_ids,
        params=st.fixed_dictionaries(
            {},
            optional={
                "k": query_ints,
                "offset": query_ints,
                "min_score": st.one_of(st.floats().map(str), texts),
                "category": texts,
                "filters": filters_text(),
                "facets": facet_lists,
            },
        ),
    )
    def check(product_id: str, params: dict[str, str]) -> None:
        path = f"/products/{quote(product_id, safe='')}/similar?" + query_string(params)
        assert_answer(fuzz_server.client.get(path))

    check()


def composed_queries(image: st.SearchStrategy) -> st.SearchStrategy:
    weights = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0, -1, 1e39, 1e-300, 1e308]),
        st.sampled_from(HOSTILE_LITERALS).map(Raw),
        json_values,
    )
    one = st.sampled_from(["text", "image", "product_id", "vector"]).flatmap(
        lambda kind: st.fixed_dictionaries(
            {
                kind: {
                    "text": texts,
                    "image": image,
                    "product_id": st.sampled_from(["seed-0", "seed-1", "nope"]),
                    "vector": st.lists(st.floats(-2, 2), min_size=32, max_size=32),
                }[kind]
            },
            optional={"weight": weights},
        )
    )
    examples = st.one_of(st.lists(one, max_size=6), st.lists(one, min_size=30, max_size=40), json_values)
    return st.fixed_dictionaries(
        {"positive": examples},
        optional={
            "negative": examples,
            "mode": st.sampled_from(["vector", "lexical", "hybrid", "other"]),
            "k": st.integers(-1, 50),
            "facets": st.lists(texts, max_size=25),
        },
    )


def test_fuzz_composed_queries(fuzz_server, image_strategy):
    @given(body=composed_queries(image_strategy))
    def check(body: Any) -> None:
        assert_answer(post(fuzz_server, "/search", body))

    check()
