"""Fresh catalog databases of every store the service runs on: SQLite always, PostgreSQL when
VITRINE_TEST_POSTGRES_URL names a scratch database (.ci/with-postgres sets it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from search.catalog.db import migrate
from tests.support.postgres import postgres_database_lock

STORES = ["sqlite", "postgresql"]
POSTGRES_URL = os.environ.get("VITRINE_TEST_POSTGRES_URL")


@contextlib.contextmanager
def fresh_database(store: str, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an empty, migrated catalog database of ``store`` (skips PostgreSQL when unset)."""
    if store == "sqlite":
        url = f"sqlite:///{root / 'vitrine.db'}"
        migrate(url)
        yield url
        return
    if not POSTGRES_URL:
        pytest.skip("set VITRINE_TEST_POSTGRES_URL to run against PostgreSQL")
    with postgres_database_lock(tmp_path_factory):
        engine = create_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
        migrate(POSTGRES_URL)
        yield POSTGRES_URL
