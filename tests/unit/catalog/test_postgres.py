"""The catalog on PostgreSQL: the same store code, another dialect.

Runs when VITRINE_TEST_POSTGRES_URL points at an empty scratch database, e.g.
``postgresql+psycopg://vitrine:vitrine@127.0.0.1/vitrine_test`` (needs `pip install 'psycopg[binary]'`);
skipped otherwise, so the default suite needs no database server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.db import migrate
from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.catalog.schema import Base, is_model_table
from search.images.store import ImageStore
from search.wiring import build_products
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.postgres import postgres_database_lock

URL = os.environ.get("VITRINE_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set VITRINE_TEST_POSTGRES_URL to run against PostgreSQL")


@pytest.fixture(scope="module", autouse=True)
def database_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with postgres_database_lock(tmp_path_factory):
        yield


def empty_database() -> None:
    engine = create_engine(URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def catalog() -> Catalog:
    empty_database()
    migrate(URL)
    catalog = Catalog.open(URL)
    yield catalog
    catalog.close()


def unit(seed: int, dim: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_models_match_the_migrated_postgres_schema(catalog: Catalog) -> None:
    with catalog.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": is_model_table})
        assert compare_metadata(context, Base.metadata) == []


def test_catalog_round_trip_filters_and_changes_on_postgres(catalog: Catalog, tmp_path: Path) -> None:
    writes = [
        ProductWrite(
            f"p{i}",
            f"product {i}",
            "tile" if i % 2 else "wood",
            {"size": 60 if i < 3 else "60cm", "tags": ["x"]},
            images=[
                ImageWrite(
                    f"https://img.example/{i}-{n}.jpg", embedding=unit(10 * i + n), embedding_model="m"
                )
                for n in range(2)
            ],
        )
        for i in range(6)
    ]
    revision, records = catalog.upsert(writes)
    assert revision == 1 and [r.external_id for r in records] == [f"p{i}" for i in range(6)]
    assert sorted(catalog.get_by_ids([r.id for r in records])) == sorted(r.id for r in records)
    by_external = {r.external_id: r.id for r in records}
    tile_60 = Filters.parse({"category": "tile", "size": 60}, 100).clause()
    assert catalog.product_ids(tile_60) == [by_external["p1"]]
    size_60 = Filters.parse({"size": "60"}, 100).clause()
    assert sorted(catalog.product_ids(size_60)) == sorted(by_external[f"p{i}"] for i in range(3))

    service = build_products(
        catalog, model="m", index_path=tmp_path / "i.faiss", image_store=ImageStore(tmp_path / "images")
    )

    def search(vector: np.ndarray, k: int, filters: dict | None = None) -> list:
        query = SearchQuery([Example(vector=tuple(vector))], filters=Filters.parse(filters, 100), k=k)
        return service.search(query).hits

    found = search(unit(41), 3, {"category": "wood"})
    assert found[0].record.external_id == "p4" and found[0].score == pytest.approx(1.0, abs=1e-5)
    assert found[0].matched_image.position == 1

    p4_images = [image.id for image in catalog.get("p4").images]
    catalog.remove(["p4"])
    changes = catalog.changes_since(revision, "m")
    assert sorted(changes.removed_ids) == sorted(p4_images)
    service.refresh()
    assert "p4" not in [hit.record.external_id for hit in search(unit(40), 6)]
    assert service.verify().ok


# The API end to end on PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def pg_server(start_server):
    empty_database()  # the server migrates it at start
    return start_server(database_url=URL)


def test_api_writes_and_searches_on_postgres(pg_server) -> None:
    client = pg_server.client
    for i in range(3):
        body = {"image": b64(encode_png(patterned_image(700 + i))), "title": f"tile {i}", "color": "beige"}
        assert client.put(f"/products/pg-{i}", json=body).status_code == 201
    found = client.post("/search", json={"text": "tile", "k": 10, "filters": {"color": "beige"}})
    assert found.status_code == 200 and {hit["id"] for hit in found.json()["results"]} == {
        "pg-0",
        "pg-1",
        "pg-2",
    }
    assert client.get("/products/pg-1").json()["title"] == "tile 1"
    assert client.delete("/products/pg-1").status_code == 200
    assert_error(client.get("/products/pg-1"), 404)
    assert client.get("/ready").json()["index"]["size"] == 2


def test_concurrent_creates_of_one_id_answer_created_once_on_postgres(pg_server) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def put(i: int) -> None:
        barrier.wait()
        body = {"image": b64(encode_png(patterned_image(720 + i)))}
        statuses.append(pg_server.client.put("/products/pg-raced", json=body).status_code)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 200, 201]


def test_a_rejected_put_changes_nothing_on_postgres(pg_server) -> None:
    client = pg_server.client
    assert (
        client.put("/products/pg-x", json={"image": b64(encode_png(patterned_image(730)))}).status_code == 201
    )
    before = client.get("/products/pg-x").json()
    bad = b'{"title": "t", "size": NaN}'
    assert_error(client.put("/products/pg-x", content=bad), 400)
    surrogate = b'{"title": "\\ud800"}'
    assert_error(client.put("/products/pg-x", content=surrogate), 400)
    assert client.get("/products/pg-x").json() == before
