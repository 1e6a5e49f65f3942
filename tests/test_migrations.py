"""The schema comes from Alembic migrations, and the SQLAlchemy models match what they create."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from search.db import migrate
from search.schema import Base


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
        "product_attributes",
        "removed_products",
        "catalog_state",
        "alembic_version",
    } <= tables
    assert version == "0007"
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
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


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
            rows = conn.execute(text("SELECT key, value FROM product_attributes ORDER BY key")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("color", "beige"), ("size", "60")]
