"""Reads from a streaming standby (VITRINE_DATABASE_READ_URL) and read-your-writes, on a real primary and
standby made with ``pg_basebackup -R`` on loopback (tests/support/pg_standby.py).

Pausing the standby's WAL replay (``pg_wal_replay_pause()``) makes the lag as long as a test needs: a
process that did not write then reads the old state (its reads really go to the standby), and the
process that wrote waits for the replay, then reads the primary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.db import migrate
from search.catalog.query import Example, SearchQuery
from search.catalog.replicas import parse_lsn, safe_url
from search.images.store import ImageStore
from search.wiring import build_products
from tests.support.images import b64, encode_png, patterned_image
from tests.support.pg_standby import PrimaryWithStandby, primary_with_standby, server_bin, wait_for

BIN = server_bin()
pytestmark = [
    pytest.mark.e2e,  # two PostgreSQL servers of its own
    pytest.mark.skipif(BIN is None, reason="needs PostgreSQL server binaries (.ci/with-postgres)"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrimaryWithStandby]:
    pytest.importorskip("psycopg")
    with primary_with_standby(BIN) as made:  # type: ignore[arg-type]
        migrate(made.primary_url)
        standby = create_engine(made.standby_url)
        wait_for(lambda: _scalar(standby, "SELECT to_regclass('catalog_state') IS NOT NULL"))
        standby.dispose()
        yield made


def _scalar(engine, sql: str) -> object:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return connection.scalar(text(sql))


@pytest.fixture
def replay(cluster: PrimaryWithStandby) -> Iterator[Callable[[bool], None]]:
    """``replay(False)`` pauses the standby's WAL replay, ``replay(True)`` resumes it (and at the end)."""
    engine = create_engine(cluster.standby_url, isolation_level="AUTOCOMMIT")

    def switch(on: bool) -> None:
        _scalar(engine, "SELECT pg_wal_replay_resume()" if on else "SELECT pg_wal_replay_pause()")

    yield switch
    switch(True)
    engine.dispose()


@pytest.fixture
def open_catalog(cluster: PrimaryWithStandby) -> Iterator[Callable[..., Catalog]]:
    """A process's catalog: writes to the primary, reads from the standby."""
    opened: list[Catalog] = []

    def open_(wait_s: float = 1.0) -> Catalog:
        opened.append(Catalog.open(cluster.primary_url, cluster.standby_url, read_your_writes_wait_s=wait_s))
        return opened[-1]

    yield open_
    for catalog in opened:
        catalog.close()


def unit(seed: int, dim: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def product(external_id: str, seed: int) -> ProductWrite:
    image = ImageWrite(f"https://img.example/{external_id}.jpg", embedding=unit(seed), embedding_model="m")
    return ProductWrite(external_id, f"title {external_id}", "tile", {}, images=[image])


def test_lsn_positions_compare_as_numbers() -> None:
    assert parse_lsn("0/FF") < parse_lsn("1/0") < parse_lsn("1/10") < parse_lsn("A/0")
    assert safe_url("postgresql+psycopg://u:secret@h:5/db") == "postgresql+psycopg://u@h:5/db"


def test_the_writer_reads_its_write_after_the_standby_replays_it(open_catalog) -> None:
    writer = open_catalog()
    writer.upsert([product("ryw-1", 1)])
    assert writer.get("ryw-1").title == "title ryw-1"  # read on the standby, after waiting for it
    stats = writer.routing.stats
    assert stats.waits == 1 and stats.fallbacks == 0 and stats.standby_reads >= 1
    writer.get("ryw-1")
    assert stats.waits == 1  # caught up: the next read asks nothing more


def test_a_lagging_standby_serves_others_the_old_state_and_the_writer_the_primary(
    open_catalog, replay
) -> None:
    writer, other = open_catalog(wait_s=0.2), open_catalog()
    writer.upsert([product("lag-1", 2)])
    wait_for(lambda: other.get("lag-1") is not None)
    replay(False)
    writer.upsert([product("lag-1", 3), product("lag-2", 4)])
    # Another process reads the standby: it has not replayed the write; a write's plan reads the primary.
    assert other.get("lag-2") is None
    with other.on_primary():
        assert other.get("lag-2") is not None
    # The writer waited 0.2 s for the standby, then read the primary.
    assert writer.get("lag-2") is not None
    assert writer.routing.stats.fallbacks == 1 and writer.routing.stats.wait_seconds >= 0.2
    replay(True)
    seconds = wait_for(lambda: other.get("lag-2") is not None)
    assert seconds < 10
    assert writer.get("lag-2") is not None and writer.routing.stats.fallbacks == 1  # the standby again


def test_index_catch_up_reads_the_standby(open_catalog, replay, tmp_path: Path) -> None:
    writer, other = open_catalog(wait_s=0.2), open_catalog()

    def service(catalog: Catalog, name: str):  # type: ignore[no-untyped-def]
        return build_products(
            catalog,
            model="m",
            index_path=tmp_path / name / "i.faiss",
            image_store=ImageStore(tmp_path / name),
        )

    writer.upsert([product("idx-0", 10)])
    follower, own = service(other, "other"), service(writer, "writer")
    wait_for(lambda: (follower.refresh(), own.refresh(), follower.index.revision == own.index.revision)[2])
    replay(False)
    writer.upsert([product("idx-1", 11)])

    def found(svc) -> list[str]:  # type: ignore[no-untyped-def]
        query = SearchQuery([Example(vector=tuple(unit(11)))], k=1)
        return [hit.record.external_id for hit in svc.search(query).hits]

    assert found(own) == ["idx-1"]  # the writer's process searches its write at once (from the primary)
    assert found(follower) != ["idx-1"]  # the standby's state: not replayed yet
    replay(True)
    wait_for(lambda: found(follower) == ["idx-1"])
    assert found(own) == ["idx-1"]  # the standby behind the primary read before never takes it back


def test_info_and_metrics_name_the_databases_without_passwords(
    cluster: PrimaryWithStandby, start_server
) -> None:
    primary = create_engine(cluster.primary_url)
    with primary.begin() as connection:  # a new catalog: the server migrates it and reads it at once
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    primary.dispose()
    with_password = cluster.primary_url.replace("vitrine@", "vitrine:s3cret@")
    server = start_server(
        database_url=with_password, database_read_url=cluster.standby_url, image_store="database"
    )
    client = server.client
    body = {"image": b64(encode_png(patterned_image(950))), "title": "standby tile"}
    assert client.put("/products/info-1", json=body).status_code in (200, 201)
    assert client.get("/products/info-1").json()["title"] == "standby tile"  # read-your-writes
    assert client.get("/products/info-1/image").status_code == 200  # the blob, from the standby
    info = client.get("/info")
    database = info.json()["storage"]["database"]
    assert database["backend"] == "postgresql" and database["reads"] == "standby"
    assert database["primary"] == cluster.primary_url
    assert database["standby"] == cluster.standby_url
    assert database["standby_reads"] >= 1
    assert info.json()["storage"]["image_store"] == "database"
    metrics = client.get("/metrics").text
    assert 'database_reads="standby"' in metrics and "vitrine_standby_reads " in metrics
    assert "s3cret" not in info.text + metrics
