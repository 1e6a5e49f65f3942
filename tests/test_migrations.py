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
    assert {"products", "removed_products", "catalog_state", "alembic_version"} <= tables
    assert version == "0001"
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
