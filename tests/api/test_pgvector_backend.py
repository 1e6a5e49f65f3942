"""VITRINE_VECTOR_BACKEND=pgvector through the API, on a real PostgreSQL + pgvector (tests/support/
pgvector.py): two app instances on one catalog, as two replicas. A write on one is searchable on the
other at once, with no index to catch up; several images per product, filters, similar products,
duplicates on write, /info, /ready and /metrics all answer from the database's vectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from search.model.encoder import Encoder
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import InProcessServer, TestServer
from tests.support.settings import settings_for

Replicas = tuple[TestServer, TestServer]


def png(seed: int) -> bytes:
    return encode_png(patterned_image(seed))


@pytest.fixture
def replicas(encoder: Encoder, tiny_model_dir: Path, tmp_path: Path, pgvector_url: str) -> Iterator[Replicas]:
    """Two in-process servers on one pgvector catalog, each with a data folder of its own."""
    from api.app import create_app

    started: list[InProcessServer] = []
    for name in ("a", "b"):
        settings = settings_for(
            tiny_model_dir, tmp_path / name, database_url=pgvector_url, vector_backend="pgvector"
        )
        started.append(InProcessServer(create_app(settings, encoder=encoder)).start())
    yield started[0], started[1]
    for server in started:
        server.stop()


def search(server: TestServer, **body: object) -> list[dict]:
    response = server.client.post("/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def put(server: TestServer, product: str, **body: object) -> dict:
    response = server.client.put(f"/products/{product}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_a_write_on_one_replica_is_searchable_on_the_other_at_once_and_a_delete_is_gone(replicas) -> None:
    a, b = replicas
    for i in range(5):
        put(a, f"other-{i}", image=b64(png(400 + i)), color="red" if i % 2 else "blue")
    put(a, "trio", images=[b64(png(seed)) for seed in (301, 302, 303)], color="red", title="Three views")
    index_b = b.app.state.vitrine.components.products.index
    for position, seed in enumerate((301, 302, 303)):
        results = search(b, image=b64(png(seed)), k=10)
        ids = [item["id"] for item in results]
        assert ids[0] == "trio" and ids.count("trio") == 1 and len(ids) == 6, ids
        assert results[0]["score"] >= 0.999
        assert results[0]["matched_image"]["position"] == position
    assert len(index_b) == 8  # b wrote nothing: the facts followed its searches, the vectors never needed to
    red = search(b, image=b64(png(302)), k=10, filters={"color": "red"})
    assert sorted(item["id"] for item in red) == ["other-1", "other-3", "trio"]
    similar = b.client.get("/products/trio/similar", params={"k": 20}).json()["results"]
    assert sorted(item["id"] for item in similar) == [f"other-{i}" for i in range(5)]
    again = put(a, "copy", image=b64(png(301)))  # the same picture as trio's front
    assert [d["id"] for d in again["possible_duplicates"]] == ["trio"]

    assert a.client.delete("/products/trio").status_code in (200, 204)
    ids = [item["id"] for item in search(b, image=b64(png(301)), k=10)]
    assert "trio" not in ids and ids[0] == "copy"


def test_info_ready_and_metrics_say_pgvector_serves(replicas) -> None:
    a, _ = replicas
    put(a, "p1", image=b64(png(1)))
    info = a.client.get("/info").json()
    assert info["storage"]["vector_backend"] == "pgvector"
    assert info["index"]["kind"] == "pgvector" and info["index"]["table"] == "image_vectors"
    # One vector: no vector index yet, every search exact (measured breadths: test_pgvector_tuning.py).
    assert info["index"]["exact_search"] is True
    assert info["index"]["measured_recall_at_10"] == {"image_like": 1.0, "text_like": 1.0}
    assert info["storage"]["database"]["backend"] == "postgresql"
    assert a.client.get("/ready").json()["index"]["size"] == 1
    metrics = a.client.get("/metrics").text
    assert 'vector_backend="pgvector"' in metrics


def test_the_faiss_default_says_so(start_server: Callable[..., TestServer]) -> None:
    server = start_server()
    assert server.client.get("/info").json()["storage"]["vector_backend"] == "faiss"
    assert 'vector_backend="faiss"' in server.client.get("/metrics").text


def test_hybrid_facets_composed_collapse_and_explain_answer_as_with_faiss(
    replicas, start_server: Callable[..., TestServer]
) -> None:
    a, b = replicas
    faiss = start_server()  # SQLite and FAISS: the reference
    for server in (a, faiss):
        for i in range(6):
            put(
                server,
                f"p{i}",
                image=b64(png(500 + i)),
                title=f"ceramic tile {i}",
                color=["red", "blue"][i % 2],
            )
        put(server, "twin", image=b64(png(500)), title="ceramic tile twin", color="red")  # p0's picture
    body = {"text": "ceramic tile", "mode": "hybrid", "k": 10, "facets": ["color"]}
    answer = b.client.post("/search", json=body).json()
    assert len(answer["results"]) == 7 and answer["facets"] == {"color": {"red": 4, "blue": 3}}

    def ranked(server: TestServer, **query: object) -> list[tuple[str, float]]:
        # twin and p0 are one picture: they tie to the last float bit, which FAISS and NumPy round
        # apart (which of them leads, or stays after a collapse, is that bit): one name for both.
        found = [
            (item["id"].replace("twin", "p0"), round(item["score"], 4)) for item in search(server, **query)
        ]
        return sorted(found, key=lambda hit: (-hit[1], hit[0]))

    for query in (
        {"positive": [{"product_id": "p3"}], "negative": [{"product_id": "p4"}], "k": 4, "mode": "vector"},
        {"image": b64(png(500)), "k": 10, "collapse": "duplicates"},
        {"text": "tile", "mode": "vector", "k": 5, "filters": {"color": "blue"}},
    ):
        assert ranked(b, **query) == ranked(faiss, **query), query
    collapsed = [item["id"] for item in search(b, image=b64(png(500)), k=10, collapse="duplicates")]
    assert collapsed.count("p0") + collapsed.count("twin") == 1 and len(collapsed) == 6
    why = b.client.post(
        "/search/explain", json={"query": {"image": b64(png(501)), "k": 1}, "product_id": "p5"}
    )
    assert why.status_code == 200, why.text
