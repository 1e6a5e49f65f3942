"""The schema comes from Alembic migrations, and the SQLAlchemy models match what they create."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from search.catalog import Catalog
from search.catalog.db import alembic_config, migrate
from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.catalog.schema import Base, is_model_table
from search.images.store import ImageStore
from search.index import VectorIndex
from search.model.encoder import Encoder
from search.wiring import build_products
from tests.support.images import patterned_image


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fresh' / 'vitrine.db'}"


def test_upgrade_from_empty_creates_the_catalog_tables(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate(url)
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            state = conn.execute(text("SELECT id, revision FROM catalog_state")).all()
    finally:
        engine.dispose()
    assert {
        "products",
        "product_images",
        "product_attributes",
        "removed_images",
        "product_search",
        "catalog_state",
        "alembic_version",
    } <= tables
    assert version == "0012"  # history: 0001-0002-0003-0007-0006-0008-0009-0010-0011-0012
    assert [tuple(row) for row in state] == [(1, 0)]


def test_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate(url)
    migrate(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM catalog_state")).scalar_one() == 1
    finally:
        engine.dispose()


def test_models_match_the_migrated_schema(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": is_model_table})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def schema_of(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_a_new_sqlite_file_is_the_schema_alembic_builds_from_empty(tmp_path: Path) -> None:
    # migrate() copies a new file from a template this process upgraded once: the same schema, state
    # and version as an upgrade of that very file from empty.
    copied, upgraded = tmp_path / "copied" / "vitrine.db", tmp_path / "upgraded.db"
    migrate(f"sqlite:///{copied}")
    command.upgrade(alembic_config(f"sqlite:///{upgraded}"), "head")
    assert schema_of(copied) == schema_of(upgraded)
    for table in ("alembic_version", "catalog_state"):
        with sqlite3.connect(copied) as a, sqlite3.connect(upgraded) as b:
            assert (
                a.execute(f"SELECT * FROM {table}").fetchall()
                == b.execute(f"SELECT * FROM {table}").fetchall()
            )
    assert [p.name for p in copied.parent.iterdir()] == ["vitrine.db"]  # nothing left beside it


def test_an_existing_file_is_upgraded_in_place_never_replaced(tmp_path: Path) -> None:
    # A file that exists (another process created it first, or an older catalog) keeps its rows.
    url = sqlite_url(tmp_path)
    migrate(url, "0001")
    with sqlite3.connect(tmp_path / "fresh" / "vitrine.db") as conn:
        conn.execute("CREATE TABLE kept (x)")
    migrate(url)
    with sqlite3.connect(tmp_path / "fresh" / "vitrine.db") as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'kept'").fetchall() == [("kept",)]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0012",)


def test_a_file_another_process_created_meanwhile_is_upgraded_not_trusted(
    tmp_path: Path, monkeypatch
) -> None:
    # Between the check and the link another process opened the same new file (SQLite creates it
    # empty): the link fails, and that file is upgraded as any existing one.
    import search.catalog.db as db

    target = tmp_path / "fresh" / "vitrine.db"

    def racing_link(source: object, destination: object) -> None:
        sqlite3.connect(target).close()
        raise FileExistsError(destination)

    monkeypatch.setattr(db.os, "link", racing_link)
    migrate(sqlite_url(tmp_path))
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0012",)
    assert [p.name for p in target.parent.iterdir()] == ["vitrine.db"]


def test_upgrade_from_0001_backfills_the_attribute_index(tmp_path: Path) -> None:
    # A catalog written before 0002 keeps its attributes filterable after the upgrade.
    url = sqlite_url(tmp_path)
    migrate(url, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO products (external_id, image_ref, attributes, embedding, embedding_dim, "
                    "embedding_model, revision, created_at, updated_at) VALUES ('old', 'x.png', "
                    """'{"color": "beige", "size": 60, "tags": ["a"]}', x'0000803f', 1, 'm', 1, """
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
        migrate(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT key, value, number FROM product_attributes ORDER BY key")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("color", "beige", None), ("size", "60", 60.0)]


def test_upgrade_to_several_images_keeps_every_vector_and_embeds_nothing(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one-image catalog as revision 0003 stored it: the embedding on the product row, and an index
    # file whose vector ids are the product row ids. After the upgrade the image rows keep those ids,
    # so the same file still serves, nothing is embedded and verify proves file == database.
    url = sqlite_url(tmp_path)
    migrate(url, "0003")
    pictures = {f"old-{seed}": patterned_image(seed) for seed in (11, 12, 13)}
    vectors = encoder.embed_images(list(pictures.values()))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for row_id, ((external_id, _), vector) in enumerate(
                zip(pictures.items(), vectors, strict=True), 1
            ):
                conn.execute(
                    text(
                        "INSERT INTO products (id, external_id, title, category, image_ref, attributes, "
                        "embedding, embedding_dim, embedding_model, revision, created_at, updated_at) VALUES "
                        "(:id, :ext, :title, 'tile', :ref, :attrs, :emb, 32, :model, 1, "
                        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                    ),
                    {
                        "id": row_id,
                        "ext": external_id,
                        "title": f"Old tile TX-{row_id}",
                        "ref": f"https://img.example/{external_id}.png",
                        "attrs": json.dumps({"price": f"{row_id}9.90"}),
                        "emb": vector.astype("<f4").tobytes(),
                        "model": encoder.info.model_id,
                    },
                )
                conn.execute(
                    text("INSERT INTO product_attributes VALUES (:id, 'price', :price)"),
                    {"id": row_id, "price": f"{row_id}9.90"},
                )
            conn.execute(text("UPDATE catalog_state SET revision = 1"))
    finally:
        engine.dispose()
    index_path = tmp_path / "index" / "products.faiss"
    old_index = VectorIndex(32, encoder.info.model_id, revision=1)
    old_index.upsert(np.arange(1, 4), vectors)
    old_index.save(index_path)
    saved = index_path.read_bytes()

    migrate(url)
    calls: list[int] = []
    original = encoder.embed_pixels
    monkeypatch.setattr(encoder, "embed_pixels", lambda pixels: calls.append(len(pixels)) or original(pixels))
    service = build_products(
        Catalog.open(url),
        model=encoder.info.model_id,
        index_path=index_path,
        image_store=ImageStore(tmp_path / "images"),
        encoder=encoder,
        images=None,
    )
    try:
        assert calls == []  # opening the upgraded catalog embedded nothing
        assert index_path.read_bytes() == saved  # and did not rebuild the index file
        report = service.verify()
        assert report.ok, report.problems
        assert (report.database_products, report.database_images, report.index_vectors) == (3, 3, 3)
        record = service.get("old-12")
        assert [(image.id, image.position, image.image_ref) for image in record.images] == [
            (2, 0, "https://img.example/old-12.png")
        ]
        assert service.catalog.embeddings("old-12")[0][1].tobytes() == vectors[1].astype("<f4").tobytes()
        # Still searchable by vector, by the typed attributes and by its words.
        answer = service.search(
            SearchQuery(
                [Example(vector=tuple(vectors[1]))], filters=Filters.parse({"price": {"gt": 20}}, 100)
            )
        )
        assert [hit.record.external_id for hit in answer.hits] == ["old-12", "old-13"]
        assert answer.hits[0].matched_image.id == 2
        lexical = service.search(SearchQuery([Example(text="tx-3")], mode="lexical"))
        assert [hit.record.external_id for hit in lexical.hits] == ["old-13"]
        assert calls == []
    finally:
        service.catalog.close()


def test_attribute_indexes_cover_the_product_id(tmp_path: Path) -> None:
    """Filters and facets read (key, value|number, product_id) from the index alone (0008); downgrading
    restores the narrower indexes."""
    url = sqlite_url(tmp_path)
    migrate(url)

    def columns() -> dict[str, list[str]]:
        engine = create_engine(url)
        try:
            return {
                ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("product_attributes")
            }
        finally:
            engine.dispose()

    assert columns()["ix_product_attributes_key_value"] == ["key", "value", "product_id"]
    assert columns()["ix_product_attributes_key_number"] == ["key", "number", "product_id"]
    from alembic import command

    from search.catalog.db import alembic_config

    command.downgrade(alembic_config(url), "0006")
    assert columns()["ix_product_attributes_key_value"] == ["key", "value"]
    assert columns()["ix_product_attributes_key_number"] == ["key", "number"]
